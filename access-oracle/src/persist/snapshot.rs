//! The state snapshot: baselines, account holds and address blocks.
//!
//! Format: the magic line `exim-access snapshot 1\n`, then postcard-encoded records
//! (one per baseline, hold or block), then an `End` record carrying how many came
//! before it. A file without its `End` record, or with a record that does not decode,
//! is refused with the offset of the problem; the oracle then moves it aside (nothing
//! is overwritten) and starts from empty state.
//!
//! Records are written one by one from the live maps, so a snapshot of a million
//! baselines needs no copy of them in memory.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rules;
use crate::state::{Baseline, Hold, Secs, State};

/// The file name inside the state directory.
pub const FILE_NAME: &str = "state.snapshot";

const MAGIC: &[u8] = b"exim-access snapshot 1\n";

/// A hold as stored: the rule's name as text.
#[derive(Debug, Serialize, Deserialize)]
struct StoredHold<'a> {
    since: Secs,
    until: Secs,
    rule: &'a str,
    message: &'a str,
    deny: bool,
}

#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    Baseline(&'a str, &'a Baseline),
    Hold(&'a str, StoredHold<'a>),
    IpBlock(IpAddr, StoredHold<'a>),
    End(u64),
}

#[derive(Debug, Deserialize)]
enum Record<'a> {
    Baseline(&'a str, Baseline),
    Hold(&'a str, #[serde(borrow)] StoredHold<'a>),
    IpBlock(IpAddr, #[serde(borrow)] StoredHold<'a>),
    End(u64),
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a snapshot, or is damaged.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the byte offset.
        reason: String,
    },
}

/// What a snapshot held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Baselines.
    pub baselines: u64,
    /// Account holds in force.
    pub holds: u64,
    /// Address blocks in force.
    pub ip_blocks: u64,
}

fn stored(h: &Hold) -> StoredHold<'_> {
    StoredHold {
        since: h.since,
        until: h.until,
        rule: h.rule,
        message: &h.message,
        deny: h.deny,
    }
}

/// Every rule name a hold can carry, to restore the `&'static str`.
fn rule_name(name: &str) -> &'static str {
    const NAMES: &[&str] = &[
        rules::FailedLoginsAccount::NAME,
        rules::FailedLoginsIp::NAME,
        rules::RecipientCeiling::NAME,
        rules::password_spraying::PasswordSpraying::NAME,
        rules::new_country::NewCountry::NAME,
        rules::new_asn::NewAsn::NAME,
        rules::impossible_travel::ImpossibleTravel::NAME,
        rules::distant_logins::DistantLogins::NAME,
        rules::outbound_spike::OutboundSpike::NAME,
        rules::disabled_credentials::DisabledCredentials::NAME,
        rules::bad_ip::BadIp::NAME,
        "admin",
    ];
    NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("restored")
}

fn restore(h: &StoredHold<'_>) -> Hold {
    Hold {
        since: h.since,
        until: h.until,
        rule: rule_name(h.rule),
        message: Arc::from(h.message),
        deny: h.deny,
    }
}

/// Writes the snapshot of `state` at `now` into `dir` (temporary file, fsync, rename,
/// fsync of the directory).
pub fn write(state: &State, dir: &Path, now: Secs) -> Result<Counts, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let io = |source| SnapshotError::Io {
        path: tmp.clone(),
        source,
    };
    let file = File::create(&tmp).map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC).map_err(io)?;
    let mut counts = Counts::default();
    let put = |out: &mut BufWriter<File>, r: &RecordRef<'_>| -> Result<(), SnapshotError> {
        postcard::to_io(r, &mut *out)
            .map(|_| ())
            .map_err(|e| SnapshotError::Io {
                path: tmp.clone(),
                source: std::io::Error::other(e),
            })
    };
    for b in state.baselines().iter() {
        put(&mut out, &RecordRef::Baseline(b.key(), b.value()))?;
        counts.baselines += 1;
    }
    for (user, hold) in state.active_holds(now) {
        put(&mut out, &RecordRef::Hold(&user, stored(&hold)))?;
        counts.holds += 1;
    }
    for (ip, block) in state.active_ip_blocks(now) {
        put(&mut out, &RecordRef::IpBlock(ip, stored(&block)))?;
        counts.ip_blocks += 1;
    }
    let total = counts.baselines + counts.holds + counts.ip_blocks;
    put(&mut out, &RecordRef::End(total))?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|source| SnapshotError::Io {
        path: path.clone(),
        source,
    })?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(counts)
}

/// Reads the snapshot in `dir` into `state`; holds and blocks that ended before `now`
/// are dropped. `Ok(None)` when there is no snapshot.
pub fn read(state: &State, dir: &Path, now: Secs) -> Result<Option<Counts>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.clone(),
        reason,
    };
    let Some(mut rest) = bytes.strip_prefix(MAGIC) else {
        return Err(corrupt("not an exim-access snapshot (bad header)".into()));
    };
    let mut counts = Counts::default();
    let mut seen = 0u64;
    loop {
        let offset = bytes.len() - rest.len();
        if rest.is_empty() {
            return Err(corrupt(format!(
                "truncated at byte {offset}: no end record after {seen} records"
            )));
        }
        let (record, tail) = postcard::take_from_bytes::<Record<'_>>(rest)
            .map_err(|e| corrupt(format!("record at byte {offset} does not decode: {e}")))?;
        rest = tail;
        match record {
            Record::Baseline(user, b) => {
                state.baselines().insert(user.into(), Box::new(b));
                counts.baselines += 1;
            }
            Record::Hold(user, h) => {
                if h.until > now {
                    let mut acct = state.account_mut(user);
                    acct.last_seen = acct.last_seen.max(now);
                    acct.hold = Some(restore(&h));
                    counts.holds += 1;
                }
            }
            Record::IpBlock(ip, h) => {
                if h.until > now {
                    let mut rec = state.ip_mut(ip);
                    rec.last_seen = rec.last_seen.max(now);
                    rec.auth_block = Some(restore(&h));
                    counts.ip_blocks += 1;
                }
            }
            Record::End(n) => {
                if n != seen {
                    return Err(corrupt(format!("end record says {n} records, read {seen}")));
                }
                if !rest.is_empty() {
                    return Err(corrupt(format!(
                        "{} bytes after the end record",
                        rest.len()
                    )));
                }
                return Ok(Some(counts));
            }
        }
        seen += 1;
    }
}

/// Moves a damaged snapshot aside (`state.snapshot.corrupt-<time>`) so that the next
/// write does not overwrite it; returns the new path.
pub fn set_aside(dir: &Path, now: Secs) -> std::io::Result<PathBuf> {
    let to = dir.join(format!("{FILE_NAME}.corrupt-{now}"));
    fs::rename(dir.join(FILE_NAME), &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::{CountryCode, GeoInfo};

    fn sample() -> State {
        let s = State::default();
        let geo = GeoInfo {
            country: Some(CountryCode(*b"DE")),
            asn: Some(64500),
            ..GeoInfo::default()
        };
        for i in 0..100 {
            s.baseline_mut(&format!("user{i}"), 10).learn_login(
                20,
                "192.0.2.1".parse().ok(),
                &geo,
                Some("helo"),
            );
        }
        s.account_mut("held").hold = Some(Hold {
            since: 0,
            until: 1000,
            rule: "failed_logins_account",
            message: "held".into(),
            deny: false,
        });
        s.account_mut("expired").hold = Some(Hold {
            since: 0,
            until: 50,
            rule: "admin",
            message: "x".into(),
            deny: false,
        });
        s.ip_mut("203.0.113.5".parse().unwrap()).auth_block = Some(Hold {
            since: 0,
            until: 2000,
            rule: "password_spraying",
            message: "blocked".into(),
            deny: true,
        });
        s
    }

    #[test]
    fn round_trips_baselines_holds_and_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        let counts = write(&s, dir.path(), 100).unwrap();
        assert_eq!(
            counts,
            Counts {
                baselines: 100,
                holds: 1,
                ip_blocks: 1
            }
        );
        let back = State::default();
        assert_eq!(read(&back, dir.path(), 100).unwrap(), Some(counts));
        assert_eq!(
            *back.baseline("user7").unwrap(),
            *s.baseline("user7").unwrap()
        );
        let held = back.account("held").unwrap();
        assert_eq!(held.hold.as_ref().unwrap().rule, "failed_logins_account");
        let ip = back.ip("203.0.113.5".parse().unwrap()).unwrap();
        assert!(ip.auth_block.as_ref().unwrap().deny);
        // Read later: the hold has ended, the block has not.
        let later = State::default();
        let c = read(&later, dir.path(), 1500).unwrap().unwrap();
        assert_eq!((c.holds, c.ip_blocks), (0, 1));
    }

    #[test]
    fn damaged_files_are_refused_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        write(&sample(), dir.path(), 100).unwrap();
        let path = dir.path().join(FILE_NAME);
        let full = fs::read(&path).unwrap();
        fs::write(&path, &full[..full.len() - 3]).unwrap();
        let err = read(&State::default(), dir.path(), 100)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not decode") || err.contains("truncated"),
            "{err}"
        );
        fs::write(&path, b"garbage").unwrap();
        let err = read(&State::default(), dir.path(), 100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad header"), "{err}");
        let aside = set_aside(dir.path(), 7).unwrap();
        assert!(aside.ends_with("state.snapshot.corrupt-7"));
        assert_eq!(read(&State::default(), dir.path(), 100).unwrap(), None);
    }
}
