//! Enrichment: what is known about a source address before the rules look at an event.
//!
//! * [`geoip`]: country, city, coordinates and AS from MaxMind-format `.mmdb` files
//!   (GeoLite2 / GeoIP2 City, Country, ASN; DB-IP files of the same format).
//! * [`lists`]: CIDR block and allow lists from files (Spamhaus DROP format too).
//! * [`disabled`]: the accounts file of disabled and expiring credentials.
//! * [`rdns`]: optional reverse DNS with a cache, resolved in the background: never on the
//!   verdict's path.
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

use std::net::IpAddr;

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into its IPv4 address,
/// which is how Exim and Dovecot may report an IPv4 client on a dual-stack socket.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ip_unmaps_ipv4_in_ipv6_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical_ip(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical_ip(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical_ip(ip("2001:db8::1")), ip("2001:db8::1"));
        // IPv4-compatible (deprecated ::a.b.c.d) is not IPv4-mapped.
        assert_eq!(canonical_ip(ip("::192.0.2.1")), ip("::192.0.2.1"));
    }
}
