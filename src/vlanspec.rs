//! libxl's `vlan` key (xl-network-configuration(5)): terms separated by '/'; a term is `N`,
//! `Np` (PVID, implies untagged), `Nu` (untagged), `N1-N2[u]` or `N+OFFxCOUNT[u]`.
//! Exactly one PVID; a single ID without suffix is the PVID. When no term is marked `p` and
//! exactly one term is a single ID (`5u/7-9`), that ID is the PVID: a port needs one for
//! untagged ingress, and there is no other reading.

use crate::netlink::PortVlan;

const MIN_VID: u32 = 1;
const MAX_VID: u32 = 4094;

/// A VLAN id as every place that takes one writes it: decimal digits only, 1..=4094.
pub fn parse_vid(s: &str) -> Option<u16> {
    s.parse::<u16>()
        .ok()
        .filter(|v| (MIN_VID..=MAX_VID).contains(&u32::from(*v)))
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
}

fn vid(s: &str, term: &str) -> Result<u32, String> {
    match parse_vid(s) {
        Some(v) => Ok(u32::from(v)),
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "VLAN term {term:?}: {s} is outside {MIN_VID}..{MAX_VID}"
        )),
        None => Err(format!("VLAN term {term:?}: {s:?} is not a number")),
    }
}

/// Parse a `vlan` value into the port's VLAN table, sorted by VLAN id.
pub fn parse(spec: &str) -> Result<Vec<PortVlan>, String> {
    if spec.len() > 4096 {
        return Err("VLAN specification is longer than 4096 bytes".into());
    }
    let terms: Vec<&str> = spec.split('/').collect();
    let mut out: Vec<PortVlan> = Vec::new();
    let mut singles: Vec<u16> = Vec::new();
    let mut add = |v: u32, pvid: bool, untagged: bool, term: &str| -> Result<(), String> {
        if out.iter().any(|p| u32::from(p.vid) == v) {
            return Err(format!("VLAN term {term:?}: VLAN {v} is given twice"));
        }
        out.push(PortVlan {
            vid: v as u16,
            pvid,
            untagged,
        });
        Ok(())
    };
    for term in &terms {
        if term.is_empty() {
            return Err(format!("VLAN specification {spec:?} has an empty term"));
        }
        let (body, suffix) = match term.as_bytes()[term.len() - 1] {
            b'p' => (&term[..term.len() - 1], Some('p')),
            b'u' => (&term[..term.len() - 1], Some('u')),
            _ => (&term[..], None),
        };
        if let Some((first, rest)) = body.split_once('+') {
            if suffix == Some('p') {
                return Err(format!("VLAN term {term:?}: a sequence cannot be the PVID"));
            }
            let (off, count) = rest
                .split_once('x')
                .ok_or_else(|| format!("VLAN term {term:?}: expected N+OFFxCOUNT"))?;
            let start = vid(first, term)?;
            let off: u32 = off
                .parse()
                .ok()
                .filter(|o| *o > 0 && off.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("VLAN term {term:?}: offset {off:?} is not a positive number")
                })?;
            let count: u32 = count
                .parse()
                .ok()
                .filter(|c| *c > 0 && count.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("VLAN term {term:?}: count {count:?} is not a positive number")
                })?;
            // COUNT more after the first: N, N+OFF, ..., N+OFF*COUNT.
            let last = u64::from(start) + u64::from(off) * u64::from(count);
            if last > u64::from(MAX_VID) {
                return Err(format!(
                    "VLAN term {term:?}: the sequence goes past {MAX_VID}"
                ));
            }
            for i in 0..=count {
                add(start + off * i, false, suffix == Some('u'), term)?;
            }
        } else if let Some((a, b)) = body.split_once('-') {
            if suffix == Some('p') {
                return Err(format!("VLAN term {term:?}: a range cannot be the PVID"));
            }
            let (a, b) = (vid(a, term)?, vid(b, term)?);
            if a > b {
                return Err(format!("VLAN term {term:?}: the range is backwards"));
            }
            for v in a..=b {
                add(v, false, suffix == Some('u'), term)?;
            }
        } else {
            let v = vid(body, term)?;
            let pvid = suffix == Some('p');
            add(v, pvid, pvid || suffix == Some('u'), term)?;
            singles.push(v as u16);
        }
    }
    match out.iter().filter(|p| p.pvid).count() {
        1 => {}
        0 if singles.len() == 1 => {
            for p in out.iter_mut().filter(|p| p.vid == singles[0]) {
                p.pvid = true;
                p.untagged = true;
            }
        }
        0 => {
            return Err(format!(
                "VLAN specification {spec:?} has no PVID (mark one VLAN with 'p')"
            ));
        }
        _ => {
            return Err(format!(
                "VLAN specification {spec:?} has more than one PVID"
            ));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(vid: u16, pvid: bool, untagged: bool) -> PortVlan {
        PortVlan {
            vid,
            pvid,
            untagged,
        }
    }

    #[test]
    fn single_id_is_the_pvid() {
        assert_eq!(parse("10").unwrap(), vec![v(10, true, true)]);
    }

    #[test]
    fn pvid_and_tagged() {
        assert_eq!(
            parse("10p/20").unwrap(),
            vec![v(10, true, true), v(20, false, false)]
        );
    }

    #[test]
    fn sequence() {
        let got: Vec<u16> = parse("10p/100+10x4")
            .unwrap()
            .iter()
            .map(|p| p.vid)
            .collect();
        assert_eq!(got, vec![10, 100, 110, 120, 130, 140]);
    }

    #[test]
    fn untagged_range() {
        assert_eq!(
            parse("5p/7-9u").unwrap(),
            vec![
                v(5, true, true),
                v(7, false, true),
                v(8, false, true),
                v(9, false, true)
            ]
        );
        // No 'p' anywhere: the one single ID is the PVID.
        assert_eq!(
            parse("5u/7-9").unwrap(),
            vec![
                v(5, true, true),
                v(7, false, false),
                v(8, false, false),
                v(9, false, false)
            ]
        );
    }

    #[test]
    fn bad_terms_are_named() {
        for (spec, needle) in [
            ("", "empty term"),
            ("10//20", "empty term"),
            ("0", "outside"),
            ("4095", "outside"),
            ("abc", "not a number"),
            ("10p/20p", "more than one PVID"),
            ("10/20", "no PVID"),
            ("10p/9-3", "backwards"),
            ("10p/4000+100x2", "goes past"),
            ("10p/10", "twice"),
            ("10p/5+0x3", "offset"),
            ("10p/5+1x0", "count"),
            ("1-5p", "range cannot"),
            ("+10", "expected N+OFFxCOUNT"),
            ("10p/-5", "not a number"),
            ("10x", "not a number"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(needle), "{spec:?}: {e}");
        }
    }
}
