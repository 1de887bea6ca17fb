//! The only way to name a link: Linux accepts 1..15 bytes, no '/', no whitespace, no ':', and
//! not "." or "..". We also keep to printable ASCII, which every real interface name is, so a
//! non-UTF-8 or control-character value can never name a device. Checked once, at the boundary.

use std::fmt;

/// IFNAMSIZ minus the terminating NUL.
pub const MAX_LEN: usize = 15;

/// Names no link can have: `/proc/sys/net/ipv4/conf/` (and ipv6) already holds them.
const RESERVED: &[&str] = &["all", "default"];

/// Words `ip link` (and `ip addr`, `bridge`) read as keywords where a device name can stand:
/// a hook's `ip link set $dev up` with `dev` one of these does something else. A name we give
/// a device (`vifname`) must not be one.
pub const IP_KEYWORDS: &[&str] = &[
    "help",
    "dev",
    "name",
    "up",
    "down",
    "type",
    "master",
    "nomaster",
    "mtu",
    "address",
    "alias",
    "netns",
    "link",
    "group",
    "index",
    "vf",
    "vrf",
    "mode",
    "state",
    "arp",
    "multicast",
    "allmulticast",
    "promisc",
    "dynamic",
    "trailers",
    "txqueuelen",
    "qlen",
    "txqlen",
    "broadcast",
    "brd",
    "peer",
    "altname",
    "property",
    "label",
    "to",
    "from",
    "via",
    "scope",
    "proto",
    "table",
    "metric",
    "show",
    "list",
    "set",
    "add",
    "del",
    "delete",
    "change",
    "replace",
    "flush",
    "lo",
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn new(name: &str) -> Result<IfName, String> {
        let why = if name.is_empty() {
            Some("it is empty".to_string())
        } else if name.len() > MAX_LEN {
            Some(format!(
                "it is {} bytes long, the limit is {MAX_LEN}",
                name.len()
            ))
        } else if name == "." || name == ".." {
            Some("it is a path component".to_string())
        } else if RESERVED.contains(&name) {
            Some("the kernel reserves it (/proc/sys/net/*/conf/all, default)".to_string())
        } else if name.starts_with('-') {
            // `ip link set -x ...` and every other tool would read it as an option.
            Some("it starts with '-'".to_string())
        } else {
            name.chars()
                .find(|c| *c == '/' || *c == ':' || !c.is_ascii_graphic())
                .map(|c| format!("it contains {c:?}"))
        };
        match why {
            Some(why) => Err(format!("{:?} is not a valid interface name: {why}", name)),
            None => Ok(IfName(name.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kernel_names() {
        for n in [
            "vif5.0",
            "vif12.3-emu",
            "xenbr0",
            "br-4",
            "a",
            "123456789012345",
        ] {
            assert!(IfName::new(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        for n in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a b",
            "a\tb",
            "a\nb",
            "eth0:1",
            "caf\u{e9}",
            "a\u{fffd}",
            "all",
            "default",
            "-x",
            "--help",
        ] {
            assert!(IfName::new(n).is_err(), "{n:?}");
        }
    }
}
