//! Synchronous rtnetlink: a socket layer and one small method per operation.
//! Knows nothing about Xen.

mod addr;
mod link;
mod neigh;
mod route;
mod socket;
mod vlan;

pub use addr::Address;
pub use link::{Link, LinkChange, NewLink, new_link_message};
pub use neigh::Neighbour;
pub use netlink_packet_route::route::{RouteProtocol, RouteScope, RouteType};
pub use route::{RT_TABLE_MAIN, Route};
pub use socket::{Netlink, NetlinkError, is_errno};
pub use vlan::PortVlan;
