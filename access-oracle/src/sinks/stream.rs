//! `stream = "audit"`: a sink fed every audit record, in order, from the trail's files
//! rather than alerts from the fan-out, with a saved position: delivery is at least
//! once, and nothing is lost while the receiver or the oracle is down.
//!
//! ```toml
//! [[sinks]]
//! name = "siem"
//! type = "file"                  # or any type that can forward records (exec, ...)
//! stream = "audit"
//! start_at = "beginning"         # a new sink: the trail's first record (or "end")
//! path = "/var/log/access-oracle/audit-ecs.jsonl"
//! format = "ecs"
//! ```
//!
//! One task per such sink ([`run`]) follows the trail ([`crate::audit::follow`]): it
//! reads the records after its saved position, up to the last record the writer has
//! flushed (never a line still being written), a batch at a time, and offers them to
//! the sink's [`Forward`]. After each delivery the position (the last record delivered:
//! its number, chain value, day file and offset) is saved in
//! `<state_dir>/sinks/<name>.position` (a temporary file, fsync, rename; 0600 in a 0700
//! directory). When the sink delivers only part of a batch, the rest is offered again
//! after a pause doubling from 1 s to 60 s, from the first undelivered record: never
//! dropped, never reordered. At the trail's end it looks for more every 200 ms.
//!
//! * **A new sink** (no position file) starts at the trail's first record by default
//!   (`start_at = "beginning"`: the receiver gets the whole history the trail still
//!   holds), or at its current end (`start_at = "end"`: only what is written from now).
//! * **Restarts**: the oracle resumes after the saved position. Records delivered but
//!   not yet saved when the oracle was killed (`kill -9`, a power cut) are delivered
//!   again: receivers deduplicate on the record's `seq` or chain (`event.id` in ECS).
//! * **A position file that cannot be read** as one is logged at error level, naming
//!   it, and set aside as `<name>.position.bad`; the sink starts again from the
//!   trail's beginning (records already delivered are sent again, none is skipped).
//! * **Records gone before they were forwarded** (retention removed a day file the
//!   sink had not reached; the trail's `retention` record names it) are logged with
//!   their numbers and counted as `failed`; forwarding goes on with the next record.
//! * **A trail begun again** (removed, or cut below the position): logged at error
//!   level, and forwarded again from its beginning.
//!
//! Counters (`ctl status`): `delivered` records, `retried` attempts after a batch
//! stopped short, `failed` records missing from the trail when their turn came, and
//! `queued` the sink's lag: records flushed to the trail and not yet delivered.
//! `min_severity`, `queue_capacity` and `when_full` do not apply (there is no queue:
//! the trail is the queue); `group_secs` and `rate_limit` are refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{AuditItem, BuildContext, Forward, SinkConfig, SinkCounters, SinkTable, Stream};
use crate::audit::follow::{Follower, Place, Sought};

/// Records offered to the sink at once.
const BATCH: usize = 256;

/// Where a `stream = "audit"` sink starts when it has no saved position yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The trail's first record: everything the trail still holds is forwarded.
    #[default]
    Beginning,
    /// The trail's end when the sink first runs: only records written from then on.
    End,
}

/// How often the driver looks and how long it pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often to look for new records at the trail's end.
    pub poll: Duration,
    /// The first pause after a delivery stopped short; it doubles each time.
    pub first_pause: Duration,
    /// The longest pause.
    pub max_pause: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_millis(200),
            first_pause: Duration::from_secs(1),
            max_pause: Duration::from_secs(60),
        }
    }
}

/// What one `stream = "audit"` sink reads and where it keeps its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The sink's name.
    pub name: String,
    /// The trail's directory.
    pub dir: PathBuf,
    /// The trail's key file (for the head's MAC and encrypted records).
    pub key_file: PathBuf,
    /// The position file.
    pub position: PathBuf,
    /// Where a new sink starts.
    pub start_at: StartAt,
    /// Polling and pauses.
    pub timing: Timing,
}

impl Plan {
    /// The plan of a `stream = "audit"` table; `None` when the trail is off.
    pub fn of(table: &SinkTable, ctx: &BuildContext) -> Option<Plan> {
        let audit = ctx.audit.as_ref()?;
        Some(Plan {
            name: table.name.clone(),
            dir: audit.dir(&ctx.state_dir),
            key_file: audit.key_file(&ctx.state_dir),
            position: position_file(&ctx.state_dir, &table.name),
            start_at: table.start_at,
            timing: Timing::default(),
        })
    }
}

/// Where the sink `name` keeps its position.
pub fn position_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("sinks").join(format!("{name}.position"))
}

/// Adds the problems of a table's `stream` settings: `stream = "audit"` needs a type
/// that forwards records and the trail on; `start_at` is for `stream = "audit"` only.
pub fn check(
    table: &SinkTable,
    config: &dyn SinkConfig,
    ctx: &BuildContext,
    problems: &mut Vec<String>,
) {
    if table.stream != Stream::Audit {
        if table.start_at != StartAt::default() {
            problems.push("start_at applies to stream = \"audit\" only".into());
        }
        return;
    }
    if !config.forwards_audit() {
        problems.push(format!(
            "type = \"{}\" cannot forward the audit trail (stream = \"audit\"): it \
             delivers alerts only",
            crate::text::escape_controls(&table.kind)
        ));
    }
    if ctx.audit.is_none() {
        problems.push(
            "stream = \"audit\" forwards the audit trail, which is off ([audit] enabled = false)"
                .into(),
        );
    }
}

/// The saved position as written: the last record delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// Its number.
    seq: u64,
    /// Its chain value, hex.
    chain: String,
    /// Its day file (empty: looked for by number).
    file: String,
    /// The offset after its line.
    offset: u64,
}

impl Saved {
    fn of(place: &Place) -> Saved {
        Saved {
            seq: place.seq,
            chain: crate::audit::record::chain_hex(&place.chain),
            file: place.file.clone(),
            offset: place.end,
        }
    }

    fn place(&self) -> Result<Place, String> {
        let chain =
            crate::audit::record::parse_chain(&self.chain).ok_or("chain is not 64 hex digits")?;
        if !self.file.is_empty() && crate::audit::segment::parse_name(&self.file).is_none() {
            return Err(format!("{:?} is not an audit day file", self.file));
        }
        Ok(Place {
            seq: self.seq,
            chain,
            file: self.file.clone(),
            end: self.offset,
        })
    }
}

/// The longest position file read.
const POSITION_LIMIT: crate::files::Limit = crate::files::Limit {
    what: "a sink's position file",
    max_bytes: 4096,
    why: "it holds one small JSON object",
};

/// Reads the position file: `Ok(None)` when there is none, `Err` when it cannot be
/// read at all (kept: the sink waits), `Ok(Some(Err))` when it is not a position.
fn load(path: &Path) -> std::io::Result<Option<Result<Place, String>>> {
    let text = match crate::files::read_text_bounded(path, POSITION_LIMIT) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e),
        Err(e) => return Ok(Some(Err(e.to_string()))),
    };
    Ok(Some(
        serde_json::from_str::<Saved>(&text)
            .map_err(|e| e.to_string())
            .and_then(|s| s.place()),
    ))
}

/// Saves the position: a temporary file beside it, flushed, renamed over it, and the
/// directory flushed, so a crash leaves the old position or the new, never a mix.
fn save(path: &Path, place: &Place) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::files::create_private_dir(dir)?;
    let tmp = path.with_extension("position.tmp");
    let mut text = serde_json::to_vec(&Saved::of(place)).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let mut file = crate::files::private_create().open(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Opens the trail for the sink and puts the follower where the sink goes on.
fn open(plan: &Plan) -> Result<Follower, String> {
    let key = crate::audit::key::read(&plan.key_file)?;
    let mut follower = Follower::new(&plan.dir, key);
    let sink = plan.name.as_str();
    let saved = load(&plan.position).map_err(|e| {
        format!(
            "cannot read the position file {}: {e}",
            plan.position.display()
        )
    })?;
    let place = match saved {
        Some(Ok(place)) => place,
        Some(Err(why)) => {
            let bad = plan.position.with_extension("position.bad");
            let set_aside = std::fs::rename(&plan.position, &bad);
            tracing::error!(
                sink,
                file = %plan.position.display(),
                error = %why,
                set_aside = %bad.display(),
                renamed = set_aside.is_ok(),
                "the audit stream's position file is not a position; forwarding again from the trail's beginning (records already forwarded are sent again)"
            );
            return Ok(follower);
        }
        None => match plan.start_at {
            StartAt::Beginning => {
                tracing::info!(
                    sink,
                    "a new audit stream: forwarding from the trail's beginning"
                );
                return Ok(follower);
            }
            StartAt::End => {
                let Some((seq, chain)) = follower.head()? else {
                    return Ok(follower);
                };
                let place = Place {
                    seq,
                    chain,
                    file: String::new(),
                    end: 0,
                };
                // Saved now: a restart before the first delivery goes on from here.
                save(&plan.position, &place).map_err(|e| {
                    format!(
                        "cannot write the position file {}: {e}",
                        plan.position.display()
                    )
                })?;
                tracing::info!(
                    sink,
                    after_seq = seq,
                    "a new audit stream: forwarding from the trail's end"
                );
                place
            }
        },
    };
    match follower
        .seek(&place)
        .map_err(|e| format!("cannot read the trail {}: {e}", plan.dir.display()))?
    {
        Sought::Resumed => {
            tracing::info!(sink, after_seq = place.seq, "audit stream resumed")
        }
        Sought::Removed => tracing::warn!(
            sink,
            after_seq = place.seq,
            "records after the audit stream's position were removed (retention) before they were forwarded; going on with the trail's first"
        ),
        Sought::Replaced(why) => tracing::error!(
            sink,
            after_seq = place.seq,
            "{why}; forwarding again from the trail's beginning"
        ),
    }
    Ok(follower)
}

/// Pauses doubling from the first to the longest.
struct Pause {
    next: Duration,
    timing: Timing,
}

impl Pause {
    fn new(timing: Timing) -> Pause {
        Pause {
            next: timing.first_pause,
            timing,
        }
    }

    fn take(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.timing.max_pause);
        now
    }

    fn reset(&mut self) {
        self.next = self.timing.first_pause;
    }
}

/// Waits `d`; true when the sink is to stop.
async fn wait(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow_and_update() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Runs a `stream = "audit"` sink until `stop` turns true: follows the trail and
/// offers its records to `forward`, saving the position after each delivery.
pub async fn run(
    plan: Plan,
    mut forward: Box<dyn Forward>,
    counters: Arc<SinkCounters>,
    mut stop: watch::Receiver<bool>,
) {
    let sink = plan.name.clone();
    let mut pause = Pause::new(plan.timing);
    let mut follower = loop {
        let p = plan.clone();
        match tokio::task::spawn_blocking(move || open(&p)).await {
            Ok(Ok(f)) => break f,
            Ok(Err(why)) => {
                tracing::error!(sink, error = %why, "the audit stream cannot start; trying again")
            }
            Err(e) => tracing::error!(sink, error = %e, "the audit stream cannot start"),
        }
        if wait(pause.take(), &mut stop).await {
            return;
        }
    };
    pause.reset();
    let mut items: Vec<AuditItem> = Vec::new();
    let mut places: Vec<Place> = Vec::new();
    let mut delivered = follower.last();
    let mut head = 0u64;
    let mut failing = false;
    loop {
        if *stop.borrow() {
            break;
        }
        if items.is_empty() {
            let read = tokio::task::spawn_blocking(move || {
                let batch = follower.read(BATCH);
                (follower, batch)
            })
            .await;
            let batch = match read {
                Ok((f, batch)) => {
                    follower = f;
                    batch
                }
                Err(e) => {
                    tracing::error!(sink, error = %e, "the audit stream's reader failed; stopping it");
                    return;
                }
            };
            match batch {
                Ok(batch) => {
                    head = batch.head;
                    for note in &batch.notes {
                        tracing::warn!(sink, "audit stream: {note}");
                    }
                    if batch.missing > 0 {
                        counters.failed.fetch_add(batch.missing, Ordering::Relaxed);
                    }
                    for f in batch.records {
                        places.push(f.place);
                        items.push(AuditItem {
                            record: f.record,
                            line: f.line,
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(sink, dir = %plan.dir.display(), error = %e, "cannot read the audit trail; trying again");
                    if wait(pause.take(), &mut stop).await {
                        break;
                    }
                    continue;
                }
            }
            counters
                .queued
                .store(head.saturating_sub(delivered), Ordering::Relaxed);
            if items.is_empty() {
                if wait(plan.timing.poll, &mut stop).await {
                    break;
                }
                continue;
            }
        }
        let n = forward.forward(&items).await.min(items.len());
        if n > 0 {
            let place = places[n - 1].clone();
            let path = plan.position.clone();
            let saved = tokio::task::spawn_blocking(move || save(&path, &place)).await;
            if let Err(e) = saved.map_err(std::io::Error::other).and_then(|r| r) {
                // The next delivery saves again; until then a restart sends these again.
                tracing::error!(sink, file = %plan.position.display(), error = %e, "cannot save the audit stream's position");
            }
            delivered = places[n - 1].seq;
            counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
            items.drain(..n);
            places.drain(..n);
        }
        counters
            .queued
            .store(head.saturating_sub(delivered), Ordering::Relaxed);
        if items.is_empty() {
            if failing {
                tracing::info!(sink, after_seq = delivered, "audit stream delivering again");
                failing = false;
            }
            pause.reset();
            continue;
        }
        let retry_in = pause.take();
        tracing::warn!(
            sink,
            delivered = n,
            waiting = items.len(),
            next_seq = items[0].record.seq,
            retry_in_ms = retry_in.as_millis() as u64,
            "audit stream: the sink stopped short; offering the rest again"
        );
        failing = true;
        if wait(retry_in, &mut stop).await {
            break;
        }
        counters.retried.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
