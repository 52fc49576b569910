//! What one request costs inside the oracle, without sockets: the tokenizer alone,
//! `parse_line` alone, and `parse_line` + `Engine::handle` per verb, on a warm state of
//! [`ACCOUNTS`] accounts (each with a login, recipients and an address behind it).
//!
//! The enrichment group adds GeoIP City + ASN lookups and the location rules on a
//! successful AUTH, against the same engine without databases. The audit group runs the
//! same AUTH lines with the audit trail on (records handed to its writer thread, which
//! writes and fdatasyncs them on the side), and measures the writer's own throughput.
//!
//! Run: `cargo bench -p access-oracle --bench engine`. Results and their reading are in
//! `docs/PERFORMANCE.md`. The floor to compare against is in the same run: the tokenizer
//! alone is the least any request can cost.
//!
//! Every iteration takes the next account (round robin over all of them) and a clock
//! that advances one second per [`REQUESTS_PER_SEC`] requests, so that the windows stay
//! as small as in real traffic and every verdict stays `accept` under the default rules
//! (checked before measuring: a benchmark of the defer path by accident would be wrong).

use std::hint::black_box;
use std::net::Ipv4Addr;

use access_oracle::config::{Config, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::protocol::{Reply, parse_line};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_main};
use jiff::Timestamp;

/// Accounts in the warm state.
const ACCOUNTS: usize = 100_000;

/// How many requests the simulated clock lets pass per second. With [`ACCOUNTS`]
/// accounts in turn, one account sees one request per 100 simulated seconds: at most 36
/// recipients per hour (ceiling 200) and 3 failures per 5 minutes (threshold 5).
const REQUESTS_PER_SEC: u64 = 1000;

/// The first simulated second.
const START: i64 = 1_800_000_000;

/// One account's lines for every verb measured.
struct Lines {
    auth_ok: Vec<u8>,
    auth_fail: Vec<u8>,
    mail: Vec<u8>,
    rcpt: Vec<u8>,
}

fn user(i: usize) -> String {
    format!("user{i:06}@example.net")
}

/// A distinct address per account, so no per-address rule trips.
fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i as u32)
}

fn lines(i: usize) -> Lines {
    let (u, ip) = (user(i), ip(i));
    Lines {
        // What the library sends from the plaintext authenticator.
        auth_ok: format!(
            "auth user={u} ip={ip} result=ok mech=PLAIN authenticator=access_plain port=587 helo=client.example.org pwhash=0a3f"
        )
        .into_bytes(),
        // Each failure of an account carries a different hash: all count.
        auth_fail: format!(
            "auth user={u} ip={ip} result=fail mech=PLAIN authenticator=access_plain port=587 helo=client.example.org pwhash={:04x}",
            (i * 7) % 4096
        )
        .into_bytes(),
        mail: format!("mail user={u} ip={ip} sender={u}").into_bytes(),
        // ~60 bytes, the line the socket benchmark sends too.
        rcpt: format!("rcpt user={u} ip={ip} rcpt=r{i}@example.org").into_bytes(),
    }
}

/// The simulated clock for request number `n`.
fn clock(n: u64) -> Timestamp {
    Timestamp::from_second(START + (n / REQUESTS_PER_SEC) as i64).expect("valid time")
}

/// An engine on the default rules with [`ACCOUNTS`] accounts, each of which logged in
/// and sent to a few recipients; returns the engine, the lines, and the request count
/// so far (the clock goes on from there).
fn warm_engine() -> (
    Engine,
    tokio::sync::mpsc::Receiver<std::sync::Arc<access_oracle::alert::Alert>>,
    Vec<Lines>,
    u64,
) {
    let config = Config::from_raw(RawConfig::default()).expect("the defaults are valid");
    let (engine, alerts) = Engine::new(&config, clock(0));
    let all: Vec<Lines> = (0..ACCOUNTS).map(lines).collect();
    let mut n = 0;
    for round in 0..3 {
        for l in &all {
            let line = if round == 0 { &l.auth_ok } else { &l.rcpt };
            let reply = engine.handle(&parse_line(line).expect("valid line"), clock(n));
            assert_eq!(reply, Reply::Accept, "warm-up must only accept");
            n += 1;
        }
    }
    assert_eq!(engine.state().account_count(), ACCOUNTS);
    (engine, alerts, all, n)
}

/// The tokenizer alone (`access_wire::parse_request`), then with the per-verb checks.
fn parsing(c: &mut Criterion) {
    let l = lines(4242);
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tokenizer rcpt", |b| {
        b.iter(|| access_wire::parse_request(black_box(&l.rcpt)).map(|r| r.pairs.len()))
    });
    g.bench_function("tokenizer auth", |b| {
        b.iter(|| access_wire::parse_request(black_box(&l.auth_fail)).map(|r| r.pairs.len()))
    });
    g.bench_function("parse_line rcpt", |b| {
        b.iter(|| parse_line(black_box(&l.rcpt)))
    });
    g.bench_function("parse_line auth", |b| {
        b.iter(|| parse_line(black_box(&l.auth_fail)))
    });
    g.finish();
}

/// `parse_line` + `Engine::handle` per verb on the warm state, then `handle` alone.
fn verbs(c: &mut Criterion) {
    let (engine, _alerts, all, mut n) = warm_engine();
    println!(
        "line lengths: rcpt {} B, auth {} B, mail {} B",
        all[0].rcpt.len(),
        all[0].auth_fail.len(),
        all[0].mail.len()
    );
    let mut g = c.benchmark_group(format!("parse_line+handle, {ACCOUNTS} accounts"));
    g.throughput(Throughput::Elements(1));
    type Pick = fn(&Lines) -> &[u8];
    let cases: [(&str, Pick); 5] = [
        ("ping", |_| b"ping"),
        ("auth ok", |l| &l.auth_ok),
        ("auth fail pwhash", |l| &l.auth_fail),
        ("mail", |l| &l.mail),
        ("rcpt under ceiling", |l| &l.rcpt),
    ];
    for (name, pick) in cases {
        round_robin(&mut g, name, &engine, &mut n, |i| pick(&all[i]));
        // Nothing above may have measured a defer by accident.
        check_all_accepted(&engine, name);
    }
    g.finish();

    // The engine alone, requests parsed beforehand: what `handle` adds to parsing.
    let mut g = c.benchmark_group(format!("handle only, {ACCOUNTS} accounts"));
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("rcpt under ceiling", |b| {
        b.iter_batched(
            || {
                i += 1;
                parse_line(&all[i % ACCOUNTS].rcpt).expect("valid line")
            },
            |cmd| {
                n += 1;
                engine.handle(&cmd, clock(n))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
    check_all_accepted(&engine, "handle only");
    println!(
        "replies during the whole run: {:?}",
        engine.stats.snapshot().replies
    );
}

/// Measures `parse_line` + `handle` of `line(i)` for each account `i` in turn, the
/// simulated clock `n` going on.
fn round_robin<'a>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    engine: &Engine,
    n: &mut u64,
    line: impl Fn(usize) -> &'a [u8],
) {
    let mut i = 0usize;
    g.bench_function(id, |b| {
        b.iter(|| {
            let l = line(i % ACCOUNTS);
            i += 1;
            *n += 1;
            let cmd = parse_line(black_box(l)).expect("valid line");
            engine.handle(&cmd, clock(*n))
        })
    });
}

/// Panics unless every reply so far was `accept` or `pong` and no rule fired.
fn check_all_accepted(engine: &Engine, case: &str) {
    let snap = engine.stats.snapshot();
    let refused: u64 = snap
        .replies
        .iter()
        .filter(|(kind, _)| !matches!(*kind, "accept" | "pong"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused == 0 && snap.alerts_raised == 0,
        "{case}: the benchmark left the accept path: {:?}, {} alert(s)",
        snap.replies,
        snap.alerts_raised
    );
}

/// A successful AUTH with enrichment: GeoIP City and ASN lookups (test `.mmdb` files),
/// the location rules and the baseline learning, against the same without databases.
fn with_geoip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (city, asn) = (dir.path().join("city.mmdb"), dir.path().join("asn.mmdb"));
    geo_fixtures::write_city_db(&city).expect("city db");
    geo_fixtures::write_asn_db(&asn).expect("asn db");
    let geoip = access_oracle::enrich::GeoIp::open(&access_oracle::enrich::GeoIpConfig {
        city_db: Some(city),
        asn_db: Some(asn),
        ..Default::default()
    })
    .expect("the test databases open");
    let geo_lines: Vec<Vec<u8>> = (0..ACCOUNTS)
        .map(|i| {
            format!(
                "auth user={} ip=192.0.2.{} result=ok mech=PLAIN helo=client.example.org pwhash=0a3f",
                user(i),
                i % 250
            )
            .into_bytes()
        })
        .collect();
    let mut g = c.benchmark_group(format!("auth ok with enrichment, {ACCOUNTS} accounts"));
    g.throughput(Throughput::Elements(1));
    for enriched in [false, true] {
        let (engine, _alerts, _all, mut n) = warm_engine();
        if enriched {
            engine.set_enrichment(access_oracle::engine::Enrichment {
                geoip: std::sync::Arc::new(
                    access_oracle::enrich::GeoIp::open(&access_oracle::enrich::GeoIpConfig {
                        city_db: Some(dir.path().join("city.mmdb")),
                        asn_db: Some(dir.path().join("asn.mmdb")),
                        ..Default::default()
                    })
                    .expect("open"),
                ),
                ..Default::default()
            });
        }
        let name = if enriched {
            "GeoIP City + ASN"
        } else {
            "no databases"
        };
        round_robin(&mut g, name, &engine, &mut n, |i| &geo_lines[i]);
        check_all_accepted(&engine, name);
    }
    g.finish();
    // The lookup alone.
    let ip: std::net::IpAddr = "192.0.2.77".parse().expect("an address");
    c.bench_function("GeoIp::lookup City + ASN", |b| {
        b.iter(|| geoip.lookup(black_box(ip)))
    });
}

/// AUTH with the audit trail on, against the same warm engine without it; then how
/// many records per second the writer puts in the file (batches every 5 ms, fdatasync at most every second).
fn with_audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (engine, _alerts, all, mut n) = warm_engine();
    let mut g = c.benchmark_group(format!("auth with the audit trail, {ACCOUNTS} accounts"));
    g.throughput(Throughput::Elements(1));
    type Pick = fn(&Lines) -> &[u8];
    let cases: [(&str, Pick); 2] = [
        ("auth ok", |l| &l.auth_ok),
        ("auth fail pwhash", |l| &l.auth_fail),
    ];
    let mut run = |g: &mut BenchmarkGroup<'_, WallTime>, label: &str| {
        for (name, pick) in cases {
            let id = format!("{name}, {label}");
            round_robin(g, &id, &engine, &mut n, |i| pick(&all[i]));
        }
    };
    run(&mut g, "no trail");
    let config = access_oracle::audit::AuditConfig::default();
    let writer = engine
        .open_audit(&config, dir.path(), false)
        .expect("the trail opens")
        .expect("the trail is on");
    run(&mut g, "trail on");
    g.finish();
    check_all_accepted(&engine, "audit");
    let audit = engine.audit().expect("the trail is on");
    audit.flush();
    println!("audit trail: {}", audit.status());
    drop(writer);

    // The writer alone: records handed over as fast as possible, until all are on disk.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (sink, writer) = access_oracle::audit::start(&config, dir.path(), false)
        .expect("the trail opens")
        .expect("the trail is on");
    let record = |i: usize| {
        let mut r = access_oracle::audit::Record::new(
            access_oracle::audit::Kind::Auth,
            access_oracle::audit::Source::Live,
            clock(i as u64),
        )
        .user(&user(i))
        .ip(Some(ip(i).into()))
        .protocol(Some("smtp"));
        r.result = Some(access_oracle::protocol::Outcome::Fail);
        r.verdict = Some("accept".into());
        r
    };
    let mut g = c.benchmark_group("audit writer");
    const RECORDS: usize = 100_000;
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.sample_size(10);
    g.bench_function(
        format!("{RECORDS} records written (fdatasync at most every second)"),
        |b| {
            b.iter(|| {
                for i in 0..RECORDS {
                    sink.record(record(i));
                }
                sink.flush();
            })
        },
    );
    g.finish();
    println!("audit writer: {}", sink.status());
    drop(writer);
}

// The macro defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::parsing,
        super::verbs,
        super::with_geoip,
        super::with_audit
    );
}

criterion_main!(group::benches);
