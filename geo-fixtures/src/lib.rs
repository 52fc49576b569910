//! Test `.mmdb` files in the shape of MaxMind's GeoLite2 City, Country and ASN databases.
//!
//! No Debian package ships a GeoIP database and tests must not download one, so tests
//! write their own with `mmdb-writer`, using the same field names as MaxMind's files
//! (`country.iso_code`, `city.names.en`, `location.latitude`, `autonomous_system_number`,
//! ...) so the reader code that runs in production is the code under test.
//!
//! [`ENTRIES`] maps the documentation ranges (RFC 5737, RFC 3849) to places:
//!
//! | network | country | city | lat, lon | accuracy | AS |
//! |---|---|---|---|---|---|
//! | 192.0.2.0/24 | DE | Berlin | 52.5200, 13.4050 | 20 km | 64500 Example Net DE |
//! | 198.51.100.0/24 | US | New York | 40.7128, -74.0060 | 20 km | 64501 Example Net US |
//! | 203.0.113.0/25 | FR | Paris | 48.8566, 2.3522 | 20 km | 64502 Example Mobile |
//! | 203.0.113.128/25 | AU | Sydney | -33.8688, 151.2093 | 50 km | 64502 Example Mobile |
//! | 2001:db8::/32 | GB | London | 51.5074, -0.1278 | 50 km | 64503 Example Net GB |
//!
//! [`ALTERNATIVE`] maps the same networks elsewhere, for tests that replace a file while
//! requests flow and check that every answer is either the old or the new data.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let dir = std::path::Path::new("/tmp/geo");
//! geo_fixtures::write_city_db(&dir.join("city.mmdb"))?;
//! geo_fixtures::write_asn_db(&dir.join("asn.mmdb"))?;
//! // later: swap the data the way a database updater does (write aside, rename)
//! let bytes = geo_fixtures::city_db_bytes(geo_fixtures::ALTERNATIVE)?;
//! geo_fixtures::replace_atomically(&dir.join("city.mmdb"), &bytes)?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use ipnet::IpNet;
use mmdb_writer::{IpVersion, Writer};
use serde::Serialize;

/// One network and what a GeoLite2 City and ASN database say about it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry<'a> {
    /// The network, e.g. `"192.0.2.0/24"`.
    pub network: &'a str,
    /// ISO 3166-1 alpha-2 country code, e.g. `"DE"`.
    pub country: &'a str,
    /// English city name.
    pub city: &'a str,
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// MaxMind's `location.accuracy_radius`, in km.
    pub accuracy_radius_km: u16,
    /// Autonomous system number.
    pub asn: u32,
    /// Autonomous system organisation.
    pub as_org: &'a str,
}

/// The standard mapping of the documentation ranges (see the crate documentation).
pub const ENTRIES: &[Entry<'static>] = &[
    Entry {
        network: "192.0.2.0/24",
        country: "DE",
        city: "Berlin",
        latitude: 52.5200,
        longitude: 13.4050,
        accuracy_radius_km: 20,
        asn: 64500,
        as_org: "Example Net DE",
    },
    Entry {
        network: "198.51.100.0/24",
        country: "US",
        city: "New York",
        latitude: 40.7128,
        longitude: -74.0060,
        accuracy_radius_km: 20,
        asn: 64501,
        as_org: "Example Net US",
    },
    Entry {
        network: "203.0.113.0/25",
        country: "FR",
        city: "Paris",
        latitude: 48.8566,
        longitude: 2.3522,
        accuracy_radius_km: 20,
        asn: 64502,
        as_org: "Example Mobile",
    },
    Entry {
        network: "203.0.113.128/25",
        country: "AU",
        city: "Sydney",
        latitude: -33.8688,
        longitude: 151.2093,
        accuracy_radius_km: 50,
        asn: 64502,
        as_org: "Example Mobile",
    },
    Entry {
        network: "2001:db8::/32",
        country: "GB",
        city: "London",
        latitude: 51.5074,
        longitude: -0.1278,
        accuracy_radius_km: 50,
        asn: 64503,
        as_org: "Example Net GB",
    },
];

/// The same networks as [`ENTRIES`], each mapped somewhere else (and to other AS
/// numbers), so a test can tell old data from new after replacing a file.
pub const ALTERNATIVE: &[Entry<'static>] = &[
    Entry {
        network: "192.0.2.0/24",
        country: "JP",
        city: "Tokyo",
        latitude: 35.6762,
        longitude: 139.6503,
        accuracy_radius_km: 20,
        asn: 64510,
        as_org: "Example Net JP",
    },
    Entry {
        network: "198.51.100.0/24",
        country: "BR",
        city: "Sao Paulo",
        latitude: -23.5505,
        longitude: -46.6333,
        accuracy_radius_km: 20,
        asn: 64511,
        as_org: "Example Net BR",
    },
    Entry {
        network: "203.0.113.0/25",
        country: "IT",
        city: "Rome",
        latitude: 41.9028,
        longitude: 12.4964,
        accuracy_radius_km: 20,
        asn: 64512,
        as_org: "Example Mobile IT",
    },
    Entry {
        network: "203.0.113.128/25",
        country: "NZ",
        city: "Auckland",
        latitude: -36.8485,
        longitude: 174.7633,
        accuracy_radius_km: 50,
        asn: 64512,
        as_org: "Example Mobile IT",
    },
    Entry {
        network: "2001:db8::/32",
        country: "CA",
        city: "Toronto",
        latitude: 43.6532,
        longitude: -79.3832,
        accuracy_radius_km: 50,
        asn: 64513,
        as_org: "Example Net CA",
    },
];

/// The entry of `entries` whose network is the longest that contains `ip`
/// (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn entry_for<'e, 'a>(entries: &'e [Entry<'a>], ip: IpAddr) -> Option<&'e Entry<'a>> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    entries
        .iter()
        .filter_map(|e| Some((e.network.parse::<IpNet>().ok()?, e)))
        .filter(|(net, _)| net.contains(&ip))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, e)| e)
}

/// Which MaxMind record layout a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// GeoLite2-City: continent, country, registered_country, city, location, subdivisions.
    City,
    /// GeoLite2-Country: continent, country, registered_country.
    Country,
    /// GeoLite2-ASN: autonomous_system_number, autonomous_system_organization.
    Asn,
}

/// A GeoLite2-City database (`database_type` "GeoLite2-City") of `entries`.
pub fn city_db_bytes(entries: &[Entry<'_>]) -> io::Result<Vec<u8>> {
    db_bytes(Shape::City, "GeoLite2-City", entries)
}

/// A GeoLite2-Country database of `entries` (no city, no coordinates).
pub fn country_db_bytes(entries: &[Entry<'_>]) -> io::Result<Vec<u8>> {
    db_bytes(Shape::Country, "GeoLite2-Country", entries)
}

/// A GeoLite2-ASN database of `entries`.
pub fn asn_db_bytes(entries: &[Entry<'_>]) -> io::Result<Vec<u8>> {
    db_bytes(Shape::Asn, "GeoLite2-ASN", entries)
}

/// A database of any `database_type` in one of the MaxMind shapes, e.g. a
/// `"DBIP-City-Lite"` file, or a type the reader must refuse.
pub fn db_bytes(shape: Shape, database_type: &str, entries: &[Entry<'_>]) -> io::Result<Vec<u8>> {
    write_db(shape, database_type, IpVersion::V6, entries)
}

/// Like [`db_bytes`], but an IPv4-only database (`ip_version` 4, as some older or
/// third-party files are): IPv6 entries are left out.
pub fn db_bytes_ipv4(
    shape: Shape,
    database_type: &str,
    entries: &[Entry<'_>],
) -> io::Result<Vec<u8>> {
    write_db(shape, database_type, IpVersion::V4, entries)
}

fn write_db(
    shape: Shape,
    database_type: &str,
    ip_version: IpVersion,
    entries: &[Entry<'_>],
) -> io::Result<Vec<u8>> {
    let mut writer = Writer::builder(database_type)
        .description(&[("en", "exim-access test data (documentation ranges)")])
        .ip_version(ip_version)
        // A fixed build time: the same entries give the same bytes.
        .build_epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .build();
    for e in entries {
        let network: IpNet = e.network.parse().map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad network {:?}: {err}", e.network),
            )
        })?;
        if ip_version == IpVersion::V4 && network.addr().is_ipv6() {
            continue;
        }
        let result = match shape {
            Shape::City => writer.insert(network, &city_record(e)),
            Shape::Country => writer.insert(network, &country_record(e)),
            Shape::Asn => writer.insert(
                network,
                &AsnRecord {
                    autonomous_system_number: e.asn,
                    autonomous_system_organization: e.as_org,
                },
            ),
        };
        result.map_err(io::Error::other)?;
    }
    writer.to_bytes().map_err(io::Error::other)
}

/// Writes [`ENTRIES`] as a GeoLite2-City file at `path` (in place).
pub fn write_city_db(path: &Path) -> io::Result<()> {
    write_city_db_with(path, ENTRIES)
}

/// Writes [`ENTRIES`] as a GeoLite2-Country file at `path` (in place).
pub fn write_country_db(path: &Path) -> io::Result<()> {
    write_country_db_with(path, ENTRIES)
}

/// Writes [`ENTRIES`] as a GeoLite2-ASN file at `path` (in place).
pub fn write_asn_db(path: &Path) -> io::Result<()> {
    write_asn_db_with(path, ENTRIES)
}

/// Writes `entries` as a GeoLite2-City file at `path`, truncating and rewriting it in
/// place (same inode); [`replace_atomically`] is the other way to update a file.
pub fn write_city_db_with(path: &Path, entries: &[Entry<'_>]) -> io::Result<()> {
    std::fs::write(path, city_db_bytes(entries)?)
}

/// Writes `entries` as a GeoLite2-Country file at `path` (in place).
pub fn write_country_db_with(path: &Path, entries: &[Entry<'_>]) -> io::Result<()> {
    std::fs::write(path, country_db_bytes(entries)?)
}

/// Writes `entries` as a GeoLite2-ASN file at `path` (in place).
pub fn write_asn_db_with(path: &Path, entries: &[Entry<'_>]) -> io::Result<()> {
    std::fs::write(path, asn_db_bytes(entries)?)
}

/// Replaces `path` the way `geoipupdate` does: writes `bytes` to a temporary file in the
/// same directory, syncs it, and renames it over `path` (a new inode).
pub fn replace_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

// ---- records, with MaxMind's field names ---------------------------------------------

#[derive(Serialize)]
struct Names<'a> {
    en: &'a str,
}

#[derive(Serialize)]
struct Continent<'a> {
    code: &'a str,
    geoname_id: u32,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Country<'a> {
    geoname_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_in_european_union: Option<bool>,
    iso_code: &'a str,
    names: Names<'a>,
}

#[derive(Serialize)]
struct City<'a> {
    geoname_id: u32,
    names: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct Location<'a> {
    accuracy_radius: u16,
    latitude: f64,
    longitude: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_zone: Option<&'a str>,
}

#[derive(Serialize)]
struct CountryRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    continent: Option<Continent<'a>>,
    country: Country<'a>,
    registered_country: Country<'a>,
}

#[derive(Serialize)]
struct CityRecord<'a> {
    city: City<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continent: Option<Continent<'a>>,
    country: Country<'a>,
    location: Location<'a>,
    registered_country: Country<'a>,
}

#[derive(Serialize)]
struct AsnRecord<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
}

/// What GeoNames says about the countries used here; other codes get placeholders.
struct Place {
    iso: &'static str,
    name: &'static str,
    geoname_id: u32,
    continent: &'static str,
    eu: bool,
    time_zone: &'static str,
}

const PLACES: &[Place] = &[
    Place {
        iso: "DE",
        name: "Germany",
        geoname_id: 2921044,
        continent: "EU",
        eu: true,
        time_zone: "Europe/Berlin",
    },
    Place {
        iso: "US",
        name: "United States",
        geoname_id: 6252001,
        continent: "NA",
        eu: false,
        time_zone: "America/New_York",
    },
    Place {
        iso: "FR",
        name: "France",
        geoname_id: 3017382,
        continent: "EU",
        eu: true,
        time_zone: "Europe/Paris",
    },
    Place {
        iso: "AU",
        name: "Australia",
        geoname_id: 2077456,
        continent: "OC",
        eu: false,
        time_zone: "Australia/Sydney",
    },
    Place {
        iso: "GB",
        name: "United Kingdom",
        geoname_id: 2635167,
        continent: "EU",
        eu: false,
        time_zone: "Europe/London",
    },
    Place {
        iso: "JP",
        name: "Japan",
        geoname_id: 1861060,
        continent: "AS",
        eu: false,
        time_zone: "Asia/Tokyo",
    },
    Place {
        iso: "BR",
        name: "Brazil",
        geoname_id: 3469034,
        continent: "SA",
        eu: false,
        time_zone: "America/Sao_Paulo",
    },
    Place {
        iso: "IT",
        name: "Italy",
        geoname_id: 3175395,
        continent: "EU",
        eu: true,
        time_zone: "Europe/Rome",
    },
    Place {
        iso: "NZ",
        name: "New Zealand",
        geoname_id: 2186224,
        continent: "OC",
        eu: false,
        time_zone: "Pacific/Auckland",
    },
    Place {
        iso: "CA",
        name: "Canada",
        geoname_id: 6251999,
        continent: "NA",
        eu: false,
        time_zone: "America/Toronto",
    },
];

fn continent(code: &str) -> Option<Continent<'static>> {
    let (code, geoname_id, name) = match code {
        "AF" => ("AF", 6255146, "Africa"),
        "AS" => ("AS", 6255147, "Asia"),
        "EU" => ("EU", 6255148, "Europe"),
        "NA" => ("NA", 6255149, "North America"),
        "OC" => ("OC", 6255151, "Oceania"),
        "SA" => ("SA", 6255150, "South America"),
        _ => return None,
    };
    Some(Continent {
        code,
        geoname_id,
        names: Names { en: name },
    })
}

fn place(iso: &str) -> Option<&'static Place> {
    PLACES.iter().find(|p| p.iso == iso)
}

fn country<'a>(e: &Entry<'a>) -> Country<'a> {
    let p = place(e.country);
    Country {
        geoname_id: p.map_or(1, |p| p.geoname_id),
        is_in_european_union: p.and_then(|p| p.eu.then_some(true)),
        iso_code: e.country,
        names: Names {
            en: p.map_or(e.country, |p| p.name),
        },
    }
}

fn country_record<'a>(e: &Entry<'a>) -> CountryRecord<'a> {
    CountryRecord {
        continent: place(e.country).and_then(|p| continent(p.continent)),
        country: country(e),
        registered_country: country(e),
    }
}

fn city_record<'a>(e: &Entry<'a>) -> CityRecord<'a> {
    let p = place(e.country);
    CityRecord {
        city: City {
            // Not GeoNames ids; stable and distinct per city name is all a test needs.
            geoname_id: e
                .city
                .bytes()
                .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into())),
            // Several languages, as in MaxMind's files: the reader must pick "en".
            names: [
                ("de", e.city),
                ("en", e.city),
                ("fr", e.city),
                ("ja", e.city),
            ]
            .into(),
        },
        continent: p.and_then(|p| continent(p.continent)),
        country: country(e),
        location: Location {
            accuracy_radius: e.accuracy_radius_km,
            latitude: e.latitude,
            longitude: e.longitude,
            time_zone: p.map(|p| p.time_zone),
        },
        registered_country: country(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_builds_and_is_deterministic() {
        for f in [city_db_bytes, country_db_bytes, asn_db_bytes] {
            let a = f(ENTRIES).unwrap();
            assert_eq!(a, f(ENTRIES).unwrap());
            assert_ne!(a, f(ALTERNATIVE).unwrap());
        }
    }

    #[test]
    fn entry_for_picks_the_longest_network_and_maps_ipv4_in_ipv6() {
        let paris = entry_for(ENTRIES, "203.0.113.5".parse().unwrap()).unwrap();
        assert_eq!(paris.city, "Paris");
        let sydney = entry_for(ENTRIES, "::ffff:203.0.113.200".parse().unwrap()).unwrap();
        assert_eq!(sydney.city, "Sydney");
        assert_eq!(
            entry_for(ENTRIES, "2001:db8::1".parse().unwrap())
                .unwrap()
                .country,
            "GB"
        );
        assert!(entry_for(ENTRIES, "10.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn a_bad_network_is_an_error() {
        let bad = [Entry {
            network: "not-a-net",
            ..ENTRIES[0]
        }];
        assert_eq!(
            city_db_bytes(&bad).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
