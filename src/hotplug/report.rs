//! Failure reporting: the one writer of `hotplug-error` / `hotplug-status=error`, as libxl reads
//! them, also for the panic hook (`one_line`).

use crate::log;
use crate::xenstore::{self, Store, XenStore};

/// What went wrong, and where to report it.
pub struct Failure {
    pub message: String,
    store: Option<XenStore>,
    backend: Option<String>,
}

impl Failure {
    pub(super) fn new(
        prefix: &str,
        e: anyhow::Error,
        store: Option<XenStore>,
        backend: Option<String>,
    ) -> Failure {
        Failure {
            message: one_line(format!("{prefix}: {e:#}")),
            store,
            backend,
        }
    }

    /// hotplug-error + hotplug-status=error, as libxl reads them, and one line in the log.
    pub fn report(self) {
        // The failure may be the budget running out: reporting it gets the clean-up time.
        crate::deadline::enter_cleanup();
        let Some(backend) = &self.backend else {
            log::error(&self.message);
            return;
        };
        let write = |store: &XenStore| -> std::io::Result<()> {
            store.write(&format!("{backend}/hotplug-error"), &self.message)?;
            store.write(&format!("{backend}/hotplug-status"), "error")
        };
        let mut result = match &self.store {
            Some(s) => write(s),
            None => Err(std::io::Error::other("no connection")),
        };
        // A connection that broke or timed out gets one fresh try: libxl must hear about it.
        if result
            .as_ref()
            .is_err_and(|e| self.store.is_none() || xenstore::is_connection_error(e))
        {
            result = XenStore::open()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
                .and_then(|s| write(&s));
        }
        match result {
            Ok(()) => log::error(&self.message),
            Err(e) => log::error(&format!(
                "{} (and it could not be reported in {backend}: {e})",
                self.message
            )),
        }
    }
}

/// The longest hotplug-error we write: a hostile 4 KiB value quoted in a message must not make
/// the report itself too big for xenstore (4096-byte payloads) or unreadable in `xl` output.
const MAX_MESSAGE: usize = 400;

/// Every report is one line: what goes to `hotplug-error` (and the panic hook's) is read by
/// `xl` as one.
pub fn one_line(msg: String) -> String {
    let mut m = msg.replace(['\n', '\r'], " ");
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str("...");
    }
    m
}
