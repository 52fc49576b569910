//! New country: a successful login from a country the account has never used, once the
//! account has finished learning. Needs a City or Country GeoIP database.
//! Default: medium severity, alert only.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::response::{Action, Scope, response_settings};
use super::{LoginOk, Rule, Severity, Trip};
use crate::enrich::GeoInfo;
use crate::problems::Problems;
use crate::track::Secs;
use crate::track::baseline::{Baseline, BaselineConfig};

/// `[rules.new_country]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NewCountry {
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

impl Default for NewCountry {
    fn default() -> Self {
        NewCountry {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::Medium,
            response: Action::Alert,
            response_secs: 3600,
            message: "login from an unusual location, contact support".into(),
        }
    }
}

impl NewCountry {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "new_country";

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
        let country = geo.country?;
        if !self.enabled || baseline.learning(config, now) || baseline.knows_country(country) {
            return None;
        }
        let known: Vec<String> = baseline
            .countries
            .iter()
            .map(|s| s.key.to_string())
            .collect();
        let place = match &geo.city {
            Some(city) => format!("{country} ({city})"),
            None => country.to_string(),
        };
        Some(self.settings().trip(
            self.severity,
            now,
            (1, 1, 0),
            format!(
                "account {user} logged in from a new country: {place}; known: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ),
            json!({ "country": country.to_string(), "city": geo.city.as_deref(), "known_countries": known }),
        ))
    }
}

impl Rule for NewCountry {
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
    use crate::enrich::CountryCode;

    fn geo(c: &[u8; 2]) -> GeoInfo {
        GeoInfo {
            country: Some(CountryCode(*c)),
            ..GeoInfo::default()
        }
    }

    #[test]
    fn fires_on_a_new_country_after_learning_only() {
        let config = BaselineConfig {
            learning_secs: 100,
            learning_logins: 1,
            ..BaselineConfig::default()
        };
        let rule = NewCountry::default();
        let mut b = Baseline::new(0);
        b.learn_login(10, None, &geo(b"DE"), None);
        assert!(
            rule.check(&b, &config, &geo(b"US"), "alice", 50).is_none(),
            "still learning"
        );
        assert!(
            rule.check(&b, &config, &geo(b"DE"), "alice", 500).is_none(),
            "known country"
        );
        let trip = rule
            .check(&b, &config, &geo(b"US"), "alice", 500)
            .expect("new country");
        assert_eq!(trip.rule, "new_country");
        assert_eq!(trip.response, super::super::Response::Alert);
        assert_eq!(
            trip.summary.as_deref(),
            Some("account alice logged in from a new country: US; known: DE")
        );
        assert!(
            rule.check(&b, &config, &GeoInfo::default(), "alice", 500)
                .is_none(),
            "no country known"
        );
    }
}
