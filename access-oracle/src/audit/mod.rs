//! The audit trail: an append-only, hash-chained record of who accessed which account,
//! how and from where, and of what the oracle and its administrators did about it.
//!
//! * What is recorded ([`record::Kind`]): every authentication attempt (SMTP, IMAP,
//!   POP3, ...; live, from a followed log, or backfilled by `ingest`) with its outcome
//!   and the verdict given; messages sent by accounts; IMAP/POP sessions with their
//!   counters; mailbox actions (Dovecot `mail_log`); administrators' actions (Exim
//!   `removed by`, Dovecot master-user logins, `ctl release` / `ctl unblock`); every
//!   rule that fired with its response. Metadata only: never a message body, never a
//!   password or its hash.
//! * How: one JSON line per record in day files (`<dir>/audit-YYYY-MM-DD.jsonl`), each
//!   line ending with an HMAC-SHA256 over the previous line's value and its own content
//!   ([`record`]). The engine hands records to a writer thread ([`writer`]) that writes
//!   them in batches and `fdatasync`s them at least every second: the verdict never waits
//!   for the disk.
//! * `access-oracle audit verify` ([`verify`]) names the first record that does not
//!   check; `access-oracle audit search` ([`search`]) finds records by account, address,
//!   time and kind.
//! * Retention: day files older than `retention_days` are removed and the removal is
//!   itself a record, so `verify` tells retention from loss.
//!
//! The same trail is continued by `serve` and by `ingest` (which runs with the daemon
//! stopped): whichever opens it reads the chain's head from the last record.

pub mod config;
pub mod crypt;
pub mod follow;
pub mod key;
pub mod record;
pub mod search;
pub mod segment;
pub mod verify;
pub mod writer;

pub use config::AuditConfig;
pub use record::{Kind, Record, Source};
pub use writer::{AuditSink, AuditStats, AuditWriter, Trail};

use std::path::Path;

use jiff::Timestamp;

/// Opens the trail of `config` for appending and starts its writer, or `None` when the
/// trail is off. `backfill` marks log events as coming from `ingest`.
pub fn start(
    config: &AuditConfig,
    state_dir: &Path,
    backfill: bool,
) -> Result<Option<(AuditSink, AuditWriter)>, writer::OpenError> {
    if !config.enabled {
        return Ok(None);
    }
    let trail = Trail::open(config, state_dir, Timestamp::now())?;
    tracing::info!(dir = %trail.dir().display(), last_seq = trail.seq(), "audit trail open");
    Ok(Some(writer::spawn(trail, backfill)))
}

/// Reads the key of the trail of `config` (for `verify`).
pub fn read_key(config: &AuditConfig, state_dir: &Path) -> Result<Vec<u8>, String> {
    key::read(&config.key_file(state_dir))
}

#[cfg(test)]
mod tests;
