//! Following the configured log files (`[[sources]]`) into the engine, live.
//!
//! One thread per source drives a [`Tailer`]: it wakes on inotify events for the file's
//! directory (a write, a rename, a create) and at least every `poll_secs` (the fallback
//! when notifications are unavailable, e.g. on some network file systems). Each batch of
//! lines is parsed, fed to [`Engine::observe`], and then the position is saved to
//! `<state_dir>/positions.json` (written to a temporary file and renamed), so a restart
//! resumes after the last processed line. Lines that look relevant but do not parse go to
//! `<state_dir>/dead-letters.log` with the reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use notify::{RecursiveMode, Watcher};

use crate::engine::Engine;
use crate::engine::stats::SourceCounters;
use crate::sources::tail::{Position, Tailer};
use crate::sources::{DeadLetterWriter, LineContext, Parsed, SourceConfig, parse_line};

/// The saved positions of every source, by path.
type Positions = BTreeMap<PathBuf, Position>;

/// Running followers; [`Followers::stop`] ends them.
pub struct Followers {
    wake: Vec<mpsc::SyncSender<()>>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Followers {
    /// Starts one follower per source.
    pub fn start(
        sources: &[SourceConfig],
        engine: Arc<Engine>,
        state_dir: &Path,
    ) -> std::io::Result<Followers> {
        let positions_file = state_dir.join("positions.json");
        let positions: Positions = std::fs::read(&positions_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            positions: Mutex::new(positions),
            positions_file,
            dead_letters: Mutex::new(DeadLetterWriter::new(
                crate::files::private_append().open(state_dir.join("dead-letters.log"))?,
            )),
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let mut wake = Vec::new();
        let mut threads = Vec::new();
        for source in sources {
            let (tx, rx) = mpsc::sync_channel(16);
            wake.push(tx.clone());
            let ctx = Follower {
                stopping: stopping.clone(),
                counters: engine.stats.source(&source.path.display().to_string()),
                source: source.clone(),
                engine: engine.clone(),
                shared: shared.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("follow {}", source.path.display()))
                    .spawn(move || ctx.run(tx, rx))?,
            );
        }
        Ok(Followers {
            wake,
            stopping,
            threads,
        })
    }

    /// Stops every follower after one last read and waits for them.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for w in &self.wake {
            let _ = w.try_send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Shared {
    positions: Mutex<Positions>,
    positions_file: PathBuf,
    dead_letters: Mutex<DeadLetterWriter<std::fs::File>>,
}

impl Shared {
    fn save(&self, path: &Path, position: Position) -> std::io::Result<()> {
        let mut all = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        if all.get(path) == Some(&position) {
            return Ok(());
        }
        all.insert(path.to_path_buf(), position);
        let tmp = self.positions_file.with_extension("json.tmp");
        let mut f = crate::files::private_create().open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&*all)?)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.positions_file)
    }
}

struct Follower {
    stopping: Arc<AtomicBool>,
    /// This source's own counters (beside the engine's totals).
    counters: Arc<SourceCounters>,
    source: SourceConfig,
    engine: Arc<Engine>,
    shared: Arc<Shared>,
}

impl Follower {
    fn run(self, wake: mpsc::SyncSender<()>, rx: mpsc::Receiver<()>) {
        let path = self.source.path.clone();
        let saved = self
            .shared
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&path)
            .copied();
        let mut tailer = Tailer::new(&path, saved, self.source.start_at);
        // Watch the directory: rotation renames and creates the file itself.
        let _watcher = path.parent().and_then(|dir| {
            let name = path.file_name()?.to_owned();
            let wake = wake.clone();
            let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                if ev.is_ok_and(|ev| {
                    ev.paths.iter().any(|p| {
                        p.file_name()
                            .is_some_and(|n| n.as_encoded_bytes().starts_with(name.as_encoded_bytes()))
                    })
                }) {
                    let _ = wake.try_send(());
                }
            })
            .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "no file notifications; polling"))
            .ok()?;
            w.watch(dir, RecursiveMode::NonRecursive)
                .map_err(|e| tracing::warn!(path = %path.display(), error = %e, "cannot watch the directory; polling"))
                .ok()?;
            Some(w)
        });
        let file: Arc<str> = Arc::from(path.display().to_string());
        let tz = TimeZone::system();
        let poll = Duration::from_secs(self.source.poll_secs);
        loop {
            // Read the flag first: a batch that starts after `stop` is the last look, so
            // nothing written before `stop` is left behind.
            let stopping = self.stopping.load(Ordering::SeqCst);
            self.batch(&mut tailer, &file, &tz);
            if stopping {
                return;
            }
            let _ = rx.recv_timeout(poll);
        }
    }

    fn batch(&self, tailer: &mut Tailer, file: &Arc<str>, tz: &TimeZone) {
        let now = Timestamp::now();
        let lines = match tailer.poll(now.as_second()) {
            Ok(lines) => lines,
            Err(e) => {
                self.engine
                    .stats
                    .source_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %tailer.path().display(), error = %e, "cannot read log source");
                return;
            }
        };
        if lines.is_empty() {
            return;
        }
        let mut ctx = LineContext::new(file, tz.clone(), now);
        for line in &lines {
            ctx.offset = line.offset;
            self.engine
                .stats
                .source_lines
                .fetch_add(1, Ordering::Relaxed);
            self.counters.lines.fetch_add(1, Ordering::Relaxed);
            let parsed = parse_line(self.source.format, &line.bytes, &ctx);
            match &parsed {
                Parsed::Unrecognised => {
                    self.engine
                        .stats
                        .source_unrecognised
                        .fetch_add(1, Ordering::Relaxed);
                    self.counters.unrecognised.fetch_add(1, Ordering::Relaxed);
                }
                Parsed::DeadLetter(reason) => {
                    self.engine
                        .stats
                        .source_dead_letters
                        .fetch_add(1, Ordering::Relaxed);
                    self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                    let mut dl = self
                        .shared
                        .dead_letters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = dl
                        .write(reason, &ctx, &line.bytes)
                        .and_then(|()| dl.flush())
                    {
                        tracing::error!(error = %e, "cannot write the dead-letter file");
                    }
                }
                _ => {
                    for event in parsed.events() {
                        self.engine
                            .stats
                            .source_events
                            .fetch_add(1, Ordering::Relaxed);
                        self.counters.events.fetch_add(1, Ordering::Relaxed);
                        self.engine.observe(event);
                    }
                }
            }
        }
        if let Some(position) = tailer.position()
            && let Err(e) = self.shared.save(tailer.path(), position)
        {
            self.engine
                .stats
                .source_errors
                .fetch_add(1, Ordering::Relaxed);
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot save the log position");
        }
    }
}
