//! Persistence: what must survive a restart.
//!
//! [`snapshot`] writes the baselines and the holds and blocks in force to
//! `<state_dir>/state.snapshot` (postcard records, written to a temporary file, fsynced
//! and renamed) every minute and at shutdown, and reads it back at start. Windows
//! (failure counts, recipient counts) are short-lived and start empty after a restart.

pub mod snapshot;
