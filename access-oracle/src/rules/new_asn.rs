//! New ASN: a successful login from a network operator (autonomous system) the account
//! has never used, once the account has finished learning. Needs an ASN database.
//! Default: low severity (people change providers and roam), alert only.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::response::{Action, Scope, response_settings};
use super::{LoginOk, Rule, Severity, Trip};
use crate::enrich::GeoInfo;
use crate::problems::Problems;
use crate::track::Secs;
use crate::track::baseline::{Baseline, BaselineConfig};

/// `[rules.new_asn]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewAsn {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// What to do: `alert`, `defer`, `deny`, `hold_account` or `block_ip`.
    pub response: Action,
    /// How long the response lasts, in seconds.
    pub response_secs: u64,
    /// What the client sees while the response is in force.
    pub message: String,
}

impl Default for NewAsn {
    fn default() -> Self {
        NewAsn {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::Low,
            response: Action::Alert,
            response_secs: 3600,
            message: "login from an unusual network, contact support".into(),
        }
    }
}

impl NewAsn {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "new_asn";

    response_settings!(Scope::Account);

    /// Checks a successful login against the account's baseline (before it learns it).
    pub fn check(
        &self,
        baseline: &Baseline,
        config: &BaselineConfig,
        geo: &GeoInfo,
        user: &str,
        now: Secs,
    ) -> Option<Trip> {
        let asn = geo.asn?;
        if !self.enabled || baseline.learning(config, now) || baseline.knows_asn(asn) {
            return None;
        }
        let known: Vec<u32> = baseline.asns.iter().map(|s| s.key).collect();
        let org = geo
            .as_org
            .as_deref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        Some(self.settings().trip(
            self.severity,
            now,
            (1, 1, 0),
            format!(
                "account {user} logged in from a new network: AS{asn}{org}; known: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known
                        .iter()
                        .map(|a| format!("AS{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            json!({ "asn": asn, "as_org": geo.as_org.as_deref(), "known_asns": known }),
        ))
    }
}

impl Rule for NewAsn {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = ();
    type IpSlot = ();

    fn validate(&self, problems: &mut Problems) {
        self.settings().validate(problems);
    }

    fn login_ok(&self, l: &LoginOk<'_>, _: &[Trip], _: &mut ()) -> Option<Trip> {
        self.check(l.baseline, l.config, l.geo, l.user, l.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_on_a_new_asn_after_learning() {
        let config = BaselineConfig {
            learning_secs: 0,
            learning_logins: 1,
            ..BaselineConfig::default()
        };
        let rule = NewAsn::default();
        let mut b = Baseline::new(0);
        let geo = |asn| GeoInfo {
            asn: Some(asn),
            ..GeoInfo::default()
        };
        b.learn_login(10, None, &geo(64500), None);
        assert!(rule.check(&b, &config, &geo(64500), "bob", 20).is_none());
        let trip = rule
            .check(&b, &config, &geo(64501), "bob", 20)
            .expect("new asn");
        assert_eq!(
            trip.summary.as_deref(),
            Some("account bob logged in from a new network: AS64501; known: AS64500")
        );
    }
}
