//! Reading whole log files line by line: plain or gzip (`.gz`, or anything starting with
//! the gzip magic bytes), `-` for standard input. Shared by `parse` and `replay`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::prefix::TimeMemo;
use super::{Format, LineContext, ParseStats, Parsed, parse_line_memo};

/// The longest line kept, in bytes; the rest of a longer line is skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Opens a log file for reading, decompressing gzip; returns it with its modification
/// time (the reference for years syslog leaves out).
pub fn open(path: &Path) -> io::Result<(Box<dyn BufRead>, Option<Timestamp>)> {
    let (reader, mtime): (Box<dyn Read>, Option<Timestamp>) = if path == Path::new("-") {
        (Box::new(io::stdin().lock()), None)
    } else {
        let file = File::open(path)?;
        let mtime = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| Timestamp::try_from(t).ok());
        (Box::new(file), mtime)
    };
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let gz = reader.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    Ok(if gz {
        (
            Box::new(BufReader::with_capacity(
                1 << 16,
                MultiGzDecoder::new(reader),
            )),
            mtime,
        )
    } else {
        (Box::new(reader), mtime)
    })
}

/// Reads one line into `buf` (at most [`MAX_LINE_BYTES`] of it kept); returns the bytes
/// consumed including the newline, 0 at the end.
pub fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(consumed);
        }
        let (chunk, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        reader.consume(used);
        consumed += used;
        if done {
            return Ok(consumed);
        }
    }
}

/// Parses every line of a file and hands each result, with its context and bytes, to
/// `f`; returns the counts.
pub fn each_line(
    path: &Path,
    format: Format,
    tz: &TimeZone,
    reference: Option<Timestamp>,
    mut f: impl FnMut(&Parsed, &LineContext, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<ParseStats> {
    let (mut reader, mtime) = open(path)?;
    let reference = reference.or(mtime).unwrap_or_else(Timestamp::now);
    let mut ctx = LineContext::new(&path.display().to_string(), tz.clone(), reference);
    // The lines of this file, in order, in this context: their timestamps repeat.
    let memo = TimeMemo::default();
    let mut stats = ParseStats::default();
    let mut spanning = Vec::with_capacity(1024);
    let mut offset = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        ctx.offset = offset;
        // A line wholly inside the read buffer is parsed in place, without a copy;
        // only lines that straddle two reads (or exceed the buffer) are assembled.
        if let Some(i) = memchr::memchr(b'\n', buf) {
            let line = &buf[..=i];
            let parsed = parse_line_memo(format, line, &ctx, &memo);
            stats.record(&parsed);
            f(&parsed, &ctx, line)?;
            offset += line.len() as u64;
            reader.consume(i + 1);
            continue;
        }
        spanning.clear();
        let n = read_line(&mut reader, &mut spanning)?;
        offset += n as u64;
        let parsed = parse_line_memo(format, &spanning, &ctx, &memo);
        stats.record(&parsed);
        f(&parsed, &ctx, &spanning)?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_offsets_count_every_byte() {
        let mut data = vec![b'x'; MAX_LINE_BYTES + 10];
        data.extend_from_slice(b"\nshort\nlast");
        let mut reader = &data[..];
        let mut buf = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut buf).unwrap(),
            MAX_LINE_BYTES + 11
        );
        assert_eq!(buf.len(), MAX_LINE_BYTES);
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), 6);
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), 4);
        buf.clear();
        assert_eq!(read_line(&mut reader, &mut buf).unwrap(), 0);
    }
}
