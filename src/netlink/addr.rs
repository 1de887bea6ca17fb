//! Address operations.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};

use super::socket::{Netlink, Result};

/// One address on one link, with what is needed to put it back exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub scope: u8,
    /// IFA_F_* flags (secondary, noprefixroute, ...).
    pub flags: u32,
    pub label: Option<String>,
    pub broadcast: Option<Ipv4Addr>,
}

impl Address {
    pub fn new(index: u32, ip: IpAddr, prefix_len: u8) -> Address {
        Address {
            index,
            ip,
            prefix_len,
            scope: 0,
            flags: 0,
            label: None,
            broadcast: None,
        }
    }

    pub fn is_secondary(&self) -> bool {
        self.flags & AddressFlags::Secondary.bits() != 0
    }

    /// Link-local IPv6 addresses come and go with the link; nobody configures them.
    pub fn is_ipv6_link_local(&self) -> bool {
        crate::addr::is_ipv6_link_local(&self.ip)
    }

    fn message(&self) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family_of(&self.ip);
        m.header.prefix_len = self.prefix_len;
        m.header.index = self.index;
        m.header.scope = AddressScope::from(self.scope);
        m.attributes.push(AddressAttribute::Address(self.ip));
        if self.ip.is_ipv4() {
            m.attributes.push(AddressAttribute::Local(self.ip));
        }
        m
    }
}

pub(super) fn family_of(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

impl Netlink {
    /// Addresses of one link (`Some(index)`) or of all links.
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<Address>> {
        let mut m = AddressMessage::default();
        if let Some(i) = index {
            m.header.index = i;
        }
        let mut out = Vec::new();
        for msg in self.dump(Rt::GetAddress(m))? {
            let Rt::NewAddress(a) = msg else { continue };
            if index.is_some_and(|i| i != a.header.index) {
                continue;
            }
            let mut addr = None;
            let mut local = None;
            let mut flags = u32::from(a.header.flags.bits());
            let mut label = None;
            let mut broadcast = None;
            for attr in a.attributes {
                match attr {
                    AddressAttribute::Address(ip) => addr = Some(ip),
                    AddressAttribute::Local(ip) => local = Some(ip),
                    AddressAttribute::Flags(f) => flags = f.bits(),
                    AddressAttribute::Label(l) => label = Some(l),
                    AddressAttribute::Broadcast(b) => broadcast = Some(b),
                    _ => {}
                }
            }
            // For IPv4 the local address is IFA_LOCAL; IFA_ADDRESS is the peer on point-to-point.
            let Some(ip) = local.or(addr) else { continue };
            out.push(Address {
                index: a.header.index,
                ip,
                prefix_len: a.header.prefix_len,
                scope: a.header.scope.into(),
                flags,
                label,
                broadcast,
            });
        }
        Ok(out)
    }

    pub fn add_address(&mut self, a: &Address) -> Result<()> {
        let mut m = a.message();
        if let Some(l) = &a.label {
            m.attributes.push(AddressAttribute::Label(l.clone()));
        }
        if let Some(b) = a.broadcast {
            m.attributes.push(AddressAttribute::Broadcast(b));
        }
        // Secondary is the kernel's decision (by order), not something to ask for.
        let wanted = a.flags & !AddressFlags::Secondary.bits();
        if wanted != 0 {
            m.header.flags = AddressHeaderFlags::from_bits_truncate(wanted as u8);
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                    wanted,
                )));
        }
        self.request(Rt::NewAddress(m), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn del_address(&mut self, a: &Address) -> Result<()> {
        self.request(Rt::DelAddress(a.message()), 0)
    }
}
