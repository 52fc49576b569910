//! Segment files: one per UTC day of writing, `audit-YYYY-MM-DD.jsonl`, in one directory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

/// The file, next to the segments, that names the last record written and flushed.
pub const HEAD_FILE: &str = "head.json";

/// The longest record line read back when resuming, in bytes.
pub const MAX_LINE_BYTES: u64 = 1 << 20;

/// The UTC day of `t`.
pub fn day_of(t: Timestamp) -> Date {
    t.to_zoned(TimeZone::UTC).date()
}

/// The segment file name for `day`.
pub fn name(day: Date) -> String {
    format!("{PREFIX}{day}{SUFFIX}")
}

/// The day of a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<Date> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The segments in `dir`, oldest first, with their paths. A directory that does not
/// exist has none.
pub fn list(dir: &Path) -> std::io::Result<Vec<(Date, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(day) = entry.file_name().to_str().and_then(parse_name) {
            segments.push((day, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The end of a file: its last complete line (without the newline) and how many bytes
/// follow it without a newline (a line cut off by a crash).
pub struct Tail {
    /// The last line that ends with a newline, if any.
    pub last_line: Option<String>,
    /// Bytes after it.
    pub cut_bytes: u64,
    /// The file's length.
    pub len: u64,
}

/// Reads the end of `path`.
pub fn tail(path: &Path) -> std::io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(MAX_LINE_BYTES * 2);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut buf)?;
    let too_long = || {
        std::io::Error::other(format!(
            "{} ends with a line over {MAX_LINE_BYTES} bytes",
            path.display()
        ))
    };
    // Where the bytes after the last newline start.
    let cut_at = memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
    let last_line = if cut_at == 0 {
        if start > 0 {
            return Err(too_long());
        }
        None
    } else {
        let complete = &buf[..cut_at - 1];
        let from = memchr::memrchr(b'\n', complete).map_or(0, |i| i + 1);
        if from == 0 && start > 0 {
            return Err(too_long());
        }
        Some(String::from_utf8_lossy(&complete[from..]).into_owned())
    };
    let cut = (buf.len() - cut_at) as u64;
    Ok(Tail {
        last_line,
        cut_bytes: cut,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        let day: Date = "2026-11-28".parse().unwrap();
        assert_eq!(name(day), "audit-2026-11-28.jsonl");
        assert_eq!(parse_name(&name(day)), Some(day));
        assert_eq!(parse_name("audit-2026-13-01.jsonl"), None);
        assert_eq!(parse_name("audit.key"), None);
        let dir = tempfile::tempdir().unwrap();
        for n in [
            "audit-2026-11-28.jsonl",
            "audit-2025-01-02.jsonl",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let days: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|(d, _)| d.to_string())
            .collect();
        assert_eq!(days, ["2025-01-02", "2026-11-28"]);
        assert!(list(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn the_tail_finds_the_last_line_and_a_cut_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "one\ntwo\n").unwrap();
        let t = tail(&p).unwrap();
        assert_eq!(t.last_line.as_deref(), Some("two"));
        assert_eq!(t.cut_bytes, 0);
        std::fs::write(&p, "one\ntwo\nthr").unwrap();
        let t = tail(&p).unwrap();
        assert_eq!(t.last_line.as_deref(), Some("two"));
        assert_eq!((t.cut_bytes, t.len), (3, 11));
        std::fs::write(&p, "only a cut line").unwrap();
        let t = tail(&p).unwrap();
        assert_eq!(t.last_line, None);
        assert_eq!(t.cut_bytes, 15);
        std::fs::write(&p, "").unwrap();
        let t = tail(&p).unwrap();
        assert_eq!((t.last_line, t.cut_bytes), (None, 0));
    }
}
