//! Per-account baselines: what is normal for an account, learnt from its successful
//! logins and its sending, kept for months and persisted across restarts.
//!
//! A baseline remembers the countries, ASNs, networks (/24 for IPv4, /48 for IPv6) and
//! clients (HELO names, IMAP IDs) an account logged in from, each with when it was first
//! and last seen and how often; its hours of activity (UTC); an hourly moving average of
//! the recipients it sends; and where its last located login was (for the travel
//! rules). Each list is capped; when full, the least recently seen entry makes room.
//!
//! A new account *learns* first: until it has been known for `learning_secs` and has
//! logged in `learning_logins` times, the "new country" and "new ASN" rules stay quiet
//! (everything is new at first). Every method takes `now`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Secs;
use crate::enrich::{CountryCode, GeoInfo};
use crate::problems::Problems;

/// Countries remembered per account.
pub const MAX_COUNTRIES: usize = 16;
/// ASNs remembered per account.
pub const MAX_ASNS: usize = 16;
/// Networks remembered per account.
pub const MAX_NETWORKS: usize = 16;
/// Client names remembered per account.
pub const MAX_CLIENTS: usize = 8;
/// Longest client name kept, in bytes.
pub const MAX_CLIENT_LEN: usize = 64;

/// Weight of the newest hour in the sending average (an exponential moving average).
const RATE_ALPHA: f32 = 0.2;

/// `[baselines]`: how accounts learn what is normal for them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// An account learns for at least this long after it is first seen.
    pub learning_secs: u64,
    /// ... and until it has logged in successfully this many times.
    pub learning_logins: u32,
    /// The sending average is trusted after this many hours in which the account sent.
    pub learning_send_hours: u32,
    /// A baseline not used for this long is forgotten.
    pub retention_secs: u64,
    /// Baselines kept at most; above it the least recently used are forgotten.
    pub max_accounts: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            learning_secs: 14 * 86_400,
            learning_logins: 10,
            learning_send_hours: 24,
            retention_secs: 400 * 86_400,
            max_accounts: 2_000_000,
        }
    }
}

impl BaselineConfig {
    /// Checks the settings.
    pub fn validate(&self, problems: &mut Problems) {
        if self.learning_secs > 366 * 86_400 {
            problems.add(format!(
                "[baselines] learning_secs must be at most 31622400 (366 days), got {}",
                self.learning_secs
            ));
        }
        if self.retention_secs < 86_400 || self.retention_secs < self.learning_secs {
            problems.add(format!(
                "[baselines] retention_secs ({}) must be at least a day and at least learning_secs",
                self.retention_secs
            ));
        }
        if self.max_accounts == 0 {
            problems.add("[baselines] max_accounts must be at least 1");
        }
    }
}

/// Something seen in an account's logins, with when and how often. Times are Unix
/// seconds in 32 bits (until 2106): a million baselines hold many of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen<K> {
    /// What was seen.
    pub key: K,
    /// First time.
    pub first: u32,
    /// Last time.
    pub last: u32,
    /// How many successful logins.
    pub count: u32,
}

/// A time as 32-bit Unix seconds (clamped).
fn secs32(t: Secs) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

impl<K> Seen<K> {
    /// First time, as seconds.
    pub fn first_secs(&self) -> Secs {
        Secs::from(self.first)
    }

    /// Last time, as seconds.
    pub fn last_secs(&self) -> Secs {
        Secs::from(self.last)
    }
}

/// A network an address belongs to: its /24 (IPv4) or /48 (IPv6), packed in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Network(u64);

impl Network {
    /// The network of an address.
    pub fn of(ip: IpAddr) -> Network {
        match ip {
            IpAddr::V4(v4) => Network(u64::from(u32::from(v4) >> 8)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Network::of(IpAddr::V4(v4)),
                None => Network((1 << 63) | (u128::from(v6) >> 80) as u64),
            },
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 & (1 << 63) == 0 {
            let base = std::net::Ipv4Addr::from((self.0 as u32) << 8);
            write!(f, "{base}/24")
        } else {
            let bits = u128::from(self.0 & !(1 << 63)) << 80;
            write!(f, "{}/48", std::net::Ipv6Addr::from(bits))
        }
    }
}

/// Where and when an account last logged in from a located address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginPlace {
    /// When.
    pub time: Secs,
    /// From where.
    pub ip: IpAddr,
    /// Its country.
    pub country: Option<CountryCode>,
    /// Latitude, degrees.
    pub lat: f32,
    /// Longitude, degrees.
    pub lon: f32,
    /// The database's accuracy radius, km (0 when unknown).
    pub accuracy_km: u16,
    /// Its ASN.
    pub asn: Option<u32>,
}

/// Recipients per hour: an exponential moving average over the hours in which the
/// account sent (silent hours do not pull it down), plus the hour in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendRate {
    /// The hour in progress (seconds / 3600).
    pub hour: i64,
    /// Recipients in it so far.
    pub count: u32,
    /// Average recipients per active hour, over completed hours.
    pub average: f32,
    /// Completed hours with sending that went into the average.
    pub hours: u32,
    /// The most recipients in one completed hour.
    pub peak: u32,
}

impl SendRate {
    /// Counts `n` recipients at `now`.
    pub fn record(&mut self, now: Secs, n: u32) {
        let hour = now.div_euclid(3600);
        if hour > self.hour {
            self.close_hour();
            self.hour = hour;
        }
        self.count = self.count.saturating_add(n);
    }

    fn close_hour(&mut self) {
        if self.count == 0 {
            return;
        }
        let c = self.count as f32;
        self.average = if self.hours == 0 {
            c
        } else {
            self.average * (1.0 - RATE_ALPHA) + c * RATE_ALPHA
        };
        self.hours = self.hours.saturating_add(1);
        self.peak = self.peak.max(self.count);
        self.count = 0;
    }
}

/// The sending rate of an account's baseline as the recipient rules read it, kept in the
/// account's live entry so that a recipient touches one map entry: it is copied from
/// the baseline at the first recipient of each hour, and the recipients counted since
/// are handed to the baseline then (or when the entry is swept or a snapshot is
/// written: [`SendCache::flush`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendCache {
    /// The hour (seconds / 3600) the copy was taken in; `None` before the first.
    pub hour: Option<i64>,
    /// The baseline's average recipients per active hour.
    pub average: f32,
    /// Completed hours with sending in that average.
    pub hours: u32,
    /// The most recipients in one completed hour.
    pub peak: u32,
    /// When the baseline first saw the account.
    pub first_seen: Secs,
    /// Recipients counted since the copy, not yet in the baseline.
    pub pending: u32,
    /// When the last of them was counted.
    pub pending_at: Secs,
}

impl SendCache {
    /// Whether the copy is of the hour of `now`.
    pub fn is_current(&self, now: Secs) -> bool {
        self.hour == Some(now.div_euclid(3600))
    }

    /// Hands the pending recipients to `baseline`.
    pub fn flush(&mut self, baseline: &mut Baseline) {
        if self.pending > 0 {
            baseline.learn_rcpts(self.pending_at, self.pending);
            self.pending = 0;
        }
    }

    /// Flushes, closes the baseline's past hour, and copies its rate as of `now`.
    pub fn refresh(&mut self, baseline: &mut Baseline, now: Secs) {
        self.flush(baseline);
        baseline.send.record(now, 0);
        self.hour = Some(now.div_euclid(3600));
        self.average = baseline.send.average;
        self.hours = baseline.send.hours;
        self.peak = baseline.send.peak;
        self.first_seen = baseline.first_seen;
    }

    /// Counts `n` recipients at `now` (to be flushed to the baseline).
    pub fn count(&mut self, n: u32, now: Secs) {
        self.pending = self.pending.saturating_add(n);
        self.pending_at = now;
    }

    /// Whether the average can be trusted ([`Baseline::send_learnt`] on the copy).
    pub fn learnt(&self, config: &BaselineConfig, now: Secs) -> bool {
        self.hours >= config.learning_send_hours
            && now.saturating_sub(self.first_seen) >= config.learning_secs as Secs
    }
}

/// What is normal for one account.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// When the account was first seen.
    pub first_seen: Secs,
    /// When the baseline last learnt something.
    pub last_seen: Secs,
    /// Successful logins learnt.
    pub logins: u32,
    /// Countries of successful logins.
    pub countries: Vec<Seen<CountryCode>>,
    /// ASNs of successful logins.
    pub asns: Vec<Seen<u32>>,
    /// Networks of successful logins.
    pub networks: Vec<Seen<Network>>,
    /// Client names (HELO, IMAP ID).
    pub clients: Vec<Seen<Box<str>>>,
    /// Successful logins per hour of the day (UTC), relative: when one hour reaches 255
    /// every hour is halved, so the shape of the day is kept.
    pub hours: [u8; 24],
    /// Sending rate.
    pub send: SendRate,
    /// The last successful login from a located address.
    pub last_place: Option<LoginPlace>,
}

/// Adds `key` to a capped list, or refreshes it; returns whether it was new.
fn remember<K: PartialEq>(list: &mut Vec<Seen<K>>, key: K, now: Secs, cap: usize) -> bool {
    let now = secs32(now);
    if let Some(s) = list.iter_mut().find(|s| s.key == key) {
        s.last = s.last.max(now);
        s.count = s.count.saturating_add(1);
        return false;
    }
    if list.len() >= cap
        && let Some(oldest) = list
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s.last)
            .map(|(i, _)| i)
    {
        list.swap_remove(oldest);
    }
    list.push(Seen {
        key,
        first: now,
        last: now,
        count: 1,
    });
    // New keys are rare and a million lists add up: keep each exactly its size.
    list.shrink_to_fit();
    true
}

impl Baseline {
    /// A baseline for an account first seen at `now`.
    pub fn new(now: Secs) -> Baseline {
        Baseline {
            first_seen: now,
            last_seen: now,
            ..Baseline::default()
        }
    }

    /// Whether the account is still learning at `now`.
    pub fn learning(&self, config: &BaselineConfig, now: Secs) -> bool {
        self.logins < config.learning_logins
            || now.saturating_sub(self.first_seen) < config.learning_secs as Secs
    }

    /// Whether the sending average can be trusted.
    pub fn send_learnt(&self, config: &BaselineConfig, now: Secs) -> bool {
        self.send.hours >= config.learning_send_hours
            && now.saturating_sub(self.first_seen) >= config.learning_secs as Secs
    }

    /// Whether a country is known.
    pub fn knows_country(&self, c: CountryCode) -> bool {
        self.countries.iter().any(|s| s.key == c)
    }

    /// Whether an ASN is known.
    pub fn knows_asn(&self, asn: u32) -> bool {
        self.asns.iter().any(|s| s.key == asn)
    }

    /// Learns from a successful login at `now`.
    pub fn learn_login(
        &mut self,
        now: Secs,
        ip: Option<IpAddr>,
        geo: &GeoInfo,
        client: Option<&str>,
    ) {
        if self.first_seen == 0 || now < self.first_seen {
            self.first_seen = now;
        }
        self.last_seen = self.last_seen.max(now);
        self.logins = self.logins.saturating_add(1);
        let hour = (now.rem_euclid(86_400) / 3600) as usize;
        if self.hours[hour] == u8::MAX {
            for h in &mut self.hours {
                *h /= 2;
            }
        }
        self.hours[hour] += 1;
        if let Some(c) = geo.country {
            remember(&mut self.countries, c, now, MAX_COUNTRIES);
        }
        if let Some(a) = geo.asn {
            remember(&mut self.asns, a, now, MAX_ASNS);
        }
        if let Some(ip) = ip {
            remember(&mut self.networks, Network::of(ip), now, MAX_NETWORKS);
        }
        if let Some(name) = client.map(str::trim).filter(|n| !n.is_empty()) {
            let mut end = name.len().min(MAX_CLIENT_LEN);
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            let name = &name[..end];
            // Known clients are the rule: refresh without allocating.
            match self.clients.iter_mut().find(|s| &*s.key == name) {
                Some(s) => {
                    s.last = s.last.max(secs32(now));
                    s.count = s.count.saturating_add(1);
                }
                None => {
                    remember(&mut self.clients, Box::from(name), now, MAX_CLIENTS);
                }
            }
        }
        if let (Some(ip), Some(loc)) = (ip, geo.location)
            && self.last_place.as_ref().is_none_or(|p| p.time <= now)
        {
            self.last_place = Some(LoginPlace {
                time: now,
                ip,
                country: geo.country,
                lat: loc.lat as f32,
                lon: loc.lon as f32,
                accuracy_km: loc.accuracy_radius_km.unwrap_or(0),
                asn: geo.asn,
            });
        }
    }

    /// Learns `n` recipients sent at `now`.
    pub fn learn_rcpts(&mut self, now: Secs, n: u32) {
        if self.first_seen == 0 || now < self.first_seen {
            self.first_seen = now;
        }
        self.last_seen = self.last_seen.max(now);
        self.send.record(now, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::Location;

    fn geo(country: &str, asn: u32) -> GeoInfo {
        let b = country.as_bytes();
        GeoInfo {
            country: Some(CountryCode([b[0], b[1]])),
            asn: Some(asn),
            location: Some(Location {
                lat: 52.52,
                lon: 13.405,
                accuracy_radius_km: Some(20),
            }),
            ..GeoInfo::default()
        }
    }

    #[test]
    fn learns_countries_asns_networks_hours_and_clients() {
        let mut b = Baseline::new(1000);
        let ip = "192.0.2.7".parse().ok();
        b.learn_login(3600 * 5 + 10, ip, &geo("DE", 64500), Some("laptop.example"));
        b.learn_login(3600 * 5 + 20, ip, &geo("DE", 64500), Some("laptop.example"));
        assert_eq!(b.logins, 2);
        assert_eq!(b.countries.len(), 1);
        assert_eq!(b.countries[0].count, 2);
        assert!(b.knows_country(CountryCode(*b"DE")));
        assert!(!b.knows_country(CountryCode(*b"US")));
        assert!(b.knows_asn(64500));
        assert_eq!(b.hours[5], 2);
        assert_eq!(b.networks[0].key.to_string(), "192.0.2.0/24");
        assert_eq!(&*b.clients[0].key, "laptop.example");
        assert_eq!(b.last_place.as_ref().unwrap().time, 3600 * 5 + 20);
    }

    #[test]
    fn hours_keep_their_shape_when_full() {
        let mut b = Baseline::new(0);
        for i in 0..300 {
            b.learn_login(3600 * 9 + i, None, &GeoInfo::default(), None);
        }
        b.learn_login(3600 * 17, None, &GeoInfo::default(), None);
        assert!(b.hours[9] > 100 && b.hours[17] == 1, "{:?}", b.hours);
    }

    #[test]
    fn lists_are_capped_dropping_the_least_recent() {
        let mut b = Baseline::new(0);
        for asn in 0..(MAX_ASNS as u32 + 4) {
            b.learn_login(i64::from(asn) + 1, None, &geo("DE", asn), None);
        }
        assert_eq!(b.asns.len(), MAX_ASNS);
        assert!(!b.knows_asn(0));
        assert!(b.knows_asn(MAX_ASNS as u32 + 3));
    }

    #[test]
    fn learning_needs_time_and_logins() {
        let config = BaselineConfig {
            learning_secs: 100,
            learning_logins: 2,
            ..BaselineConfig::default()
        };
        let mut b = Baseline::new(0);
        b.learn_login(10, None, &GeoInfo::default(), None);
        assert!(b.learning(&config, 200), "one login is not enough");
        b.learn_login(20, None, &GeoInfo::default(), None);
        assert!(b.learning(&config, 50), "not long enough");
        assert!(!b.learning(&config, 200));
    }

    #[test]
    fn send_rate_averages_active_hours() {
        let mut s = SendRate::default();
        s.record(0, 10);
        s.record(3600 * 5, 20); // hours 1-4 silent: not averaged
        s.record(3600 * 6, 1);
        assert_eq!(s.hours, 2);
        assert!((s.average - (10.0 * 0.8 + 20.0 * 0.2)).abs() < 1e-3);
        assert_eq!(s.peak, 20);
        assert_eq!(s.count, 1);
    }

    #[test]
    fn networks_are_slash24_and_slash48() {
        let n = |s: &str| Network::of(s.parse().unwrap()).to_string();
        assert_eq!(n("203.0.113.200"), "203.0.113.0/24");
        assert_eq!(n("::ffff:203.0.113.200"), "203.0.113.0/24");
        assert_eq!(n("2001:db8:1:2::5"), "2001:db8:1::/48");
        assert_ne!(
            Network::of("2001:db8:1::1".parse().unwrap()),
            Network::of("2001:db8:2::1".parse().unwrap())
        );
    }

    #[test]
    fn client_names_are_bounded() {
        let mut b = Baseline::new(0);
        let long = "é".repeat(100);
        b.learn_login(1, None, &GeoInfo::default(), Some(&long));
        assert!(b.clients[0].key.len() <= MAX_CLIENT_LEN);
    }
}
