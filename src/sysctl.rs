//! /proc/sys access. Paths are built with '/' because interface names contain '.'
//! (vif5.0), which the dotted sysctl notation would split.

use std::fs;
use std::io;

use crate::ifname::IfName;

pub fn conf_path(family: &str, dev: &str, key: &str) -> String {
    format!("/proc/sys/net/{family}/conf/{dev}/{key}")
}

pub fn ipv4_conf(dev: &IfName, key: &str) -> String {
    conf_path("ipv4", dev.as_str(), key)
}

pub fn ipv6_conf(dev: &IfName, key: &str) -> String {
    conf_path("ipv6", dev.as_str(), key)
}

/// The only files this module reads or writes: network sysctls. A path from anywhere else (a
/// state file, say, that someone forged) is refused, so no record can steer root's write.
pub fn network_sysctl(path: &str) -> io::Result<&str> {
    let rest = path.strip_prefix("/proc/sys/net/").unwrap_or_default();
    if rest.is_empty()
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{path:?} is not a network sysctl under /proc/sys/net/"),
        ));
    }
    Ok(path)
}

pub fn read(path: &str) -> io::Result<String> {
    Ok(fs::read_to_string(network_sysctl(path)?)?
        .trim_end()
        .to_string())
}

pub fn write(path: &str, value: &str) -> io::Result<()> {
    fs::write(network_sysctl(path)?, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_sysctls() {
        for bad in [
            "/etc/passwd",
            "/proc/sys/kernel/core_pattern",
            "/proc/sys/net/../kernel/core_pattern",
            "/proc/sys/net/ipv4/conf/./all/forwarding",
            "/proc/sys/net/",
            "/proc/sys/net//ipv4/ip_forward",
        ] {
            assert!(write(bad, "1").is_err(), "{bad}");
            assert!(read(bad).is_err(), "{bad}");
        }
        assert_eq!(
            network_sysctl("/proc/sys/net/ipv4/conf/vif5.0/proxy_arp").unwrap(),
            "/proc/sys/net/ipv4/conf/vif5.0/proxy_arp"
        );
    }
}
