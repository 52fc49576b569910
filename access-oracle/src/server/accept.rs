//! The accept loop the Exim socket, the policy endpoint and the admin socket share, and
//! the slots their connections hold.
//!
//! Every listener has a cap ([`Limits`]). When a new connection finds the cap reached,
//! the connection idle the longest (waiting for its next request, with nothing half
//! read) is closed to make room: a client that only holds connections open cannot lock
//! out one that has a request to make. Only when none is idle is the newcomer turned
//! away at once ([`WhenFull::Refuse`]: the listener answers it and closes) or kept
//! waiting for a slot ([`WhenFull::Wait`]). A per-address cap ([`Limits::max_per_peer`])
//! works the same way among one address's connections. Each shedding, refusal and
//! timeout is counted ([`ListenerStats`], shown by `ctl status`) and logged at most once
//! a minute with the number held back ([`crate::ratelog`]).
//!
//! A connection's slot is a [`Conn`]: one atomic word saying "busy", "idle since t" or
//! "shed", and a wake-up for shedding and shutdown. The request path touches only that
//! word (no allocation, no shared lock); the table of slots is locked on accept and
//! close only.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};

use crate::ratelog::{Log, Warning};

/// How many connections a listener serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most.
    pub max: usize,
    /// Open connections from one address at most; 0: no such cap (Unix sockets).
    pub max_per_peer: usize,
}

/// What a listener does with a newcomer when it is at its cap and no connection is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Answer it at once and close (the Exim and admin sockets).
    Refuse,
    /// Keep it until a slot frees or a connection goes idle (the policy endpoint, whose
    /// connections free their slots within the head deadline).
    Wait,
}

/// Why a newcomer was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's cap, with no idle connection to close.
    Full,
    /// The cap of connections from one address.
    PerPeer,
}

/// A listener's counters; every one an exact count.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub shed_idle: AtomicU64,
    /// Connections turned away: the cap was reached and none was idle.
    pub refused_full: AtomicU64,
    /// Connections turned away by the per-address cap.
    pub refused_per_peer: AtomicU64,
    /// Newcomers that waited for a slot (the cap was reached and none was idle).
    pub waited_full: AtomicU64,
    /// Idle connections closed after the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because a request was not whole in time (a line without its
    /// newline, an HTTP head or body).
    pub request_timeouts: AtomicU64,
}

impl ListenerStats {
    /// The counters at one moment, as (name, value) pairs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("accepted", get(&self.accepted)),
            ("shed_idle", get(&self.shed_idle)),
            ("refused_full", get(&self.refused_full)),
            ("refused_per_peer", get(&self.refused_per_peer)),
            ("waited_full", get(&self.waited_full)),
            ("idle_timeouts", get(&self.idle_timeouts)),
            ("request_timeouts", get(&self.request_timeouts)),
        ]
    }
}

/// The counters of every listener, for `ctl status`.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The Exim socket.
    pub exim: ListenerStats,
    /// The Dovecot policy endpoint.
    pub policy: ListenerStats,
    /// The admin socket.
    pub admin: ListenerStats,
    /// The metrics endpoint (`[metrics]`; its counters are in `/metrics` only).
    pub metrics: ListenerStats,
}

/// [`Listeners`] at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct ListenersSnapshot {
    /// The Exim socket.
    pub exim: Vec<(&'static str, u64)>,
    /// The Dovecot policy endpoint.
    pub policy: Vec<(&'static str, u64)>,
    /// The admin socket.
    pub admin: Vec<(&'static str, u64)>,
}

impl Listeners {
    /// Every counter.
    pub fn snapshot(&self) -> ListenersSnapshot {
        ListenersSnapshot {
            exim: self.exim.snapshot(),
            policy: self.policy.snapshot(),
            admin: self.admin.snapshot(),
        }
    }
}

/// `Conn::state`: the connection is reading or answering a request.
const BUSY: u64 = 0;
/// `Conn::state`: the connection was shed; it closes.
const SHED: u64 = u64::MAX;

/// One open connection's slot: whether it is idle (and since when) and its wake-up.
#[derive(Debug)]
pub struct Conn {
    /// [`BUSY`], [`SHED`], or microseconds since the listener's epoch + 1 when idle.
    state: AtomicU64,
    /// Woken when the connection is shed or the listener stops.
    signal: Notify,
    peer: Option<IpAddr>,
    epoch: Instant,
}

impl Conn {
    fn stamp(&self, now: Instant) -> u64 {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        u64::try_from(micros).unwrap_or(SHED - 1).clamp(1, SHED - 1)
    }

    /// Marks the connection idle from `now` (waiting for a request, nothing half read);
    /// an idle one stays idle since it went idle. `false`: it was shed, close it.
    pub fn idle(&self, now: Instant) -> bool {
        match self.state.load(Ordering::Relaxed) {
            SHED => false,
            BUSY => match self.state.compare_exchange(
                BUSY,
                self.stamp(now),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => true,
                Err(now_state) => now_state != SHED,
            },
            _ => true,
        }
    }

    /// Marks the connection busy (bytes of a request arrived). `false`: it was shed
    /// first, close it.
    pub fn busy(&self) -> bool {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            match current {
                BUSY => return true,
                SHED => return false,
                idle => match self.state.compare_exchange(
                    idle,
                    BUSY,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    Err(other) => current = other,
                },
            }
        }
    }

    /// Since when the connection is idle; `None` when busy or shed.
    pub fn idle_since(&self) -> Option<Instant> {
        match self.state.load(Ordering::Relaxed) {
            BUSY | SHED => None,
            t => Some(self.epoch + Duration::from_micros(t - 1)),
        }
    }

    /// Whether the connection was shed.
    pub fn is_shed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == SHED
    }

    /// Resolves when the connection is shed or the listener stops (then
    /// [`Slot::stopping`] says which). Pin it once for the connection's life.
    pub fn signalled(&self) -> impl Future<Output = ()> + '_ {
        self.signal.notified()
    }
}

/// The table of open connections.
#[derive(Debug, Default)]
struct Table {
    conns: Vec<Option<Arc<Conn>>>,
    free: Vec<usize>,
    open: usize,
    per_peer: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, index: usize) {
        if let Some(conn) = self.conns[index].take() {
            self.open -= 1;
            self.free.push(index);
            if let Some(ip) = conn.peer
                && let Some(n) = self.per_peer.get_mut(&ip)
            {
                *n -= 1;
                if *n == 0 {
                    self.per_peer.remove(&ip);
                }
            }
        }
    }

    /// Sheds the connection idle the longest among those `eligible` says; whether one was.
    fn shed_idlest(&mut self, eligible: impl Fn(&Conn) -> bool) -> bool {
        // A connection can turn busy between the look and the swap: look again.
        for _ in 0..4 {
            let idlest = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                .filter(|(_, c)| eligible(c))
                .filter_map(|(i, c)| match c.state.load(Ordering::Relaxed) {
                    BUSY | SHED => None,
                    t => Some((t, i)),
                })
                .min();
            let Some((t, index)) = idlest else {
                return false;
            };
            let Some(conn) = self.conns[index].clone() else {
                return false;
            };
            if conn
                .state
                .compare_exchange(t, SHED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                conn.signal.notify_one();
                self.remove(index);
                return true;
            }
        }
        false
    }
}

/// A listener's slots.
#[derive(Debug)]
pub struct Slots {
    what: &'static str,
    limits: Limits,
    epoch: Instant,
    table: Mutex<Table>,
    /// Connection tasks alive (a shed one until it has closed).
    live: AtomicUsize,
    /// Woken when a connection closes.
    gone: Notify,
    stopping: AtomicBool,
    stats: Arc<Listeners>,
    pick: fn(&Listeners) -> &ListenerStats,
    cap_warning: Warning<Refusal>,
    timeout_warning: Warning<()>,
}

/// What [`Slots::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Served; the slot is held until dropped.
    Admitted(Slot),
    /// Turned away.
    Refused(Refusal),
}

impl Slots {
    /// The slots of the listener `what` (named in log lines), counted in `stats` at
    /// `pick`.
    pub fn new(
        what: &'static str,
        limits: Limits,
        stats: Arc<Listeners>,
        pick: fn(&Listeners) -> &ListenerStats,
    ) -> Arc<Slots> {
        Arc::new(Slots {
            what,
            limits,
            epoch: Instant::now(),
            table: Mutex::new(Table::default()),
            live: AtomicUsize::new(0),
            gone: Notify::new(),
            stopping: AtomicBool::new(false),
            stats,
            pick,
            cap_warning: Warning::new(crate::ratelog::PERIOD),
            timeout_warning: Warning::new(crate::ratelog::PERIOD),
        })
    }

    /// The listener's counters.
    pub fn stats(&self) -> &ListenerStats {
        (self.pick)(&self.stats)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `peer` at `now`, shedding the idlest idle
    /// connection when a cap is reached. A refusal is not counted here (a waiting
    /// newcomer tries again).
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>, now: Instant) -> Admission {
        let mut t = self.lock();
        if let Some(ip) = peer
            && self.limits.max_per_peer > 0
            && t.per_peer.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_peer
        {
            if !t.shed_idlest(|c| c.peer == Some(ip)) {
                // At both caps, the listener's own decides (a waiting newcomer then
                // meets the address's cap again once a slot frees).
                return Admission::Refused(if t.open >= self.limits.max {
                    Refusal::Full
                } else {
                    Refusal::PerPeer
                });
            }
            self.stats().shed_idle.fetch_add(1, Ordering::Relaxed);
        }
        if t.open >= self.limits.max {
            if !t.shed_idlest(|_| true) {
                return Admission::Refused(Refusal::Full);
            }
            self.stats().shed_idle.fetch_add(1, Ordering::Relaxed);
        }
        let conn = Arc::new(Conn {
            state: AtomicU64::new(0),
            signal: Notify::new(),
            peer,
            epoch: self.epoch,
        });
        conn.state.store(conn.stamp(now), Ordering::Relaxed);
        let index = match t.free.pop() {
            Some(i) => {
                t.conns[i] = Some(conn.clone());
                i
            }
            None => {
                t.conns.push(Some(conn.clone()));
                t.conns.len() - 1
            }
        };
        t.open += 1;
        if let Some(ip) = peer {
            *t.per_peer.entry(ip).or_insert(0) += 1;
        }
        drop(t);
        self.live.fetch_add(1, Ordering::Relaxed);
        self.stats().accepted.fetch_add(1, Ordering::Relaxed);
        Admission::Admitted(Slot {
            slots: self.clone(),
            conn,
            index,
        })
    }

    /// Sheds the idlest idle connection, if there is one (the process is out of file
    /// descriptors); whether one was.
    fn shed_one(&self) -> bool {
        let shed = self.lock().shed_idlest(|_| true);
        if shed {
            self.stats().shed_idle.fetch_add(1, Ordering::Relaxed);
        }
        shed
    }

    /// Counts a refusal and says so in the log (at most once a minute, with how many
    /// were held back).
    pub fn refused(&self, why: Refusal, peer: Option<IpAddr>) {
        let stats = self.stats();
        match why {
            Refusal::Full => stats.refused_full.fetch_add(1, Ordering::Relaxed),
            Refusal::PerPeer => stats.refused_per_peer.fetch_add(1, Ordering::Relaxed),
        };
        self.warn_cap(why, peer);
    }

    fn warn_cap(&self, why: Refusal, peer: Option<IpAddr>) {
        if let Log::Now { held_back } = self.cap_warning.hit(std::time::Instant::now(), why) {
            let (max, cap) = match why {
                Refusal::Full => (self.limits.max, "connections"),
                Refusal::PerPeer => (self.limits.max_per_peer, "connections from one address"),
            };
            tracing::warn!(
                listener = self.what,
                peer = ?peer,
                max,
                held_back,
                "{}: at its cap of {max} {cap} with none idle; connection turned away (held_back: similar ones not logged since the last line)",
                self.what
            );
        }
    }

    /// Counts an idle connection closed by its timeout.
    pub fn idle_timeout(&self) {
        self.stats().idle_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts and logs (rate-limited) a request not whole in time.
    pub fn request_timeout(&self, what: &str, peer: Option<IpAddr>, limit: Duration) {
        self.stats()
            .request_timeouts
            .fetch_add(1, Ordering::Relaxed);
        if let Log::Now { held_back } = self.timeout_warning.hit(std::time::Instant::now(), ()) {
            tracing::warn!(
                listener = self.what,
                peer = ?peer,
                limit_ms = limit.as_millis() as u64,
                held_back,
                "{}: {what} not complete within {} ms; connection closed",
                self.what,
                limit.as_millis()
            );
        }
    }

    /// Logs the warnings held back for a period, if any (called every few seconds).
    pub fn summarise(&self) {
        let now = std::time::Instant::now();
        if let Some(s) = self.cap_warning.summary(now) {
            tracing::warn!(
                listener = self.what,
                held_back = s.held_back,
                "{}: {} more connections turned away at the cap in the last {} s",
                self.what,
                s.held_back,
                s.over.as_secs()
            );
        }
        if let Some(s) = self.timeout_warning.summary(now) {
            tracing::warn!(
                listener = self.what,
                held_back = s.held_back,
                "{}: {} more requests not complete in time in the last {} s",
                self.what,
                s.held_back,
                s.over.as_secs()
            );
        }
    }

    /// Tells every open connection the listener is stopping.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for conn in self.lock().conns.iter().flatten() {
            conn.signal.notify_one();
        }
    }

    /// Waits until every connection has closed.
    pub async fn closed(&self) {
        loop {
            let gone = self.gone.notified();
            let mut gone = std::pin::pin!(gone);
            gone.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return;
            }
            gone.await;
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// A connection's hold on its slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    conn: Arc<Conn>,
    index: usize,
}

impl Slot {
    /// The connection's state.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// The listener's slots (for counters and log lines).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Whether the listener is stopping.
    pub fn stopping(&self) -> bool {
        self.slots.stopping.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut t = self.slots.lock();
            if t.conns[self.index]
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &self.conn))
            {
                t.remove(self.index);
            }
        }
        self.slots.live.fetch_sub(1, Ordering::AcqRel);
        self.slots.gone.notify_waiters();
    }
}

/// Accepts connections with `accept` (a connection and its peer's address, if it has
/// one) until `shutdown` turns true, and hands each admitted one to `start` with its
/// slot. A newcomer the caps turn away goes to `refuse` ([`WhenFull::Refuse`], or any
/// per-address refusal) or waits ([`WhenFull::Wait`]). Every few seconds `tick` runs
/// (for rate-limited summaries). On shutdown, every open connection is told.
pub async fn serve<C, F>(
    slots: Arc<Slots>,
    when_full: WhenFull,
    mut shutdown: watch::Receiver<bool>,
    mut accept: impl FnMut() -> F,
    mut start: impl FnMut(C, Slot),
    mut refuse: impl FnMut(C, Refusal),
    mut tick: impl FnMut(),
) where
    F: Future<Output = io::Result<(C, Option<IpAddr>)>>,
{
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'accepting: loop {
        let (connection, peer) = tokio::select! {
            r = accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    let out_of_files = [nix::errno::Errno::EMFILE, nix::errno::Errno::ENFILE]
                        .iter()
                        .any(|errno| e.raw_os_error() == Some(*errno as i32));
                    // Out of file descriptors before the cap: an idle connection makes
                    // room, as it would at the cap.
                    if out_of_files && slots.shed_one() {
                        tokio::task::yield_now().await;
                    } else {
                        tracing::warn!(error = %e, "accept failed on the {}", slots.what);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = ticks.tick() => {
                slots.summarise();
                tick();
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let mut waited = false;
        loop {
            match slots.admit(peer, Instant::now()) {
                Admission::Admitted(slot) => {
                    start(connection, slot);
                    break;
                }
                Admission::Refused(why)
                    if why == Refusal::PerPeer || when_full == WhenFull::Refuse =>
                {
                    slots.refused(why, peer);
                    refuse(connection, why);
                    break;
                }
                Admission::Refused(why) => {
                    if !waited {
                        waited = true;
                        slots.stats().waited_full.fetch_add(1, Ordering::Relaxed);
                        slots.warn_cap(why, peer);
                    }
                    // A slot frees when a connection closes; one goes idle without a
                    // word, so look again shortly too.
                    let gone = slots.gone.notified();
                    tokio::select! {
                        _ = gone => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = shutdown.changed() => break 'accepting,
                    }
                }
            }
        }
    }
    slots.stop();
}

/// Why [`Watched`] gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing came for the idle timeout.
    Idle,
    /// A request was begun but not finished (no newline) in time.
    Request,
    /// The connection was shed to make room for another.
    Shed,
}

impl std::error::Error for Expired {}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expired::Idle => "idle for too long",
            Expired::Request => "request not complete in time",
            Expired::Shed => "closed to make room for another connection",
        })
    }
}

/// What an error from [`Watched`] means, if it is one of its own.
pub fn expired(e: &io::Error) -> Option<Expired> {
    e.get_ref()?.downcast_ref::<Expired>().copied()
}

/// A line-oriented connection's read side with its timeouts: idle (nothing half read)
/// for at most `idle`, a begun line (bytes after the last newline) whole within
/// `request`. It keeps the slot's idle/busy word up to date, and fails the read with
/// an [`Expired`] error when a limit passes or the connection is shed.
///
/// The timer is lazy: it is moved only when it fires early or a shorter limit starts,
/// not on every request.
pub struct Watched<R> {
    inner: R,
    conn: Arc<Conn>,
    idle: Duration,
    request: Duration,
    timer: Pin<Box<Sleep>>,
    /// When the bytes after the last newline began to arrive.
    partial_since: Option<Instant>,
}

impl<R> Watched<R> {
    /// Watches `inner`, whose connection holds `conn`.
    pub fn new(inner: R, conn: Arc<Conn>, idle: Duration, request: Duration) -> Watched<R> {
        let first = conn.idle_since().unwrap_or_else(Instant::now) + idle;
        Watched {
            inner,
            conn,
            idle,
            request,
            timer: Box::pin(tokio::time::sleep_until(first)),
            partial_since: None,
        }
    }

    fn fail(e: Expired) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, e)))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if let Some(&last) = new.last() {
                    if !this.conn.busy() {
                        return Self::fail(Expired::Shed);
                    }
                    if last == b'\n' {
                        this.partial_since = None;
                    } else if this.partial_since.is_none() || memchr::memchr(b'\n', new).is_some() {
                        this.partial_since = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => loop {
                let now = Instant::now();
                let (expiry, why) = match this.partial_since {
                    Some(since) => (since + this.request, Expired::Request),
                    None => {
                        if !this.conn.idle(now) {
                            return Self::fail(Expired::Shed);
                        }
                        let since = this.conn.idle_since().unwrap_or(now);
                        (since + this.idle, Expired::Idle)
                    }
                };
                if now >= expiry {
                    return Self::fail(why);
                }
                if this.timer.deadline() > expiry {
                    this.timer.as_mut().reset(expiry);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // Fired for an older, earlier limit: move it and look again.
                    Poll::Ready(()) => this.timer.as_mut().reset(expiry),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(max: usize, max_per_peer: usize) -> Arc<Slots> {
        Slots::new(
            "test listener",
            Limits { max, max_per_peer },
            Arc::default(),
            |l| &l.exim,
        )
    }

    fn admitted(a: Admission) -> Slot {
        match a {
            Admission::Admitted(slot) => slot,
            Admission::Refused(why) => panic!("refused: {why:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_idlest_idle_connection_makes_room_and_busy_ones_never_do() {
        let s = slots(3, 0);
        let t0 = Instant::now();
        let a = admitted(s.admit(None, t0));
        let b = admitted(s.admit(None, t0 + Duration::from_millis(1)));
        let c = admitted(s.admit(None, t0 + Duration::from_millis(2)));
        // `a` turns busy, `b` goes idle after `c`: `c` is now the idlest.
        assert!(a.conn().busy());
        assert!(b.conn().busy());
        assert!(b.conn().idle(t0 + Duration::from_millis(5)));
        let d = admitted(s.admit(None, t0 + Duration::from_millis(6)));
        assert!(c.conn().is_shed() && !c.conn().idle(t0 + Duration::from_millis(7)));
        assert!(!c.conn().busy(), "a shed connection cannot turn busy");
        assert!(!a.conn().is_shed() && !b.conn().is_shed());
        // The shed one was told.
        tokio::time::timeout(Duration::from_millis(1), c.conn().signalled())
            .await
            .expect("woken");
        let e = admitted(s.admit(None, t0 + Duration::from_millis(8)));
        assert!(b.conn().is_shed(), "then b");
        assert!(d.conn().busy() && e.conn().busy());
        assert!(matches!(
            s.admit(None, t0 + Duration::from_millis(9)),
            Admission::Refused(Refusal::Full)
        ));
        assert_eq!(s.stats().shed_idle.load(Ordering::Relaxed), 2);
        assert_eq!(s.open(), 5, "shed tasks count until they end");
        drop((b, c));
        assert_eq!(s.open(), 3);
        drop(a);
        let _f = admitted(s.admit(None, t0 + Duration::from_millis(10)));
        drop((d, e, _f));
        tokio::time::timeout(Duration::from_millis(1), s.closed())
            .await
            .expect("all closed");
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_sheds_only_its_own_connections() {
        let s = slots(10, 2);
        let t0 = Instant::now();
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let other = admitted(s.admit(Some(y), t0));
        let x1 = admitted(s.admit(Some(x), t0 + Duration::from_millis(1)));
        let x2 = admitted(s.admit(Some(x), t0 + Duration::from_millis(2)));
        let x3 = admitted(s.admit(Some(x), t0 + Duration::from_millis(3)));
        assert!(x1.conn().is_shed(), "x's idlest, not y's older one");
        assert!(!other.conn().is_shed());
        assert!(x2.conn().busy() && x3.conn().busy());
        assert!(matches!(
            s.admit(Some(x), t0 + Duration::from_millis(4)),
            Admission::Refused(Refusal::PerPeer)
        ));
        let _y2 = admitted(s.admit(Some(y), t0 + Duration::from_millis(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_read_times_out_idle_and_half_sent_input() {
        let s = slots(4, 0);
        let (client, server) = tokio::io::duplex(64);
        let slot = admitted(s.admit(None, Instant::now()));
        let mut r = Watched::new(
            server,
            slot.conn().clone(),
            Duration::from_secs(10),
            Duration::from_millis(100),
        );
        let mut client = client;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        client.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(r.read(&mut buf).await.unwrap(), 5);
        let started = Instant::now();
        client.write_all(b"pi").await.unwrap();
        assert_eq!(r.read(&mut buf).await.unwrap(), 2);
        let e = r.read(&mut buf).await.unwrap_err();
        assert_eq!(expired(&e), Some(Expired::Request));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        client.write_all(b"ng\n").await.unwrap();
        assert_eq!(r.read(&mut buf).await.unwrap(), 3);
        let started = Instant::now();
        let e = r.read(&mut buf).await.unwrap_err();
        assert_eq!(expired(&e), Some(Expired::Idle));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
