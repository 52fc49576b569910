//! `access-oracle audit search`: the records about an account, an address or a time
//! span, read straight from the segment files.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::Serialize;

use super::crypt::{self, Crypt};
use super::record::{self, Kind, Record};
use super::segment;

/// What to look for; every given criterion must match.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The account (case is ignored) or, for `admin` records, the administrator.
    pub user: Option<String>,
    /// An address or a network.
    pub ip: Option<IpNet>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// Only these kinds (any of them).
    pub kinds: Vec<Kind>,
}

impl Query {
    /// Whether `r` matches.
    pub fn matches(&self, r: &Record) -> bool {
        if let Some(user) = &self.user {
            let named = |v: &Option<compact_str::CompactString>| {
                v.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(user))
            };
            if !named(&r.user) && !named(&r.admin) {
                return false;
            }
        }
        if let Some(net) = &self.ip
            && !r.ip.is_some_and(|ip: IpAddr| net.contains(&ip))
        {
            return false;
        }
        if self.since.is_some_and(|s| r.time < s) || self.until.is_some_and(|u| r.time >= u) {
            return false;
        }
        self.kinds.is_empty() || self.kinds.contains(&r.kind)
    }
}

/// What a search read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Searched {
    /// Segment files read.
    pub files: usize,
    /// Records read.
    pub records: u64,
    /// Records that matched.
    pub matched: u64,
    /// Lines that are not records (run `audit verify`).
    pub unreadable: u64,
    /// Encrypted records not read: no key was given.
    pub encrypted_unread: u64,
}

/// Calls `found` with each matching record, oldest written first. Encrypted records
/// are read with `crypt` (the trail's key); without it they are counted, not read.
pub fn search(
    dir: &Path,
    query: &Query,
    crypt: Option<&Crypt>,
    mut found: impl FnMut(Record),
) -> std::io::Result<Searched> {
    let mut s = Searched::default();
    // A segment holds what was written that day; its events happened then or before
    // (log backfill), so segments written before `since` can be skipped.
    let first_day = query.since.map(segment::day_of);
    for (day, path) in segment::list(dir)? {
        if first_day.is_some_and(|first| day < first) {
            continue;
        }
        s.files += 1;
        let reader = BufReader::new(std::fs::File::open(&path)?);
        for line in reader.split(b'\n') {
            let line = line?;
            match read(&line, crypt) {
                Read::Locked => {
                    s.encrypted_unread += 1;
                    continue;
                }
                Read::Unreadable => {
                    s.unreadable += 1;
                    continue;
                }
                Read::Record(r) if r.kind.is_bookkeeping() => {}
                Read::Record(r) => {
                    s.records += 1;
                    if query.matches(&r) {
                        s.matched += 1;
                        found(*r);
                    }
                }
            }
        }
    }
    Ok(s)
}

enum Read {
    Record(Box<Record>),
    /// Encrypted, and no key.
    Locked,
    Unreadable,
}

/// One line: a plain record is read as it is (its chain is `verify`'s business), an
/// encrypted one is opened with `crypt`.
fn read(line: &[u8], crypt: Option<&Crypt>) -> Read {
    let Ok(text) = std::str::from_utf8(line) else {
        return Read::Unreadable;
    };
    if crypt::is_encrypted(text) {
        return match crypt {
            None => Read::Locked,
            Some(c) => match record::read_line(text, Some(c)) {
                Ok((_, r)) => Read::Record(Box::new(r)),
                Err(_) => Read::Unreadable,
            },
        };
    }
    match serde_json::from_str::<Record>(text) {
        Ok(r) => Read::Record(Box::new(r)),
        Err(_) => Read::Unreadable,
    }
}
