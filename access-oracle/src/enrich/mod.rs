//! Enrichment: what is known about a source address before the rules look at an event.
//!
//! * [`geoip`]: country, city, coordinates and AS from MaxMind-format `.mmdb` files
//!   (GeoLite2 / GeoIP2 City, Country, ASN; DB-IP files of the same format).
//! * [`lists`]: CIDR block and allow lists from files (Spamhaus DROP format too).
//! * [`disabled`]: the accounts file of disabled and expiring credentials.
//! * [`rdns`]: optional reverse DNS with a cache, resolved in the background: never on the
//!   verdict's path.
//! * [`crowdsec`]: the ban decisions of a CrowdSec Local API (`[crowdsec]`), kept up to
//!   date by a poller in `actions/crowdsec.rs`.
//!
//! Lookups are cheap, never block and never fail: an address nothing is known about gets
//! empty answers. Files are read into memory and replaced as a whole: a reload builds the
//! new data aside and swaps an `Arc`, so a lookup sees either the old or the new data, and
//! a file that cannot be used is refused with the old data kept. [`geoip::watch`] and
//! [`lists::watch`] reload when the files change (inotify on their directories, polling
//! as the fallback); `reload()` is what SIGHUP calls.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are looked up as their IPv4 address
//! everywhere ([`canonical_ip`]).

pub mod crowdsec;
pub mod disabled;
pub mod geoip;
pub mod lists;
pub mod rdns;
mod watch;

pub use geoip::{
    Capabilities, CountryCode, GeoInfo, GeoIp, GeoIpConfig, GeoIpError, Location, ReloadOutcome,
    ReloadReport,
};
pub use lists::{IpLists, ListError, ListHit, ListReloadReport, ListsConfig};
pub use rdns::{Rdns, RdnsAnswer, RdnsConfig, RdnsWorker, Resolver, SystemResolver};

pub use crate::net::canonical_ip;
