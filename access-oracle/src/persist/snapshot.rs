//! The state snapshot: baselines, account holds and address blocks, and the short
//! windows the rules count in (failed logins per account and per address, recipients
//! per account, distinct accounts failed per address), so a restart in the middle of a
//! brute force or a burst does not give the attacker a fresh count.
//!
//! Format: the magic line `exim-access snapshot 3\n` (version 2, without windows, is
//! still read); sections, each its length (u64,
//! little endian) then postcard-encoded records (one per baseline, hold or block); a
//! zero length; an `End` record carrying how many records came before it. Sections are
//! decoded in parallel at start. A file without its `End` record, with a section that
//! runs past the end, or with a record that does not decode, is refused with the
//! offset of the problem; the oracle then moves it aside (nothing is overwritten) and
//! starts from empty state.
//!
//! Records are encoded from the live maps a section (16,384 records) at a time, so a
//! snapshot of a million baselines needs no copy of them in memory.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rules;
use crate::state::{Baseline, CountWindow, DedupWindow, DistinctWindow, Hold, Secs, State};

/// The file name inside the state directory.
pub const FILE_NAME: &str = "state.snapshot";

const MAGIC: &[u8] = b"exim-access snapshot 3\n";

/// The version before the windows were kept: read the same way (it has none).
const MAGIC_2: &[u8] = b"exim-access snapshot 2\n";

/// An account's or an address's windows as stored; empty parts stay empty.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredWindows {
    /// Failed logins: time, and the key a repeat is recognised by.
    failures: Vec<(Secs, Option<u64>)>,
    /// Recipients (accounts): one time each.
    times: Vec<Secs>,
    /// Distinct accounts failed (addresses): key and last time, while counted exactly.
    distinct: Vec<(u64, Secs)>,
}

impl StoredWindows {
    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.times.is_empty() && self.distinct.is_empty()
    }

    /// The newest time in any part.
    fn latest(&self) -> Secs {
        let f = self.failures.iter().map(|&(t, _)| t);
        let d = self.distinct.iter().map(|&(_, t)| t);
        f.chain(self.times.iter().copied())
            .chain(d)
            .max()
            .unwrap_or(0)
    }
}

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
    AccountWindows(&'a str, StoredWindows),
    IpWindows(IpAddr, StoredWindows),
}

#[derive(Debug, Deserialize)]
enum Record<'a> {
    Baseline(&'a str, Baseline),
    Hold(&'a str, #[serde(borrow)] StoredHold<'a>),
    IpBlock(IpAddr, #[serde(borrow)] StoredHold<'a>),
    End(u64),
    AccountWindows(&'a str, StoredWindows),
    IpWindows(IpAddr, StoredWindows),
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
    /// Accounts and addresses whose counting windows were kept.
    pub windows: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.baselines += other.baselines;
        self.holds += other.holds;
        self.ip_blocks += other.ip_blocks;
        self.windows += other.windows;
    }
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

/// Records per section: sections are decoded in parallel at start.
const SECTION_RECORDS: usize = 16_384;

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
    let mut section: Vec<u8> = Vec::with_capacity(1 << 22);
    let mut in_section = 0usize;
    let flush = |out: &mut BufWriter<File>, section: &mut Vec<u8>| -> std::io::Result<()> {
        if !section.is_empty() {
            out.write_all(&(section.len() as u64).to_le_bytes())?;
            out.write_all(section)?;
            section.clear();
        }
        Ok(())
    };
    let mut put = |out: &mut BufWriter<File>, r: &RecordRef<'_>| -> Result<(), SnapshotError> {
        let buf = std::mem::take(&mut section);
        section = postcard::to_extend(r, buf).map_err(|e| io(std::io::Error::other(e)))?;
        in_section += 1;
        if in_section == SECTION_RECORDS {
            in_section = 0;
            flush(out, &mut section).map_err(io)?;
        }
        Ok(())
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
    let mut result = Ok(());
    state.for_each_account(|user, acct| {
        let w = StoredWindows {
            failures: acct.auth_failures.entries().collect(),
            times: acct.rcpts.times().collect(),
            distinct: Vec::new(),
        };
        if result.is_ok() && !w.is_empty() {
            result = put(&mut out, &RecordRef::AccountWindows(user, w));
            counts.windows += 1;
        }
    });
    state.for_each_ip(|ip, rec| {
        let w = StoredWindows {
            failures: rec.auth_failures.entries().collect(),
            times: Vec::new(),
            distinct: rec.accounts_failed.exact().to_vec(),
        };
        if result.is_ok() && !w.is_empty() {
            result = put(&mut out, &RecordRef::IpWindows(ip, w));
            counts.windows += 1;
        }
    });
    result?;
    flush(&mut out, &mut section).map_err(io)?;
    out.write_all(&0u64.to_le_bytes()).map_err(io)?;
    let total = counts.baselines + counts.holds + counts.ip_blocks + counts.windows;
    postcard::to_io(&RecordRef::End(total), &mut out).map_err(|e| io(std::io::Error::other(e)))?;
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

/// Decodes one section's records into `state`.
fn read_section(
    state: &State,
    bytes: &[u8],
    base: usize,
    now: Secs,
) -> Result<(Counts, u64), String> {
    let mut counts = Counts::default();
    let mut records = 0u64;
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = base + (bytes.len() - rest.len());
        let (record, tail) = postcard::take_from_bytes::<Record<'_>>(rest)
            .map_err(|e| format!("record at byte {offset} does not decode: {e}"))?;
        rest = tail;
        records += 1;
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
            Record::AccountWindows(user, w) => {
                let mut acct = state.account_mut(user);
                acct.last_seen = acct.last_seen.max(w.latest());
                acct.auth_failures = DedupWindow::from_entries(w.failures);
                acct.rcpts = CountWindow::from_times(w.times);
                counts.windows += 1;
            }
            Record::IpWindows(ip, w) => {
                let mut rec = state.ip_mut(ip);
                rec.last_seen = rec.last_seen.max(w.latest());
                rec.auth_failures = DedupWindow::from_entries(w.failures);
                rec.accounts_failed = DistinctWindow::from_exact(w.distinct);
                counts.windows += 1;
            }
            Record::End(_) => return Err(format!("end record inside a section at byte {offset}")),
        }
    }
    Ok((counts, records))
}

/// Reads the snapshot in `dir` into `state`; holds and blocks that ended before `now`
/// are dropped. `Ok(None)` when there is no snapshot. Sections are decoded on every
/// available core.
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
    let Some(body) = bytes
        .strip_prefix(MAGIC)
        .or_else(|| bytes.strip_prefix(MAGIC_2))
    else {
        return Err(corrupt("not an exim-access snapshot (bad header)".into()));
    };
    // The section table: lengths in front of each section, 0 after the last.
    let mut sections: Vec<(usize, &[u8])> = Vec::new();
    let mut at = 0usize;
    let end = loop {
        let offset = MAGIC.len() + at;
        let Some(len) = body.get(at..at + 8) else {
            return Err(corrupt(format!(
                "truncated at byte {offset}: no end of sections"
            )));
        };
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        at += 8;
        if len == 0 {
            break &body[at..];
        }
        let Some(section) = body.get(at..at.saturating_add(len)) else {
            return Err(corrupt(format!(
                "truncated at byte {offset}: a section of {len} bytes runs past the end"
            )));
        };
        sections.push((MAGIC.len() + at, section));
        at += len;
    };
    let (record, tail) = postcard::take_from_bytes::<Record<'_>>(end)
        .map_err(|e| corrupt(format!("the end record does not decode: {e}")))?;
    let Record::End(expected) = record else {
        return Err(corrupt("no end record after the sections".into()));
    };
    if !tail.is_empty() {
        return Err(corrupt(format!(
            "{} bytes after the end record",
            tail.len()
        )));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let results: Vec<Result<(Counts, u64), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<(usize, &[u8])> =
                    sections.iter().skip(t).step_by(threads).copied().collect();
                scope.spawn(move || {
                    let mut total = (Counts::default(), 0u64);
                    for (base, section) in mine {
                        let (c, n) = read_section(state, section, base, now)?;
                        total.0.add(c);
                        total.1 += n;
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a decoding thread panicked".into()))
            })
            .collect()
    });
    let mut counts = Counts::default();
    let mut seen = 0u64;
    for r in results {
        let (c, n) = r.map_err(corrupt)?;
        counts.add(c);
        seen += n;
    }
    if seen != expected {
        return Err(corrupt(format!(
            "end record says {expected} records, read {seen}"
        )));
    }
    Ok(Some(counts))
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
                ip_blocks: 1,
                windows: 0,
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
    fn the_counting_windows_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::default();
        {
            let mut a = s.account_mut("alice");
            for (t, key) in [(90, Some(1)), (95, Some(2)), (99, None)] {
                a.auth_failures.record(t, 600, key, 64);
            }
            for t in [97, 98, 98] {
                a.rcpts.record(t);
            }
        }
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        {
            let mut r = s.ip_mut(ip);
            r.auth_failures.record(91, 600, Some(7), 64);
            for k in 0..5 {
                r.accounts_failed.record(92, 600, k);
            }
        }
        // An account with nothing in its windows is not written.
        s.account_mut("idle").last_seen = 50;
        let counts = write(&s, dir.path(), 100).unwrap();
        assert_eq!(counts.windows, 2);
        let back = State::default();
        assert_eq!(read(&back, dir.path(), 100).unwrap(), Some(counts));
        let a = back.account("alice").unwrap();
        assert_eq!(a.auth_failures.count(100, 600), 3);
        assert_eq!(
            a.auth_failures.entries().collect::<Vec<_>>(),
            [(90, Some(1)), (95, Some(2)), (99, None)]
        );
        assert_eq!(a.rcpts.times().collect::<Vec<_>>(), [97, 98, 98]);
        assert_eq!(a.last_seen, 99, "idle from its last event on");
        drop(a);
        assert!(back.account("idle").is_none());
        let r = back.ip(ip).unwrap();
        assert_eq!(r.auth_failures.count(100, 600), 1);
        assert_eq!(r.accounts_failed.count(), 5);
        drop(r);
        // A repeat after the restart is still a repeat; a new password still counts.
        let mut a = back.account_mut("alice");
        assert_eq!(a.auth_failures.record(101, 600, Some(2), 64), 3);
        assert_eq!(a.auth_failures.record(102, 600, Some(3), 64), 4);
    }

    #[test]
    fn a_version_2_snapshot_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        write(&sample(), dir.path(), 100).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        assert!(bytes.starts_with(MAGIC));
        bytes[..MAGIC.len()].copy_from_slice(MAGIC_2);
        fs::write(&path, bytes).unwrap();
        let c = read(&State::default(), dir.path(), 100).unwrap().unwrap();
        assert_eq!((c.baselines, c.holds, c.ip_blocks), (100, 1, 1));
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
