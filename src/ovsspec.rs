//! vif-openvswitch's `bridge` value: `BR[.TAG][:TRUNK[:TRUNK...]]`, as the stock script's
//! pattern `^([^.:]+)(\.([[:digit:]]+))?(:([[:digit:]]+(:[[:digit:]]+)*))?$` reads it:
//! `ovsbr0.10:20:30` is bridge `ovsbr0`, port tag 10, trunks 20 and 30.

/// The highest VLAN id an Open vSwitch port's `tag` and `trunks` columns take.
pub const MAX_VID: u16 = 4095;

/// The VLAN settings a `bridge` value carries after the bridge name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeVlans {
    pub tag: Option<u16>,
    pub trunks: Vec<u16>,
}

impl BridgeVlans {
    pub fn is_empty(&self) -> bool {
        self.tag.is_none() && self.trunks.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub bridge: String,
    pub vlans: BridgeVlans,
}

fn vid(s: &str, what: &str, whole: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bridge {whole:?}: {what} {s:?} is not a number (expected BRIDGE[.TAG][:TRUNK[:TRUNK...]])"
        ));
    }
    s.parse::<u16>()
        .ok()
        .filter(|v| *v <= MAX_VID)
        .ok_or_else(|| format!("bridge {whole:?}: {what} {s} is outside 0..{MAX_VID}"))
}

/// Parse a `bridge` value of vif-openvswitch.
pub fn parse(s: &str) -> Result<BridgeSpec, String> {
    let (head, trunks) = match s.split_once(':') {
        Some((h, t)) => (h, Some(t)),
        None => (s, None),
    };
    let (bridge, tag) = match head.split_once('.') {
        Some((b, t)) => (b, Some(t)),
        None => (head, None),
    };
    if bridge.is_empty() {
        return Err(format!(
            "bridge {s:?} names no bridge (expected BRIDGE[.TAG][:TRUNK[:TRUNK...]])"
        ));
    }
    let tag = tag.map(|t| vid(t, "tag", s)).transpose()?;
    let mut list = Vec::new();
    if let Some(t) = trunks {
        for part in t.split(':') {
            let v = vid(part, "trunk", s)?;
            if list.contains(&v) {
                return Err(format!("bridge {s:?}: trunk {v} is given twice"));
            }
            list.push(v);
        }
    }
    Ok(BridgeSpec {
        bridge: bridge.to_string(),
        vlans: BridgeVlans { tag, trunks: list },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, Option<u16>, Vec<u16>) {
        let b = parse(s).unwrap();
        (b.bridge, b.vlans.tag, b.vlans.trunks)
    }

    #[test]
    fn the_stock_forms() {
        assert_eq!(ok("ovsbr0"), ("ovsbr0".into(), None, vec![]));
        assert_eq!(ok("ovsbr0.10"), ("ovsbr0".into(), Some(10), vec![]));
        assert_eq!(ok("ovsbr0:20"), ("ovsbr0".into(), None, vec![20]));
        assert_eq!(
            ok("ovsbr0.10:20:30"),
            ("ovsbr0".into(), Some(10), vec![20, 30])
        );
        assert_eq!(ok("br-int.0"), ("br-int".into(), Some(0), vec![]));
        assert_eq!(ok("b.4095:4095"), ("b".into(), Some(4095), vec![4095]));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            ".10",
            ":20",
            "br.",
            "br.x",
            "br.10.20",
            "br:",
            "br:20:",
            "br::20",
            "br:20.30",
            "br.-1",
            "br.+1",
            "br. 1",
            "br.4096",
            "br:99999",
            "br:1:1",
            "br.10:20:x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = parse("ovsbr0.x").unwrap_err();
        assert!(e.contains("tag \"x\" is not a number"), "{e}");
        let e = parse("ovsbr0:5000").unwrap_err();
        assert!(e.contains("trunk 5000 is outside 0..4095"), "{e}");
    }
}
