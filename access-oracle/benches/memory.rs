//! Memory per account: 1,000,000 synthetic accounts carrying baselines, counted by a
//! global allocator that tracks live heap bytes (exact, unlike RSS).
//!
//! Two states are measured, because the oracle keeps two maps:
//! * **idle** (the target, DESIGN section 6: <= 1 KiB per idle account): an account
//!   not seen for more than `[accounts] idle_secs` has left the live map; what remains
//!   is its baseline (countries, ASNs, networks, a client, hours, sending average, last
//!   located login) in the baseline map;
//! * **recently active**: the same accounts also in the live map, each with one login
//!   in its timeline and one recipient in its window (what an account costs during the
//!   day it was active).
//!
//! It also times the restart: the snapshot of those baselines written and read back into
//! a fresh state (DESIGN: 1,000,000 accounts restored in <= 2 s), then with a journal of
//! `JOURNAL_REQUESTS` requests (default 200,000: failed and good logins, recipients)
//! made after the snapshot replayed on top, as a start after `kill -9` does. The same
//! requests are timed through an engine without a journal and one with it: the
//! journal's cost per request, against the floor of none, in the same run.
//!
//! Run: `cargo bench -p access-oracle --bench memory` (prints a table; results in
//! `docs/PERFORMANCE.md`). `ACCOUNTS=N` changes the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

use access_oracle::config::{Config, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::enrich::{CountryCode, GeoInfo, Location};
use access_oracle::persist::{journal, restore, snapshot};
use access_oracle::protocol::parse_line;
use access_oracle::state::State;
use jiff::Timestamp;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Whether allocations are counted; off while the restart is timed, where one shared
/// counter updated by every decoding thread would slow what is measured.
static COUNTING: AtomicBool = AtomicBool::new(true);

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as for realloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A typical account's place: two countries' worth of variety over time.
fn geo(i: usize, k: usize) -> GeoInfo {
    let (c, lat, lon) = if k % 2 == 0 {
        (*b"DE", 52.52, 13.405)
    } else {
        (*b"AT", 48.2, 16.37)
    };
    GeoInfo {
        country: Some(CountryCode(c)),
        city: None,
        location: Some(Location {
            lat,
            lon,
            accuracy_radius_km: Some(20),
        }),
        asn: Some(64500 + (i % 7 + k) as u32),
        as_org: None,
    }
}

fn main() {
    let n: usize = std::env::var("ACCOUNTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let config = Config::from_raw(RawConfig::default()).expect("defaults");
    let start = Timestamp::from_second(1_800_000_000).unwrap();
    let (engine, _alerts) = Engine::new(&config, start);
    let before = live();
    // Baselines only: four logins from two networks and two countries, a client name,
    // recipients in three hours.
    for i in 0..n {
        let user = format!("user{i:07}@example.org");
        let mut b = engine.state().baseline_mut(&user, 1_800_000_000);
        for k in 0..4 {
            let ip = std::net::IpAddr::from([192, 0, (i % 200) as u8, (k * 60) as u8]);
            b.learn_login(
                1_800_000_000 + (k as i64) * 3600,
                Some(ip),
                &geo(i, k),
                Some("laptop.example"),
            );
            b.learn_rcpts(1_800_000_000 + (k as i64) * 3600, 5);
        }
    }
    let idle = (live() - before) as f64 / n as f64;
    // Restart: the snapshot of these baselines written, then read into a fresh state,
    // with the counting off (nothing allocated meanwhile outlives it: the fresh state is
    // dropped before it is back on).
    COUNTING.store(false, Ordering::Relaxed);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let t = std::time::Instant::now();
    let mark = journal::Mark {
        generation: 1,
        seq: 0,
    };
    snapshot::write(engine.state(), dir.path(), 1_800_000_000, None, Some(mark)).expect("write");
    let wrote = t.elapsed();
    // The requests after the snapshot, through an engine without a journal and one with.
    let requests: usize = std::env::var("JOURNAL_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let commands: Vec<_> = (0..requests)
        .map(|i| {
            let user = format!("user{:07}@example.org", (i * 7919) % n);
            let ip = format!("198.51.{}.{}", (i / 250) % 250, i % 250);
            let line = match i % 4 {
                0 | 1 => format!("auth user={user} ip={ip} result=fail pwhash={i:x}"),
                2 => format!("rcpt user={user} ip=192.0.2.1 rcpt=x@example.net"),
                _ => format!("auth user={user} ip=192.0.2.1 result=ok"),
            };
            parse_line(line.as_bytes()).expect("valid")
        })
        .collect();
    let run = |e: &Engine| {
        let t = std::time::Instant::now();
        for (i, cmd) in commands.iter().enumerate() {
            let at = Timestamp::from_second(1_800_000_060 + (i / 10_000) as i64).unwrap();
            e.handle(cmd, at);
        }
        t.elapsed()
    };
    let (plain, _plain_alerts) = Engine::new(&config, start);
    let without = run(&plain);
    drop(plain);
    let (journaled, _journaled_alerts) = Engine::new(&config, start);
    let j = journal::JournalFile::open(
        dir.path(),
        mark.generation,
        mark.seq,
        std::time::Duration::from_secs(1),
    );
    journaled.set_journal(j.clone());
    let with = run(&journaled);
    let appended = j
        .status()
        .appended
        .load(std::sync::atomic::Ordering::Relaxed);
    let journal_bytes = j.status().bytes.load(std::sync::atomic::Ordering::Relaxed);
    j.close();
    drop(journaled);
    let size = std::fs::metadata(dir.path().join(snapshot::FILE_NAME))
        .map(|m| m.len())
        .unwrap_or(0);
    let fresh = State::default();
    let t = std::time::Instant::now();
    snapshot::read(&fresh, dir.path(), 1_800_000_000).expect("read");
    let read = t.elapsed();
    assert_eq!(fresh.baseline_count(), n);
    drop(fresh);
    // The start after a crash: the snapshot, then the journal replayed on top.
    let fresh = State::default();
    let t = std::time::Instant::now();
    let restored = restore::restore(&fresh, dir.path(), 1_800_000_100);
    let restarted = t.elapsed();
    let replayed = restored.journal.expect("the journal replays");
    assert!(replayed.damaged.is_empty());
    assert_eq!(replayed.records, appended);
    drop(fresh);
    drop(dir);
    COUNTING.store(true, Ordering::Relaxed);
    // The same accounts recently active: one login and one recipient each, live.
    let before_live = live();
    for i in 0..n {
        let user = format!("user{i:07}@example.org");
        for line in [
            format!("auth user={user} ip=192.0.2.1 result=ok"),
            format!("rcpt user={user} ip=192.0.2.1 rcpt=x@example.net"),
        ] {
            let cmd = parse_line(line.as_bytes()).expect("valid");
            engine.handle(&cmd, start);
        }
    }
    let active = (live() - before_live) as f64 / n as f64;
    println!("accounts                         {n}");
    println!("idle (baseline only)             {idle:.0} bytes per account");
    println!("recently active (live entry)     {active:.0} bytes per account on top");
    println!(
        "recently active, total           {:.0} bytes per account",
        idle + active
    );
    println!(
        "snapshot of the baselines        {:.1} MiB, written in {:.2} s, restored in {:.2} s",
        size as f64 / (1 << 20) as f64,
        wrote.as_secs_f64(),
        read.as_secs_f64()
    );
    println!(
        "journal: {requests} requests      {:.2} s without, {:.2} s with ({:.2}x, {:.2} us more per request); {appended} records, {:.1} MiB",
        without.as_secs_f64(),
        with.as_secs_f64(),
        with.as_secs_f64() / without.as_secs_f64(),
        (with.as_secs_f64() - without.as_secs_f64()) * 1e6 / requests as f64,
        journal_bytes as f64 / (1 << 20) as f64,
    );
    println!(
        "restart after a crash            snapshot + {appended} journal records restored in {:.2} s (snapshot alone {:.2} s)",
        restarted.as_secs_f64(),
        read.as_secs_f64(),
    );
    println!(
        "baselines {} / live accounts {}",
        engine.state().baseline_count(),
        engine.state().account_count()
    );
}
