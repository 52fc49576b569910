//! Enrichment: what is known about an address (GeoIP/ASN, block and allow lists).
//! (Placeholder types until the full module lands.)

pub mod disabled;
pub mod geoip;
pub mod lists;

pub use geoip::{CountryCode, GeoInfo, GeoIp, Location};
pub use lists::{IpLists, ListHit};
