//! Distant logins: two successful logins of one account at least `min_distance_km`
//! apart (centre to centre) within `window_secs`. It catches what impossible travel lets
//! through because of wide accuracy radii or a generous speed; when impossible travel
//! fires for the same pair, this rule stays quiet. Default: 500 km within 1 hour,
//! medium severity, alert only.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::impossible_travel::ImpossibleTravel;
use super::impossible_travel::{comparable_leg, place};
use super::response::{Action, Scope, response_settings, validate_range};
use super::{LoginOk, Rule, Severity, Trip};
use crate::enrich::GeoInfo;
use crate::problems::Problems;
use crate::track::Secs;
use crate::track::baseline::LoginPlace;

/// `[rules.distant_logins]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistantLogins {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// How far apart the two logins must be, km.
    pub min_distance_km: f64,
    /// How close in time, in seconds.
    pub window_secs: u64,
    /// ASNs whose addresses do not say where the user is: pairs inside one are ignored.
    pub ignore_asns: Vec<u32>,
    /// What to do: `alert`, `defer`, `deny`, `hold_account` or `block_ip`.
    pub response: Action,
    /// How long the response lasts, in seconds.
    pub response_secs: u64,
    /// What the client sees while the response is in force.
    pub message: String,
}

impl Default for DistantLogins {
    fn default() -> Self {
        DistantLogins {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::Medium,
            min_distance_km: 500.0,
            window_secs: 3600,
            ignore_asns: Vec::new(),
            response: Action::Alert,
            response_secs: 3600,
            message: "login from an unusual location, contact support".into(),
        }
    }
}

impl DistantLogins {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "distant_logins";

    response_settings!(Scope::Account);

    /// Checks a successful login from `ip` against the account's previous located one.
    pub fn check(
        &self,
        prev: Option<&LoginPlace>,
        ip: IpAddr,
        geo: &GeoInfo,
        user: &str,
        now: Secs,
    ) -> Option<Trip> {
        if !self.enabled {
            return None;
        }
        let (prev, leg) = comparable_leg(prev, geo, now, &self.ignore_asns)?;
        if leg.distance_km < self.min_distance_km || leg.secs > self.window_secs as Secs {
            return None;
        }
        let from = place(prev.country.map(|c| c.to_string()), prev.ip);
        let to = place(geo.country.map(|c| c.to_string()), ip);
        Some(self.settings().trip(
            self.severity,
            now,
            (leg.distance_km as u64, self.min_distance_km as u64, self.window_secs),
            format!(
                "account {user} logged in from {to} {} after {from}, {:.0} km away",
                crate::time::human_secs(leg.secs.max(0) as u64),
                leg.distance_km
            ),
            json!({
                "distance_km": leg.distance_km.round(),
                "secs": leg.secs,
                "min_distance_km": self.min_distance_km,
                "previous": { "ip": prev.ip, "country": prev.country.map(|c| c.to_string()) },
                "current": { "ip": ip, "country": geo.country.map(|c| c.to_string()), "city": geo.city.as_deref() },
            }),
        ))
    }
}

impl Rule for DistantLogins {
    const NAME: &'static str = Self::NAME;

    fn mode(&self) -> crate::rules::Mode {
        self.mode
    }
    type AccountSlot = ();
    type IpSlot = ();

    fn validate(&self, problems: &mut Problems) {
        validate_range(
            problems,
            Self::NAME,
            "min_distance_km",
            self.min_distance_km,
            1.0,
            20_000.0,
        );
        if self.window_secs == 0 || self.window_secs > 7 * 86_400 {
            problems.add(format!(
                "[rules.{}] window_secs must be between 1 and 604800 (a week), got {}",
                Self::NAME,
                self.window_secs
            ));
        }
        self.settings().validate(problems);
    }

    /// Quiet when impossible travel fired on the same login (it says more).
    fn login_ok(&self, l: &LoginOk<'_>, earlier: &[Trip], _: &mut ()) -> Option<Trip> {
        if earlier.iter().any(|t| t.rule == ImpossibleTravel::NAME) {
            return None;
        }
        self.check(l.baseline.last_place.as_ref(), l.ip, l.geo, l.user, l.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::impossible_travel::tests::{berlin_at, new_york};

    #[test]
    fn fires_within_the_window_only() {
        let rule = DistantLogins::default();
        let ip = "198.51.100.7".parse().unwrap();
        assert!(
            rule.check(Some(&berlin_at(0)), ip, &new_york(), "alice", 3000)
                .is_some()
        );
        assert!(
            rule.check(Some(&berlin_at(0)), ip, &new_york(), "alice", 3700)
                .is_none()
        );
    }
}
