//! Start: the snapshot read back, then the journal replayed on top of it. One way for
//! the daemon and for `ingest`, so both see the state a crash left.

use std::path::{Path, PathBuf};

use super::journal::{self, Mark, Replayed};
use super::snapshot::{self, Counts, SnapshotError};
use crate::state::{Secs, State};

/// What was read back.
#[derive(Debug)]
pub struct Restored {
    /// The snapshot: what it held, none, or why it was refused (then nothing of it is
    /// in the state).
    pub snapshot: Result<Option<Counts>, SnapshotError>,
    /// Where a refused snapshot was moved (or why it could not be).
    pub set_aside: Option<Result<PathBuf, std::io::Error>>,
    /// The journal's replay (an error: the directory could not be read).
    pub journal: std::io::Result<Replayed>,
    /// Where the journal goes on: the next generation, numbered after every change read.
    pub next: Mark,
}

/// Reads the snapshot in `dir` into `state` and replays the journal after it. A
/// damaged snapshot is moved aside and every journal file is replayed onto empty state
/// (what they hold is all there is); a damaged journal file is applied up to the damage
/// and moved aside.
pub fn restore(state: &State, dir: &Path, now: Secs) -> Restored {
    let snap = snapshot::read(state, dir, now);
    let set_aside = snap.is_err().then(|| snapshot::set_aside(dir, now));
    let mark = match &snap {
        Ok(Some(c)) => c.journal,
        _ => None,
    };
    let replayed = journal::replay(state, dir, mark, now);
    let next = match &replayed {
        Ok(r) => r.next(),
        // The directory could not be listed: begin after the mark, which is as far as
        // anything known goes.
        Err(_) => {
            let m = mark.unwrap_or_default();
            Mark {
                generation: m.generation + 1,
                seq: m.seq,
            }
        }
    };
    Restored {
        snapshot: snap,
        set_aside,
        journal: replayed,
        next,
    }
}
