//! ctnetlink: forget the connections of addresses that are leaving (`conntrack -D`), so a
//! later owner of the address inherits no state (NAT bindings, established flows).

use std::net::IpAddr;

use nix::errno::Errno;

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

impl Nfnetlink {
    /// Delete every conntrack entry whose original source or destination is in `prefixes`.
    /// Returns how many went. A kernel without conntrack has none to delete.
    pub fn delete_conntrack(&mut self, prefixes: &[Prefix]) -> Result<usize> {
        // A dump walks the whole conntrack hash table (shared by every namespace, sized by
        // memory: milliseconds), so skip it when this namespace tracks nothing.
        if std::fs::read_to_string(CONNTRACK_COUNT).is_ok_and(|c| c.trim() == "0") {
            return Ok(0);
        }
        let mut deleted = 0;
        // AF_UNSPEC: one dump of every family.
        let entries = match self.dump(|| Msg::new(ct_type(IPCTNL_MSG_CT_GET), NLM_F_DUMP, 0, 0)) {
            Ok(e) => e,
            Err(e) if super::is_unsupported(&e) => return Ok(0),
            Err(e) => return Err(e),
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
