//! `rcpt user=U ip=IP rcpt=ADDRESS [sender=]`
//!
//! An authenticated RCPT TO, sent from the RCPT ACL: the unit of the recipient ceiling.

use std::net::IpAddr;

use super::{Fields, ProtocolError};

/// An authenticated RCPT command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    /// The authenticated account.
    pub user: String,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The recipient address.
    pub rcpt: String,
    /// The envelope sender.
    pub sender: Option<String>,
}

impl Rcpt {
    pub(super) fn parse(f: &Fields<'_, '_>) -> Result<Self, ProtocolError> {
        Ok(Rcpt {
            user: f.user()?,
            ip: f.ip()?,
            rcpt: f.required_text("rcpt")?,
            sender: f.text("sender")?,
        })
    }
}
