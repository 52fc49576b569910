//! The admin protocol: one JSON object per line each way over the admin socket.
//!
//! Request: `{"cmd":"status"}`, `{"cmd":"account","user":"alice"}` (add
//! `"baseline":true` for what is normal for the account),
//! `{"cmd":"alerts","limit":50}`, `{"cmd":"release","user":"alice"}`,
//! `{"cmd":"unblock","ip":"192.0.2.7"}`. Response: `{"ok":true,"data":{...}}` or
//! `{"ok":false,"error":"..."}`; `data` is the request's typed view ([`views`]). Roles come from the peer's Unix credentials: an admin
//! may read and change, an auditor may only read; anyone else is refused and logged.

pub mod ctl;
pub mod views;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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
    /// Lift an address's authentication block.
    Unblock {
        /// The address.
        ip: IpAddr,
    },
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
            AdminRequest::Status | AdminRequest::Account { .. } | AdminRequest::Alerts { .. } => {
                Role::Auditor
            }
            AdminRequest::Release { .. } | AdminRequest::Unblock { .. } => Role::Admin,
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
