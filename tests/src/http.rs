//! A minimal HTTP/1.1 client over a blocking `TcpStream`, to talk to the oracle's policy
//! endpoint the way Dovecot does (or the way Dovecot must not): one keep-alive
//! connection, `POST` with a JSON body and an optional `X-API-Key`, responses read by
//! `Content-Length`; and `GET` for the metrics endpoint. Every read and write has a 10 s
//! timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The bound on one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A response: status, type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` field, if there was one.
    pub content_type: Option<String>,
    /// The body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.body))
    }
}

/// One keep-alive connection to 127.0.0.1:`port`.
pub struct HttpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl HttpClient {
    /// Connects; panics when nobody listens.
    pub fn connect(port: u16) -> HttpClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let writer = stream.try_clone().expect("clone the stream");
        HttpClient {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// `POST target` with a JSON `body`, `X-API-Key: key` when given.
    pub fn post(&mut self, target: &str, key: Option<&str>, body: &str) -> HttpResponse {
        let mut request = format!(
            "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(key) = key {
            request.push_str(&format!("X-API-Key: {key}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        self.writer
            .write_all(request.as_bytes())
            .and_then(|()| self.writer.flush())
            .expect("write an HTTP request");
        self.response()
    }

    /// `GET target` (the metrics endpoint's `/metrics`).
    pub fn get(&mut self, target: &str) -> HttpResponse {
        let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.writer
            .write_all(request.as_bytes())
            .and_then(|()| self.writer.flush())
            .expect("write an HTTP request");
        self.response()
    }

    fn response(&mut self) -> HttpResponse {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("read the status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
        let mut length = 0;
        let mut content_type = None;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("read a header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a Content-Length");
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-type")
            {
                content_type = Some(value.trim().to_string());
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("read the body");
        HttpResponse {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
