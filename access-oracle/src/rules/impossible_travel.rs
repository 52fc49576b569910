//! Impossible travel: two successful logins of one account whose distance, less both
//! databases' accuracy radii, could not be covered in the time between them at
//! `max_speed_kmh` (a passenger jet: 900 km/h). Pairs inside one ASN listed in
//! `ignore_asns` (a mobile carrier or VPN that exits far from its users) are ignored.
//! Needs a City GeoIP database (coordinates). Default: high severity, alert only.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::response::{Action, Scope, response_settings, validate_range};
use super::{LoginOk, Rule, Severity, Trip};
use crate::enrich::{GeoInfo, Location};
use crate::problems::Problems;
use crate::track::Secs;
use crate::track::baseline::LoginPlace;

/// `[rules.impossible_travel]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImpossibleTravel {
    /// `enforce` (default) or `observe`: alert with what would have been done and
    /// refuse nothing (`[responses] mode = "observe"` does so for every rule).
    pub mode: crate::rules::Mode,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The alert's severity.
    pub severity: Severity,
    /// The fastest plausible travel, km/h.
    pub max_speed_kmh: f64,
    /// Distances up to this (after the accuracy radii) are never impossible, km.
    pub min_distance_km: f64,
    /// ASNs whose addresses do not say where the user is (mobile carriers, VPNs): a pair
    /// of logins inside one of them is ignored.
    pub ignore_asns: Vec<u32>,
    /// What to do: `alert`, `defer`, `deny`, `hold_account` or `block_ip`.
    pub response: Action,
    /// How long the response lasts, in seconds.
    pub response_secs: u64,
    /// What the client sees while the response is in force.
    pub message: String,
}

impl Default for ImpossibleTravel {
    fn default() -> Self {
        ImpossibleTravel {
            mode: crate::rules::Mode::Enforce,
            enabled: true,
            severity: Severity::High,
            max_speed_kmh: 900.0,
            min_distance_km: 200.0,
            ignore_asns: Vec::new(),
            response: Action::Alert,
            response_secs: 3600,
            message: "login from an unusual location, contact support".into(),
        }
    }
}

/// Two located logins compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Leg {
    /// Distance between the two points, km.
    pub distance_km: f64,
    /// The distance less both accuracy radii, km (at least 0).
    pub effective_km: f64,
    /// Seconds between the logins.
    pub secs: Secs,
    /// Effective distance over time, km/h (infinite for simultaneous logins).
    pub speed_kmh: f64,
}

/// Compares the previous located login with the current one; `None` when the current
/// address has no coordinates.
pub fn leg(prev: &LoginPlace, geo: &GeoInfo, now: Secs) -> Option<Leg> {
    let loc = geo.location?;
    let from = Location {
        lat: f64::from(prev.lat),
        lon: f64::from(prev.lon),
        accuracy_radius_km: Some(prev.accuracy_km),
    };
    let distance_km = from.distance_km(&loc);
    let slack = f64::from(prev.accuracy_km) + f64::from(loc.accuracy_radius_km.unwrap_or(0));
    let effective_km = (distance_km - slack).max(0.0);
    let secs = (now - prev.time).abs();
    let speed_kmh = if secs == 0 {
        if effective_km > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    } else {
        effective_km * 3600.0 / secs as f64
    };
    Some(Leg {
        distance_km,
        effective_km,
        secs,
        speed_kmh,
    })
}

/// The leg from the account's previous located login to this one, unless there is none,
/// this address has no coordinates, or both logins are inside one ASN of `ignore_asns`
/// (its addresses do not say where the user is). Shared by the travel rules.
pub(crate) fn comparable_leg<'p>(
    prev: Option<&'p LoginPlace>,
    geo: &GeoInfo,
    now: Secs,
    ignore_asns: &[u32],
) -> Option<(&'p LoginPlace, Leg)> {
    let prev = prev?;
    if same_listed_asn(ignore_asns, prev, geo) {
        return None;
    }
    Some((prev, leg(prev, geo, now)?))
}

/// Whether both logins are inside one of `asns`.
fn same_listed_asn(asns: &[u32], prev: &LoginPlace, geo: &GeoInfo) -> bool {
    matches!((prev.asn, geo.asn), (Some(a), Some(b)) if a == b && asns.contains(&a))
}

/// Describes the previous place for a summary.
pub(crate) fn place(country: Option<String>, ip: IpAddr) -> String {
    match country {
        Some(c) => format!("{c} ({ip})"),
        None => ip.to_string(),
    }
}

impl ImpossibleTravel {
    /// The rule's name in config and alerts.
    pub const NAME: &'static str = "impossible_travel";

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
        if leg.effective_km <= self.min_distance_km || leg.speed_kmh <= self.max_speed_kmh {
            return None;
        }
        let speed = if leg.speed_kmh.is_finite() {
            format!("{:.0} km/h", leg.speed_kmh)
        } else {
            "at the same moment".to_string()
        };
        let from = place(prev.country.map(|c| c.to_string()), prev.ip);
        let to = place(geo.country.map(|c| c.to_string()), ip);
        Some(self.settings().trip(
            self.severity,
            now,
            (
                leg.speed_kmh.min(u64::MAX as f64) as u64,
                self.max_speed_kmh as u64,
                leg.secs.max(0) as u64,
            ),
            format!(
                "account {user} logged in from {to} {} after {from}: {:.0} km, {speed}",
                crate::time::human_secs(leg.secs.max(0) as u64),
                leg.distance_km
            ),
            json!({
                "speed_kmh": leg.speed_kmh.is_finite().then_some(leg.speed_kmh.round()),
                "distance_km": leg.distance_km.round(),
                "effective_km": leg.effective_km.round(),
                "secs": leg.secs,
                "max_speed_kmh": self.max_speed_kmh,
                "previous": { "ip": prev.ip, "country": prev.country.map(|c| c.to_string()),
                              "time": crate::time::rfc3339(prev.time), "asn": prev.asn },
                "current": { "ip": ip, "country": geo.country.map(|c| c.to_string()),
                             "city": geo.city.as_deref(), "asn": geo.asn },
            }),
        ))
    }
}

impl Rule for ImpossibleTravel {
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
            "max_speed_kmh",
            self.max_speed_kmh,
            1.0,
            100_000.0,
        );
        validate_range(
            problems,
            Self::NAME,
            "min_distance_km",
            self.min_distance_km,
            0.0,
            20_000.0,
        );
        self.settings().validate(problems);
    }

    fn login_ok(&self, l: &LoginOk<'_>, _: &[Trip], _: &mut ()) -> Option<Trip> {
        self.check(l.baseline.last_place.as_ref(), l.ip, l.geo, l.user, l.now)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::enrich::CountryCode;

    pub(crate) fn berlin_at(time: Secs) -> LoginPlace {
        LoginPlace {
            time,
            ip: "192.0.2.10".parse().unwrap(),
            country: Some(CountryCode(*b"DE")),
            lat: 52.52,
            lon: 13.405,
            accuracy_km: 20,
            asn: Some(64500),
        }
    }

    pub(crate) fn new_york() -> GeoInfo {
        GeoInfo {
            country: Some(CountryCode(*b"US")),
            location: Some(Location {
                lat: 40.7128,
                lon: -74.006,
                accuracy_radius_km: Some(20),
            }),
            asn: Some(64501),
            ..GeoInfo::default()
        }
    }

    #[test]
    fn berlin_to_new_york_in_ten_minutes_is_impossible() {
        let rule = ImpossibleTravel::default();
        let ip = "198.51.100.7".parse().unwrap();
        let trip = rule
            .check(Some(&berlin_at(0)), ip, &new_york(), "alice", 600)
            .expect("fires");
        assert!(trip.count > 30_000, "{trip:?}");
        let summary = trip.summary.unwrap();
        assert!(
            summary.starts_with(
                "account alice logged in from US (198.51.100.7) 10 min after DE (192.0.2.10): 63"
            ),
            "{summary}"
        );
    }

    #[test]
    fn twenty_hours_later_is_possible() {
        let rule = ImpossibleTravel::default();
        let ip = "198.51.100.7".parse().unwrap();
        assert!(
            rule.check(Some(&berlin_at(0)), ip, &new_york(), "alice", 20 * 3600)
                .is_none()
        );
    }

    #[test]
    fn listed_asns_and_short_hops_are_ignored() {
        let ip = "198.51.100.7".parse().unwrap();
        let mut prev = berlin_at(0);
        prev.asn = Some(64501);
        let rule = ImpossibleTravel {
            ignore_asns: vec![64501],
            ..ImpossibleTravel::default()
        };
        assert!(
            rule.check(Some(&prev), ip, &new_york(), "alice", 60)
                .is_none()
        );
        // Berlin to Potsdam (~27 km) at once: inside the accuracy radii.
        let potsdam = GeoInfo {
            location: Some(Location {
                lat: 52.39,
                lon: 13.06,
                accuracy_radius_km: Some(20),
            }),
            ..GeoInfo::default()
        };
        assert!(
            ImpossibleTravel::default()
                .check(Some(&berlin_at(0)), ip, &potsdam, "alice", 0)
                .is_none()
        );
    }
}
