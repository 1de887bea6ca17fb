//! The manual page and shell completions, generated from the clap definitions (handed in by
//! `cli`, so this module does not depend on it) so they can never drift from `--help` (`xen-vif generate man`, `xen-vif generate completions SHELL`;
//! the package and scripts/install.sh run these at build/install time).

use std::io::Write;

use anyhow::{Context, Result};

/// The whole manual in one page, `xen-vif(8)`: clap's sections for the command, then one
/// subsection per subcommand (synopsis, description, options), then what clap does not know.
pub fn man_page(cmd: clap::Command) -> Result<Vec<u8>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("xen-vif {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let full = format!("xen-vif {}", sub.get_name());
        let sub = sub.clone().bin_name(&full).display_name(&full);
        let m = clap_mangen::Man::new(sub);
        writeln!(out, ".SS \"{}\"", full)?;
        for part in [
            render(|w| m.render_description_section(w))?,
            render(|w| m.render_synopsis_section(w))?,
            render(|w| m.render_options_section(w))?,
        ] {
            // Each part comes as a `.SH` section: keep its body inside this subsection.
            for line in part.lines().filter(|l| !l.starts_with(".SH ")) {
                writeln!(out, "{line}")?;
            }
            out.extend_from_slice(b".PP\n");
        }
    }
    out.extend_from_slice(EXTRA.as_bytes());
    Ok(out)
}

fn render(f: impl Fn(&mut dyn Write) -> std::io::Result<()>) -> Result<String> {
    let mut buf = Vec::new();
    f(&mut buf)?;
    String::from_utf8(buf).context("clap_mangen wrote non-UTF-8")
}

pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell, w: &mut dyn Write) {
    clap_complete::generate(shell, &mut cmd, "xen-vif", w);
}

/// What `--help` cannot say: the script names, files, environment and exit status.
const EXTRA: &str = r#".SH "SCRIPT NAMES"
Run under the name of a Xen hotplug script (a symlink, e.g.
\fI/etc/xen/scripts/vif\-bridge\fR), xen\-vif behaves as that script:
.TP
\fBvif\-bridge\fR \fBonline\fR|\fBoffline\fR [\fBtype_if=vif\fR], \fBadd\fR|\fBremove\fR \fBtype_if=tap\fR
attach the guest's vif (or its emulated NIC's tap \fIvifD.N\-emu\fR) to its bridge, or detach it.
.TP
\fBvif\-route\fR ...
routed mode: the gateway address on the vif, proxy ARP/NDP, one host route per guest address.
.TP
\fBvif\-setup\fR ...
the mode named by the \fBscript\fR variable (as set by libxl or netback), else \fBmode\fR from
\fI/etc/xen/xen\-vif.toml\fR, else bridge.
.TP
\fBnetwork\-bridge\fR, \fBnetwork\-route\fR \fBstart\fR|\fBstop\fR|\fBstatus\fR [\fIk\fR=\fIv\fR ...]
xend's host set\-up scripts.
.PP
libxl passes \fBXENBUS_PATH\fR, \fBvif\fR, \fBnetdev\fR and \fBscript\fR in the environment;
parameters are taken from the environment, then \fIk\fR=\fIv\fR arguments, then the backend's
xenstore keys, later ones winning. On failure of \fBonline\fR the reason is written to the
backend's \fBhotplug\-error\fR key and \fBhotplug\-status\fR is set to \fBerror\fR.
.SH FILES
.TP
\fI/etc/xen/xen\-vif.toml\fR
optional host\-wide defaults: \fBmode\fR, \fBgatewaydev\fR, \fBlog_file\fR, \fBhook_dir\fR,
\fBnetwork_script\fR (check it with \fBxen\-vif check\-config\fR). Like the hooks, it is used
only if root owns it and every directory above it, and none of them is writable by group or
others.
.TP
\fI/var/log/xen/xen\-hotplug.log\fR
one line per action (time, domain, device, action, mode, result, duration), if \fI/var/log/xen\fR exists.
.TP
\fI/etc/xen/scripts/vif\-post.d/*.hook\fR
executable hooks run with \fI/bin/sh\fR after each action, with \fBcommand\fR, \fBdev\fR,
\fBvif\fR, \fBtype_if\fR, \fBXENBUS_PATH\fR, \fBbridge\fR, \fBip\fR, \fBmain_ip\fR and \fBnetdev\fR
in the environment. A hook that root does not own, or that group or others could write (it or a
directory above it, also through a symlink), fails the action and is not run.
.TP
\fI/run/xen\-vif/\fR
per\-device locks; \fIdaemon.pid\fR (held while \fBxen\-vif daemon\fR runs) and
\fIdaemon.vifs\fR (the vifs it handled).
.TP
\fIxen\-vif.service\fR, \fIxen\-vif\-network.service\fR
systemd units: the daemon (with \fBrun_hotplug_scripts=0\fR in \fI/etc/xen/xl.conf\fR), and
the host network from \fBnetwork_script\fR at boot and shutdown.
.SH ENVIRONMENT
.TP
\fBXEN_VIF_LOG=debug\fR
log debug detail (as \fB\-\-verbose\fR).
.TP
\fBXENSTORED_PATH\fR
the xenstored socket (default: the standard socket).
.SH "EXIT STATUS"
0 on success (also for the combinations the stock scripts ignore), 1 on failure.
.SH "SEE ALSO"
\fBxl\fR(1), \fBxl.cfg\fR(5), \fBxl.conf\fR(5), \fBxl\-network\-configuration\fR(5), \fBudev\fR(7)
"#;
