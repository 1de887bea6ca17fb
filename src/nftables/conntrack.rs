//! ctnetlink: forget the connections of addresses that are leaving (`conntrack -D`), so a
//! later owner of the address inherits no state (NAT bindings, established flows).

use std::net::IpAddr;

use nix::errno::Errno;

use crate::netlink::NetlinkError;

use super::rules::Prefix;
use super::socket::{Msg, NLM_F_ACK, NLM_F_DUMP, Nfnetlink, Result, attrs};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
/// How many connections this network namespace tracks (absent: no conntrack at all).
const CONNTRACK_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";

fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
        _ => None,
    }
}

/// The original-direction source and destination of a conntrack entry.
fn orig_addrs(tuple: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for (ty, v) in attrs(tuple) {
        if ty == CTA_TUPLE_IP {
            for (aty, a) in attrs(v) {
                if matches!(
                    aty,
                    CTA_IP_V4_SRC | CTA_IP_V4_DST | CTA_IP_V6_SRC | CTA_IP_V6_DST
                ) {
                    out.extend(ip_of(a));
                }
            }
        }
    }
    out
}

/// Whether this namespace's conntrack count (`nf_conntrack_count`, None when the file is absent)
/// says there is nothing to delete: no conntrack in the kernel at all, or no entry here.
/// (Asking ctnetlink without conntrack would also make the kernel load both modules.)
fn nothing_tracked(count: Option<&str>) -> bool {
    count.is_none_or(|c| c.trim() == "0")
}

/// nfnetlink answers EINVAL for a subsystem it does not have: conntrack without ctnetlink
/// (`nf_conntrack_netlink` neither loaded nor loadable). Say so rather than "invalid argument".
fn name_missing_ctnetlink(e: NetlinkError) -> NetlinkError {
    if e.errno != Errno::EINVAL || e.message.is_some() {
        return e;
    }
    NetlinkError {
        message: Some("the kernel has no ctnetlink (nf_conntrack_netlink)".into()),
        ..e
    }
}

impl Nfnetlink {
    /// Delete every conntrack entry whose original source or destination is in `prefixes`.
    /// Returns how many went. A kernel without conntrack has none to delete.
    pub fn delete_conntrack(&mut self, prefixes: &[Prefix]) -> Result<usize> {
        // A dump walks the whole conntrack hash table (shared by every namespace, sized by
        // memory: milliseconds), so skip it when this namespace tracks nothing.
        if nothing_tracked(std::fs::read_to_string(CONNTRACK_COUNT).ok().as_deref()) {
            return Ok(0);
        }
        let mut deleted = 0;
        // AF_UNSPEC: one dump of every family.
        let entries = match self.dump(|| Msg::new(ct_type(IPCTNL_MSG_CT_GET), NLM_F_DUMP, 0, 0)) {
            Ok(e) => e,
            Err(e) if super::is_unsupported(&e) => return Ok(0),
            Err(e) => return Err(name_missing_ctnetlink(e)),
        };
        for entry in entries {
            let family = entry.payload.first().copied().unwrap_or(0);
            let Some(tuple) = entry
                .attrs()
                .into_iter()
                .find(|(ty, _)| *ty == CTA_TUPLE_ORIG)
                .map(|(_, v)| v.to_vec())
            else {
                continue;
            };
            if !orig_addrs(&tuple)
                .iter()
                .any(|ip| prefixes.iter().any(|p| p.contains(*ip)))
            {
                continue;
            }
            let mut m = Msg::new(ct_type(IPCTNL_MSG_CT_DELETE), NLM_F_ACK, family, 0);
            let at = m.begin(CTA_TUPLE_ORIG);
            m.raw(&tuple);
            m.end(at);
            match self.request(m) {
                Ok(()) => deleted += 1,
                // Timed out or deleted by someone else meanwhile.
                Err(e) if e.errno == Errno::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_delete_without_conntrack_or_without_entries() {
        assert!(nothing_tracked(None));
        assert!(nothing_tracked(Some("0\n")));
        assert!(!nothing_tracked(Some("3\n")));
    }

    #[test]
    fn einval_from_the_dump_names_the_missing_module() {
        let e = name_missing_ctnetlink(NetlinkError {
            errno: Errno::EINVAL,
            message: None,
        });
        assert_eq!(
            e.to_string(),
            "Invalid argument (EINVAL: Invalid argument): the kernel has no ctnetlink \
             (nf_conntrack_netlink)"
        );
        let other = name_missing_ctnetlink(NetlinkError {
            errno: Errno::EPERM,
            message: None,
        });
        assert_eq!((other.errno, other.message), (Errno::EPERM, None));
    }
}
