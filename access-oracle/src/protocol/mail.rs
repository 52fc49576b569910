//! `mail user=U ip=IP [sender= size=]`
//!
//! An authenticated MAIL FROM, sent from the MAIL ACL.

use std::net::IpAddr;

use super::{Fields, ProtocolError};

/// An authenticated MAIL command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The authenticated account (`$authenticated_id`).
    pub user: String,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The envelope sender.
    pub sender: Option<String>,
    /// The SIZE the client announced.
    pub size: Option<u64>,
}

impl Mail {
    pub(super) fn parse(f: &Fields<'_, '_>) -> Result<Self, ProtocolError> {
        Ok(Mail {
            user: f.user()?,
            ip: f.ip()?,
            sender: f.text("sender")?,
            size: f.number("size")?,
        })
    }
}
