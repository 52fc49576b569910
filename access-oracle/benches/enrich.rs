//! What enrichment costs per lookup: GeoIP (City + ASN) and the CIDR lists.
//!
//! Run: `cargo bench -p access-oracle --bench enrich`.
//!
//! * `geoip/*`: [`GeoIp::lookup`] on files written with `geo-fixtures`: the five-network
//!   fixture, and a synthetic file of [`GEO_NETWORKS`] networks in GeoLite2 City / ASN
//!   shape, whose search tree is deep like a real one (GeoLite2-City has ~4M networks,
//!   so real trees are deeper still; the record decoding is the same). A hit finds two
//!   records; over [`PROBES`] addresses they are in the decode cache after the warm-up,
//!   over [`SPREAD`] addresses (~100k City records) many are decoded. Misses stop in
//!   the tree.
//! * `lists/*`: [`IpLists::blocked`] and [`IpLists::allowed`] on a DROP-sized list
//!   ([`DROP_NETWORKS`], Spamhaus DROP has ~1,500) and a large one ([`BIG_NETWORKS`]),
//!   for addresses inside a listed network (hit) and outside all (miss).
//!
//! Every iteration takes the next of [`PROBES`] (or [`SPREAD`]) precomputed addresses, so
//! the caches see
//! a spread of addresses, not one.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use access_oracle::enrich::{GeoIp, GeoIpConfig, IpLists, ListsConfig};
use criterion::{Criterion, Throughput, criterion_main};
use geo_fixtures::{ENTRIES, Entry};

/// Networks in the synthetic GeoIP files.
const GEO_NETWORKS: usize = 100_000;
/// Networks in the DROP-sized list.
const DROP_NETWORKS: usize = 1_500;
/// Networks in the large list.
const BIG_NETWORKS: usize = 100_000;
/// Addresses cycled through per benchmark.
const PROBES: usize = 4096;
/// Addresses cycled through by the `hit, N addresses` GeoIP case: more distinct records
/// than the decode cache keeps, so many lookups decode.
const SPREAD: usize = 262_144;

/// Deterministic pseudo-random numbers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` distinct IPv4 networks with prefix lengths in `lens`, as text.
fn networks(rng: &mut Rng, n: usize, lens: std::ops::RangeInclusive<u8>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let span = u64::from(lens.end() - lens.start()) + 1;
    while seen.len() < n {
        let len = lens.start() + rng.below(span) as u8;
        let addr = (rng.next() as u32) & (u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0));
        // Stay in unicast space the way real lists do.
        if !(1..224).contains(&(addr >> 24)) {
            continue;
        }
        seen.insert((addr, len));
    }
    seen.into_iter()
        .map(|(a, len)| format!("{}/{len}", Ipv4Addr::from(a)))
        .collect()
}

/// An address inside `network` (text), a few hosts in.
fn inside(network: &str, rng: &mut Rng) -> IpAddr {
    let net: ipnet::Ipv4Net = network.parse().expect("network");
    let hosts = 1u64 << (32 - net.prefix_len());
    IpAddr::V4(Ipv4Addr::from(
        u32::from(net.network()) + rng.below(hosts) as u32,
    ))
}

fn geoip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |city: &Path, asn: &Path| {
        GeoIp::open(&GeoIpConfig {
            city_db: Some(city.to_path_buf()),
            asn_db: Some(asn.to_path_buf()),
            ..GeoIpConfig::default()
        })
        .expect("fixture opens")
    };

    // The five-network fixture.
    let (city, asn) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
    geo_fixtures::write_city_db(&city).expect("write");
    geo_fixtures::write_asn_db(&asn).expect("write");
    let small = open(&city, &asn);
    let mut rng = Rng(0x5eed);
    let small_hits: Vec<IpAddr> = (0..PROBES)
        .map(|i| {
            let e = &ENTRIES[i % ENTRIES.len()];
            match e.network.parse::<ipnet::IpNet>().expect("network") {
                ipnet::IpNet::V4(_) => inside(e.network, &mut rng),
                ipnet::IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + i as u128).into()),
            }
        })
        .collect();

    // The synthetic large files.
    let nets = networks(&mut rng, GEO_NETWORKS, 16..=24);
    let names: Vec<String> = (0..500).map(|i| format!("City {i}")).collect();
    let orgs: Vec<String> = (0..2000).map(|i| format!("Example AS {i}")).collect();
    let countries = ["DE", "US", "FR", "AU", "GB", "JP", "BR", "IT", "NZ", "CA"];
    let entries: Vec<Entry<'_>> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| Entry {
            network: n,
            country: countries[i % countries.len()],
            city: &names[i % names.len()],
            // Nearly every network its own City record, as in a real City file.
            latitude: (i as f64 * 0.0017) % 178.0 - 89.0,
            longitude: (i as f64 * 0.0036) % 358.0 - 179.0,
            accuracy_radius_km: 20 + (i % 5) as u16 * 10,
            asn: 64_512 + (i % orgs.len()) as u32,
            as_org: &orgs[i % orgs.len()],
        })
        .collect();
    let (big_city, big_asn) = (
        dir.path().join("big-city.mmdb"),
        dir.path().join("big-asn.mmdb"),
    );
    geo_fixtures::write_city_db_with(&big_city, &entries).expect("write");
    geo_fixtures::write_asn_db_with(&big_asn, &entries).expect("write");
    let big = open(&big_city, &big_asn);
    let big_hits: Vec<IpAddr> = (0..PROBES)
        .map(|_| inside(&nets[rng.below(nets.len() as u64) as usize], &mut rng))
        .collect();
    let big_misses: Vec<IpAddr> =
        std::iter::repeat_with(|| IpAddr::V4(Ipv4Addr::from(rng.next() as u32)))
            .filter(|a| big.lookup(*a).is_empty())
            .take(PROBES)
            .collect();
    for a in big_hits.iter().take(100) {
        assert!(big.lookup(*a).location.is_some(), "{a} should be a hit");
    }

    let mut g = c.benchmark_group("geoip");
    g.throughput(Throughput::Elements(1));
    let mut bench = |name: &str, geo: &GeoIp, probes: &[IpAddr]| {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % probes.len();
                black_box(geo.lookup(black_box(probes[i])))
            })
        });
    };
    bench("city+asn, fixture (5 networks), hit", &small, &small_hits);
    bench(
        &format!("city+asn, {GEO_NETWORKS} networks, hit"),
        &big,
        &big_hits,
    );
    let spread: Vec<IpAddr> = (0..SPREAD)
        .map(|_| inside(&nets[rng.below(nets.len() as u64) as usize], &mut rng))
        .collect();
    bench(
        &format!("city+asn, {GEO_NETWORKS} networks, hit, {SPREAD} addresses"),
        &big,
        &spread,
    );
    bench(
        &format!("city+asn, {GEO_NETWORKS} networks, miss"),
        &big,
        &big_misses,
    );
    let city_only = GeoIp::open(&GeoIpConfig {
        city_db: Some(big_city.clone()),
        ..GeoIpConfig::default()
    })
    .expect("opens");
    bench(
        &format!("city only, {GEO_NETWORKS} networks, hit"),
        &city_only,
        &big_hits,
    );
    g.finish();
}

fn lists(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0xd0d0);
    let mut g = c.benchmark_group("lists");
    g.throughput(Throughput::Elements(1));
    for (label, n, lens) in [
        ("DROP-sized", DROP_NETWORKS, 11..=24),
        ("large", BIG_NETWORKS, 20..=32),
    ] {
        let nets = networks(&mut rng, n, lens);
        let text: String = nets
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n} ; SBL{:06}\n", 100_000 + i))
            .collect();
        let block = dir.path().join(format!("{label}.txt"));
        std::fs::write(&block, format!("; synthetic {label} list\n{text}")).expect("write");
        let allow = dir.path().join(format!("{label}-allow.txt"));
        std::fs::write(&allow, "192.0.2.0/24\n2001:db8::/48\n").expect("write");
        let lists = IpLists::open(&ListsConfig {
            block: vec![block],
            allow: vec![allow],
            ..ListsConfig::default()
        })
        .expect("list opens");
        let hits: Vec<IpAddr> = (0..PROBES)
            .map(|_| inside(&nets[rng.below(nets.len() as u64) as usize], &mut rng))
            .collect();
        let misses: Vec<IpAddr> =
            std::iter::repeat_with(|| IpAddr::V4(Ipv4Addr::from(rng.next() as u32)))
                .filter(|a| lists.blocked(*a).is_none())
                .take(PROBES)
                .collect();
        assert!(hits.iter().all(|a| lists.blocked(*a).is_some()));

        let mut bench = |name: String, probes: &[IpAddr], f: &dyn Fn(IpAddr) -> bool| {
            let mut i = 0usize;
            g.bench_function(name, |b| {
                b.iter(|| {
                    i = (i + 1) % probes.len();
                    black_box(f(black_box(probes[i])))
                })
            });
        };
        let blocked = |a| lists.blocked(a).is_some();
        bench(
            format!("blocked, {label} ({n} networks), hit"),
            &hits,
            &blocked,
        );
        bench(
            format!("blocked, {label} ({n} networks), miss"),
            &misses,
            &blocked,
        );
        // What a request asks: allowed first, then blocked.
        let both = |a| !lists.allowed(a) && lists.blocked(a).is_some();
        bench(
            format!("allowed+blocked, {label} ({n} networks), miss"),
            &misses,
            &both,
        );
    }
    g.finish();
}

// The macro defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::geoip, super::lists);
}

criterion_main!(group::benches);
