//! `data user=U ip=IP [rcpts=N size=BYTES msgid=ID]`
//!
//! A message accepted for an account, sent from the DATA ACL.

use std::net::IpAddr;

use super::{Fields, ProtocolError};

/// A message an account is sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The authenticated account.
    pub user: String,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// How many recipients the message has.
    pub rcpts: Option<u64>,
    /// The message size in bytes.
    pub size: Option<u64>,
    /// Exim's message id.
    pub msgid: Option<String>,
}

impl Data {
    pub(super) fn parse(f: &Fields<'_, '_>) -> Result<Self, ProtocolError> {
        Ok(Data {
            user: f.user()?,
            ip: f.ip()?,
            rcpts: f.number("rcpts")?,
            size: f.number("size")?,
            msgid: f.text("msgid")?,
        })
    }
}
