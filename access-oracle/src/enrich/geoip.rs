//! GeoIP and AS lookups from MaxMind-format `.mmdb` files (`[geoip]`).
//!
//! Two optional files: `city_db`, a City or Country database (GeoLite2 / GeoIP2 City,
//! Country or Enterprise; DB-IP City or Country Lite; any file with MaxMind's field
//! names), and `asn_db`, an ASN database (GeoLite2-ASN, GeoIP2-ISP, DB-IP ASN Lite). The
//! file's `database_type` metadata must say it holds what its setting asks for, so a file
//! given in the wrong place is refused with a message naming both.
//!
//! A file is read into memory once (a GeoLite2-City file is ~60 MB) and its reader sits
//! behind an `Arc`: a lookup clones the `Arc` under a read lock held for nanoseconds, so a
//! reload, which builds and checks the new reader aside and then swaps the `Arc`, never
//! waits for lookups and lookups never wait for a file to be read. A file that cannot be
//! used at start is an error ([`GeoIp::open`]); on reload it is refused and the database
//! in use stays. A lookup never fails: what cannot be decoded is counted in
//! [`GeoIp::status`] and answered with what is known. Decoded records are cached by
//! their offset in the file (bounded, per file), since addresses come back.
//!
//! What each part of [`GeoInfo`] comes from, with MaxMind's field names:
//!
//! | field | record |
//! |---|---|
//! | `country` | `country.iso_code`, else `registered_country.iso_code`, else `country_code` (ip-location-db) |
//! | `city` | `city.names.en` (or `city` as a plain string) |
//! | `location` | `location.latitude`, `location.longitude`, `location.accuracy_radius` |
//! | `asn`, `as_org` | `autonomous_system_number`, `autonomous_system_organization` |

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use maxminddb::{MaxMindDbError, Reader};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;
use tokio::sync::watch;

use super::canonical_ip;
use super::watch::{FileStamp, Trigger, read_with_stamp, watch_files};
use crate::problems::Problems;

/// `[geoip]`: the GeoIP databases. Without a `city_db` the country and travel rules are
/// inactive; without an `asn_db` the AS rule is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// A City or Country database, e.g. `/var/lib/GeoIP/GeoLite2-City.mmdb` (GeoLite2 /
    /// GeoIP2 City, Country or Enterprise; DB-IP City or Country Lite). A Country
    /// database gives countries but no coordinates, so no impossible-travel rule.
    pub city_db: Option<PathBuf>,
    /// An ASN database, e.g. `/var/lib/GeoIP/GeoLite2-ASN.mmdb` (GeoLite2-ASN,
    /// GeoIP2-ISP, DB-IP ASN Lite).
    pub asn_db: Option<PathBuf>,
    /// How often the files are checked for a change when no file notification comes, in
    /// seconds. Changes are normally seen at once (inotify on the files' directories);
    /// this is the fallback, e.g. for a symlink whose target is replaced elsewhere.
    pub reload_check_secs: u64,
    /// The largest database file accepted, in MiB (1 to 16384). A file is read whole
    /// into memory (GeoLite2-City is ~60 MiB, the commercial City and Enterprise files
    /// a few hundred), so a larger one, or a path to a device such as `/dev/zero`, is
    /// refused instead of growing the oracle until the kernel kills it.
    pub max_db_mib: u64,
}

impl Default for GeoIpConfig {
    fn default() -> Self {
        GeoIpConfig {
            city_db: None,
            asn_db: None,
            reload_check_secs: 60,
            max_db_mib: DEFAULT_MAX_DB_MIB,
        }
    }
}

/// The default of `[geoip] max_db_mib`.
pub const DEFAULT_MAX_DB_MIB: u64 = 1024;

/// The largest `[geoip] max_db_mib` accepted.
const MAX_MAX_DB_MIB: u64 = 16_384;

impl GeoIpConfig {
    /// The most read of one database file.
    fn limit(&self) -> crate::files::Limit {
        crate::files::Limit {
            what: "a GeoIP database",
            max_bytes: self.max_db_mib.clamp(1, MAX_MAX_DB_MIB) << 20,
            why: "[geoip] max_db_mib",
        }
    }

    /// Checks the settings (not the files: [`GeoIp::open`] does), adding each problem found.
    pub fn validate(&self, problems: &mut Problems) {
        for (key, path) in [("city_db", &self.city_db), ("asn_db", &self.asn_db)] {
            if let Some(path) = path {
                if !path.is_absolute() {
                    problems.add(format!(
                        "[geoip] {key} must be an absolute path, got {}",
                        path.display()
                    ));
                }
            }
        }
        if self.reload_check_secs == 0 || self.reload_check_secs > 86_400 {
            problems.add(format!(
                "[geoip] reload_check_secs must be between 1 and 86400, got {}",
                self.reload_check_secs
            ));
        }
        if self.max_db_mib == 0 || self.max_db_mib > MAX_MAX_DB_MIB {
            problems.add(format!(
                "[geoip] max_db_mib must be between 1 and {MAX_MAX_DB_MIB}, got {}",
                self.max_db_mib
            ));
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`). Shown and serialized as text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(pub [u8; 2]);

impl CountryCode {
    /// The code as text (`"??"` if the bytes are not ASCII letters).
    pub fn as_str(&self) -> &str {
        if self.0.iter().all(u8::is_ascii_alphabetic) {
            std::str::from_utf8(&self.0).unwrap_or("??")
        } else {
            "??"
        }
    }
}

/// Why a text is not a country code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a two-letter country code, got {0:?}")]
pub struct ParseCountryCodeError(pub String);

impl FromStr for CountryCode {
    type Err = ParseCountryCodeError;

    /// Two ASCII letters, either case (`de` → `DE`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Ok(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => Err(ParseCountryCodeError(s.to_string())),
        }
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({:?})", self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where an address is, as far as the database knows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Location {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// The radius around the point in which the address is (MaxMind: with 67% confidence),
    /// in km, when the database says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_radius_km: Option<u16>,
}

/// The mean Earth radius (IUGG), in km.
const EARTH_RADIUS_KM: f64 = 6371.0088;

impl Location {
    /// The great-circle distance between the two points, in km (haversine formula).
    pub fn distance_km(&self, other: &Location) -> f64 {
        let (phi1, phi2) = (self.lat.to_radians(), other.lat.to_radians());
        let d_phi = (other.lat - self.lat).to_radians();
        let d_lambda = (other.lon - self.lon).to_radians();
        let a =
            (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().clamp(0.0, 1.0).asin()
    }

    /// The least distance the two addresses can be apart given both accuracy radii (a
    /// missing radius counts as 0), in km, never negative: what a travel check should
    /// compare, so two fuzzy locations in one region are not "travel".
    pub fn min_distance_km(&self, other: &Location) -> f64 {
        let slack = f64::from(self.accuracy_radius_km.unwrap_or(0))
            + f64::from(other.accuracy_radius_km.unwrap_or(0));
        (self.distance_km(other) - slack).max(0.0)
    }
}

/// What is known about an address. Cheap to clone (shared strings).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GeoInfo {
    /// The country the address is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<CountryCode>,
    /// The city, in English.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<Arc<str>>,
    /// Coordinates (City databases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// The autonomous system number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The autonomous system's organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_org: Option<Arc<str>>,
}

impl GeoInfo {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == GeoInfo::default()
    }
}

/// What the loaded databases can answer; the engine tells at start which rules are
/// inactive for lack of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Countries (a City or Country database).
    pub country: bool,
    /// Coordinates (a City database).
    pub coordinates: bool,
    /// Autonomous systems (an ASN database).
    pub asn: bool,
}

/// Why a database file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a MaxMind DB file (empty, truncated, random bytes, bad metadata).
    #[error("{} is not a usable MaxMind DB file: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The reader's complaint.
        source: MaxMindDbError,
    },
    /// The file's `database_type` is not what the setting needs.
    #[error("{} is a {database_type} database; {setting} needs {needs}", path.display())]
    WrongType {
        /// The file.
        path: PathBuf,
        /// What the file says it is.
        database_type: String,
        /// `city_db` or `asn_db`.
        setting: &'static str,
        /// What that setting needs.
        needs: &'static str,
    },
    /// The file opened but its records cannot be decoded.
    #[error("{} looks corrupt: looking up {ip} failed: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The address whose record failed.
        ip: IpAddr,
        /// The reader's complaint.
        message: String,
    },
}

/// What a reload did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub outcome: ReloadOutcome,
}

/// What a reload did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Same content as the database in use: nothing done.
    Unchanged,
    /// The new content is in use.
    Reloaded {
        /// The new file's `database_type`.
        database_type: String,
        /// The new file's build time (seconds since 1970).
        build_epoch: u64,
    },
}

/// Which setting a file was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    City,
    Asn,
}

impl Role {
    fn setting(self) -> &'static str {
        match self {
            Role::City => "city_db",
            Role::Asn => "asn_db",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Role::City => "a City or Country database",
            Role::Asn => "an ASN database",
        }
    }
}

/// What a file holds, from its `database_type` (`GeoLite2-City`, `GeoIP2-Country`,
/// `GeoLite2-ASN`, `GeoIP2-ISP`, `DBIP-City-Lite`, `DBIP-ASN-Lite`,
/// `DBIP-Location-ISP (compat=Enterprise)`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Provides {
    country: bool,
    coordinates: bool,
    asn: bool,
}

impl Provides {
    fn of(database_type: &str) -> Provides {
        let t = database_type.to_ascii_lowercase();
        let coordinates = ["city", "enterprise", "location"]
            .iter()
            .any(|k| t.contains(k));
        Provides {
            country: coordinates || t.contains("country"),
            coordinates,
            asn: t.contains("asn") || t.contains("isp"),
        }
    }

    fn fits(self, role: Role) -> bool {
        match role {
            Role::City => self.country,
            Role::Asn => self.asn,
        }
    }

    fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.country {
            v.push("country");
        }
        if self.coordinates {
            v.extend(["city", "coordinates"]);
        }
        if self.asn {
            v.push("asn");
        }
        v
    }
}

/// A file's content, shared by its reader and the reload check without a copy.
#[derive(Clone)]
struct Bytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// One database in memory.
struct LoadedDb {
    /// Reads from `bytes` (the same allocation).
    reader: Reader<Bytes>,
    /// The file's content, to tell an unchanged file on reload.
    bytes: Bytes,
    provides: Provides,
    loaded_at: Timestamp,
    /// Whether a decoding error was logged already (once per loaded file).
    error_logged: AtomicBool,
    /// Records decoded before.
    decoded: DecodeCache,
}

/// A file refused on reload: not retried by polling until its stamp changes.
struct Refusal {
    stamp: Option<FileStamp>,
    error: String,
    at: Timestamp,
}

/// Reload bookkeeping; its lock also serialises reloads of one file.
struct SlotState {
    stamp: FileStamp,
    refused: Option<Refusal>,
}

/// One configured file.
struct Slot {
    role: Role,
    path: PathBuf,
    limit: crate::files::Limit,
    current: RwLock<Arc<LoadedDb>>,
    state: Mutex<SlotState>,
    lookups: AtomicU64,
    errors: AtomicU64,
    reloads: AtomicU64,
    refusals: AtomicU64,
}

/// The GeoIP databases in use. Shared (`Arc<GeoIp>`) between the engine and [`watch`].
pub struct GeoIp {
    city: Option<Slot>,
    asn: Option<Slot>,
    reload_check_secs: u64,
}

impl fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slot = |s: &Option<Slot>| {
            s.as_ref().map(|s| {
                format!(
                    "{} ({})",
                    s.path.display(),
                    s.current().reader.metadata().database_type
                )
            })
        };
        f.debug_struct("GeoIp")
            .field("city_db", &slot(&self.city))
            .field("asn_db", &slot(&self.asn))
            .finish()
    }
}

impl GeoIp {
    /// Opens the configured files. A configured file that is missing, unreadable, not a
    /// MaxMind DB, corrupt or of the wrong type is an error.
    pub fn open(config: &GeoIpConfig) -> Result<GeoIp, GeoIpError> {
        let open = |role: Role, path: &Option<PathBuf>| -> Result<Option<Slot>, GeoIpError> {
            let Some(path) = path else { return Ok(None) };
            let limit = config.limit();
            let (bytes, stamp) =
                read_with_stamp(path, limit).map_err(|source| GeoIpError::Read {
                    path: path.clone(),
                    source,
                })?;
            let db = load(role, path, bytes)?;
            Ok(Some(Slot {
                role,
                path: path.clone(),
                limit,
                current: RwLock::new(Arc::new(db)),
                state: Mutex::new(SlotState {
                    stamp,
                    refused: None,
                }),
                lookups: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                reloads: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
            }))
        };
        Ok(GeoIp {
            city: open(Role::City, &config.city_db)?,
            asn: open(Role::Asn, &config.asn_db)?,
            reload_check_secs: config.reload_check_secs,
        })
    }

    /// No databases: every lookup answers [`GeoInfo::default`].
    pub fn empty() -> GeoIp {
        GeoIp {
            city: None,
            asn: None,
            reload_check_secs: GeoIpConfig::default().reload_check_secs,
        }
    }

    /// What the databases know about `ip` (an IPv4-mapped IPv6 address is looked up as
    /// IPv4). Never fails and never panics: an unknown address, or a record that cannot
    /// be decoded (counted in [`status`](Self::status)), gives empty fields.
    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        let ip = canonical_ip(ip);
        let mut info = GeoInfo::default();
        if let Some(slot) = &self.city {
            slot.lookup_into(ip, &mut info);
        }
        if let Some(slot) = &self.asn {
            slot.lookup_into(ip, &mut info);
        }
        info
    }

    /// What the databases in use can answer.
    pub fn capabilities(&self) -> Capabilities {
        let city = self.city.as_ref().map(|s| s.current().provides);
        Capabilities {
            country: city.is_some_and(|p| p.country),
            coordinates: city.is_some_and(|p| p.coordinates),
            asn: self.asn.is_some(),
        }
    }

    /// Reads every configured file again and puts into use each one whose content
    /// changed (SIGHUP). One result per file, `city_db` first; a file that cannot be used
    /// is refused with its error and the database in use stays. Logs what it did.
    pub fn reload(&self) -> Vec<Result<ReloadReport, GeoIpError>> {
        self.slots().map(|s| s.reload()).collect()
    }

    /// Like [`reload`](Self::reload), but only for files whose size, times or inode
    /// changed since they were last read, and not again for a refused file that did not
    /// change: the cheap check polling runs. One result per file it read.
    pub fn reload_if_changed(&self) -> Vec<Result<ReloadReport, GeoIpError>> {
        self.slots().filter_map(|s| s.reload_if_changed()).collect()
    }

    /// Files, types, build and load times, counters and the last refusal, for
    /// `ctl status`.
    pub fn status(&self) -> serde_json::Value {
        json!({
            "city_db": self.city.as_ref().map(Slot::status),
            "asn_db": self.asn.as_ref().map(Slot::status),
            "capabilities": self.capabilities(),
            "reload_check_secs": self.reload_check_secs,
        })
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.city.iter().chain(self.asn.iter())
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.slots().map(|s| s.path.clone()).collect()
    }
}

/// Watches the database files and reloads one when it changes (an atomic rename or an
/// in-place write), until `shutdown` turns true. Changes are seen through inotify on the
/// files' directories, and by polling every `reload_check_secs` as the fallback. Each
/// reload and refusal is logged.
pub async fn watch(geoip: Arc<GeoIp>, shutdown: watch::Receiver<bool>) {
    watch_with(geoip, shutdown, true).await;
}

async fn watch_with(geoip: Arc<GeoIp>, shutdown: watch::Receiver<bool>, use_notify: bool) {
    let paths = geoip.paths();
    let poll = Duration::from_secs(geoip.reload_check_secs.max(1));
    watch_files(
        "geoip",
        paths,
        poll,
        use_notify,
        shutdown,
        move |trigger| match trigger {
            Trigger::Notified => drop(geoip.reload()),
            Trigger::Poll => drop(geoip.reload_if_changed()),
        },
    )
    .await;
}

impl Slot {
    fn current(&self) -> Arc<LoadedDb> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lookup_into(&self, ip: IpAddr, info: &mut GeoInfo) {
        let db = self.current();
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if ip.is_ipv6() && db.reader.metadata().ip_version == 4 {
            return;
        }
        let role = self.role;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let found = db.reader.lookup(ip)?;
            let Some(offset) = found.offset() else {
                return Ok(());
            };
            if let Some(known) = db.decoded.get(offset) {
                known.copy_into(role, info);
                return Ok(());
            }
            if let Some(record) = found.decode::<Record<'_>>()? {
                let mut known = GeoInfo::default();
                record.apply(role, &mut known);
                known.copy_into(role, info);
                db.decoded.put(offset, known);
            }
            Ok::<(), MaxMindDbError>(())
        }));
        let error = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the reader panicked".to_string(),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !db.error_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(path = %self.path.display(), %ip, %error,
                "geoip lookup failed (logged once per file; counted in status)");
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reload_if_changed(&self) -> Option<Result<ReloadReport, GeoIpError>> {
        let mut state = self.state();
        let stamp = FileStamp::of(&self.path).ok();
        if stamp == Some(state.stamp) {
            return None;
        }
        if state.refused.as_ref().is_some_and(|r| r.stamp == stamp) {
            return None;
        }
        Some(self.reload_locked(&mut state))
    }

    fn reload(&self) -> Result<ReloadReport, GeoIpError> {
        let mut state = self.state();
        self.reload_locked(&mut state)
    }

    fn reload_locked(&self, state: &mut SlotState) -> Result<ReloadReport, GeoIpError> {
        // The stamp of what was read, taken before reading: a file refused while being
        // written has an older stamp than the finished file, so polling tries it again.
        let mut attempted = None;
        let result = self.try_reload(state, &mut attempted);
        match &result {
            Ok(ReloadReport {
                outcome: ReloadOutcome::Unchanged,
                ..
            }) => {
                tracing::debug!(path = %self.path.display(), "geoip database unchanged");
            }
            Ok(ReloadReport {
                outcome:
                    ReloadOutcome::Reloaded {
                        database_type,
                        build_epoch,
                    },
                ..
            }) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %self.path.display(), setting = self.role.setting(),
                    %database_type, build_time = %epoch_text(*build_epoch),
                    "geoip database reloaded");
            }
            Err(e) => {
                self.refusals.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), setting = self.role.setting(),
                    error = %e, "geoip database refused; the one in use stays");
                state.refused = Some(Refusal {
                    stamp: attempted,
                    error: e.to_string(),
                    at: Timestamp::now(),
                });
            }
        }
        result
    }

    fn try_reload(
        &self,
        state: &mut SlotState,
        attempted: &mut Option<FileStamp>,
    ) -> Result<ReloadReport, GeoIpError> {
        let path = &self.path;
        let (bytes, stamp) =
            read_with_stamp(path, self.limit).map_err(|source| GeoIpError::Read {
                path: path.clone(),
                source,
            })?;
        *attempted = Some(stamp);
        let report = |outcome| ReloadReport {
            path: path.clone(),
            outcome,
        };
        if bytes == *self.current().bytes.0 {
            state.stamp = stamp;
            state.refused = None;
            return Ok(report(ReloadOutcome::Unchanged));
        }
        let db = load(self.role, path, bytes)?;
        let metadata = db.reader.metadata();
        let outcome = ReloadOutcome::Reloaded {
            database_type: metadata.database_type.clone(),
            build_epoch: metadata.build_epoch,
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(db);
        state.stamp = stamp;
        state.refused = None;
        Ok(report(outcome))
    }

    fn status(&self) -> serde_json::Value {
        let db = self.current();
        let m = db.reader.metadata();
        let state = self.state();
        json!({
            "path": self.path,
            "database_type": m.database_type,
            "provides": db.provides.names(),
            "build_time": epoch_text(m.build_epoch),
            "loaded_at": db.loaded_at.to_string(),
            "ip_version": m.ip_version,
            "node_count": m.node_count,
            "size_bytes": db.bytes.0.len(),
            "lookups": self.lookups.load(Ordering::Relaxed),
            "lookup_errors": self.errors.load(Ordering::Relaxed),
            "reloads": self.reloads.load(Ordering::Relaxed),
            "refusals": self.refusals.load(Ordering::Relaxed),
            "last_refusal": state.refused.as_ref().map(|r| json!({
                "at": r.at.to_string(),
                "error": r.error,
            })),
        })
    }
}

fn epoch_text(epoch: u64) -> String {
    i64::try_from(epoch)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(|| epoch.to_string(), |t| t.to_string())
}

/// Addresses looked up when a file is opened: spread over the IPv4 space and the IPv6
/// global unicast space, so a file whose tree or data section is damaged is refused
/// before it is used, not found out lookup by lookup.
fn probe_addresses() -> impl Iterator<Item = IpAddr> {
    let v4 = (0u32..256).map(|i| IpAddr::V4(Ipv4Addr::from((i << 24) | 0x0001_0203 | (i << 8))));
    let v6 = (0u128..64).map(|i| {
        IpAddr::V6(Ipv6Addr::from(
            (0x2000u128 << 112) | (i << 114) | (i << 64) | 0x1234,
        ))
    });
    v4.chain(v6)
}

/// Builds a database from a file's content and checks that it fits `role`.
fn load(role: Role, path: &Path, bytes: Vec<u8>) -> Result<LoadedDb, GeoIpError> {
    let bytes = Bytes(Arc::new(bytes));
    let invalid = |source| GeoIpError::Invalid {
        path: path.to_path_buf(),
        source,
    };
    let reader = catch_unwind(AssertUnwindSafe(|| Reader::from_source(bytes.clone())))
        .unwrap_or_else(|_| {
            Err(MaxMindDbError::invalid_database(
                "the reader panicked on this file",
            ))
        })
        .map_err(invalid)?;
    let metadata = reader.metadata();
    let provides = Provides::of(&metadata.database_type);
    if !provides.fits(role) {
        return Err(GeoIpError::WrongType {
            path: path.to_path_buf(),
            database_type: metadata.database_type.clone(),
            setting: role.setting(),
            needs: role.needs(),
        });
    }
    for ip in probe_addresses() {
        if ip.is_ipv6() && metadata.ip_version == 4 {
            continue;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let found = reader.lookup(ip)?;
            found.decode::<Record<'_>>().map(drop)
        }));
        let message = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the reader panicked".to_string(),
        };
        return Err(GeoIpError::Corrupt {
            path: path.to_path_buf(),
            ip,
            message,
        });
    }
    Ok(LoadedDb {
        reader,
        bytes,
        provides,
        loaded_at: Timestamp::now(),
        error_logged: AtomicBool::new(false),
        decoded: DecodeCache::default(),
    })
}

/// Shards of the decoded-record cache (by data offset), to spread lock contention.
const DECODE_SHARDS: usize = 16;
/// Records kept per shard; a full shard is emptied (the next lookups refill it).
const DECODE_PER_SHARD: usize = 4096;

/// Decoded records by their offset in the data section. Many addresses share a record
/// (a city, an AS) and the same addresses come back (a user's logins, an attacker's
/// tries), so most lookups skip decoding: a hash lookup replaces walking the record's
/// maps. At most `DECODE_SHARDS * DECODE_PER_SHARD` records per file; it goes away with
/// its file on reload.
#[derive(Default)]
struct DecodeCache {
    shards: [Mutex<std::collections::HashMap<usize, GeoInfo>>; DECODE_SHARDS],
}

impl DecodeCache {
    fn shard(
        &self,
        offset: usize,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<usize, GeoInfo>> {
        // Records are a few dozen bytes apart: mix the bits before picking a shard.
        let i = (offset.wrapping_mul(0x9E37_79B9) >> 8) % DECODE_SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, offset: usize) -> Option<GeoInfo> {
        self.shard(offset).get(&offset).cloned()
    }

    fn put(&self, offset: usize, info: GeoInfo) {
        let mut shard = self.shard(offset);
        if shard.len() >= DECODE_PER_SHARD {
            shard.clear();
        }
        shard.insert(offset, info);
    }
}

// ---- records: only the fields used; the decoder skips the rest ----------------------

/// The union of the City, Country and ASN layouts, every field optional.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
    /// ip-location-db's flat layout.
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    city: Option<CityName<'a>>,
    location: Option<RawLocation>,
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IsoCode<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

/// `city`: MaxMind's map (`{"names": {"en": ...}}`) or a plain string.
struct CityName<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for CityName<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Names<'a> {
            #[serde(borrow)]
            en: Option<&'a str>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct CityMap<'a> {
            #[serde(borrow)]
            names: Names<'a>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CityName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a city map or name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(CityName(Some(s)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let m = CityMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(CityName(m.names.en))
            }
        }
        d.deserialize_any(V)
    }
}

impl GeoInfo {
    /// Copies the fields `role`'s file answers for from `self` into `info`.
    fn copy_into(&self, role: Role, info: &mut GeoInfo) {
        match role {
            Role::City => {
                info.country = self.country;
                info.city = self.city.clone();
                info.location = self.location;
            }
            Role::Asn => {
                info.asn = self.asn;
                info.as_org = self.as_org.clone();
            }
        }
    }
}

impl Record<'_> {
    /// Copies what `role`'s file is for into `info`.
    fn apply(&self, role: Role, info: &mut GeoInfo) {
        match role {
            Role::City => {
                info.country = [
                    self.country.as_ref().and_then(|c| c.iso_code),
                    self.registered_country.as_ref().and_then(|c| c.iso_code),
                    self.country_code,
                ]
                .into_iter()
                .flatten()
                .find_map(|c| c.parse().ok());
                info.city = self
                    .city
                    .as_ref()
                    .and_then(|c| c.0)
                    .filter(|c| !c.is_empty())
                    .map(Arc::from);
                info.location = self.location.as_ref().and_then(|l| {
                    let (lat, lon) = (l.latitude?, l.longitude?);
                    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some(
                        Location {
                            lat,
                            lon,
                            accuracy_radius_km: l.accuracy_radius,
                        },
                    )
                });
            }
            Role::Asn => {
                info.asn = self.autonomous_system_number;
                info.as_org = self
                    .autonomous_system_organization
                    .filter(|o| !o.is_empty())
                    .map(Arc::from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use geo_fixtures::{ALTERNATIVE, ENTRIES, Entry, Shape};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// What a lookup must answer for an address in `e`'s network.
    fn expected(e: &Entry<'_>, city: bool, coordinates: bool, asn: bool) -> GeoInfo {
        GeoInfo {
            country: city.then(|| e.country.parse().unwrap()),
            city: coordinates.then(|| Arc::from(e.city)),
            location: coordinates.then_some(Location {
                lat: e.latitude,
                lon: e.longitude,
                accuracy_radius_km: Some(e.accuracy_radius_km),
            }),
            asn: asn.then_some(e.asn),
            as_org: asn.then(|| Arc::from(e.as_org)),
        }
    }

    /// An address inside each fixture network, in every form it may arrive in.
    fn addresses_of(e: &Entry<'_>) -> Vec<IpAddr> {
        let net: ipnet::IpNet = e.network.parse().unwrap();
        let first = match net {
            ipnet::IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 7)),
            ipnet::IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) + 7)),
        };
        let mut v = vec![first];
        if let IpAddr::V4(v4) = first {
            v.push(IpAddr::V6(v4.to_ipv6_mapped()));
        }
        v
    }

    struct Files {
        dir: tempfile::TempDir,
        city: PathBuf,
        asn: PathBuf,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let city = dir.path().join("GeoLite2-City.mmdb");
        let asn = dir.path().join("GeoLite2-ASN.mmdb");
        geo_fixtures::write_city_db(&city).unwrap();
        geo_fixtures::write_asn_db(&asn).unwrap();
        Files { dir, city, asn }
    }

    fn config(city: Option<&Path>, asn: Option<&Path>) -> GeoIpConfig {
        GeoIpConfig {
            city_db: city.map(Path::to_path_buf),
            asn_db: asn.map(Path::to_path_buf),
            ..GeoIpConfig::default()
        }
    }

    fn open_both(f: &Files) -> GeoIp {
        GeoIp::open(&config(Some(&f.city), Some(&f.asn))).unwrap()
    }

    fn open_err(city: Option<&Path>, asn: Option<&Path>) -> String {
        GeoIp::open(&config(city, asn)).unwrap_err().to_string()
    }

    #[test]
    fn config_defaults_parse_and_validation() {
        let c: GeoIpConfig = toml::from_str("city_db = \"/var/lib/GeoIP/City.mmdb\"").unwrap();
        assert_eq!(c.reload_check_secs, 60);
        assert_eq!(c.asn_db, None);
        assert!(toml::from_str::<GeoIpConfig>("city = \"/x\"").is_err());
        let mut p = Problems::default();
        c.validate(&mut p);
        assert!(p.is_empty(), "{p}");
        let bad = GeoIpConfig {
            city_db: Some("GeoLite2-City.mmdb".into()),
            asn_db: Some("asn.mmdb".into()),
            reload_check_secs: 0,
            max_db_mib: 0,
        };
        let mut p = Problems::default();
        bad.validate(&mut p);
        assert_eq!(p.list().len(), 4, "{p}");
        assert!(p.list()[0].contains("[geoip] city_db must be an absolute path"));
        assert!(p.list()[3].contains("[geoip] max_db_mib must be between 1 and 16384"));
    }

    #[test]
    fn country_codes_parse_show_and_serialize_as_text() {
        let de: CountryCode = "de".parse().unwrap();
        assert_eq!(de, CountryCode(*b"DE"));
        assert_eq!(de.to_string(), "DE");
        assert_eq!(format!("{de:?}"), "CountryCode(\"DE\")");
        assert_eq!(serde_json::to_string(&de).unwrap(), "\"DE\"");
        assert_eq!(
            serde_json::from_str::<CountryCode>("\"FR\"").unwrap(),
            CountryCode(*b"FR")
        );
        for bad in ["", "D", "DEU", "D1", "é"] {
            assert!(bad.parse::<CountryCode>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<CountryCode>("\"XYZ\"").is_err());
        assert_eq!(CountryCode([0, 1]).as_str(), "??");
    }

    #[test]
    fn distances_are_great_circle_km() {
        let at = |e: &Entry<'_>| Location {
            lat: e.latitude,
            lon: e.longitude,
            accuracy_radius_km: Some(e.accuracy_radius_km),
        };
        let (berlin, new_york, paris, london) = (
            at(&ENTRIES[0]),
            at(&ENTRIES[1]),
            at(&ENTRIES[2]),
            at(&ENTRIES[4]),
        );
        let d = berlin.distance_km(&new_york);
        assert!((6370.0..6400.0).contains(&d), "{d}");
        assert!((d - new_york.distance_km(&berlin)).abs() < 1e-9);
        let d = paris.distance_km(&london);
        assert!((340.0..350.0).contains(&d), "{d}");
        assert_eq!(berlin.distance_km(&berlin), 0.0);
        let north = Location {
            lat: 90.0,
            lon: 0.0,
            accuracy_radius_km: None,
        };
        let south = Location {
            lat: -90.0,
            lon: 0.0,
            accuracy_radius_km: None,
        };
        assert!((north.distance_km(&south) - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
        // Radii of 20 and 50 km: Paris-London is at least 344 - 70 km.
        let slack = paris.distance_km(&london) - paris.min_distance_km(&london);
        assert!((slack - 70.0).abs() < 1e-9);
        assert_eq!(berlin.min_distance_km(&berlin), 0.0);
    }

    #[test]
    fn every_fixture_range_is_found_in_ipv4_mapped_and_ipv6_form() {
        let f = files();
        let geo = open_both(&f);
        for e in ENTRIES {
            for addr in addresses_of(e) {
                assert_eq!(geo.lookup(addr), expected(e, true, true, true), "{addr}");
            }
        }
        assert_eq!(
            geo.capabilities(),
            Capabilities {
                country: true,
                coordinates: true,
                asn: true
            }
        );
        let berlin = geo.lookup(ip("192.0.2.1"));
        assert_eq!(
            serde_json::to_value(&berlin).unwrap(),
            json!({"country": "DE", "city": "Berlin",
                   "location": {"lat": 52.52, "lon": 13.405, "accuracy_radius_km": 20},
                   "asn": 64500, "as_org": "Example Net DE"})
        );
    }

    #[test]
    fn the_decode_cache_answers_like_decoding_and_stays_bounded() {
        let f = files();
        let geo = open_both(&f);
        for e in ENTRIES {
            let addr = addresses_of(e)[0];
            let first = geo.lookup(addr);
            assert_eq!(geo.lookup(addr), first, "cached answer for {addr}");
            assert_eq!(first, expected(e, true, true, true));
        }
        let cache = DecodeCache::default();
        for offset in 0..(DECODE_SHARDS * DECODE_PER_SHARD * 2) {
            cache.put(offset * 40, GeoInfo::default());
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= DECODE_SHARDS * DECODE_PER_SHARD, "{total}");
        assert!(
            cache
                .get(40 * (DECODE_SHARDS * DECODE_PER_SHARD * 2 - 1))
                .is_some()
        );
    }

    #[test]
    fn unknown_addresses_give_nothing() {
        let f = files();
        let geo = open_both(&f);
        for a in [
            "10.0.0.1",
            "192.0.3.1",
            "::1",
            "2001:db9::1",
            "::ffff:10.1.2.3",
        ] {
            assert!(geo.lookup(ip(a)).is_empty(), "{a}");
        }
        assert_eq!(geo.status()["city_db"]["lookup_errors"], 0);
    }

    #[test]
    fn no_database_answers_nothing() {
        let geo = GeoIp::empty();
        assert!(geo.lookup(ip("192.0.2.1")).is_empty());
        assert_eq!(geo.capabilities(), Capabilities::default());
        assert!(geo.reload().is_empty());
        assert!(geo.reload_if_changed().is_empty());
        let s = geo.status();
        assert!(s["city_db"].is_null() && s["asn_db"].is_null());
        // Nothing configured is the same as empty.
        assert_eq!(
            GeoIp::open(&GeoIpConfig::default()).unwrap().capabilities(),
            Capabilities::default()
        );
    }

    #[test]
    fn a_country_database_gives_countries_only() {
        let f = files();
        let country = f.dir.path().join("GeoLite2-Country.mmdb");
        geo_fixtures::write_country_db(&country).unwrap();
        let geo = GeoIp::open(&config(Some(&country), None)).unwrap();
        assert_eq!(
            geo.capabilities(),
            Capabilities {
                country: true,
                coordinates: false,
                asn: false
            }
        );
        for e in ENTRIES {
            for addr in addresses_of(e) {
                assert_eq!(geo.lookup(addr), expected(e, true, false, false), "{addr}");
            }
        }
    }

    #[test]
    fn an_ipv4_only_database_answers_ipv4_and_nothing_for_ipv6() {
        let f = files();
        let v4 = f.dir.path().join("v4-city.mmdb");
        std::fs::write(
            &v4,
            geo_fixtures::db_bytes_ipv4(Shape::City, "GeoLite2-City", ENTRIES).unwrap(),
        )
        .unwrap();
        let geo = GeoIp::open(&config(Some(&v4), None)).unwrap();
        assert_eq!(geo.status()["city_db"]["ip_version"], 4);
        for e in &ENTRIES[..4] {
            for addr in addresses_of(e) {
                assert_eq!(geo.lookup(addr), expected(e, true, true, false), "{addr}");
            }
        }
        assert!(geo.lookup(ip("2001:db8::1")).is_empty());
        assert_eq!(geo.status()["city_db"]["lookup_errors"], 0);
    }

    #[test]
    fn an_asn_database_alone_gives_autonomous_systems() {
        let f = files();
        let geo = GeoIp::open(&config(None, Some(&f.asn))).unwrap();
        assert_eq!(
            geo.capabilities(),
            Capabilities {
                country: false,
                coordinates: false,
                asn: true
            }
        );
        for e in ENTRIES {
            for addr in addresses_of(e) {
                assert_eq!(geo.lookup(addr), expected(e, false, false, true), "{addr}");
            }
        }
    }

    #[test]
    fn other_vendors_type_names_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (Shape::City, "DBIP-City-Lite", Role::City, true),
            (Shape::Country, "DBIP-Country-Lite", Role::City, false),
            (Shape::City, "GeoIP2-City", Role::City, true),
            (Shape::City, "GeoIP2-Enterprise", Role::City, true),
            (Shape::Asn, "DBIP-ASN-Lite", Role::Asn, false),
            (Shape::Asn, "GeoIP2-ISP", Role::Asn, false),
        ];
        for (shape, database_type, role, coordinates) in cases {
            let path = dir.path().join(format!("{database_type}.mmdb"));
            std::fs::write(
                &path,
                geo_fixtures::db_bytes(shape, database_type, ENTRIES).unwrap(),
            )
            .unwrap();
            let c = match role {
                Role::City => config(Some(&path), None),
                Role::Asn => config(None, Some(&path)),
            };
            let geo = GeoIp::open(&c).unwrap_or_else(|e| panic!("{database_type}: {e}"));
            assert_eq!(
                geo.capabilities().coordinates,
                coordinates,
                "{database_type}"
            );
            assert!(
                !geo.lookup(ip("198.51.100.1")).is_empty(),
                "{database_type}"
            );
        }
    }

    #[test]
    fn a_file_of_the_wrong_type_is_refused_with_both_names() {
        let f = files();
        let msg = open_err(Some(&f.asn), None);
        assert_eq!(
            msg,
            format!(
                "{} is a GeoLite2-ASN database; city_db needs a City or Country database",
                f.asn.display()
            )
        );
        let msg = open_err(None, Some(&f.city));
        assert_eq!(
            msg,
            format!(
                "{} is a GeoLite2-City database; asn_db needs an ASN database",
                f.city.display()
            )
        );
        let anon = f.dir.path().join("anon.mmdb");
        std::fs::write(
            &anon,
            geo_fixtures::db_bytes(Shape::Asn, "GeoIP2-Anonymous-IP", ENTRIES).unwrap(),
        )
        .unwrap();
        assert!(open_err(Some(&anon), None).contains("is a GeoIP2-Anonymous-IP database"));
        assert!(open_err(None, Some(&anon)).contains("asn_db needs an ASN database"));
    }

    /// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn missing_empty_random_and_truncated_files_are_refused() {
        let f = files();
        let bad = f.dir.path().join("bad.mmdb");
        let msg = open_err(Some(&f.dir.path().join("missing.mmdb")), None);
        assert!(
            msg.starts_with("cannot read ") && msg.contains("missing.mmdb"),
            "{msg}"
        );

        std::fs::write(&bad, b"").unwrap();
        let msg = open_err(Some(&bad), None);
        assert!(msg.contains("is not a usable MaxMind DB file"), "{msg}");

        for seed in 1..20 {
            std::fs::write(&bad, noise(seed, 4096)).unwrap();
            let msg = open_err(Some(&bad), Some(&f.asn));
            assert!(msg.contains("is not a usable MaxMind DB file"), "{msg}");
        }

        let good = std::fs::read(&f.city).unwrap();
        let cuts = (1..32)
            .map(|i| good.len() * i / 32)
            .chain([good.len() - 1, good.len() - 20]);
        for cut in cuts {
            std::fs::write(&bad, &good[..cut]).unwrap();
            let err = GeoIp::open(&config(Some(&bad), None)).unwrap_err();
            assert!(
                matches!(err, GeoIpError::Invalid { .. } | GeoIpError::Corrupt { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn damaged_files_never_panic_a_lookup() {
        let f = files();
        let good = std::fs::read(&f.city).unwrap();
        let bad = f.dir.path().join("damaged.mmdb");
        let (mut refused, mut opened) = (0, 0);
        for seed in 1..300u64 {
            let mut bytes = good.clone();
            for (i, b) in noise(seed, 8).into_iter().enumerate() {
                let at = (seed as usize * 7919 + i * 104_729) % bytes.len();
                bytes[at] ^= b | 1;
            }
            std::fs::write(&bad, &bytes).unwrap();
            match GeoIp::open(&config(Some(&bad), None)) {
                Err(_) => refused += 1,
                Ok(geo) => {
                    opened += 1;
                    for e in ENTRIES {
                        for addr in addresses_of(e) {
                            let _ = geo.lookup(addr);
                        }
                    }
                }
            }
        }
        assert!(
            refused > 0 && opened > 0,
            "refused {refused}, opened {opened}"
        );
    }

    fn reloaded(r: &Result<ReloadReport, GeoIpError>) -> bool {
        matches!(
            r,
            Ok(ReloadReport {
                outcome: ReloadOutcome::Reloaded { .. },
                ..
            })
        )
    }

    fn unchanged(r: &Result<ReloadReport, GeoIpError>) -> bool {
        matches!(
            r,
            Ok(ReloadReport {
                outcome: ReloadOutcome::Unchanged,
                ..
            })
        )
    }

    #[test]
    fn reload_after_an_atomic_rename() {
        let f = files();
        let geo = open_both(&f);
        let addr = ip("192.0.2.1");
        assert_eq!(geo.lookup(addr), expected(&ENTRIES[0], true, true, true));

        let bytes = geo_fixtures::city_db_bytes(ALTERNATIVE).unwrap();
        geo_fixtures::replace_atomically(&f.city, &bytes).unwrap();
        let r = geo.reload();
        assert_eq!(r.len(), 2);
        assert!(reloaded(&r[0]) && unchanged(&r[1]), "{r:?}");
        let mut want = expected(&ALTERNATIVE[0], true, true, false);
        (want.asn, want.as_org) = (Some(ENTRIES[0].asn), Some(Arc::from(ENTRIES[0].as_org)));
        assert_eq!(geo.lookup(addr), want);

        let r = geo.reload();
        assert!(r.iter().all(unchanged), "{r:?}");
        assert!(geo.reload_if_changed().is_empty());
        assert_eq!(geo.status()["city_db"]["reloads"], 1);
    }

    #[test]
    fn reload_after_an_in_place_rewrite() {
        let f = files();
        let geo = open_both(&f);
        geo_fixtures::write_asn_db_with(&f.asn, ALTERNATIVE).unwrap();
        let r = geo.reload_if_changed();
        assert_eq!(r.len(), 1, "only the ASN file changed: {r:?}");
        assert!(reloaded(&r[0]));
        assert_eq!(geo.lookup(ip("2001:db8::1")).asn, Some(ALTERNATIVE[4].asn));
        assert_eq!(
            geo.lookup(ip("2001:db8::1")).city.as_deref(),
            Some("London")
        );
    }

    #[test]
    fn devices_fifos_directories_and_oversized_files_are_refused_at_open_and_reload() {
        let f = files();
        for (path, what) in [
            (PathBuf::from("/dev/zero"), "a character device"),
            (f.dir.path().to_path_buf(), "a directory"),
        ] {
            let e = open_err(Some(&path), None);
            assert!(
                e.contains(what) && e.contains(&path.display().to_string()),
                "{e}"
            );
        }
        let small = GeoIpConfig {
            city_db: Some(f.city.clone()),
            max_db_mib: 1,
            ..GeoIpConfig::default()
        };
        let geo = GeoIp::open(&small).unwrap();
        let before = geo.lookup(ip("203.0.113.200"));
        assert!(before.country.is_some());
        // A FIFO in its place: refused at once (no wait for a writer), old data kept.
        std::fs::remove_file(&f.city).unwrap();
        nix::unistd::mkfifo(&f.city, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let r = geo.reload();
        let e = r[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        assert_eq!(geo.lookup(ip("203.0.113.200")), before);
        // A file over the limit: refused before it is read, old data kept.
        std::fs::remove_file(&f.city).unwrap();
        let big = std::fs::File::create(&f.city).unwrap();
        big.set_len((1 << 20) + 1).unwrap();
        let e = geo.reload()[0].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("may be at most 1048576 bytes ([geoip] max_db_mib)"),
            "{e}"
        );
        assert_eq!(geo.lookup(ip("203.0.113.200")), before);
        assert_eq!(geo.status()["city_db"]["refusals"], 2);
    }

    #[test]
    fn a_bad_file_on_reload_is_refused_and_the_old_one_stays() {
        let f = files();
        let geo = open_both(&f);
        let before = geo.lookup(ip("203.0.113.200"));

        std::fs::write(&f.city, noise(7, 1000)).unwrap();
        let r = geo.reload_if_changed();
        assert_eq!(r.len(), 1);
        assert!(matches!(r[0], Err(GeoIpError::Invalid { .. })), "{r:?}");
        assert_eq!(geo.lookup(ip("203.0.113.200")), before);
        let s = geo.status();
        assert_eq!(s["city_db"]["refusals"], 1);
        assert!(
            s["city_db"]["last_refusal"]["error"]
                .as_str()
                .unwrap()
                .contains("not a usable")
        );
        // Polling does not retry the same refused file; an explicit reload does.
        assert!(geo.reload_if_changed().is_empty());
        assert!(geo.reload()[0].is_err());

        // The wrong type is refused on reload too.
        let asn = std::fs::read(&f.asn).unwrap();
        geo_fixtures::replace_atomically(&f.city, &asn).unwrap();
        let r = geo.reload_if_changed();
        assert!(matches!(r[0], Err(GeoIpError::WrongType { .. })), "{r:?}");
        assert_eq!(geo.lookup(ip("203.0.113.200")), before);

        // A missing file: refused, old data stays.
        std::fs::remove_file(&f.city).unwrap();
        assert!(matches!(geo.reload()[0], Err(GeoIpError::Read { .. })));
        assert_eq!(geo.lookup(ip("203.0.113.200")), before);

        // A good file again: used, and the refusal is forgotten.
        geo_fixtures::write_city_db_with(&f.city, ALTERNATIVE).unwrap();
        let r = geo.reload_if_changed();
        assert!(reloaded(&r[0]), "{r:?}");
        assert_eq!(
            geo.lookup(ip("203.0.113.200")).city.as_deref(),
            Some("Auckland")
        );
        assert!(geo.status()["city_db"]["last_refusal"].is_null());
    }

    #[test]
    fn status_tells_files_types_and_counters() {
        let f = files();
        let geo = open_both(&f);
        geo.lookup(ip("192.0.2.1"));
        let s = geo.status();
        let city = &s["city_db"];
        assert_eq!(city["path"], json!(f.city));
        assert_eq!(city["database_type"], "GeoLite2-City");
        assert_eq!(city["provides"], json!(["country", "city", "coordinates"]));
        assert_eq!(city["build_time"], "2023-11-14T22:13:20Z");
        assert_eq!(city["ip_version"], 6);
        assert_eq!(city["lookups"], 1);
        assert_eq!(s["asn_db"]["provides"], json!(["asn"]));
        assert_eq!(
            s["capabilities"],
            json!({"country": true, "coordinates": true, "asn": true})
        );
        assert!(format!("{geo:?}").contains("GeoLite2-ASN"));
    }

    #[test]
    fn lookups_from_many_threads_while_files_are_swapped_see_old_or_new() {
        let f = files();
        let geo = Arc::new(open_both(&f));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|t| {
                let (geo, stop) = (geo.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) || n < 100 {
                        let i = (n as usize + t) % ENTRIES.len();
                        for addr in addresses_of(&ENTRIES[i]) {
                            let got = geo.lookup(addr);
                            let (old, new) = (&ENTRIES[i], &ALTERNATIVE[i]);
                            // Each file is swapped on its own: any mix of old and new
                            // City and ASN data, never anything else.
                            let city_ok = [old, new].iter().any(|e| {
                                let w = expected(e, true, true, false);
                                (got.country, &got.city, got.location)
                                    == (w.country, &w.city, w.location)
                            });
                            let asn_ok = [old, new].iter().any(|e| {
                                got.asn == Some(e.asn) && got.as_org.as_deref() == Some(e.as_org)
                            });
                            assert!(city_ok && asn_ok, "{addr}: {got:?}");
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for round in 0..30 {
            let entries = if round % 2 == 0 { ALTERNATIVE } else { ENTRIES };
            if round % 3 == 0 {
                geo_fixtures::write_city_db_with(&f.city, entries).unwrap();
                geo_fixtures::write_asn_db_with(&f.asn, entries).unwrap();
            } else {
                let city = geo_fixtures::city_db_bytes(entries).unwrap();
                geo_fixtures::replace_atomically(&f.city, &city).unwrap();
                let asn = geo_fixtures::asn_db_bytes(entries).unwrap();
                geo_fixtures::replace_atomically(&f.asn, &asn).unwrap();
            }
            let r = geo.reload();
            assert!(r.iter().all(reloaded), "round {round}: {r:?}");
        }
        stop.store(true, Ordering::Relaxed);
        let lookups: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(lookups >= 400);
        let s = geo.status();
        assert_eq!(s["city_db"]["lookup_errors"], 0);
        assert_eq!(s["city_db"]["reloads"], 30);
    }

    /// Waits (bounded) until `cond` holds, checking every 20 ms.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watcher_sees_a_rename_and_an_in_place_write() {
        let f = files();
        let mut c = config(Some(&f.city), Some(&f.asn));
        c.reload_check_secs = 3600; // only notifications can be seen in time
        let geo = Arc::new(GeoIp::open(&c).unwrap());
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(watch(geo.clone(), rx));
        let addr = ip("198.51.100.20");

        let bytes = geo_fixtures::city_db_bytes(ALTERNATIVE).unwrap();
        geo_fixtures::replace_atomically(&f.city, &bytes).unwrap();
        eventually("renamed file in use", || {
            geo.lookup(addr).city.as_deref() == Some("Sao Paulo")
        })
        .await;

        geo_fixtures::write_city_db(&f.city).unwrap();
        eventually("rewritten file in use", || {
            geo.lookup(addr).city.as_deref() == Some("New York")
        })
        .await;

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn polling_finds_a_change_without_notifications() {
        let f = files();
        let geo = Arc::new(open_both(&f));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(watch_with(geo.clone(), rx, false));
        let bytes = geo_fixtures::asn_db_bytes(ALTERNATIVE).unwrap();
        geo_fixtures::replace_atomically(&f.asn, &bytes).unwrap();
        // Virtual time: a few polling periods pass at once.
        let mut polls = 0;
        while geo.lookup(ip("192.0.2.1")).asn != Some(ALTERNATIVE[0].asn) {
            polls += 1;
            assert!(polls <= 5, "not reloaded after {polls} polling periods");
            tokio::time::sleep(Duration::from_secs(61)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
