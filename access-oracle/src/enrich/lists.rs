//! Block and allow lists (placeholder).
use std::net::IpAddr;
use std::sync::Arc;

/// A block-list match.
#[derive(Debug, Clone)]
pub struct ListHit {
    /// File name.
    pub list: Arc<str>,
    /// Network.
    pub network: ipnet::IpNet,
    /// Comment.
    pub comment: Option<Arc<str>>,
}

/// Lists.
pub struct IpLists;

impl IpLists {
    /// None.
    pub fn empty() -> IpLists {
        IpLists
    }
    /// Allowed.
    pub fn allowed(&self, _ip: IpAddr) -> bool {
        false
    }
    /// Blocked.
    pub fn blocked(&self, _ip: IpAddr) -> Option<ListHit> {
        None
    }
}
