//! Optional reverse DNS of source addresses (`[rdns]`), resolved in the background.
//!
//! A verdict never waits for DNS. The engine reads the cache with [`Rdns::cached`] (a map
//! lookup that never blocks) and asks for a lookup with [`Rdns::request`], which puts the
//! address on a bounded queue or, when the queue is full, drops and counts it. The
//! [`RdnsWorker`] resolves queued addresses on blocking threads, at most `concurrency` at
//! once, each bounded by `timeout_ms`, and caches names and misses for `cache_secs`
//! (failures and timeouts for at most a minute), at most `cache_max` addresses.
//!
//! By default a name counts only when it resolves back to the address (forward-confirmed
//! reverse DNS): whoever controls an address range controls its PTR records, so an
//! unconfirmed `mail.example-bank.com` says nothing. Unconfirmed names are kept apart
//! ([`RdnsAnswer::Unconfirmed`]).
//!
//! The worker takes the current time from an injected clock ([`RdnsWorker::with_clock`]);
//! readers pass `now`, so expiry is tested without waiting.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::canonical_ip;
use crate::problems::Problems;

/// `[rdns]`: reverse DNS of source addresses, for alerts and reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RdnsConfig {
    /// Whether to look up names at all. Off by default: every lookup is a DNS query
    /// about a client's address, seen by the resolver.
    pub enabled: bool,
    /// How long one lookup (the PTR query and the forward check) may take, in ms.
    pub timeout_ms: u64,
    /// How long a name, or the absence of one, is remembered, in seconds.
    pub cache_secs: u64,
    /// Addresses remembered at most; the oldest answers go first when it is full.
    pub cache_max: usize,
    /// Addresses waiting for a lookup at most; more are dropped and counted.
    pub queue: usize,
    /// Lookups running at once.
    pub concurrency: usize,
    /// Keep a name only if it resolves back to the address.
    pub forward_confirm: bool,
}

impl Default for RdnsConfig {
    fn default() -> Self {
        RdnsConfig {
            enabled: false,
            timeout_ms: 2000,
            cache_secs: 3600,
            cache_max: 100_000,
            queue: 1024,
            concurrency: 4,
            forward_confirm: true,
        }
    }
}

impl RdnsConfig {
    /// Checks the settings, adding each problem found.
    pub fn validate(&self, problems: &mut Problems) {
        let mut range = |key: &str, value: u64, min: u64, max: u64| {
            if !(min..=max).contains(&value) {
                problems.add(format!(
                    "[rdns] {key} must be between {min} and {max}, got {value}"
                ));
            }
        };
        range("timeout_ms", self.timeout_ms, 1, 60_000);
        range("cache_secs", self.cache_secs, 1, 7 * 86_400);
        range("cache_max", self.cache_max as u64, 1, 10_000_000);
        range("queue", self.queue as u64, 1, 1_000_000);
        range("concurrency", self.concurrency as u64, 1, 64);
    }
}

/// What reverse DNS said about an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "name", rename_all = "snake_case")]
pub enum RdnsAnswer {
    /// Its name (forward-confirmed when `forward_confirm` is on).
    Name(Arc<str>),
    /// A PTR name that does not resolve back to the address.
    Unconfirmed(Arc<str>),
    /// No PTR record.
    NoName,
    /// The lookup failed or timed out.
    Failed,
}

/// Resolves names, blocking; [`SystemResolver`] uses the C library (`/etc/hosts`, the
/// configured DNS servers). Tests put in their own.
pub trait Resolver: Send + Sync + 'static {
    /// The PTR name of `ip`; `Ok(None)` when it has none.
    fn reverse(&self, ip: IpAddr) -> io::Result<Option<String>>;
    /// The addresses `name` resolves to.
    fn forward(&self, name: &str) -> io::Result<Vec<IpAddr>>;
}

/// The C library's resolver (`getnameinfo`, `getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn reverse(&self, ip: IpAddr) -> io::Result<Option<String>> {
        use dns_lookup::LookupErrorKind as K;
        match dns_lookup::lookup_addr(&ip) {
            Ok(name) => Ok(Some(name)),
            Err(e) if matches!(e.kind(), K::NoName | K::NoData) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn forward(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        Ok(dns_lookup::lookup_host(name)
            .map_err(io::Error::from)?
            .collect())
    }
}

/// Failures are retried sooner than answers are.
const FAILURE_CACHE_SECS: u64 = 60;

/// A cached answer.
struct Cached {
    answer: RdnsAnswer,
    expires: Timestamp,
}

/// Counters for `status`.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    duplicates: AtomicU64,
    queued: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    fresh_skipped: AtomicU64,
    names: AtomicU64,
    unconfirmed: AtomicU64,
    no_name: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    evicted: AtomicU64,
}

/// The cache and the request queue. Shared (`Arc<Rdns>`) between the engine and the
/// [`RdnsWorker`].
pub struct Rdns {
    config: RdnsConfig,
    cache: DashMap<IpAddr, Cached>,
    /// Addresses queued or being resolved: asked for once.
    pending: DashMap<IpAddr, ()>,
    /// `None` when disabled.
    tx: Option<mpsc::Sender<IpAddr>>,
    counters: Counters,
}

impl fmt::Debug for Rdns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rdns")
            .field("enabled", &self.config.enabled)
            .field("cached", &self.cache.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// The clock the worker reads when it decides expiry.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Resolves queued addresses; run it with [`RdnsWorker::run`] on the runtime.
pub struct RdnsWorker {
    rdns: Arc<Rdns>,
    rx: mpsc::Receiver<IpAddr>,
    resolver: Arc<dyn Resolver>,
    clock: Clock,
}

impl fmt::Debug for RdnsWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdnsWorker")
            .field("rdns", &self.rdns)
            .finish()
    }
}

impl Rdns {
    /// The cache and its worker, resolving with the system's resolver.
    pub fn new(config: &RdnsConfig) -> (Arc<Rdns>, RdnsWorker) {
        Rdns::with_resolver(config, Arc::new(SystemResolver))
    }

    /// The cache and its worker, resolving with `resolver`.
    pub fn with_resolver(
        config: &RdnsConfig,
        resolver: Arc<dyn Resolver>,
    ) -> (Arc<Rdns>, RdnsWorker) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let rdns = Arc::new(Rdns {
            config: config.clone(),
            cache: DashMap::new(),
            pending: DashMap::new(),
            tx: config.enabled.then_some(tx),
            counters: Counters::default(),
        });
        let worker = RdnsWorker {
            rdns: rdns.clone(),
            rx,
            resolver,
            clock: Arc::new(Timestamp::now),
        };
        (rdns, worker)
    }

    /// Whether lookups are on.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// The name of `ip` if one is cached and fresh at `now` (forward-confirmed when
    /// `forward_confirm` is on). Never blocks.
    pub fn cached(&self, ip: IpAddr, now: Timestamp) -> Option<Arc<str>> {
        match self.answer(ip, now)? {
            RdnsAnswer::Name(name) => Some(name),
            _ => None,
        }
    }

    /// Everything cached about `ip` and fresh at `now`: `None` if nothing is.
    pub fn answer(&self, ip: IpAddr, now: Timestamp) -> Option<RdnsAnswer> {
        let entry = self.cache.get(&canonical_ip(ip))?;
        (entry.expires > now).then(|| entry.answer.clone())
    }

    /// [`cached`](Self::cached), and a [`request`](Self::request) when nothing fresh is
    /// cached: what an enricher calls per event.
    pub fn cached_or_request(&self, ip: IpAddr, now: Timestamp) -> Option<Arc<str>> {
        match self.answer(ip, now) {
            Some(RdnsAnswer::Name(name)) => Some(name),
            Some(_) => None,
            None => {
                self.request(ip);
                None
            }
        }
    }

    /// Asks for `ip` to be resolved in the background. Never blocks: when disabled it does
    /// nothing, an address already queued is not queued twice, and when the queue is full
    /// the request is dropped and counted.
    pub fn request(&self, ip: IpAddr) {
        let Some(tx) = &self.tx else { return };
        let ip = canonical_ip(ip);
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        if self.pending.insert(ip, ()).is_some() {
            c.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match tx.try_send(ip) {
            Ok(()) => {
                c.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.pending.remove(&ip);
                c.dropped_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.pending.remove(&ip);
                c.dropped_closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Settings, sizes and counters, for `ctl status`.
    pub fn status(&self) -> serde_json::Value {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "enabled": self.enabled(),
            "forward_confirm": self.config.forward_confirm,
            "timeout_ms": self.config.timeout_ms,
            "cached": self.cache.len(),
            "cache_max": self.config.cache_max,
            "pending": self.pending.len(),
            "requests": n(&c.requests),
            "duplicates": n(&c.duplicates),
            "queued": n(&c.queued),
            "dropped_queue_full": n(&c.dropped_full),
            "dropped_worker_gone": n(&c.dropped_closed),
            "skipped_fresh": n(&c.fresh_skipped),
            "names": n(&c.names),
            "unconfirmed": n(&c.unconfirmed),
            "no_name": n(&c.no_name),
            "failures": n(&c.failures),
            "timeouts": n(&c.timeouts),
            "evicted": n(&c.evicted),
        })
    }

    /// Caches `answer` for `ip` as of `now`, making room when the cache is full.
    fn store(&self, ip: IpAddr, answer: RdnsAnswer, now: Timestamp) {
        let c = &self.counters;
        let secs = match &answer {
            RdnsAnswer::Name(_) => {
                c.names.fetch_add(1, Ordering::Relaxed);
                self.config.cache_secs
            }
            RdnsAnswer::Unconfirmed(_) => {
                c.unconfirmed.fetch_add(1, Ordering::Relaxed);
                self.config.cache_secs
            }
            RdnsAnswer::NoName => {
                c.no_name.fetch_add(1, Ordering::Relaxed);
                self.config.cache_secs
            }
            RdnsAnswer::Failed => {
                c.failures.fetch_add(1, Ordering::Relaxed);
                self.config.cache_secs.min(FAILURE_CACHE_SECS)
            }
        };
        let max = self.config.cache_max.max(1);
        if self.cache.len() >= max && !self.cache.contains_key(&ip) {
            self.make_room(now, max);
        }
        let expires = now
            .checked_add(SignedDuration::from_secs(
                i64::try_from(secs).unwrap_or(i64::MAX),
            ))
            .unwrap_or(Timestamp::MAX);
        self.cache.insert(ip, Cached { answer, expires });
    }

    /// Drops expired answers; if that is not enough, the ones expiring soonest, down to
    /// 7/8 of `max` so this runs once per many inserts.
    fn make_room(&self, now: Timestamp, max: usize) {
        let before = self.cache.len();
        self.cache.retain(|_, e| e.expires > now);
        let target = max - max / 8;
        if self.cache.len() > target.min(max - 1) {
            let mut expiries: Vec<(Timestamp, IpAddr)> =
                self.cache.iter().map(|e| (e.expires, *e.key())).collect();
            let excess = expiries.len() - target.min(max - 1);
            expiries.select_nth_unstable(excess.saturating_sub(1));
            for (_, ip) in &expiries[..excess] {
                self.cache.remove(ip);
            }
        }
        let evicted = before.saturating_sub(self.cache.len());
        self.counters
            .evicted
            .fetch_add(evicted as u64, Ordering::Relaxed);
    }
}

impl RdnsWorker {
    /// Uses `clock` instead of the system clock to decide expiry.
    pub fn with_clock(mut self, clock: Clock) -> RdnsWorker {
        self.clock = clock;
        self
    }

    /// Resolves queued addresses until `shutdown` turns true (or its sender is gone).
    /// Returns at once when reverse DNS is disabled. Lookups still running at shutdown are
    /// abandoned (a blocked C library call ends on its own).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        if !self.rdns.enabled() {
            return;
        }
        let config = &self.rdns.config;
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            let ip = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { break; }
                    continue;
                }
                ip = self.rx.recv() => match ip {
                    Some(ip) => ip,
                    None => break,
                },
            };
            if self.rdns.answer(ip, (self.clock)()).is_some() {
                self.rdns.pending.remove(&ip);
                self.rdns
                    .counters
                    .fresh_skipped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // A lookup that outlived its timeout keeps its permit until the C library
            // returns: `concurrency` bounds the blocked threads too.
            let permit = tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() { break; }
                    continue;
                }
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let rdns = self.rdns.clone();
            let resolver = self.resolver.clone();
            let clock = self.clock.clone();
            tasks.spawn(async move {
                let confirm = rdns.config.forward_confirm;
                let job = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    resolve(&*resolver, ip, confirm)
                });
                let answer = match tokio::time::timeout(timeout, job).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(_)) => RdnsAnswer::Failed,
                    Err(_) => {
                        rdns.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                        RdnsAnswer::Failed
                    }
                };
                rdns.store(ip, answer, clock());
                rdns.pending.remove(&ip);
            });
        }
        tasks.abort_all();
    }
}

/// One lookup, blocking: the PTR name, then (with `confirm`) the forward check.
fn resolve(resolver: &dyn Resolver, ip: IpAddr, confirm: bool) -> RdnsAnswer {
    let name = match resolver.reverse(ip) {
        Ok(Some(name)) => name.trim_end_matches('.').to_ascii_lowercase(),
        Ok(None) => return RdnsAnswer::NoName,
        Err(_) => return RdnsAnswer::Failed,
    };
    // A resolver without a name may answer with the address itself.
    if name.is_empty() || name.parse::<IpAddr>().is_ok() {
        return RdnsAnswer::NoName;
    }
    let name: Arc<str> = name.into();
    if !confirm {
        return RdnsAnswer::Name(name);
    }
    match resolver.forward(&name) {
        Ok(addrs) if addrs.iter().any(|a| canonical_ip(*a) == ip) => RdnsAnswer::Name(name),
        _ => RdnsAnswer::Unconfirmed(name),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A resolver from tables; `gate`, when set, blocks every reverse lookup until a
    /// message (or hang-up) arrives.
    #[derive(Default)]
    struct Fake {
        ptr: HashMap<IpAddr, &'static str>,
        a: HashMap<&'static str, Vec<IpAddr>>,
        fail: Vec<IpAddr>,
        calls: AtomicUsize,
        gate: Option<Mutex<std::sync::mpsc::Receiver<()>>>,
    }

    impl Resolver for Fake {
        fn reverse(&self, ip: IpAddr) -> io::Result<Option<String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(gate) = &self.gate {
                let _ = gate.lock().unwrap().recv();
            }
            if self.fail.contains(&ip) {
                return Err(io::Error::other("SERVFAIL"));
            }
            Ok(self.ptr.get(&ip).map(|n| format!("{}.", n.to_uppercase())))
        }

        fn forward(&self, name: &str) -> io::Result<Vec<IpAddr>> {
            self.a
                .get(name)
                .cloned()
                .ok_or_else(|| io::Error::other("NXDOMAIN"))
        }
    }

    fn fake() -> Fake {
        Fake {
            ptr: [
                (ip("192.0.2.1"), "mail.example.org"),
                (ip("198.51.100.7"), "www.example-bank.com"),
                (ip("2001:db8::25"), "mx.example.net"),
            ]
            .into(),
            a: [
                ("mail.example.org", vec![ip("192.0.2.1")]),
                ("www.example-bank.com", vec![ip("203.0.113.99")]),
                ("mx.example.net", vec![ip("2001:db8::25")]),
            ]
            .into(),
            fail: vec![ip("203.0.113.66")],
            ..Fake::default()
        }
    }

    fn enabled() -> RdnsConfig {
        RdnsConfig {
            enabled: true,
            ..RdnsConfig::default()
        }
    }

    fn t0() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        t0() + SignedDuration::from_secs(secs)
    }

    /// Waits (bounded) until `ip` has an answer at `now`.
    async fn answered(rdns: &Rdns, ip: IpAddr, now: Timestamp) -> RdnsAnswer {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(a) = rdns.answer(ip, now) {
                return a;
            }
            assert!(tokio::time::Instant::now() < deadline, "no answer for {ip}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn config_defaults_parse_and_validation() {
        let c: RdnsConfig = toml::from_str("enabled = true").unwrap();
        assert_eq!(c, enabled());
        assert!(!RdnsConfig::default().enabled);
        assert!(toml::from_str::<RdnsConfig>("enable = true").is_err());
        let mut p = Problems::default();
        c.validate(&mut p);
        assert!(p.is_empty());
        let bad = RdnsConfig {
            timeout_ms: 0,
            queue: 0,
            concurrency: 100,
            ..enabled()
        };
        let mut p = Problems::default();
        bad.validate(&mut p);
        assert_eq!(
            p.list(),
            [
                "[rdns] timeout_ms must be between 1 and 60000, got 0",
                "[rdns] queue must be between 1 and 1000000, got 0",
                "[rdns] concurrency must be between 1 and 64, got 100",
            ]
        );
    }

    #[tokio::test]
    async fn disabled_does_nothing() {
        let (rdns, worker) = Rdns::with_resolver(&RdnsConfig::default(), Arc::new(fake()));
        rdns.request(ip("192.0.2.1"));
        assert_eq!(rdns.cached_or_request(ip("192.0.2.1"), t0()), None);
        let (_stop, rx) = watch::channel(false);
        tokio::time::timeout(Duration::from_secs(5), worker.run(rx))
            .await
            .expect("a disabled worker returns at once");
        let s = rdns.status();
        assert_eq!(
            (s["enabled"].clone(), s["requests"].clone()),
            (json!(false), json!(0))
        );
    }

    #[tokio::test]
    async fn answers_are_cached_until_they_expire() {
        let resolver = Arc::new(fake());
        let (rdns, worker) = Rdns::with_resolver(&enabled(), resolver.clone());
        let now = Arc::new(Mutex::new(t0()));
        let clock = now.clone();
        let worker = worker.with_clock(Arc::new(move || *clock.lock().unwrap()));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(worker.run(rx));

        for a in [
            "192.0.2.1",
            "198.51.100.7",
            "::ffff:192.0.2.50",
            "203.0.113.66",
            "2001:db8::25",
        ] {
            assert_eq!(
                rdns.cached_or_request(ip(a), t0()),
                None,
                "nothing cached yet"
            );
        }
        let name = answered(&rdns, ip("192.0.2.1"), t0()).await;
        assert_eq!(name, RdnsAnswer::Name("mail.example.org".into()));
        assert_eq!(
            rdns.cached(ip("192.0.2.1"), t0()).as_deref(),
            Some("mail.example.org")
        );
        assert_eq!(
            rdns.cached(ip("::ffff:192.0.2.1"), t0()).as_deref(),
            Some("mail.example.org")
        );
        assert_eq!(
            answered(&rdns, ip("198.51.100.7"), t0()).await,
            RdnsAnswer::Unconfirmed("www.example-bank.com".into())
        );
        assert_eq!(
            rdns.cached(ip("198.51.100.7"), t0()),
            None,
            "an unconfirmed name is not a name"
        );
        assert_eq!(
            answered(&rdns, ip("192.0.2.50"), t0()).await,
            RdnsAnswer::NoName
        );
        assert_eq!(
            answered(&rdns, ip("203.0.113.66"), t0()).await,
            RdnsAnswer::Failed
        );
        assert_eq!(
            answered(&rdns, ip("2001:db8::25"), t0()).await,
            RdnsAnswer::Name("mx.example.net".into())
        );
        let calls = resolver.calls.load(Ordering::SeqCst);
        assert_eq!(calls, 5);

        // Fresh answers are not looked up again.
        rdns.request(ip("192.0.2.1"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while rdns.status()["skipped_fresh"] != 1 {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(resolver.calls.load(Ordering::SeqCst), calls);

        // A failure is forgotten after a minute, an answer after cache_secs.
        assert_eq!(rdns.answer(ip("203.0.113.66"), at(61)), None);
        assert!(rdns.answer(ip("192.0.2.1"), at(61)).is_some());
        assert!(rdns.answer(ip("192.0.2.50"), at(3599)).is_some());
        assert_eq!(rdns.cached(ip("192.0.2.1"), at(3600)), None);

        // Expired: asked again, answered again, as of the worker's clock.
        *now.lock().unwrap() = at(4000);
        assert_eq!(rdns.cached_or_request(ip("192.0.2.1"), at(4000)), None);
        answered(&rdns, ip("192.0.2.1"), at(4000)).await;
        assert_eq!(resolver.calls.load(Ordering::SeqCst), calls + 1);
        assert!(rdns.answer(ip("192.0.2.1"), at(4000 + 3599)).is_some());

        let s = rdns.status();
        assert_eq!(s["names"], 3);
        assert_eq!(s["unconfirmed"], 1);
        assert_eq!(s["no_name"], 1);
        assert_eq!(s["failures"], 1);
        assert_eq!(s["pending"], 0);
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn without_forward_confirmation_any_ptr_name_counts() {
        let config = RdnsConfig {
            forward_confirm: false,
            ..enabled()
        };
        let (rdns, worker) = Rdns::with_resolver(&config, Arc::new(fake()));
        let (_stop, rx) = watch::channel(false);
        let task = tokio::spawn(worker.run(rx));
        rdns.request(ip("198.51.100.7"));
        assert_eq!(
            answered(&rdns, ip("198.51.100.7"), Timestamp::now()).await,
            RdnsAnswer::Name("www.example-bank.com".into())
        );
        task.abort();
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_duplicates_queue_once() {
        let config = RdnsConfig {
            queue: 2,
            ..enabled()
        };
        let (rdns, _worker) = Rdns::with_resolver(&config, Arc::new(fake()));
        rdns.request(ip("192.0.2.1"));
        rdns.request(ip("::ffff:192.0.2.1"));
        rdns.request(ip("192.0.2.2"));
        rdns.request(ip("192.0.2.3"));
        rdns.request(ip("192.0.2.3"));
        let s = rdns.status();
        assert_eq!(s["requests"], 5);
        assert_eq!(s["queued"], 2);
        assert_eq!(s["duplicates"], 1);
        assert_eq!(s["dropped_queue_full"], 2);
        assert_eq!(s["pending"], 2);
    }

    #[test]
    fn requests_after_the_worker_is_gone_are_dropped() {
        let (rdns, worker) = Rdns::with_resolver(&enabled(), Arc::new(fake()));
        drop(worker);
        rdns.request(ip("192.0.2.1"));
        assert_eq!(rdns.status()["dropped_worker_gone"], 1);
        assert_eq!(rdns.status()["pending"], 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_lookup_times_out_as_a_failure() {
        let (release, gate) = std::sync::mpsc::channel();
        let resolver = Fake {
            gate: Some(Mutex::new(gate)),
            ..fake()
        };
        let config = RdnsConfig {
            timeout_ms: 50,
            concurrency: 1,
            ..enabled()
        };
        let (rdns, worker) = Rdns::with_resolver(&config, Arc::new(resolver));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(worker.run(rx));
        rdns.request(ip("192.0.2.1"));
        assert_eq!(
            answered(&rdns, ip("192.0.2.1"), Timestamp::now()).await,
            RdnsAnswer::Failed
        );
        assert_eq!(rdns.status()["timeouts"], 1);
        // The blocked lookup still holds the only permit: the next one waits for it.
        rdns.request(ip("198.51.100.7"));
        tokio::task::yield_now().await;
        assert_eq!(rdns.answer(ip("198.51.100.7"), Timestamp::now()), None);
        drop(release); // unblocks every lookup
        assert_eq!(
            answered(&rdns, ip("198.51.100.7"), Timestamp::now()).await,
            RdnsAnswer::Unconfirmed("www.example-bank.com".into())
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_full_cache_drops_the_answers_expiring_first() {
        let config = RdnsConfig {
            cache_max: 16,
            ..enabled()
        };
        let (rdns, _worker) = Rdns::with_resolver(&config, Arc::new(fake()));
        for i in 0..40u32 {
            let a = IpAddr::V4((0xC000_0200 + i).into());
            rdns.store(a, RdnsAnswer::NoName, at(i64::from(i)));
            assert!(rdns.cache.len() <= 16);
        }
        // The newest stay.
        assert!(rdns.answer(ip("192.0.2.39"), at(40)).is_some());
        assert!(rdns.answer(ip("192.0.2.0"), at(40)).is_none());
        assert!(rdns.status()["evicted"].as_u64().unwrap() >= 24);
        // Expired answers go first.
        rdns.store(ip("198.51.100.1"), RdnsAnswer::NoName, at(10_000));
        assert_eq!(rdns.cache.len(), 1);
    }

    #[test]
    fn the_system_resolver_answers_for_localhost() {
        // /etc/hosts names 127.0.0.1 on any Debian system; no DNS server is needed.
        match SystemResolver.reverse(ip("127.0.0.1")) {
            Ok(Some(name)) => assert!(!name.is_empty()),
            other => panic!("no name for 127.0.0.1: {other:?}"),
        }
        let addrs = SystemResolver.forward("localhost").unwrap();
        assert!(addrs.iter().any(|a| a.is_loopback()), "{addrs:?}");
    }
}
