//! Line prefixes shared by the log formats: timestamps, syslog host and program, pids.
//!
//! One line may carry several layers, outermost first, each optional:
//!
//! ```text
//! @4000000069293a1d1c9c3834                         daemontools / multilog TAI64N label
//! Nov 28 03:21:17 host exim[5642]:                  BSD syslog (host, program, [pid])
//! 2026-11-28T03:21:17.123456+00:00 host dovecot[1]: RFC 3339 syslog (rsyslog high precision)
//! 2026-11-28 03:21:17 +0100 [5642]                  Exim's own (log_timezone, +pid)
//! Nov 28 03:21:17 imap-login: Info: ...             Dovecot log_path, default log_timestamp
//! 2026-11-28 03:21:17 imap-login: Info: ...         Dovecot log_timestamp = "%Y-%m-%d %H:%M:%S "
//! ```
//!
//! Exim logging through syslog keeps its own timestamp in the message by default
//! (`syslog_timestamp`), so a syslog prefix may be followed by an Exim one; the most
//! precise time wins (an explicit offset, then an absolute TAI64N instant, then a full
//! local date, then a syslog month and day).
//!
//! Times are read into a [`Stamp`] with plain byte arithmetic and only turned into a
//! [`Timestamp`] by [`Stamp::resolve`] when a line yields an event: a time zone lookup
//! per irrelevant line would cost more than the rest of its parsing. Nothing here reads
//! the clock: the year syslog leaves out comes from [`LineContext::reference`].
//!
//! Consecutive lines of a log mostly share their second (a busy Exim writes a dozen
//! lines in one). A reader of a whole file keeps a [`TimeMemo`] beside its
//! [`LineContext`] and strips with [`strip_memo`]: a line whose timestamp is the previous
//! line's reuses the date and time read and the instant worked out for it.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp};

use std::cell::Cell;

use super::LineContext;

/// A line with its prefixes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix<'a> {
    /// When the line was written, as far as the prefixes say.
    pub stamp: Stamp,
    /// The syslog host name.
    pub host: Option<&'a [u8]>,
    /// The syslog program (`exim`, `exim4`, `dovecot`), without `[pid]` and `:`.
    pub program: Option<&'a [u8]>,
    /// The process id from syslog's `program[pid]` or Exim's `+pid` selector.
    pub pid: Option<u32>,
    /// The memo of the reader of these lines, if it keeps one.
    pub memo: Option<&'a TimeMemo>,
    /// The message after every prefix.
    pub rest: &'a [u8],
}

/// The last timestamp a reader read and the instant it resolved to, for the next line.
///
/// For the lines of one [`LineContext`] only, in the order they are read: the instant
/// remembered was worked out in that context's time zone (the reference time is checked).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TimeMemo {
    /// `YYYY-MM-DD HH:MM:SS` as written (followed by a space, no fraction, no offset)
    /// and the date and time read from it.
    written: Cell<Option<([u8; 19], DateTime)>>,
    /// The last stamp resolved, with the reference time it was resolved with, and its
    /// instant.
    resolved: Cell<Option<(Stamp, Timestamp, Timestamp)>>,
}

impl TimeMemo {
    /// `iso(line)`, from the memo when the line starts with the timestamp read last; the
    /// memo keeps only the plain form (`YYYY-MM-DD HH:MM:SS ` and no ` +hhmm`).
    fn iso<'l>(&self, line: &'l [u8]) -> Option<(Stamp, &'l [u8], bool)> {
        let plain = line.get(19) == Some(&b' ') && !matches!(line.get(20), Some(b'+' | b'-'));
        if let Some((written, datetime)) = self.written.get() {
            if plain && line[..19] == written {
                let stamp = Stamp::Civil {
                    datetime,
                    offset: None,
                };
                return Some((stamp, &line[20..], false));
            }
        }
        let read = iso(line)?;
        if let (
            true,
            (
                Stamp::Civil {
                    datetime,
                    offset: None,
                },
                _,
                false,
            ),
        ) = (plain, read)
        {
            let mut written = [0; 19];
            written.copy_from_slice(&line[..19]);
            self.written.set(Some((written, datetime)));
        }
        Some(read)
    }
}

/// A timestamp as written, not yet placed in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// No timestamp.
    None,
    /// A date and time; local time of the log's zone unless an offset is given.
    Civil {
        /// The date and time as written.
        datetime: DateTime,
        /// The UTC offset written with it (Exim `log_timezone`, RFC 3339).
        offset: Option<Offset>,
    },
    /// A month, day and time without a year (BSD syslog, Dovecot's default).
    NoYear {
        /// Month, 1 to 12.
        month: i8,
        /// Day of the month.
        day: i8,
        /// The time of day.
        time: Time,
    },
    /// An absolute instant (TAI64N).
    Instant(Timestamp),
}

impl Stamp {
    /// How much a stamp says: more precise stamps win over less precise ones.
    fn rank(&self) -> u8 {
        match self {
            Stamp::None => 0,
            Stamp::NoYear { .. } => 1,
            Stamp::Civil { offset: None, .. } => 2,
            Stamp::Instant(_) => 3,
            Stamp::Civil {
                offset: Some(_), ..
            } => 4,
        }
    }

    /// [`Stamp::resolve`], remembered in `memo` from one line to the next.
    pub fn resolve_memo(&self, ctx: &LineContext, memo: &TimeMemo) -> Option<Timestamp> {
        if let Some((stamp, reference, instant)) = memo.resolved.get() {
            if stamp == *self && reference == ctx.reference {
                return Some(instant);
            }
        }
        let instant = self.resolve(ctx)?;
        memo.resolved.set(Some((*self, ctx.reference, instant)));
        Some(instant)
    }

    /// The instant, using the context's time zone for local times and its reference time
    /// for a missing year (the latest year that does not put the line more than a day
    /// after the reference).
    pub fn resolve(&self, ctx: &LineContext) -> Option<Timestamp> {
        match *self {
            Stamp::None => None,
            Stamp::Instant(t) => Some(t),
            Stamp::Civil {
                datetime,
                offset: Some(offset),
            } => offset.to_timestamp(datetime).ok(),
            Stamp::Civil {
                datetime,
                offset: None,
            } => ctx.tz.to_timestamp(datetime).ok(),
            Stamp::NoYear { month, day, time } => {
                let year = ctx.reference.to_zoned(ctx.tz.clone()).year();
                let limit = ctx
                    .reference
                    .checked_add(SignedDuration::from_hours(24))
                    .ok()?;
                let mut last = None;
                for y in [year, year - 1] {
                    let Ok(date) = Date::new(y, month, day) else {
                        continue; // Feb 29 in a common year
                    };
                    let Ok(t) = ctx.tz.to_timestamp(date.to_datetime(time)) else {
                        continue;
                    };
                    if t <= limit {
                        return Some(t);
                    }
                    last = Some(t);
                }
                last
            }
        }
    }
}

impl Prefix<'_> {
    /// The instant the line was written ([`Stamp::resolve`], through the memo if any).
    pub fn time(&self, ctx: &LineContext) -> Option<Timestamp> {
        match self.memo {
            Some(memo) => self.stamp.resolve_memo(ctx, memo),
            None => self.stamp.resolve(ctx),
        }
    }
}

/// Reads every prefix of `line`.
pub fn strip(line: &[u8]) -> Prefix<'_> {
    strip_with(line, None)
}

/// [`strip`] for the lines of a file read in order, with its reader's memo.
pub fn strip_memo<'a>(line: &'a [u8], memo: &'a TimeMemo) -> Prefix<'a> {
    strip_with(line, Some(memo))
}

fn strip_with<'a>(line: &'a [u8], memo: Option<&'a TimeMemo>) -> Prefix<'a> {
    let mut p = Prefix {
        stamp: Stamp::None,
        host: None,
        program: None,
        pid: None,
        memo,
        rest: line,
    };
    if let Some((instant, rest)) = tai64n(p.rest) {
        p.stamp = Stamp::Instant(instant);
        p.rest = rest;
    }
    // The outer timestamp and what may follow it.
    let outer = match memo {
        Some(memo) => memo.iso(p.rest),
        None => iso(p.rest),
    };
    if let Some((stamp, rest, rfc3339)) = outer {
        p.stamp = better(p.stamp, stamp);
        p.rest = rest;
        syslog_origin(&mut p, rfc3339);
    } else if let Some((stamp, rest)) = bsd(p.rest) {
        p.stamp = better(p.stamp, stamp);
        p.rest = rest;
        syslog_origin(&mut p, true);
    }
    // Exim through syslog keeps its own timestamp (syslog_timestamp), and +pid.
    if p.program.is_some() {
        if let Some((stamp, rest, false)) = iso(p.rest) {
            p.stamp = better(p.stamp, stamp);
            p.rest = rest;
        }
    }
    if let Some((pid, rest)) = bracket_pid(p.rest) {
        p.pid = Some(pid);
        p.rest = rest;
    }
    p
}

/// Of two stamps for one line, the more precise (the inner one on a tie).
fn better(outer: Stamp, inner: Stamp) -> Stamp {
    if inner.rank() >= outer.rank() {
        inner
    } else {
        outer
    }
}

/// `@` + 24 hex digits + space: a TAI64N label.
fn tai64n(line: &[u8]) -> Option<(Timestamp, &[u8])> {
    let label = line.strip_prefix(b"@")?.get(..24)?;
    if line.get(25) != Some(&b' ') {
        return None;
    }
    let secs = hex(&label[..16])?;
    let nanos = hex(&label[16..])?;
    // daemontools: label = 2^62 + 10 + Unix seconds (TAI was UTC + 10 s in 1970; later
    // leap seconds are ignored, as tai64nlocal does).
    let unix = i64::try_from(secs.checked_sub((1u64 << 62) + 10)?).ok()?;
    let t = Timestamp::new(unix, i32::try_from(nanos).ok()?).ok()?;
    Some((t, &line[26..]))
}

fn hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

/// `YYYY-MM-DD HH:MM:SS[.frac][ +hhmm] ` (Exim, Dovecot) or
/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm) ` (RFC 3339 syslog; the bool is true).
fn iso(line: &[u8]) -> Option<(Stamp, &[u8], bool)> {
    if line.len() < 20 || !line[0].is_ascii_digit() {
        return None;
    }
    let year = digits(line, 0, 4)?;
    if line[4] != b'-' || line[7] != b'-' || line[13] != b':' || line[16] != b':' {
        return None;
    }
    let month = digits(line, 5, 2)?;
    let day = digits(line, 8, 2)?;
    let rfc3339 = match line[10] {
        b' ' => false,
        b'T' => true,
        _ => return None,
    };
    let (hour, minute, second) = (
        digits(line, 11, 2)?,
        digits(line, 14, 2)?,
        digits(line, 17, 2)?,
    );
    let mut i = 19;
    let nanos = fraction(line, &mut i);
    let datetime = DateTime::new(
        i16::try_from(year).ok()?,
        month as i8,
        day as i8,
        hour as i8,
        minute as i8,
        second as i8,
        nanos,
    )
    .ok()?;
    let mut offset = None;
    if rfc3339 {
        match line.get(i) {
            Some(b'Z' | b'z') => {
                offset = Some(Offset::UTC);
                i += 1;
            }
            Some(&sign @ (b'+' | b'-')) if line.get(i + 3) == Some(&b':') => {
                let secs = digits(line, i + 1, 2)? * 3600 + digits(line, i + 4, 2)? * 60;
                offset = Some(signed_offset(sign, secs)?);
                i += 6;
            }
            _ => {}
        }
    } else if let (Some(b' '), Some(&sign @ (b'+' | b'-'))) = (line.get(i), line.get(i + 1)) {
        // Exim log_timezone: " +0100"
        if line.get(i + 6) == Some(&b' ') {
            if let (Some(h), Some(m)) = (digits(line, i + 2, 2), digits(line, i + 4, 2)) {
                offset = Some(signed_offset(sign, h * 3600 + m * 60)?);
                i += 6;
            }
        }
    }
    if line.get(i) != Some(&b' ') {
        return None;
    }
    Some((Stamp::Civil { datetime, offset }, &line[i + 1..], rfc3339))
}

fn signed_offset(sign: u8, secs: u32) -> Option<Offset> {
    let secs = i32::try_from(secs).ok()?;
    Offset::from_seconds(if sign == b'-' { -secs } else { secs }).ok()
}

/// `.ddd...` at `*i`: nanoseconds, advancing `*i`.
fn fraction(line: &[u8], i: &mut usize) -> i32 {
    if line.get(*i) != Some(&b'.') {
        return 0;
    }
    let start = *i + 1;
    let mut end = start;
    while end < line.len() && line[end].is_ascii_digit() {
        end += 1;
    }
    if end == start {
        return 0;
    }
    *i = end;
    let mut nanos: i32 = 0;
    for k in 0..9 {
        let d = line
            .get(start + k)
            .filter(|_| start + k < end)
            .map_or(0, |b| b - b'0');
        nanos = nanos * 10 + i32::from(d);
    }
    nanos
}

/// `Mmm dd HH:MM:SS[.frac] ` (the day may be space-padded).
fn bsd(line: &[u8]) -> Option<(Stamp, &[u8])> {
    if line.len() < 16 || line[3] != b' ' {
        return None;
    }
    let month = month(&line[..3])?;
    let day = match (line[4], line[5]) {
        (b' ', d) if d.is_ascii_digit() => d - b'0',
        (a, b) if a.is_ascii_digit() && b.is_ascii_digit() => (a - b'0') * 10 + (b - b'0'),
        _ => return None,
    };
    if line[6] != b' ' || line[9] != b':' || line[12] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        digits(line, 7, 2)?,
        digits(line, 10, 2)?,
        digits(line, 13, 2)?,
    );
    let mut i = 15;
    let nanos = fraction(line, &mut i);
    if line.get(i) != Some(&b' ') {
        return None;
    }
    let time = Time::new(hour as i8, minute as i8, second as i8, nanos).ok()?;
    if !(1..=31).contains(&day) {
        return None;
    }
    Some((
        Stamp::NoYear {
            month,
            day: day as i8,
            time,
        },
        &line[i + 1..],
    ))
}

fn month(name: &[u8]) -> Option<i8> {
    const NAMES: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    NAMES
        .iter()
        .position(|n| n[..] == *name)
        .map(|i| i as i8 + 1)
}

/// `n` ASCII digits at `at`, as a number.
fn digits(line: &[u8], at: usize, n: usize) -> Option<u32> {
    line.get(at..at + n)?.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// After a timestamp: a syslog `host program[pid]: ` (or a bare `program[pid]: `).
///
/// `syslog` says the timestamp was a syslog one, which always has a host; after an Exim
/// or Dovecot timestamp only a known program (`exim`, `exim4`, `dovecot`) or a
/// `name[pid]:` is taken, so that `imap-login: Info:` stays part of the message.
fn syslog_origin<'a>(p: &mut Prefix<'a>, syslog: bool) {
    let rest = p.rest;
    let Some(sp) = memchr::memchr(b' ', rest) else {
        return;
    };
    let first = &rest[..sp];
    if first.ends_with(b":") {
        if let Some((program, pid)) = program(first, false) {
            p.program = Some(program);
            p.pid = pid;
            p.rest = &rest[sp + 1..];
        }
        return;
    }
    let after = &rest[sp + 1..];
    let sp2 = memchr::memchr(b' ', after).unwrap_or(after.len());
    let second = &after[..sp2];
    if let Some((program, pid)) = program(second, syslog) {
        p.host = Some(first);
        p.program = Some(program);
        p.pid = pid;
        p.rest = after.get(sp2 + 1..).unwrap_or_default();
    }
}

/// `name[pid]:` or `name:` as a syslog program; any name when `any`, else only known ones
/// or ones with a pid.
fn program(token: &[u8], any: bool) -> Option<(&[u8], Option<u32>)> {
    let token = token.strip_suffix(b":")?;
    if token.is_empty() {
        return None;
    }
    if let Some(open) = token.iter().position(|&b| b == b'[') {
        let pid = super::number(token[open + 1..].strip_suffix(b"]")?)?;
        return Some((&token[..open], Some(pid)));
    }
    let known = matches!(token, b"exim" | b"exim4" | b"dovecot");
    (any || known).then_some((token, None))
}

/// `[pid] ` (Exim's +pid log selector).
fn bracket_pid(rest: &[u8]) -> Option<(u32, &[u8])> {
    let inner = rest.strip_prefix(b"[")?;
    let close = inner.iter().take(11).position(|&b| b == b']')?;
    let pid = super::number(&inner[..close])?;
    let after = inner[close + 1..].strip_prefix(b" ")?;
    Some((pid, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tests::ctx;

    fn time(line: &str) -> (String, Prefix<'_>) {
        let p = strip(line.as_bytes());
        let t = p.stamp.resolve(&ctx()).map(|t| t.to_string());
        (t.unwrap_or_default(), p)
    }

    #[test]
    fn exim_own_prefix() {
        let (t, p) = time("2026-11-28 03:21:17 1xXAPn-0007UM-2H Completed");
        assert_eq!(t, "2026-11-28T03:21:17Z");
        assert_eq!(p.rest, b"1xXAPn-0007UM-2H Completed");
        assert_eq!(p.pid, None);

        let (t, p) = time("2026-11-28 03:21:17 +0100 [5642] 1xXAPn-0007UM-2H Completed");
        assert_eq!(t, "2026-11-28T02:21:17Z");
        assert_eq!(p.pid, Some(5642));
        assert_eq!(p.rest, b"1xXAPn-0007UM-2H Completed");

        let (t, _) = time("2026-11-28 03:21:17.250 -0500 x");
        assert_eq!(t, "2026-11-28T08:21:17.25Z");
    }

    #[test]
    fn bsd_syslog() {
        let (t, p) =
            time("Nov 28 03:21:17 mx1 exim[5642]: 2026-11-28 03:21:17 1xXAPn-0007UM-2H Completed");
        assert_eq!(t, "2026-11-28T03:21:17Z");
        assert_eq!(p.host, Some(&b"mx1"[..]));
        assert_eq!(p.program, Some(&b"exim"[..]));
        assert_eq!(p.pid, Some(5642));
        assert_eq!(p.rest, b"1xXAPn-0007UM-2H Completed");

        let (t, p) = time("Nov  8 03:21:17 mx1 dovecot: imap-login: Login: user=<a>");
        assert_eq!(t, "2026-11-08T03:21:17Z");
        assert_eq!(p.program, Some(&b"dovecot"[..]));
        assert_eq!(p.pid, None);
        assert_eq!(p.rest, b"imap-login: Login: user=<a>");
    }

    #[test]
    fn syslog_year_is_the_reference_year_unless_that_is_the_future() {
        // Reference 2026-12-01: a December 24 line is from 2025.
        let (t, _) = time("Dec 24 10:00:00 mx1 dovecot: x");
        assert_eq!(t, "2025-12-24T10:00:00Z");
        let (t, _) = time("Dec  1 10:00:00 mx1 dovecot: x");
        assert_eq!(t, "2026-12-01T10:00:00Z");
    }

    #[test]
    fn rfc3339_syslog() {
        let (t, p) = time("2026-11-28T03:21:17.123456+01:00 mx1 dovecot[1]: auth: Info: x");
        assert_eq!(t, "2026-11-28T02:21:17.123456Z");
        assert_eq!(p.host, Some(&b"mx1"[..]));
        assert_eq!(p.program, Some(&b"dovecot"[..]));
        assert_eq!(p.pid, Some(1));
        assert_eq!(p.rest, b"auth: Info: x");
    }

    #[test]
    fn dovecot_log_path_keeps_the_process() {
        let (t, p) = time("Nov 28 04:50:50 imap-login: Info: Login: user=<alice>");
        assert_eq!(t, "2026-11-28T04:50:50Z");
        assert_eq!(p.program, None);
        assert_eq!(p.rest, b"imap-login: Info: Login: user=<alice>");
        let (_, p) = time("2026-11-28 04:50:50 imap(alice)<1><s>: Info: x");
        assert_eq!(p.rest, b"imap(alice)<1><s>: Info: x");
    }

    #[test]
    fn tai64n_label() {
        // 0x4000000069293a1d = 2^62 + 1764309533; minus 10 s.
        let (t, p) = time("@4000000069293a1d00000000 imap-login: Info: x");
        assert_eq!(t, "2025-11-28T05:58:43Z");
        assert_eq!(p.rest, b"imap-login: Info: x");
        // A label followed by a full timestamp: the explicit one wins when it has an offset.
        let (t, _) = time("@4000000069293a1d00000000 2026-11-28 03:21:17 +0000 x");
        assert_eq!(t, "2026-11-28T03:21:17Z");
    }

    #[test]
    fn the_memo_changes_no_result() {
        let lines = [
            "2026-11-28 03:21:17 1xXAPn-0007UM-2H Completed",
            "2026-11-28 03:21:17 [12] x",
            "2026-11-28 03:21:17 +0100 x",
            "2026-11-28 03:21:17 x",
            "2026-11-28 03:21:17.5 x",
            "2026-11-28T03:21:17Z mx1 dovecot: x",
            "2026-11-28 03:21:17 -0500 [1] x",
            "2026-11-28 03:21:18 x",
            "Nov 28 03:21:17 mx1 exim[1]: 2026-11-28 03:21:18 x",
            "Dec 24 10:00:00 mx1 dovecot: x",
            "Dec 24 10:00:00 mx1 dovecot: y",
            "2026-11-28 03:21:17",
            "2026-11-28 03:21:17 ",
            "2026-11-28 03:21:17 +",
            "2026-11-28 03:21:1x x",
        ];
        let memo = TimeMemo::default();
        let c = ctx();
        for _ in 0..2 {
            for line in lines {
                let (with, without) = (strip_memo(line.as_bytes(), &memo), strip(line.as_bytes()));
                assert_eq!(
                    (with.stamp, with.host, with.program, with.pid, with.rest),
                    (
                        without.stamp,
                        without.host,
                        without.program,
                        without.pid,
                        without.rest
                    ),
                    "{line}"
                );
                assert_eq!(with.time(&c), without.time(&c), "{line}");
            }
        }
        // Another reference time: a syslog date is placed in its year again.
        let mut later = ctx();
        later.reference = "2027-12-31T00:00:00Z".parse().unwrap();
        let line = b"Dec 24 10:00:00 mx1 dovecot: x";
        assert_eq!(strip_memo(line, &memo).time(&c), strip(line).time(&c));
        let t = strip_memo(line, &memo).time(&later).unwrap();
        assert_eq!(t.to_string(), "2027-12-24T10:00:00Z");
    }

    #[test]
    fn garbage_is_left_alone() {
        for line in [
            "",
            "x",
            "2026-13-45 99:99:99 x",
            "Foo 28 03:21:17 x",
            "@zz",
            "[12 x",
        ] {
            let p = strip(line.as_bytes());
            assert_eq!(p.stamp, Stamp::None, "{line}");
            assert_eq!(p.rest, line.as_bytes());
        }
    }
}
