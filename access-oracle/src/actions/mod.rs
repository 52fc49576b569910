//! External responses: what the oracle asks other systems to do when it blocks an
//! address (a firewall set, a fail2ban jail, CrowdSec's Local API), and undo when the
//! block is lifted or ends.
//!
//! The engine's one response path (`engine/respond.rs`), `ctl block` and `ctl unblock`
//! hand each block and unblock to [`Actions::send`] as a [`Step`]. That never waits:
//! every action has its own bounded queue and its own task, and a full queue drops the
//! step and counts it. The task applies steps in order, retries a failed one with
//! doubling pauses, and reports each outcome through the callback it was started with
//! (the engine writes the audit record and, for a step given up on, raises an alert).
//! For an action whose far side does not end a block by itself
//! ([`Action::expires_by_itself`] false: fail2ban), the task keeps each block's end and
//! sends the unblock then.
//!
//! An action is a component: its config struct (`deny_unknown_fields`, its own top-level
//! table such as `[firewall]`) implements [`ActionConfig`]; `build` makes the running
//! [`Action`]. Nothing else changes to add one: the queue, retries, expiry, counters
//! and reports are shared.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::time::Secs;

pub mod crowdsec;
pub mod fail2ban;
pub mod nft;

/// What an action is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Block a network (one address is a /32 or /128) until `until`.
    Block {
        /// The network.
        net: IpNet,
        /// When the block ends (Unix seconds).
        until: Secs,
        /// What put it in place: a rule's name, or `admin`.
        by: String,
        /// Why, in words.
        reason: String,
    },
    /// Lift a block: an administrator's unblock, or the block's end.
    Unblock {
        /// The network.
        net: IpNet,
    },
}

impl Step {
    /// The network the step is about.
    pub fn net(&self) -> IpNet {
        match self {
            Step::Block { net, .. } | Step::Unblock { net } => *net,
        }
    }

    /// `block` or `unblock`.
    pub fn verb(&self) -> &'static str {
        match self {
            Step::Block { .. } => "block",
            Step::Unblock { .. } => "unblock",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Block { net, until, .. } => {
                write!(f, "block {net} until {}", crate::time::rfc3339(*until))
            }
            Step::Unblock { net } => write!(f, "unblock {net}"),
        }
    }
}

/// The future an [`Action::apply`] returns: done, or why not.
pub type Applying<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// A running external action.
pub trait Action: Send + 'static {
    /// Applies one step at `now` (for a block's remaining time). Every wait inside has
    /// a timeout; the error says what failed, for the log, the audit trail and the alert.
    fn apply<'a>(&'a mut self, step: &'a Step, now: Secs) -> Applying<'a>;
    /// Whether the far side ends a block by itself at its end (an nft element's
    /// timeout, a CrowdSec decision's duration). When false, the task sends the unblock
    /// at the block's end.
    fn expires_by_itself(&self) -> bool;
}

/// An action's settings: its own top-level config table.
pub trait ActionConfig: fmt::Debug + Send + Sync {
    /// The action's name, as its table is named (`firewall`, `fail2ban`, `crowdsec`).
    fn name(&self) -> &'static str;
    /// Adds every problem with the settings to `problems`.
    fn validate(&self, problems: &mut Vec<String>);
    /// Looks at what the action will use (a program, a socket, a key file) without
    /// changing anything, for `check-config` and `serve`'s preflight.
    fn preflight(&self, _problems: &mut Vec<String>) {}
    /// Builds the running action.
    fn build(&self) -> std::io::Result<Box<dyn Action>>;
}

/// One action's counters (`ctl status`).
#[derive(Debug, Default)]
pub struct ActionCounters {
    /// The action's name.
    pub name: &'static str,
    /// Steps applied.
    pub applied: AtomicU64,
    /// Steps given up on after their retries.
    pub failed: AtomicU64,
    /// Further attempts after a failed one.
    pub retried: AtomicU64,
    /// Steps dropped because the action's queue was full.
    pub dropped: AtomicU64,
    /// Unblocks sent because a block ended (for actions that do not expire by themselves).
    pub expired: AtomicU64,
}

/// One action's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionSnapshot {
    /// The action's name.
    pub name: &'static str,
    /// Steps applied.
    pub applied: u64,
    /// Steps given up on.
    pub failed: u64,
    /// Attempts after a failure.
    pub retried: u64,
    /// Steps dropped (queue full).
    pub dropped: u64,
    /// Unblocks sent at a block's end.
    pub expired: u64,
}

impl ActionCounters {
    /// The counters at this moment.
    pub fn snapshot(&self) -> ActionSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ActionSnapshot {
            name: self.name,
            applied: get(&self.applied),
            failed: get(&self.failed),
            retried: get(&self.retried),
            dropped: get(&self.dropped),
            expired: get(&self.expired),
        }
    }
}

/// What came of one step, for the audit trail and, when it failed, an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The action.
    pub action: &'static str,
    /// The step.
    pub step: Step,
    /// Whether it was sent because its block ended.
    pub expiry: bool,
    /// Done, or the last error.
    pub outcome: Result<(), String>,
    /// Attempts made.
    pub attempts: u32,
    /// When it was done or given up.
    pub at: Secs,
}

/// Where reports go: the engine's audit trail and alerts.
pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

/// How the tasks retry and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Steps waiting per action at most.
    pub queue: usize,
    /// More attempts after a failed one.
    pub retries: u32,
    /// The first pause before a retry; it doubles each time, up to 60 s.
    pub first_pause: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            queue: 4096,
            retries: 3,
            first_pause: Duration::from_secs(1),
        }
    }
}

/// The running actions: the engine's way to them. Cheap to clone.
#[derive(Clone, Default)]
pub struct Actions {
    outlets: Arc<Vec<Outlet>>,
}

struct Outlet {
    tx: mpsc::Sender<Step>,
    counters: Arc<ActionCounters>,
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.outlets.iter().map(|o| o.counters.name))
            .finish()
    }
}

impl Actions {
    /// No actions: `send` does nothing.
    pub fn none() -> Actions {
        Actions::default()
    }

    /// Whether any action runs.
    pub fn is_empty(&self) -> bool {
        self.outlets.is_empty()
    }

    /// Hands a step to every action without waiting; a full queue drops it for that
    /// action and counts it.
    pub fn send(&self, step: Step) {
        for o in self.outlets.iter() {
            if o.tx.try_send(step.clone()).is_err() {
                o.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(action = o.counters.name, step = %step,
                    "external action queue full or closed; step dropped");
            }
        }
    }

    /// Every action's counters, in order.
    pub fn counters(&self) -> Vec<Arc<ActionCounters>> {
        self.outlets.iter().map(|o| o.counters.clone()).collect()
    }

    /// Starts one task per action. The tasks end when `stop` turns true (steps still
    /// queued then are dropped: the blocks they carry are in the snapshot and sent
    /// again at the next start) or when every [`Actions`] handle is gone.
    pub fn start(
        built: Vec<(&'static str, Box<dyn Action>)>,
        tuning: Tuning,
        report: Reporter,
        stop: watch::Receiver<bool>,
    ) -> (Actions, Vec<JoinHandle<()>>) {
        let mut outlets = Vec::new();
        let mut tasks = Vec::new();
        for (name, action) in built {
            let (tx, rx) = mpsc::channel(tuning.queue.max(1));
            let counters = Arc::new(ActionCounters {
                name,
                ..ActionCounters::default()
            });
            tasks.push(tokio::spawn(run(
                action,
                rx,
                counters.clone(),
                tuning,
                report.clone(),
                stop.clone(),
            )));
            outlets.push(Outlet { tx, counters });
        }
        (
            Actions {
                outlets: Arc::new(outlets),
            },
            tasks,
        )
    }
}

/// The wall clock in seconds, moved on by tokio's clock from the task's start (paused
/// time in tests moves it). Kept to the nanosecond, so a second is not lost to rounding
/// at the start (a block's remaining time would come out one second long).
struct Clock {
    wall0: jiff::Timestamp,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall0: jiff::Timestamp::now(),
            start: tokio::time::Instant::now(),
        }
    }

    fn now(&self) -> Secs {
        let elapsed = jiff::SignedDuration::try_from(self.start.elapsed()).unwrap_or_default();
        self.wall0
            .checked_add(elapsed)
            .unwrap_or(self.wall0)
            .as_second()
    }
}

/// The blocks an action must end itself: each network's end, and the ends in order.
#[derive(Debug, Default)]
struct Ends {
    by_net: HashMap<IpNet, Secs>,
    by_time: BTreeMap<Secs, Vec<IpNet>>,
}

impl Ends {
    fn set(&mut self, net: IpNet, until: Secs) {
        self.clear(net);
        self.by_net.insert(net, until);
        self.by_time.entry(until).or_default().push(net);
    }

    fn clear(&mut self, net: IpNet) {
        if let Some(old) = self.by_net.remove(&net)
            && let Some(nets) = self.by_time.get_mut(&old)
        {
            nets.retain(|n| *n != net);
            if nets.is_empty() {
                self.by_time.remove(&old);
            }
        }
    }

    fn next(&self) -> Option<Secs> {
        self.by_time.keys().next().copied()
    }

    /// The networks whose block ended by `now`, forgotten.
    fn take_due(&mut self, now: Secs) -> Vec<IpNet> {
        let later = self.by_time.split_off(&(now + 1));
        let due = std::mem::replace(&mut self.by_time, later);
        let nets: Vec<IpNet> = due.into_values().flatten().collect();
        for n in &nets {
            self.by_net.remove(n);
        }
        nets
    }
}

async fn run(
    mut action: Box<dyn Action>,
    mut rx: mpsc::Receiver<Step>,
    counters: Arc<ActionCounters>,
    tuning: Tuning,
    report: Reporter,
    mut stop: watch::Receiver<bool>,
) {
    let clock = Clock::new();
    let mut ends = Ends::default();
    let own_expiry = !action.expires_by_itself();
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let wait = ends
            .next()
            .map(|t| Duration::from_secs(t.saturating_sub(clock.now()).max(0) as u64 + 1));
        let step = tokio::select! {
            s = rx.recv() => match s {
                Some(s) => Some(s),
                None => return,
            },
            () = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => None,
            changed = stop.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        match step {
            Some(step) => {
                if own_expiry {
                    match &step {
                        Step::Block { net, until, .. } => ends.set(*net, *until),
                        Step::Unblock { net } => ends.clear(*net),
                    }
                }
                apply(
                    &mut *action,
                    &step,
                    false,
                    &clock,
                    &counters,
                    tuning,
                    &report,
                )
                .await;
            }
            None => {
                for net in ends.take_due(clock.now()) {
                    counters.expired.fetch_add(1, Ordering::Relaxed);
                    let step = Step::Unblock { net };
                    apply(
                        &mut *action,
                        &step,
                        true,
                        &clock,
                        &counters,
                        tuning,
                        &report,
                    )
                    .await;
                }
            }
        }
    }
}

async fn apply(
    action: &mut dyn Action,
    step: &Step,
    expiry: bool,
    clock: &Clock,
    counters: &ActionCounters,
    tuning: Tuning,
    report: &Reporter,
) {
    let mut pause = tuning.first_pause;
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        match action.apply(step, clock.now()).await {
            Ok(()) => break Ok(()),
            Err(e) if attempts > tuning.retries => break Err(e),
            Err(e) => {
                tracing::warn!(action = counters.name, step = %step, attempt = attempts,
                    error = %crate::text::escape_controls(&e), "external action failed; retrying");
                counters.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(60));
            }
        }
    };
    match &outcome {
        Ok(()) => {
            counters.applied.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(action = counters.name, step = %step, attempts,
                error = %crate::text::escape_controls(e), "external action given up");
        }
    }
    report(Report {
        action: counters.name,
        step: step.clone(),
        expiry,
        outcome,
        attempts,
        at: clock.now(),
    });
}

#[cfg(test)]
mod tests;
