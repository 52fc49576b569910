//! `login user=U ip=IP result=ok|fail protocol=P [session= mech= pwhash= client= port= local_port= tls= disabled=]`
//!
//! A login at another service (IMAP, POP3, ...): it shares the account's counters with
//! SMTP AUTH, so failures add up across protocols and a hold applies to all of them.

use std::net::IpAddr;

use super::{Fields, Outcome, ProtocolError};

/// A login at a non-SMTP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The account name.
    pub user: String,
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The local outcome.
    pub result: Outcome,
    /// The service: `imap`, `pop3`, `submission`, `sieve`, ...
    pub protocol: String,
    /// The service's session id.
    pub session: Option<String>,
    /// The SASL mechanism.
    pub mech: Option<String>,
    /// Keyed, truncated hash of the password, to count repeats once.
    pub pwhash: Option<u64>,
    /// The client's name (IMAP ID name, ...), for the account's baseline.
    pub client: Option<String>,
    /// The client's source port; absent when it is not a port number.
    pub port: Option<u16>,
    /// The server port the client connected to (993, 995, ...).
    pub local_port: Option<u16>,
    /// The TLS cipher, or `1` / `yes` for TLS without a name; empty or `0` for none.
    pub tls: Option<String>,
    /// `disabled=1`: the caller knows the account is disabled.
    pub disabled: bool,
}

impl Login {
    pub(super) fn parse(f: &Fields<'_, '_>) -> Result<Self, ProtocolError> {
        Ok(Login {
            user: f.user()?,
            ip: f.ip()?,
            result: f.outcome()?,
            protocol: f.required_text("protocol")?,
            session: f.text("session")?,
            mech: f.text("mech")?,
            pwhash: f.pwhash()?,
            client: f.text("client")?,
            port: f.port("port"),
            local_port: f.port("local_port"),
            tls: f.text("tls")?,
            disabled: f.flag("disabled")?,
        })
    }
}
