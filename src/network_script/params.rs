//! What one network script call asks: the action word and the `k=v` parameters, checked
//! against the keys the script knows.

use std::fmt;

use anyhow::{Result, anyhow, bail};

use crate::ifname::IfName;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Status,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "stop" => Action::Stop,
            "status" => Action::Status,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Status => "status",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Bridge,
    Route,
    Nat,
    Prebuilt,
}

impl Script {
    pub fn name(self) -> &'static str {
        match self {
            Script::Bridge => "network-bridge",
            Script::Route => "network-route",
            Script::Nat => "network-nat",
            Script::Prebuilt => "network-prebuilt",
        }
    }

    /// The `k=v` keys each script takes. xend-era keys that still mean something are accepted
    /// (`vifnum`, `antispoof=no`); anything else is refused, so a typo never silently builds
    /// the default set-up.
    /// The keys that say which instance is meant; without them it is derived from the host.
    pub(super) fn naming_keys(self) -> &'static [&'static str] {
        match self {
            Script::Bridge => &["netdev", "bridge", "vifnum", "trunk"],
            Script::Route => &["netdev", "vifnum"],
            Script::Nat => &["netdev", "vifnum"],
            Script::Prebuilt => &[],
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Script::Bridge => &[
                "netdev",
                "bridge",
                "vifnum",
                "antispoof",
                "force",
                "trunk",
                "vlans",
                "bridge_template",
                "vlan_filtering",
            ],
            Script::Route => &["netdev", "gateway", "vifnum", "antispoof"],
            Script::Nat => &["netdev", "range", "vifnum", "antispoof", "dhcp"],
            Script::Prebuilt => &["bridges", "bridge"],
        }
    }
}

/// The `k=v` words of one call, checked against the keys the script knows.
#[derive(Clone, Debug, Default)]
pub struct Params {
    pub(super) vars: Vec<(String, String)>,
}

impl Params {
    pub fn new(script: Script, vars: &[(String, String)]) -> Result<Params> {
        let known = script.keys();
        for (k, _) in vars {
            if !known.contains(&k.as_str()) {
                bail!(
                    "unknown parameter {k:?} ({} takes {})",
                    script.name(),
                    known.join(", ")
                );
            }
        }
        let p = Params {
            vars: vars.to_vec(),
        };
        if p.yes("antispoof")? {
            bail!(
                "antispoof=yes (iptables rules) is not supported by xen-vif; use your own firewall rules"
            );
        }
        Ok(p)
    }

    /// The last non-empty value of `key` (later words override earlier ones, as in the scripts).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a key that may repeat, comma-separated lists split.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.all_of(&[key])
    }

    /// Every value of any of `keys`, in the order given.
    pub fn all_of(&self, keys: &[&str]) -> Vec<&str> {
        self.vars
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn ifname(&self, key: &str) -> Result<Option<IfName>> {
        self.get(key)
            .map(|v| IfName::new(v).map_err(|e| anyhow!("{key}: {e}")))
            .transpose()
    }

    /// `netdev=`, else xend's `eth<vifnum>`; `None` when neither is given.
    pub fn netdev(&self) -> Result<Option<IfName>> {
        match (self.ifname("netdev")?, self.get("vifnum")) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(v)) if v.bytes().all(|b| b.is_ascii_digit()) => {
                IfName::new(&format!("eth{v}"))
                    .map(Some)
                    .map_err(anyhow::Error::msg)
            }
            (None, Some(v)) => bail!("vifnum={v:?} is not a number"),
            (None, None) => Ok(None),
        }
    }

    pub fn yes(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None | Some("no" | "0" | "false" | "off") => Ok(false),
            Some("yes" | "1" | "true" | "on") => Ok(true),
            Some(v) => bail!("{key}={v:?}: expected yes or no"),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn params_refuse_unknown_keys_and_antispoof() {
        assert!(Params::new(Script::Bridge, &vars(&[("vlan", "4")])).is_err());
        assert!(Params::new(Script::Route, &vars(&[("bridge", "x")])).is_err());
        assert!(Params::new(Script::Bridge, &vars(&[("antispoof", "yes")])).is_err());
        assert!(Params::new(Script::Bridge, &vars(&[("antispoof", "no")])).is_ok());
        let p = Params::new(Script::Bridge, &vars(&[("force", "maybe")])).unwrap();
        assert!(p.yes("force").is_err());
    }

    #[test]
    fn params_last_wins_and_lists_split() {
        let p = Params::new(
            Script::Route,
            &vars(&[
                ("netdev", "eth0"),
                ("netdev", "dummy0"),
                ("gateway", "10.0.0.1/29,2001:db8::1/64"),
                ("gateway", "10.1.0.1/24"),
            ]),
        )
        .unwrap();
        assert_eq!(p.get("netdev"), Some("dummy0"));
        assert_eq!(
            p.all("gateway"),
            vec!["10.0.0.1/29", "2001:db8::1/64", "10.1.0.1/24"]
        );
        let p = Params::new(Script::Bridge, &vars(&[("netdev", "a/b")])).unwrap();
        assert!(p.ifname("netdev").is_err());
    }
}
