//! `connect ip=IP [helo= port=]`
//!
//! An unauthenticated check at connection time (blocked addresses, lists).

use std::net::IpAddr;

use super::{Fields, ProtocolError};

/// A new SMTP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The HELO name, when known.
    pub helo: Option<String>,
    /// The client's source port.
    pub port: Option<u64>,
}

impl Connect {
    pub(super) fn parse(f: &Fields<'_, '_>) -> Result<Self, ProtocolError> {
        Ok(Connect {
            ip: f.ip()?,
            helo: f.text("helo")?,
            port: f.number("port")?,
        })
    }
}
