//! Persistence: what must survive a restart, and a crash.
//!
//! [`snapshot`] writes the baselines, the holds and blocks in force and the counting
//! windows to `<state_dir>/state.snapshot` (checksummed postcard records, written to a
//! temporary file, fsynced and renamed) every minute when something changed and at
//! shutdown, and reads it back at start. [`journal`] appends every change made between
//! two snapshots as it is made, and is replayed on top of the snapshot at start, so a
//! `kill -9` loses nothing the oracle acknowledged.

pub mod journal;
pub mod restore;
pub mod snapshot;
