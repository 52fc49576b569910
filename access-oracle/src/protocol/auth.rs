//! `auth user=U ip=IP result=ok|fail [mech= authenticator= port= local_port= helo= tls= pwhash= disabled=]`
//!
//! An SMTP AUTH attempt and its local outcome, sent from a `plaintext` authenticator's
//! `server_condition` (through the library's `auth` function) or from an ACL.

use std::net::IpAddr;

use super::{Fields, Outcome, ProtocolError};

/// An SMTP authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The account name as the client gave it.
    pub user: String,
    /// The client's address; `None` for local submissions.
    pub ip: Option<IpAddr>,
    /// The local outcome: was the password right.
    pub result: Outcome,
    /// The SASL mechanism (`PLAIN`, `LOGIN`, ...).
    pub mech: Option<String>,
    /// The Exim authenticator's name.
    pub authenticator: Option<String>,
    /// The client's source port (`$sender_host_port`).
    pub port: Option<u64>,
    /// The server port the client connected to (`$received_port`: 25, 465, 587, ...);
    /// absent when it is not a port number.
    pub local_port: Option<u16>,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
    /// The TLS cipher, empty or absent without TLS.
    pub tls: Option<String>,
    /// Keyed, truncated hash of the password (Dovecot's format), to count repeats once.
    pub pwhash: Option<u64>,
    /// `disabled=1`: Exim knows the account is disabled (e.g. from its user database).
    pub disabled: bool,
}

impl Auth {
    pub(super) fn parse(f: &Fields<'_, '_>) -> Result<Self, ProtocolError> {
        Ok(Auth {
            user: f.user()?,
            ip: f.ip()?,
            result: f.outcome()?,
            mech: f.text("mech")?,
            authenticator: f.text("authenticator")?,
            port: f.number("port")?,
            local_port: f.port("local_port"),
            helo: f.text("helo")?,
            tls: f.text("tls")?,
            pwhash: f.pwhash()?,
            disabled: f.flag("disabled")?,
        })
    }
}
