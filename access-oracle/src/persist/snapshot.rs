//! The state snapshot: baselines, account holds and address blocks, and the short
//! windows the rules count in (failed logins per account and per address, recipients
//! per account, distinct accounts failed per address), so a restart in the middle of a
//! brute force or a burst does not give the attacker a fresh count. It also keeps the
//! audit trail's head ([`AuditHead`]): a second copy, outside the trail's directory,
//! of how far the trail had reached, so that `audit verify` and the next start notice
//! a trail cut short, removed or begun again.
//!
//! Format (version 5), all integers little endian:
//!
//! ```text
//! exim-access snapshot 5\n                     magic line
//! u32 length, postcard Header                  when written, the audit trail's head,
//!                                              where it stands in the journal
//! u32 CRC-32 of everything before it           (magic, length, header)
//! { u64 length (> 0), postcard records,        one section per 16,384 records
//!   u32 CRC-32 of the length and the records } ...
//! u64 0                                        no more sections
//! postcard End(number of records)
//! u32 CRC-32 of every byte before it           the whole file
//! ```
//!
//! Every byte is covered by the last checksum, so any damage of up to 32 bits in a row
//! (every single flipped bit among them) is found; the header's and the sections'
//! own checksums say where. Sections are decoded in parallel at start, and only after
//! every checksum matched, so a damaged file leaves nothing behind in the state:
//! [`read`] refuses it whole, with the byte offset of the damage, and the oracle moves
//! it aside ([`set_aside`]: `state.snapshot.bad-<time>`) and starts from empty state.
//!
//! Version 4 is the same without the journal's mark in the header: it is read, and
//! every journal file found is replayed after it.
//!
//! Each account's and address's records are written from one visit of its entry,
//! with the journal's number of its last change ([`crate::state::Account::journal_seq`])
//! when that is past the mark: the journal's replay then skips the changes the
//! snapshot already holds, however long the snapshot took to write while changes went
//! on.
//!
//! Versions 2 (without windows) and 3 (with windows) have neither header nor checksums:
//! they are still read, with a warning in the log that damage in them cannot be told
//! from data. Each of their records is decoded once without being kept, then again
//! into the state, so that a record that does not decode still leaves the state empty;
//! the next snapshot is written as version 4.
//!
//! Records are encoded from the live maps a section (16,384 records) at a time, so a
//! snapshot of a million baselines needs no copy of them in memory.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rules;
use ipnet::IpNet;

pub use super::journal::Mark;

use crate::state::blocks::Past;
use crate::state::{
    Baseline, Block, CountWindow, DedupWindow, DistinctWindow, Hold, HoldInfo, HoldScope, Secs,
    State,
};

/// The file name inside the state directory.
pub const FILE_NAME: &str = "state.snapshot";

const MAGIC: &[u8] = b"exim-access snapshot 5\n";

/// The version before the journal's mark in the header: read the same way.
const MAGIC_4: &[u8] = b"exim-access snapshot 4\n";

/// The version before the checksums and the header: read the same way (no checks).
const MAGIC_3: &[u8] = b"exim-access snapshot 3\n";

/// The version before the windows were kept: read the same way (it has none).
const MAGIC_2: &[u8] = b"exim-access snapshot 2\n";

/// The longest header read, in bytes (it is about a hundred).
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// The audit trail's head when the snapshot was written: the last record flushed to
/// disk (its sequence number and chain value) and the MAC of both under the trail's
/// key, the same as the trail's `head.json` holds. The snapshot only carries it; the
/// audit trail checks it (`crate::audit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The last record's sequence number (0: none yet).
    pub seq: u64,
    /// Its chain value.
    pub chain: [u8; 32],
    /// The MAC of `seq` and `chain` under the trail's key.
    pub mac: [u8; 32],
}

/// The first part of a snapshot (version 4 on; `journal` from version 5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// When the snapshot was written (seconds since the epoch).
    pub written: Secs,
    /// The audit trail's head then, when the trail is on.
    pub audit: Option<AuditHead>,
    /// Where the snapshot stands in the journal (none: written without one).
    pub journal: Option<Mark>,
}

/// The header of version 4.
#[derive(Debug, Deserialize)]
struct Header4 {
    written: Secs,
    audit: Option<AuditHead>,
}

/// A CRC-32 (IEEE, as zlib and gzip use) of `parts`, one after the other.
fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// A writer that keeps the CRC-32 of everything written through it.
struct Summing<W> {
    inner: W,
    sum: crc32fast::Hasher,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

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
pub(super) struct StoredHold<'a> {
    since: Secs,
    until: Secs,
    rule: &'a str,
    message: &'a str,
    deny: bool,
}

/// A network block as stored (`ctl block` and rule blocks, with who and why).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredBlock<'a> {
    #[serde(borrow)]
    hold: StoredHold<'a>,
    by: &'a str,
    reason: Option<&'a str>,
    repeats: u32,
    past: Option<Past>,
}

// New kinds of record go at the end: postcard names a variant by its position, so
// files written before a kind existed still read.
#[derive(Debug, Serialize)]
enum RecordRef<'a> {
    Baseline(&'a str, &'a Baseline),
    Hold(&'a str, StoredHold<'a>),
    /// Before network blocks: one address's block (read, no longer written; kept for
    /// the position of the variants after it).
    #[allow(dead_code)]
    IpBlock(IpAddr, StoredHold<'a>),
    End(u64),
    AccountWindows(&'a str, StoredWindows),
    IpWindows(IpAddr, StoredWindows),
    NetBlock(IpNet, StoredBlock<'a>),
    BlockPast(IpNet, Past),
    HoldInfo(&'a str, StoredHoldInfo<'a>),
    Familiar(&'a str, &'a [(IpNet, Secs)]),
    /// The journal's number of an account's last change (version 5).
    AccountSeq(&'a str, u64),
    /// The journal's number of an address's last change (version 5).
    IpSeq(IpAddr, u64),
    /// An account's throttle in force (version 5).
    Throttle(&'a str, StoredHold<'a>),
}

#[derive(Debug, Deserialize)]
enum Record<'a> {
    Baseline(&'a str, Baseline),
    Hold(&'a str, #[serde(borrow)] StoredHold<'a>),
    IpBlock(IpAddr, #[serde(borrow)] StoredHold<'a>),
    End(u64),
    AccountWindows(&'a str, StoredWindows),
    IpWindows(IpAddr, StoredWindows),
    NetBlock(IpNet, #[serde(borrow)] StoredBlock<'a>),
    BlockPast(IpNet, Past),
    HoldInfo(&'a str, #[serde(borrow)] StoredHoldInfo<'a>),
    Familiar(&'a str, Vec<(IpNet, Secs)>),
    AccountSeq(&'a str, u64),
    IpSeq(IpAddr, u64),
    Throttle(&'a str, #[serde(borrow)] StoredHold<'a>),
}

/// Who put an account's hold there, why, and its scope.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredHoldInfo<'a> {
    pub(super) by: &'a str,
    pub(super) reason: Option<&'a str>,
    pub(super) scope: HoldScope,
    pub(super) familiar: Vec<IpNet>,
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
    /// The file's format version (4 on: with checksums and the audit trail's head; 5
    /// on: with the journal's mark).
    pub version: u8,
    /// Where it stands in the journal (version 5, written with a journal).
    pub journal: Option<Mark>,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.baselines += other.baselines;
        self.holds += other.holds;
        self.ip_blocks += other.ip_blocks;
        self.windows += other.windows;
    }
}

pub(super) fn stored(h: &Hold) -> StoredHold<'_> {
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

pub(super) fn restore(h: &StoredHold<'_>) -> Hold {
    Hold {
        since: h.since,
        until: h.until,
        rule: rule_name(h.rule),
        message: Arc::from(h.message),
        deny: h.deny,
    }
}

pub(super) fn stored_info(i: &HoldInfo) -> StoredHoldInfo<'_> {
    StoredHoldInfo {
        by: &i.by,
        reason: i.reason.as_deref(),
        scope: i.scope,
        familiar: i.familiar.clone(),
    }
}

pub(super) fn stored_block(b: &Block, past: Option<Past>) -> StoredBlock<'_> {
    StoredBlock {
        hold: stored(&b.hold),
        by: &b.by,
        reason: b.reason.as_deref(),
        repeats: b.repeats,
        past,
    }
}

pub(super) fn restore_block(b: &StoredBlock<'_>) -> Block {
    Block {
        hold: restore(&b.hold),
        by: Arc::from(b.by),
        reason: b.reason.map(Arc::from),
        repeats: b.repeats,
    }
}

/// Records per section: sections are decoded in parallel at start.
const SECTION_RECORDS: usize = 16_384;

/// Writes the snapshot of `state` at `now`, with the audit trail's head `audit` and the
/// journal's mark `journal` (taken just before: [`super::journal::JournalFile::rotate`]),
/// into `dir` (temporary file, fsync, rename, fsync of the directory). On an error the
/// temporary file is removed and the snapshot there before is untouched.
pub fn write(
    state: &State,
    dir: &Path,
    now: Secs,
    audit: Option<&AuditHead>,
    journal: Option<Mark>,
) -> Result<Counts, SnapshotError> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let written = write_to(state, dir, &tmp, now, audit, journal);
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

fn write_to(
    state: &State,
    dir: &Path,
    tmp: &Path,
    now: Secs,
    audit: Option<&AuditHead>,
    journal: Option<Mark>,
) -> Result<Counts, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let io = |source| SnapshotError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    // The hour in progress of every account's sending, into its baseline first.
    state.flush_sends();
    // Account names and addresses: the oracle's user only, whatever the umask.
    let file = crate::files::private_create().open(tmp).map_err(io)?;
    let mut out = Summing {
        inner: BufWriter::with_capacity(1 << 20, file),
        sum: crc32fast::Hasher::new(),
    };
    out.write_all(MAGIC).map_err(io)?;
    let header = postcard::to_stdvec(&Header {
        written: now,
        audit: audit.copied(),
        journal,
    })
    .map_err(|e| io(std::io::Error::other(e)))?;
    out.write_all(&(header.len() as u32).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let header_sum = out.sum.clone().finalize();
    out.write_all(&header_sum.to_le_bytes()).map_err(io)?;
    let mut counts = Counts {
        version: 5,
        journal,
        ..Counts::default()
    };
    let mark_seq = journal.map_or(0, |m| m.seq);
    let mut section: Vec<u8> = Vec::with_capacity(1 << 22);
    let mut in_section = 0usize;
    let flush =
        |out: &mut Summing<BufWriter<File>>, section: &mut Vec<u8>| -> std::io::Result<()> {
            if !section.is_empty() {
                let len = (section.len() as u64).to_le_bytes();
                out.write_all(&len)?;
                out.write_all(section)?;
                out.write_all(&crc(&[&len, section]).to_le_bytes())?;
                section.clear();
            }
            Ok(())
        };
    let mut put =
        |out: &mut Summing<BufWriter<File>>, r: &RecordRef<'_>| -> Result<(), SnapshotError> {
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
    // Records beside the counted ones: a hold's who and why, a past block's history,
    // a throttle, the journal's numbers.
    let mut histories = 0u64;
    let past = state.blocks().past();
    let active = state.blocks().active(now);
    for (net, block) in &active {
        let p = past.iter().find(|(n, _)| n == net).map(|(_, p)| *p);
        let b = StoredBlock {
            hold: stored(&block.hold),
            by: &block.by,
            reason: block.reason.as_deref(),
            repeats: block.repeats,
            past: p,
        };
        put(&mut out, &RecordRef::NetBlock(*net, b))?;
        counts.ip_blocks += 1;
    }
    for (net, p) in &past {
        if !active.iter().any(|(n, _)| n == net) {
            put(&mut out, &RecordRef::BlockPast(*net, *p))?;
            histories += 1;
        }
    }
    let mut result = Ok(());
    state.for_each_familiar(|user, list| {
        if result.is_ok() {
            result = put(&mut out, &RecordRef::Familiar(user, list));
            histories += 1;
        }
    });
    result?;
    let mut result = Ok(());
    // Everything of one account from one visit of its entry, with the journal's
    // number of its last change: the replay skips exactly what this holds.
    state.for_each_account(|user, acct| {
        if result.is_err() {
            return;
        }
        if let Some(hold) = acct.active_hold(now) {
            result = put(&mut out, &RecordRef::Hold(user, stored(hold)));
            counts.holds += 1;
            if let Some(i) = acct.hold_info.as_deref()
                && result.is_ok()
            {
                result = put(&mut out, &RecordRef::HoldInfo(user, stored_info(i)));
                histories += 1;
            }
        }
        if let Some(t) = acct.throttle.as_ref().filter(|t| t.active(now))
            && result.is_ok()
        {
            result = put(&mut out, &RecordRef::Throttle(user, stored(t)));
            histories += 1;
        }
        if acct.journal_seq > mark_seq && result.is_ok() {
            result = put(&mut out, &RecordRef::AccountSeq(user, acct.journal_seq));
            histories += 1;
        }
        let w = StoredWindows {
            failures: acct
                .rules
                .failed_logins_account
                .failures
                .entries()
                .collect(),
            times: acct.rcpts.times().collect(),
            distinct: Vec::new(),
        };
        if result.is_ok() && !w.is_empty() {
            result = put(&mut out, &RecordRef::AccountWindows(user, w));
            counts.windows += 1;
        }
    });
    state.for_each_ip(|ip, rec| {
        if rec.journal_seq > mark_seq && result.is_ok() {
            result = put(&mut out, &RecordRef::IpSeq(ip, rec.journal_seq));
            histories += 1;
        }
        let w = StoredWindows {
            failures: rec.rules.failed_logins_ip.failures.entries().collect(),
            times: Vec::new(),
            distinct: rec.rules.password_spraying.accounts.exact().to_vec(),
        };
        if result.is_ok() && !w.is_empty() {
            result = put(&mut out, &RecordRef::IpWindows(ip, w));
            counts.windows += 1;
        }
    });
    result?;
    flush(&mut out, &mut section).map_err(io)?;
    out.write_all(&0u64.to_le_bytes()).map_err(io)?;
    let total = counts.baselines + counts.holds + counts.ip_blocks + counts.windows + histories;
    // Encoded first, then written: `postcard::to_io` reports a failed write (a full
    // disk) as "the serialize buffer is full".
    let end =
        postcard::to_stdvec(&RecordRef::End(total)).map_err(|e| io(std::io::Error::other(e)))?;
    out.write_all(&end).map_err(io)?;
    let Summing {
        inner: mut out,
        sum,
    } = out;
    out.write_all(&sum.finalize().to_le_bytes()).map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(tmp, &path).map_err(|source| SnapshotError::Io {
        path: path.clone(),
        source,
    })?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(counts)
}

/// Decodes one section's records into `state`, or only decodes them (to check them)
/// when `state` is `None`.
fn read_section(
    state: Option<&State>,
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
            .map_err(|e| format!("the record at byte {offset} does not decode: {e}"))?;
        rest = tail;
        records += 1;
        if let Record::End(_) = record {
            return Err(format!("an end record inside a section at byte {offset}"));
        }
        let Some(state) = state else {
            continue;
        };
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
                    let hold = restore(&h);
                    let block = Block {
                        by: Arc::from(hold.rule),
                        hold,
                        reason: None,
                        repeats: 0,
                    };
                    state.blocks().restore(IpNet::from(ip), block, None);
                    counts.ip_blocks += 1;
                }
            }
            Record::NetBlock(net, b) => {
                if b.hold.until > now {
                    let block = Block {
                        hold: restore(&b.hold),
                        by: Arc::from(b.by),
                        reason: b.reason.map(Arc::from),
                        repeats: b.repeats,
                    };
                    state.blocks().restore(net, block, b.past);
                    counts.ip_blocks += 1;
                } else if let Some(p) = b.past {
                    state.blocks().restore_past(net, p);
                }
            }
            Record::BlockPast(net, p) => state.blocks().restore_past(net, p),
            Record::Familiar(user, list) => state.restore_familiar(user, list),
            Record::HoldInfo(user, i) => {
                // Written only beside a hold in force; sections are read in parallel,
                // so its hold may be restored before or after it.
                let mut acct = state.account_mut(user);
                acct.last_seen = acct.last_seen.max(now);
                acct.hold_info = Some(Box::new(HoldInfo {
                    by: Arc::from(i.by),
                    reason: i.reason.map(Arc::from),
                    scope: i.scope,
                    familiar: i.familiar,
                }));
            }
            Record::AccountSeq(user, seq) => {
                let mut acct = state.account_mut(user);
                acct.journal_seq = acct.journal_seq.max(seq);
            }
            Record::IpSeq(ip, seq) => {
                let mut rec = state.ip_mut(ip);
                rec.journal_seq = rec.journal_seq.max(seq);
            }
            Record::Throttle(user, h) => {
                if h.until > now {
                    let mut acct = state.account_mut(user);
                    acct.last_seen = acct.last_seen.max(now);
                    acct.throttle = Some(restore(&h));
                }
            }
            Record::AccountWindows(user, w) => {
                let mut acct = state.account_mut(user);
                acct.last_seen = acct.last_seen.max(w.latest());
                acct.rules.failed_logins_account.failures = DedupWindow::from_entries(w.failures);
                acct.rcpts = CountWindow::from_times(w.times);
                counts.windows += 1;
            }
            Record::IpWindows(ip, w) => {
                let mut rec = state.ip_mut(ip);
                rec.last_seen = rec.last_seen.max(w.latest());
                rec.rules.failed_logins_ip.failures = DedupWindow::from_entries(w.failures);
                rec.rules.password_spraying.accounts = DistinctWindow::from_exact(w.distinct);
                counts.windows += 1;
            }
            Record::End(_) => unreachable!("refused above"),
        }
    }
    Ok((counts, records))
}

/// A snapshot file taken apart, its checksums checked.
struct Layout<'a> {
    /// The format version (2, 3 or 4).
    version: u8,
    /// Each section's records, with the file offset of its first byte.
    sections: Vec<(usize, &'a [u8])>,
    /// How many records the end record says came before it.
    expected: u64,
    /// The header (version 4 on).
    header: Option<Header>,
}

/// The u32 at `at` in `bytes`, if all four bytes are there.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().expect("4 bytes")))
}

/// The version, and where the body starts, from the magic line.
fn version_of(bytes: &[u8]) -> Option<(u8, usize)> {
    [(5, MAGIC), (4, MAGIC_4), (3, MAGIC_3), (2, MAGIC_2)]
        .into_iter()
        .find(|(_, m)| bytes.starts_with(m))
        .map(|(v, m)| (v, m.len()))
}

/// Reads the header of a version 4 or 5 file at `at` (just after the magic line);
/// returns it and the offset after its checksum.
fn header_at(bytes: &[u8], at: usize, version: u8) -> Result<(Header, usize), String> {
    let len =
        u32_at(bytes, at).ok_or_else(|| format!("truncated at byte {at}: no header length"))?;
    if len > MAX_HEADER_BYTES {
        return Err(format!(
            "the header at byte {at} claims {len} bytes: damaged (its checksum cannot match)"
        ));
    }
    let start = at + 4;
    let end = start + len as usize;
    let body = bytes
        .get(start..end)
        .ok_or_else(|| format!("truncated at byte {start}: the header runs past the end"))?;
    let stored =
        u32_at(bytes, end).ok_or_else(|| format!("truncated at byte {end}: no header checksum"))?;
    if crc(&[&bytes[..end]]) != stored {
        return Err(format!(
            "the header (bytes 0 to {}) does not match its checksum",
            end + 4
        ));
    }
    let bad = |e: postcard::Error| format!("the header at byte {start} does not decode: {e}");
    let header = if version >= 5 {
        postcard::from_bytes::<Header>(body).map_err(bad)?
    } else {
        let h = postcard::from_bytes::<Header4>(body).map_err(bad)?;
        Header {
            written: h.written,
            audit: h.audit,
            journal: None,
        }
    };
    Ok((header, end + 4))
}

/// Takes the file apart and checks every checksum it has; the first problem, with its
/// byte offset.
fn layout(bytes: &[u8]) -> Result<Layout<'_>, String> {
    let (version, mut at) = version_of(bytes).ok_or("not an exim-access snapshot (bad header)")?;
    let summed = version >= 4;
    // Version 4 ends with the whole file's checksum: the body stops before it.
    let end_of_body = if summed {
        bytes
            .len()
            .checked_sub(4)
            .filter(|&e| e >= at)
            .ok_or_else(|| format!("truncated at byte {at}: no header"))?
    } else {
        bytes.len()
    };
    let mut header = None;
    if summed {
        let (h, next) = header_at(&bytes[..end_of_body], at, version)?;
        header = Some(h);
        at = next;
    }
    let body = &bytes[..end_of_body];
    let mut sections: Vec<(usize, &[u8])> = Vec::new();
    let end = loop {
        let Some(len) = body.get(at..at + 8) else {
            return Err(format!("truncated at byte {at}: no end of sections"));
        };
        let len_bytes: [u8; 8] = len.try_into().expect("8 bytes");
        let len = u64::from_le_bytes(len_bytes);
        let start = at + 8;
        if len == 0 {
            break start;
        }
        let section = usize::try_from(len)
            .ok()
            .and_then(|len| body.get(start..start.checked_add(len)?))
            .ok_or_else(|| {
                format!("truncated at byte {at}: a section of {len} bytes runs past the end")
            })?;
        let mut next = start + section.len();
        if summed {
            let stored = u32_at(body, next).ok_or_else(|| {
                format!("truncated at byte {next}: no checksum after the section at byte {at}")
            })?;
            if crc(&[&len_bytes, section]) != stored {
                return Err(format!(
                    "the section at bytes {at} to {} does not match its checksum: a record \
                     in it is damaged",
                    next + 4
                ));
            }
            next += 4;
        }
        sections.push((start, section));
        at = next;
    };
    let (record, tail) = postcard::take_from_bytes::<Record<'_>>(&body[end..])
        .map_err(|e| format!("the end record at byte {end} does not decode: {e}"))?;
    let Record::End(expected) = record else {
        return Err(format!("no end record at byte {end}"));
    };
    if !tail.is_empty() {
        return Err(format!(
            "{} bytes after the end record at byte {end}",
            tail.len()
        ));
    }
    if summed {
        let stored = u32_at(bytes, end_of_body).expect("four bytes kept for it");
        if crc(&[body]) != stored {
            return Err(format!(
                "the file does not match its checksum (bytes {end} to {}: the end of \
                 the sections, the end record or the checksum itself is damaged)",
                bytes.len()
            ));
        }
    }
    Ok(Layout {
        version,
        sections,
        expected,
        header,
    })
}

/// Decodes every section on up to 8 threads, into `state` or (`None`) only to check
/// them; the counts and the number of records.
fn decode(
    state: Option<&State>,
    sections: &[(usize, &[u8])],
    now: Secs,
) -> Result<(Counts, u64), String> {
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
    let mut total = (Counts::default(), 0u64);
    let mut first_error: Option<String> = None;
    for r in results {
        match r {
            Ok((c, n)) => {
                total.0.add(c);
                total.1 += n;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Forgets everything a failed read put into `state`, so that "starting empty" is
/// what happens (only a writer's bug can get here: the checksums matched).
fn forget_all(state: &State) {
    state.baselines().clear();
    state.blocks().clear();
    // Nothing is in force at the end of time and nothing was seen after it.
    state.sweep(Secs::MAX, 0, 0);
}

/// Reads the snapshot in `dir` into `state`; holds and blocks that ended before `now`
/// are dropped. `Ok(None)` when there is no snapshot. On an error nothing of the file
/// is in `state`: the file is refused whole, and the error names the file and the byte
/// offset of the damage. Sections are decoded on every available core.
pub fn read(state: &State, dir: &Path, now: Secs) -> Result<Option<Counts>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    read_bytes(state, &path, &bytes, now).map(Some)
}

/// Reads the snapshot `bytes` (of the file `path`, for errors) into `state`, as
/// [`read`] does: on an error nothing of it is in `state`.
pub fn read_bytes(
    state: &State,
    path: &Path,
    bytes: &[u8],
    now: Secs,
) -> Result<Counts, SnapshotError> {
    let path = path.to_path_buf();
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.clone(),
        reason,
    };
    let layout = layout(bytes).map_err(corrupt)?;
    if layout.version < 4 {
        tracing::warn!(
            file = %path.display(),
            version = layout.version,
            "the state snapshot is of an older version without checksums: damage in it \
             cannot be told from data; the next snapshot is written with them"
        );
        // Decoded once to check it: a record that does not decode leaves nothing behind.
        let (_, seen) = decode(None, &layout.sections, now).map_err(corrupt)?;
        if seen != layout.expected {
            return Err(corrupt(format!(
                "the end record says {} records, the file holds {seen}",
                layout.expected
            )));
        }
    }
    let (mut counts, seen) = match decode(Some(state), &layout.sections, now) {
        Ok(r) => r,
        Err(e) => {
            forget_all(state);
            return Err(corrupt(e));
        }
    };
    if seen != layout.expected {
        forget_all(state);
        return Err(corrupt(format!(
            "the end record says {} records, the file holds {seen}",
            layout.expected
        )));
    }
    counts.version = layout.version;
    counts.journal = layout.header.and_then(|h| h.journal);
    Ok(counts)
}

/// The header of the snapshot in `dir`: `Ok(None)` when there is no snapshot or it is
/// of a version without one (2, 3). Reads only the start of the file, and checks the
/// header's own checksum.
pub fn read_header(dir: &Path) -> Result<Option<Header>, SnapshotError> {
    let path = dir.join(FILE_NAME);
    let io = |source| SnapshotError::Io {
        path: path.clone(),
        source,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mut start = Vec::new();
    file.take(MAGIC.len() as u64 + 8 + u64::from(MAX_HEADER_BYTES))
        .read_to_end(&mut start)
        .map_err(io)?;
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.clone(),
        reason,
    };
    match version_of(&start) {
        None => Err(corrupt("not an exim-access snapshot (bad header)".into())),
        Some((v, _)) if v < 4 => Ok(None),
        Some((v, at)) => header_at(&start, at, v)
            .map(|(h, _)| Some(h))
            .map_err(corrupt),
    }
}

/// Moves a damaged snapshot aside (`state.snapshot.bad-<UTC time>`, e.g.
/// `state.snapshot.bad-20261128T100000Z`) so that the next write does not overwrite it;
/// returns the new path.
pub fn set_aside(dir: &Path, now: Secs) -> std::io::Result<PathBuf> {
    let when = jiff::Timestamp::from_second(now)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|_| now.to_string());
    let to = dir.join(format!("{FILE_NAME}.bad-{when}"));
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
        s.blocks().put(
            "203.0.113.5/32".parse().unwrap(),
            Hold {
                since: 0,
                until: 2000,
                rule: "password_spraying",
                message: "blocked".into(),
                deny: true,
            },
            Arc::from("password_spraying"),
            None,
            false,
            &crate::state::Sizing::default(),
            0,
        );
        s
    }

    #[test]
    fn round_trips_baselines_holds_and_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        let counts = write(&s, dir.path(), 100, None, None).unwrap();
        assert_eq!(
            counts,
            Counts {
                baselines: 100,
                holds: 1,
                ip_blocks: 1,
                windows: 0,
                version: 5,
                journal: None,
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
        let (net, b) = back
            .blocks()
            .covering("203.0.113.5".parse().unwrap(), 100)
            .unwrap();
        assert_eq!(net.to_string(), "203.0.113.5/32");
        assert!(b.hold.deny);
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
                a.rules
                    .failed_logins_account
                    .failures
                    .record(t, 600, key, 64);
            }
            for t in [97, 98, 98] {
                a.rcpts.record(t);
            }
        }
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        {
            let mut r = s.ip_mut(ip);
            r.rules
                .failed_logins_ip
                .failures
                .record(91, 600, Some(7), 64);
            for k in 0..5 {
                r.rules.password_spraying.accounts.record(92, 600, k);
            }
        }
        // An account with nothing in its windows is not written.
        s.account_mut("idle").last_seen = 50;
        let counts = write(&s, dir.path(), 100, None, None).unwrap();
        assert_eq!(counts.windows, 2);
        let back = State::default();
        assert_eq!(read(&back, dir.path(), 100).unwrap(), Some(counts));
        let a = back.account("alice").unwrap();
        assert_eq!(a.rules.failed_logins_account.failures.count(100, 600), 3);
        assert_eq!(
            a.rules
                .failed_logins_account
                .failures
                .entries()
                .collect::<Vec<_>>(),
            [(90, Some(1)), (95, Some(2)), (99, None)]
        );
        assert_eq!(a.rcpts.times().collect::<Vec<_>>(), [97, 98, 98]);
        assert_eq!(a.last_seen, 99, "idle from its last event on");
        drop(a);
        assert!(back.account("idle").is_none());
        let r = back.ip(ip).unwrap();
        assert_eq!(r.rules.failed_logins_ip.failures.count(100, 600), 1);
        assert_eq!(r.rules.password_spraying.accounts.count(), 5);
        drop(r);
        // A repeat after the restart is still a repeat; a new password still counts.
        let mut a = back.account_mut("alice");
        assert_eq!(
            a.rules
                .failed_logins_account
                .failures
                .record(101, 600, Some(2), 64),
            3
        );
        assert_eq!(
            a.rules
                .failed_logins_account
                .failures
                .record(102, 600, Some(3), 64),
            4
        );
    }

    /// The same snapshot in an older version's layout: no header, no checksums.
    fn as_version(bytes: &[u8], magic: &[u8]) -> Vec<u8> {
        let l = layout(bytes).unwrap();
        let mut out = magic.to_vec();
        for (_, section) in &l.sections {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&postcard::to_stdvec(&RecordRef::End(l.expected)).unwrap());
        out
    }

    #[test]
    fn versions_2_and_3_are_still_read_without_checksums() {
        let dir = tempfile::tempdir().unwrap();
        write(&sample(), dir.path(), 100, None, None).unwrap();
        let path = dir.path().join(FILE_NAME);
        let v4 = fs::read(&path).unwrap();
        assert!(v4.starts_with(MAGIC));
        for (magic, version) in [(MAGIC_3, 3), (MAGIC_2, 2)] {
            fs::write(&path, as_version(&v4, magic)).unwrap();
            let c = read(&State::default(), dir.path(), 100).unwrap().unwrap();
            assert_eq!((c.baselines, c.holds, c.ip_blocks), (100, 1, 1));
            assert_eq!(c.version, version);
            // No header: no audit head to compare the trail with.
            assert_eq!(read_header(dir.path()).unwrap(), None);
        }
    }

    #[test]
    fn the_audit_head_is_kept_in_the_header() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_header(dir.path()).unwrap(), None, "no snapshot yet");
        let head = AuditHead {
            seq: 42,
            chain: [7; 32],
            mac: [9; 32],
        };
        write(&sample(), dir.path(), 1_800_000_000, Some(&head), None).unwrap();
        assert_eq!(
            read_header(dir.path()).unwrap(),
            Some(Header {
                written: 1_800_000_000,
                audit: Some(head),
                journal: None,
            })
        );
        // The rest of the file reads as before.
        let c = read(&State::default(), dir.path(), 100).unwrap().unwrap();
        assert_eq!(c.baselines, 100);
        // A damaged header is refused by its own checksum.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + 4 + 3] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
        let err = read_header(dir.path()).unwrap_err().to_string();
        assert!(err.contains("header") && err.contains("checksum"), "{err}");
    }

    /// A small snapshot with a record of every kind.
    fn small() -> State {
        let s = State::default();
        s.baseline_mut("alice", 10).learn_login(
            20,
            "192.0.2.1".parse().ok(),
            &GeoInfo::default(),
            Some("helo"),
        );
        s.account_mut("held").hold = Some(Hold {
            since: 0,
            until: 1000,
            rule: "failed_logins_account",
            message: "held".into(),
            deny: false,
        });
        s.blocks().put(
            "203.0.113.5/32".parse().unwrap(),
            Hold {
                since: 0,
                until: 2000,
                rule: "password_spraying",
                message: "blocked".into(),
                deny: true,
            },
            Arc::from("password_spraying"),
            None,
            false,
            &crate::state::Sizing::default(),
            0,
        );
        s.account_mut("bob")
            .rules
            .failed_logins_account
            .failures
            .record(90, 600, Some(3), 64);
        s.ip_mut("198.51.100.9".parse().unwrap())
            .rules
            .password_spraying
            .accounts
            .record(91, 600, 5);
        s
    }

    fn is_empty(s: &State) -> bool {
        s.baseline_count() == 0 && s.account_count() == 0 && s.ip_count() == 0
    }

    #[test]
    fn every_single_bit_flip_is_refused_and_nothing_of_the_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let head = AuditHead {
            seq: 3,
            chain: [1; 32],
            mac: [2; 32],
        };
        let counts = write(&small(), dir.path(), 100, Some(&head), None).unwrap();
        assert_eq!((counts.baselines, counts.holds, counts.windows), (1, 1, 2));
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        assert!(read(&State::default(), dir.path(), 100).unwrap().is_some());
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                fs::write(&path, &bad).unwrap();
                let state = State::default();
                let err = match read(&state, dir.path(), 100) {
                    Err(SnapshotError::Corrupt { reason, .. }) => reason,
                    other => panic!("bit {bit} of byte {byte} flipped: read {other:?}"),
                };
                assert!(
                    is_empty(&state),
                    "bit {bit} of byte {byte}: refused ({err}) but state kept"
                );
                // The message names where (a byte offset) or that the file is not one.
                assert!(
                    err.contains("byte") || err.contains("bytes") || err.contains("bad header"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn an_old_snapshot_with_a_bad_record_keeps_nothing_either() {
        // Version 3 has no checksums: the last record damaged, the ones before it fine.
        let dir = tempfile::tempdir().unwrap();
        write(&sample(), dir.path(), 100, None, None).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut v3 = as_version(&fs::read(&path).unwrap(), MAGIC_3);
        // The end: [... last record][0u64][End]; make the last record's last byte a
        // varint that never ends.
        let end_len = postcard::to_stdvec(&RecordRef::End(102)).unwrap().len();
        let last = v3.len() - end_len - 8 - 1;
        v3[last] = 0xff;
        fs::write(&path, &v3).unwrap();
        let state = State::default();
        let err = read(&state, dir.path(), 100).unwrap_err().to_string();
        assert!(err.contains("at byte") && err.contains(FILE_NAME), "{err}");
        assert!(is_empty(&state), "the records before the bad one were kept");
    }

    #[test]
    fn damaged_files_are_refused_with_the_place() {
        let dir = tempfile::tempdir().unwrap();
        write(&sample(), dir.path(), 100, None, None).unwrap();
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
        let aside = set_aside(dir.path(), 1_800_000_000).unwrap();
        assert!(
            aside.ends_with("state.snapshot.bad-20270115T080000Z"),
            "{aside:?}"
        );
        assert_eq!(read(&State::default(), dir.path(), 100).unwrap(), None);
    }
}
