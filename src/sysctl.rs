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

pub fn read(path: &str) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim_end().to_string())
}

pub fn write(path: &str, value: &str) -> io::Result<()> {
    fs::write(path, value)
}
