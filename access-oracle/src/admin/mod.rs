//! The admin protocol: one JSON object per line each way over the admin socket.
//!
//! Request: `{"cmd":"status"}`, `{"cmd":"account","user":"alice"}` (add
//! `"baseline":true` for what is normal for the account),
//! `{"cmd":"alerts","limit":50}`, `{"cmd":"release","user":"alice"}`,
//! `{"cmd":"unblock","ip":"192.0.2.7"}` (or a network, `"192.0.2.0/24"`),
//! `{"cmd":"hold","user":"alice","for_secs":3600,"reason":"..."}`,
//! `{"cmd":"block","ip":"198.51.100.0/24","for_secs":86400,"reason":"..."}`,
//! `{"cmd":"holds"}`. Response: `{"ok":true,"data":{...}}` or
//! `{"ok":false,"error":"..."}`; `data` is the request's typed view ([`views`]). Roles come from the peer's Unix credentials: an admin
//! may read and change, an auditor may only read; anyone else is refused and logged.

pub mod ctl;
pub mod views;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An address or a network, as `192.0.2.7`, `2001:db8::1` or `198.51.100.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Net(pub IpNet);

impl TryFrom<String> for Net {
    type Error = String;
    fn try_from(s: String) -> Result<Net, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Net(IpNet::from(crate::net::canonical_ip(ip))));
        }
        s.parse::<IpNet>().map(|n| Net(n.trunc())).map_err(|_| {
            format!(
                "{:?} is neither an address nor a network (192.0.2.7, 2001:db8::/64)",
                crate::text::escape_controls(s)
            )
        })
    }
}

impl From<Net> for String {
    fn from(n: Net) -> String {
        views::net_text(&n.0)
    }
}

/// How long a `hold` or `block` lasts when `--for` is not given, in seconds.
pub const DEFAULT_FOR_SECS: u64 = 3600;

/// The longest `--for`, in seconds (a year).
pub const MAX_FOR_SECS: u64 = 365 * 86_400;

/// One admin request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Counters, holds and blocks in force.
    Status,
    /// What is known about one account.
    Account {
        /// The account.
        user: String,
        /// Explain the account's baseline instead of its live state.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        baseline: bool,
    },
    /// The most recent alerts.
    Alerts {
        /// How many, newest last.
        #[serde(default = "default_limit")]
        limit: usize,
    },
    /// End an account's hold.
    Release {
        /// The account.
        user: String,
    },
    /// Lift the blocks on an address (and the network block covering it) or inside a
    /// network.
    Unblock {
        /// The address or network.
        ip: Net,
    },
    /// Hold an account on every source.
    Hold {
        /// The account.
        user: String,
        /// For how long, in seconds (default an hour).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_secs: Option<u64>,
        /// Why, for the audit trail and `ctl holds`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Block an address (an IPv6 address: its network) or a network.
    Block {
        /// The address or network.
        ip: Net,
        /// For how long, in seconds (default an hour).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_secs: Option<u64>,
        /// Why, for the audit trail and `ctl holds`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Every hold and block in force, with why, by whom, since and until.
    Holds,
}

fn default_limit() -> usize {
    50
}

/// What a peer may do on the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May read.
    Auditor,
    /// May read and change.
    Admin,
}

impl AdminRequest {
    /// The least role that may make this request.
    pub fn required_role(&self) -> Role {
        match self {
            AdminRequest::Status
            | AdminRequest::Account { .. }
            | AdminRequest::Alerts { .. }
            | AdminRequest::Holds => Role::Auditor,
            AdminRequest::Release { .. }
            | AdminRequest::Unblock { .. }
            | AdminRequest::Hold { .. }
            | AdminRequest::Block { .. } => Role::Admin,
        }
    }

    /// The request's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            AdminRequest::Status => "status",
            AdminRequest::Account { .. } => "account",
            AdminRequest::Alerts { .. } => "alerts",
            AdminRequest::Release { .. } => "release",
            AdminRequest::Unblock { .. } => "unblock",
            AdminRequest::Hold { .. } => "hold",
            AdminRequest::Block { .. } => "block",
            AdminRequest::Holds => "holds",
        }
    }

    /// Why the request cannot be carried out as asked, if so: a `for_secs` of 0 or
    /// beyond a year (`ctl` checks its `--for`; a script writing the JSON may not).
    pub fn problem(&self) -> Option<String> {
        match self {
            AdminRequest::Hold {
                for_secs: Some(s), ..
            }
            | AdminRequest::Block {
                for_secs: Some(s), ..
            } if *s == 0 || *s > MAX_FOR_SECS => Some(format!(
                "{}: for_secs must be between 1 and {MAX_FOR_SECS} (a year), got {s}",
                self.name()
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r: AdminRequest = serde_json::from_str(r#"{"cmd":"release","user":"a"}"#).unwrap();
        assert_eq!(r, AdminRequest::Release { user: "a".into() });
        assert_eq!(r.required_role(), Role::Admin);
        let r: AdminRequest = serde_json::from_str(r#"{"cmd":"alerts"}"#).unwrap();
        assert_eq!(r, AdminRequest::Alerts { limit: 50 });
        assert_eq!(r.required_role(), Role::Auditor);
        assert!(serde_json::from_str::<AdminRequest>(r#"{"cmd":"drop_tables"}"#).is_err());
    }
}
