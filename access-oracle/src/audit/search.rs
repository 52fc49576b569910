//! `access-oracle audit search`: the records about an account, an address or a time
//! span, read straight from the segment files.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::Serialize;

use super::record::{Kind, Record};
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
}

/// Calls `found` with each matching record, oldest written first.
pub fn search(
    dir: &Path,
    query: &Query,
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
            match serde_json::from_slice::<Record>(&line) {
                Ok(r) if r.kind.is_bookkeeping() => {}
                Ok(r) => {
                    s.records += 1;
                    if query.matches(&r) {
                        s.matched += 1;
                        found(r);
                    }
                }
                Err(_) => s.unreadable += 1,
            }
        }
    }
    Ok(s)
}
