//! GeoIP/ASN lookups (placeholder).
use std::net::IpAddr;
use std::sync::Arc;

/// ISO 3166 alpha-2.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct CountryCode(pub [u8; 2]);

impl std::fmt::Display for CountryCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.0[0] as char, self.0[1] as char)
    }
}

/// Coordinates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Location {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
    /// Accuracy radius.
    pub accuracy_radius_km: Option<u16>,
}

impl Location {
    /// Haversine distance.
    pub fn distance_km(&self, other: &Location) -> f64 {
        let r = 6371.0088_f64;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * r * a.sqrt().min(1.0).asin()
    }
}

/// What is known about an address.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GeoInfo {
    /// Country.
    pub country: Option<CountryCode>,
    /// City.
    pub city: Option<Arc<str>>,
    /// Coordinates.
    pub location: Option<Location>,
    /// ASN.
    pub asn: Option<u32>,
    /// AS organisation.
    pub as_org: Option<Arc<str>>,
}

/// GeoIP databases.
pub struct GeoIp;

/// What the loaded databases can answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Capabilities {
    /// Country.
    pub country: bool,
    /// Coordinates.
    pub coordinates: bool,
    /// ASN.
    pub asn: bool,
}

impl GeoIp {
    /// No databases.
    pub fn empty() -> GeoIp {
        GeoIp
    }
    /// Lookup.
    pub fn lookup(&self, _ip: IpAddr) -> GeoInfo {
        GeoInfo::default()
    }
    /// What can be answered.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}
