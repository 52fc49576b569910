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
use crate::config::Problems;

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
