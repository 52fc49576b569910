//! Known-bad address: the source is on a configured block list (`[lists] block`, e.g.
//! Spamhaus DROP). Connections (`connect`) and logins from it are refused while it is
//! listed (`defer` by default, or `deny`; `alert` lets them through), unless the address
//! is on an allow list; one alert per address every `realert_secs`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::disabled_credentials::{Listing, validate_listing};
use super::response::Action;
use super::{Rule, Severity, Trip};
use crate::enrich::ListHit;
use crate::problems::Problems;
use crate::track::Refused;
use crate::track::Secs;

/// `[rules.bad_ip]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BadIp {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// What a listed address gets: `defer` (default), `deny`, or `alert`.
    pub response: Action,
    /// What the client sees.
    pub message: String,
    /// A new alert for the same address at most this often, in seconds.
    pub realert_secs: u64,
}

impl Default for BadIp {
    fn default() -> Self {
        BadIp {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::High,
            response: Action::Defer,
            message: "your address is on a block list".into(),
            realert_secs: 3600,
        }
    }
}

impl BadIp {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "bad_ip";

    /// A request from a listed address at `now`: the refusal and, at most once per
    /// period, the alert.
    pub fn check(
        &self,
        hit: &ListHit,
        alerted_at: &mut Option<Secs>,
        ip: IpAddr,
        what: &str,
        now: Secs,
    ) -> (Option<Refused>, Option<Trip>) {
        let listing = Listing {
            name: Self::NAME,
            enabled: self.enabled,
            severity: self.severity,
            response: self.response,
            message: &self.message,
            realert_secs: self.realert_secs,
        };
        listing.check(alerted_at, now, || {
            let comment = hit
                .comment
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            (
                format!("{what} from {ip}, listed in {} as {}{comment}", hit.list, hit.network),
                json!({ "list": &*hit.list, "network": hit.network.to_string(), "comment": hit.comment.as_deref() }),
            )
        })
    }
}

impl Rule for BadIp {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = ();
    type IpSlot = Option<Secs>;

    fn validate(&self, problems: &mut Problems) {
        validate_listing(
            problems,
            Self::NAME,
            self.response,
            &self.message,
            self.realert_secs,
        );
    }
}
