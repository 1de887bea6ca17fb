//! nf_tables (and conntrack) over nfnetlink: messages built by hand beside the rtnetlink layer.
//! Knows nothing about Xen. Per device one netdev table holding one base chain on the device's
//! ingress hook; for source NAT one family ip table with a postrouting chain per uplink. Each is
//! replaced and removed in single transactions. The netdev tables share nothing, so one
//! device's transaction does not grow with the others (the kernel validates the whole table a
//! transaction touches, every chain and rule of it).

mod conntrack;
mod rules;
mod socket;

pub use rules::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6, IPPROTO_UDP, IngressChain, Mac, Match,
    NatChain, Prefix, Rule, Verdict,
};
pub use socket::Nfnetlink;

use nix::errno::Errno;

use crate::netlink::NetlinkError;
use socket::{Msg, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, Result, attr_str, attrs};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFPROTO_NETDEV: u8 = 5;
const NFPROTO_IPV4: u8 = 2;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NLM_F_APPEND: u16 = 0x800;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_USERDATA: u16 = 12;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NFTA_HOOK_DEVS: u16 = 4;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NF_NETDEV_INGRESS: u32 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
/// libnftnl's chain-comment record in the chain's user data, so `nft list` shows the comment.
const NFTNL_UDATA_CHAIN_COMMENT: u8 = 0;

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

fn netdev_msg(msg: u16, flags: u16) -> Msg {
    family_msg(NFPROTO_NETDEV, msg, flags)
}

fn family_msg(family: u8, msg: u16, flags: u16) -> Msg {
    Msg::new(nft_type(msg), flags, family, 0)
}

/// A chain comment that fingerprints its rules (`text`: the chain as `nft` spells it, which
/// names every field of every rule), so a reader can tell a chain that is exactly as planned
/// from one that is not without decoding expressions.
pub fn fingerprint(owner: &str, text: &str) -> String {
    // FNV-1a.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{owner} {h:016x}")
}

/// A base chain as the kernel has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainState {
    /// The device its ingress hook is on (none once that device is gone, on newer kernels).
    pub devices: Vec<String>,
    pub comment: Option<String>,
    /// How many rules it holds; None when the caller did not ask (the dump of every rule
    /// with its expressions is most of a read).
    pub rules: Option<usize>,
}

/// Errors that mean the kernel has no nf_tables (or no netdev family): the caller names the
/// switch that runs without the filter.
pub fn is_unsupported(e: &NetlinkError) -> bool {
    matches!(
        e.errno,
        Errno::EPROTONOSUPPORT | Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT
    )
}

fn comment_udata(comment: &str) -> Vec<u8> {
    let mut v = comment.as_bytes().to_vec();
    v.truncate(250);
    v.push(0);
    let mut out = vec![NFTNL_UDATA_CHAIN_COMMENT, v.len() as u8];
    out.extend(v);
    out
}

fn udata_comment(v: &[u8]) -> Option<String> {
    let mut b = v;
    while b.len() >= 2 {
        let (ty, len) = (b[0], usize::from(b[1]));
        let val = b.get(2..2 + len)?;
        if ty == NFTNL_UDATA_CHAIN_COMMENT {
            return Some(attr_str(val));
        }
        b = &b[2 + len..];
    }
    None
}

impl Nfnetlink {
    /// Make the table of `chain` hold exactly that chain, with `comment`, in one transaction.
    /// `replace`: a table of that name may be there; it is created if missing, deleted with
    /// whatever it holds, and created again (any kernel; no `destroy` message needed). A run
    /// killed before the commit leaves the old table, after it the new one. Without `replace`
    /// no deletion is queued: a deletion makes the socket's close wait for an RCU grace period
    /// (the kernel flushes its destroy work first), some 10 ms against well under one.
    pub fn replace_ingress_table(
        &mut self,
        chain: &IngressChain,
        comment: &str,
        replace: bool,
    ) -> Result<()> {
        let mut msgs = Vec::new();
        if replace {
            msgs.push(table_msg(NFT_MSG_NEWTABLE, &chain.table));
            msgs.push(table_msg(NFT_MSG_DELTABLE, &chain.table));
        }
        msgs.push(table_msg(NFT_MSG_NEWTABLE, &chain.table));
        let mut c = netdev_msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK);
        c.str(NFTA_CHAIN_TABLE, &chain.table);
        c.str(NFTA_CHAIN_NAME, &chain.name);
        let h = c.begin(NFTA_CHAIN_HOOK);
        c.u32(NFTA_HOOK_HOOKNUM, NF_NETDEV_INGRESS);
        c.u32(NFTA_HOOK_PRIORITY, chain.priority as u32);
        c.str(NFTA_HOOK_DEV, &chain.device);
        c.end(h);
        c.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        c.str(NFTA_CHAIN_TYPE, "filter");
        c.bytes(NFTA_CHAIN_USERDATA, &comment_udata(comment));
        msgs.push(c);
        for r in &chain.rules {
            let mut m = netdev_msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK);
            m.str(NFTA_RULE_TABLE, &chain.table);
            m.str(NFTA_RULE_CHAIN, &chain.name);
            r.encode(&mut m, NFTA_RULE_EXPRESSIONS);
            msgs.push(m);
        }
        self.batch(msgs, NFNL_SUBSYS_NFTABLES)
    }

    /// Delete a netdev table with its chains and rules, in one message (ENOENT when it is not
    /// there).
    pub fn delete_netdev_table(&mut self, table: &str) -> Result<()> {
        self.batch(
            vec![table_msg(NFT_MSG_DELTABLE, table)],
            NFNL_SUBSYS_NFTABLES,
        )
    }

    /// Whether the netdev table `table` exists.
    pub fn has_netdev_table(&mut self, table: &str) -> Result<bool> {
        let mut m = netdev_msg(NFT_MSG_GETTABLE, NLM_F_ACK);
        m.str(NFTA_TABLE_NAME, table);
        Ok(self.get(m)?.is_some())
    }

    /// Make the source-NAT chain exactly as given, with `comment`, in one transaction: the
    /// family ip table is created when missing, a chain of that name deleted first when `exists`.
    pub fn replace_nat_chain(
        &mut self,
        chain: &NatChain,
        comment: &str,
        exists: bool,
    ) -> Result<()> {
        let mut msgs = Vec::new();
        let mut t = family_msg(NFPROTO_IPV4, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_ACK);
        t.str(NFTA_TABLE_NAME, &chain.table);
        msgs.push(t);
        if exists {
            msgs.push(del_chain_msg(NFPROTO_IPV4, &chain.table, &chain.name));
        }
        let mut c = family_msg(NFPROTO_IPV4, NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_ACK);
        c.str(NFTA_CHAIN_TABLE, &chain.table);
        c.str(NFTA_CHAIN_NAME, &chain.name);
        let h = c.begin(NFTA_CHAIN_HOOK);
        c.u32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING);
        c.u32(NFTA_HOOK_PRIORITY, chain.priority as u32);
        c.end(h);
        c.u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        c.str(NFTA_CHAIN_TYPE, "nat");
        c.bytes(NFTA_CHAIN_USERDATA, &comment_udata(comment));
        msgs.push(c);
        for r in &chain.rules {
            let mut m = family_msg(
                NFPROTO_IPV4,
                NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND | NLM_F_ACK,
            );
            m.str(NFTA_RULE_TABLE, &chain.table);
            m.str(NFTA_RULE_CHAIN, &chain.name);
            r.encode(&mut m, NFTA_RULE_EXPRESSIONS);
            msgs.push(m);
        }
        self.batch(msgs, NFNL_SUBSYS_NFTABLES)
    }

    /// Delete a family ip chain with its rules, then its table if no other chain is left in it
    /// (ENOENT when the chain is not there).
    pub fn delete_nat_chain(&mut self, table: &str, name: &str) -> Result<()> {
        self.batch(
            vec![del_chain_msg(NFPROTO_IPV4, table, name)],
            NFNL_SUBSYS_NFTABLES,
        )?;
        let mut t = family_msg(NFPROTO_IPV4, NFT_MSG_DELTABLE, NLM_F_ACK);
        t.str(NFTA_TABLE_NAME, table);
        match self.batch(vec![t], NFNL_SUBSYS_NFTABLES) {
            // Another instance's chain is still in it, or it is gone already.
            Err(e) if e.errno == Errno::EBUSY || e.errno == Errno::ENOENT => Ok(()),
            r => r,
        }
    }

    /// The family ip chain `table`/`name` with its rules counted, or None.
    pub fn ip_chain(&mut self, table: &str, name: &str) -> Result<Option<ChainState>> {
        self.chain_state(NFPROTO_IPV4, table, name, true)
    }

    /// The netdev chain `table`/`name`, its rules counted if `count_rules`, or None.
    pub fn netdev_chain(
        &mut self,
        table: &str,
        name: &str,
        count_rules: bool,
    ) -> Result<Option<ChainState>> {
        self.chain_state(NFPROTO_NETDEV, table, name, count_rules)
    }

    fn chain_state(
        &mut self,
        family: u8,
        table: &str,
        name: &str,
        count_rules: bool,
    ) -> Result<Option<ChainState>> {
        let mut m = family_msg(family, NFT_MSG_GETCHAIN, NLM_F_ACK);
        m.str(NFTA_CHAIN_TABLE, table);
        m.str(NFTA_CHAIN_NAME, name);
        let Some(answer) = self.get(m)? else {
            return Ok(None);
        };
        let mut st = ChainState {
            devices: Vec::new(),
            comment: None,
            rules: None,
        };
        for (ty, v) in answer.attrs() {
            match ty {
                NFTA_CHAIN_HOOK => {
                    for (hty, hv) in attrs(v) {
                        let names = match hty {
                            NFTA_HOOK_DEV => vec![attr_str(hv)],
                            NFTA_HOOK_DEVS => {
                                attrs(hv).into_iter().map(|(_, d)| attr_str(d)).collect()
                            }
                            _ => Vec::new(),
                        };
                        // Newer kernels (seen on 6.18) report a single device under both
                        // attributes: each device once.
                        for n in names {
                            if !st.devices.contains(&n) {
                                st.devices.push(n);
                            }
                        }
                    }
                }
                NFTA_CHAIN_USERDATA => st.comment = udata_comment(v),
                _ => {}
            }
        }
        // Newer kernels give the device both as NFTA_HOOK_DEV and in NFTA_HOOK_DEVS.
        st.devices.sort();
        st.devices.dedup();
        if !count_rules {
            return Ok(Some(st));
        }
        let (table, name) = (table.to_string(), name.to_string());
        st.rules = Some(
            self.dump(|| {
                let mut m = family_msg(family, NFT_MSG_GETRULE, NLM_F_DUMP);
                m.str(NFTA_RULE_TABLE, &table);
                m.str(NFTA_RULE_CHAIN, &name);
                m
            })?
            .iter()
            .filter(|a| a.ty == nft_type(NFT_MSG_NEWRULE))
            .count(),
        );
        Ok(Some(st))
    }
}

/// NEWTABLE without NLM_F_EXCL: no error when the table exists.
fn table_msg(msg: u16, table: &str) -> Msg {
    let flags = if msg == NFT_MSG_NEWTABLE {
        NLM_F_CREATE | NLM_F_ACK
    } else {
        NLM_F_ACK
    };
    let mut m = netdev_msg(msg, flags);
    m.str(NFTA_TABLE_NAME, table);
    m
}

fn del_chain_msg(family: u8, table: &str, name: &str) -> Msg {
    let mut m = family_msg(family, NFT_MSG_DELCHAIN, NLM_F_ACK);
    m.str(NFTA_CHAIN_TABLE, table);
    m.str(NFTA_CHAIN_NAME, name);
    m
}
