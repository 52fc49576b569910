//! Splitting a byte stream into request lines: at a newline or at the end of input.
//!
//! A partial line is not an error: the reader waits for more bytes. A line longer than
//! [`MAX_LINE_BYTES`] is reported once as [`Frame::TooLong`] and its bytes are dropped up
//! to the next newline, so the connection stays usable. Exim's `${readsocket}` sends its
//! request without a newline and shuts down its write side: that request arrives as
//! [`Frame::LastLine`], after which the caller answers and closes.

use std::io;

use access_wire::MAX_LINE_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt};

/// One unit read from a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line ended by a newline (newline removed); more may follow.
    Line(&'a [u8]),
    /// The last bytes before the end of input, with no newline.
    LastLine(&'a [u8]),
    /// A line over the limit; its bytes are being skipped.
    TooLong,
    /// The peer closed its side and nothing is left.
    Eof,
}

/// Reads [`Frame`]s from an async byte stream with a fixed-size buffer.
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    discarding: bool,
    eof: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Wraps a stream.
    pub fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; MAX_LINE_BYTES * 2 + 2].into_boxed_slice(),
            start: 0,
            end: 0,
            discarding: false,
            eof: false,
        }
    }

    /// Whether a whole line is already buffered, so a reply can wait to be flushed with
    /// the next one (pipelined clients).
    pub fn has_buffered_line(&self) -> bool {
        self.buf[self.start..self.end].contains(&b'\n')
    }

    /// Reads the next frame.
    pub async fn next_frame(&mut self) -> io::Result<Frame<'_>> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line_start = self.start;
                self.start += pos + 1;
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                if pos > MAX_LINE_BYTES {
                    return Ok(Frame::TooLong);
                }
                return Ok(Frame::Line(&self.buf[line_start..line_start + pos]));
            }
            if self.end - self.start > MAX_LINE_BYTES {
                self.start = self.end;
                if !self.discarding {
                    self.discarding = true;
                    return Ok(Frame::TooLong);
                }
            }
            if self.eof {
                if self.start < self.end && !self.discarding {
                    let line = self.start..self.end;
                    self.start = self.end;
                    return Ok(Frame::LastLine(&self.buf[line]));
                }
                return Ok(Frame::Eof);
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.inner.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                self.eof = true;
            } else {
                self.end += n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8]) -> Vec<String> {
        let mut r = LineReader::new(input);
        let mut out = Vec::new();
        loop {
            let f = r.next_frame().await.unwrap();
            out.push(match f {
                Frame::Line(l) => format!("line:{}", String::from_utf8_lossy(l)),
                Frame::LastLine(l) => format!("last:{}", String::from_utf8_lossy(l)),
                Frame::TooLong => "toolong".into(),
                Frame::Eof => break,
            });
        }
        out
    }

    #[tokio::test]
    async fn splits_at_newline_and_eof() {
        assert_eq!(frames(b"ping\nping").await, ["line:ping", "last:ping"]);
        assert_eq!(frames(b"ping\n").await, ["line:ping"]);
        assert_eq!(frames(b"").await, Vec::<String>::new());
        assert_eq!(frames(b"\n\n").await, ["line:", "line:"]);
    }

    #[tokio::test]
    async fn skips_an_oversized_line_and_recovers() {
        let mut input = vec![b'a'; MAX_LINE_BYTES * 3];
        input.extend_from_slice(b"\nping\n");
        assert_eq!(frames(&input).await, ["toolong", "line:ping"]);
        let exact = [vec![b'b'; MAX_LINE_BYTES], b"\n".to_vec()].concat();
        assert_eq!(frames(&exact).await.len(), 1);
        assert!(frames(&exact).await[0].starts_with("line:b"));
        let over = [vec![b'b'; MAX_LINE_BYTES + 1], b"\nping".to_vec()].concat();
        assert_eq!(frames(&over).await, ["toolong", "last:ping"]);
        let unterminated = vec![b'c'; MAX_LINE_BYTES + 5];
        assert_eq!(frames(&unterminated).await, ["toolong"]);
    }
}
