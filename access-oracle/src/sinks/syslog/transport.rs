//! How a syslog sink's messages travel: one datagram each over UDP (RFC 5426), or one
//! persistent TCP connection with octet counting (RFC 6587 §3.4.1: `LEN SP MSG`), plain
//! or inside TLS (RFC 5425, rustls on the ring provider).
//!
//! A [`Link`] holds the connection. Connecting (resolving the name, the TCP handshake,
//! the TLS handshake) and each write have the sink's timeout; any failure drops the
//! connection (a frame cut off half-way cannot be resumed) and the next connection is
//! tried no sooner than a backoff that doubles from 1 s to 60 s and starts again after
//! a message gets through. Before each write the connection is looked at without
//! waiting: a receiver that closed it (restarted, say) gets a new one at once, instead
//! of the next message going into a socket that only the write after it finds dead.
//!
//! A TCP peer that accepts and never reads takes messages until its receive window and
//! this side's send buffer are full; then a write waits, times out, and the message is
//! not delivered. The send buffer is kept at [`SEND_BUFFER`], so a silent peer swallows
//! at most about that much before the sink notices (the kernel would otherwise let it
//! grow to megabytes).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One datagram per message (RFC 5426), cut to [`MAX_DATAGRAM`] bytes.
    Udp,
    /// A TCP connection, octet-counted frames (RFC 6587).
    Tcp,
    /// TLS over TCP, octet-counted frames (RFC 5425).
    Tls,
}

impl Transport {
    /// The name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The longest datagram sent: what RFC 5426 says every receiver should accept; a longer
/// message is cut (and counted).
pub const MAX_DATAGRAM: usize = 2048;

/// The send buffer asked of the kernel for a TCP or TLS connection (it doubles it for
/// its own bookkeeping).
pub const SEND_BUFFER: u32 = 64 * 1024;

/// The first pause before connecting again after a failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest pause before connecting again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port` (`[v6]:port`), resolved at each connection.
    pub address: String,
    /// The transport.
    pub transport: Transport,
    /// For TLS: the client and the name the server's certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Display for Endpoint {
    /// `tls://logs.example.org:6514`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.transport.as_str(), self.address)
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The host part of `host:port` or `[v6]:port`, and the port; `None` when `address` is
/// neither.
pub fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    if host.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    (port != 0).then_some((host, port))
}

/// The TLS client: the CAs it trusts (`ca_file`, else the system's) and the certificate
/// it presents, if any.
pub fn client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = read_certs(path).map_err(|e| format!("ca_file {e}"))?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    format!(
                        "ca_file {}: a certificate rustls cannot use: {e}",
                        path.display()
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no system CA certificates could be read{why}; name the receiver's CA with ca_file"
                ));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let certs = read_certs(cert_file).map_err(|e| format!("cert_file {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                format!("key_file {}: no private key read: {e}", key_file.display())
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "cert_file {} with key_file {}: not a usable client certificate and key: {e}",
                    cert_file.display(),
                    key_file.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// The certificates of a PEM file, at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Why a message did not go.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The name did not resolve, or no address took the connection.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (an unknown CA, a wrong name, a refused certificate).
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    /// Connecting took longer than the timeout.
    #[error("no connection within {0} ms")]
    ConnectTimeout(u128),
    /// The write failed (the peer reset the connection, ...).
    #[error("write failed: {0}")]
    Write(io::Error),
    /// The write did not finish within the timeout (the peer does not read).
    #[error("write not finished within {0} ms")]
    WriteTimeout(u128),
}

/// An open connection (a connected socket for UDP).
enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// Whether the peer has closed the connection (or reset it), seen without waiting.
    fn closed_by_peer(&mut self) -> bool {
        match self {
            Conn::Udp(_) => false,
            Conn::Tcp(s) => peer_closed(s),
            Conn::Tls(s) => peer_closed(&mut **s),
        }
    }

    /// Sends one frame, whole.
    async fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            Conn::Udp(s) => {
                let sent = s.send(frame).await?;
                if sent != frame.len() {
                    return Err(io::Error::other(format!(
                        "{sent} of {} bytes sent",
                        frame.len()
                    )));
                }
                Ok(())
            }
            Conn::Tcp(s) => {
                s.write_all(frame).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(frame).await?;
                s.flush().await
            }
        }
    }
}

/// Reads what is there without waiting: `true` at end of stream or an error. Anything
/// the receiver sent (syslog receivers send nothing; TLS session tickets are taken in
/// by the TLS layer) is read and set aside.
fn peer_closed<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = [0u8; 512];
    for _ in 0..64 {
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut *stream).poll_read(&mut cx, &mut read) {
            Poll::Pending => return false,
            Poll::Ready(Ok(())) if read.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => continue,
            Poll::Ready(Err(_)) => return true,
        }
    }
    false
}

/// The sink's way to its receiver: a connection kept open, made again when needed.
pub struct Link {
    endpoint: Endpoint,
    timeout: Duration,
    conn: Option<Conn>,
    backoff: Duration,
    first_backoff: Duration,
    /// No connection is tried before this (after a failure).
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("endpoint", &self.endpoint)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Link {
    /// A link to `endpoint`, not connected yet; `timeout` bounds each connection and
    /// each write.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Link {
        Link::with_backoff(endpoint, timeout, FIRST_BACKOFF)
    }

    /// As [`Link::new`], the backoff starting at `first` (tests).
    pub fn with_backoff(endpoint: Endpoint, timeout: Duration, first: Duration) -> Link {
        Link {
            endpoint,
            timeout,
            conn: None,
            backoff: first,
            first_backoff: first,
            retry_at: None,
        }
    }

    /// Where it leads.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.endpoint.transport
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether the open connection shows that the receiver closed it.
    #[cfg(test)]
    pub fn peer_closed_now(&mut self) -> bool {
        self.conn.as_mut().is_some_and(Conn::closed_by_peer)
    }

    /// Sends one message: a datagram, or an octet-counted frame written and flushed to
    /// the connection (connecting first if needed, after the backoff of an earlier
    /// failure). On failure the connection is dropped and the backoff grows.
    pub async fn send(&mut self, message: &[u8]) -> Result<(), SendError> {
        if self.conn.as_mut().is_some_and(Conn::closed_by_peer) {
            self.conn = None;
        }
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                if let Some(at) = self.retry_at {
                    tokio::time::sleep_until(at).await;
                }
                match tokio::time::timeout(self.timeout, self.connect()).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(self.failed(e)),
                    Err(_) => return Err(self.failed(SendError::ConnectTimeout(self.ms()))),
                }
            }
        };
        let conn = self.conn.insert(conn);
        let result = match self.endpoint.transport {
            Transport::Udp => tokio::time::timeout(self.timeout, conn.send(message)).await,
            Transport::Tcp | Transport::Tls => {
                let mut frame = Vec::with_capacity(message.len() + 8);
                frame.extend_from_slice(message.len().to_string().as_bytes());
                frame.push(b' ');
                frame.extend_from_slice(message);
                tokio::time::timeout(self.timeout, conn.send(&frame)).await
            }
        };
        match result {
            Ok(Ok(())) => {
                self.backoff = self.first_backoff;
                self.retry_at = None;
                Ok(())
            }
            Ok(Err(e)) => Err(self.failed(SendError::Write(e))),
            Err(_) => Err(self.failed(SendError::WriteTimeout(self.ms()))),
        }
    }

    fn ms(&self) -> u128 {
        self.timeout.as_millis()
    }

    /// Drops the connection and sets when the next may be tried.
    fn failed(&mut self, e: SendError) -> SendError {
        self.conn = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        e
    }

    /// Resolves the address and connects to the first of its addresses that answers.
    async fn connect(&self) -> Result<Conn, SendError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(self.endpoint.address.as_str())
            .await
            .map_err(SendError::Connect)?
            .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", self.endpoint.address),
        );
        for addr in addrs {
            match self.connect_to(addr).await {
                Ok(conn) => return Ok(conn),
                Err(SendError::Connect(e)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(SendError::Connect(last))
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<Conn, SendError> {
        if self.endpoint.transport == Transport::Udp {
            let any: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any).await.map_err(SendError::Connect)?;
            socket.connect(addr).await.map_err(SendError::Connect)?;
            return Ok(Conn::Udp(socket));
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(SendError::Connect)?;
        socket
            .set_send_buffer_size(SEND_BUFFER)
            .map_err(SendError::Connect)?;
        socket.set_keepalive(true).map_err(SendError::Connect)?;
        let stream = socket.connect(addr).await.map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        match &self.endpoint.tls {
            None => Ok(Conn::Tcp(stream)),
            Some((connector, name)) => connector
                .connect(name.clone(), stream)
                .await
                .map(|s| Conn::Tls(Box::new(s)))
                .map_err(SendError::Handshake),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(
            split_address("syslog.example.org:6514"),
            Some(("syslog.example.org", 6514))
        );
        assert_eq!(split_address("127.0.0.1:514"), Some(("127.0.0.1", 514)));
        assert_eq!(split_address("[::1]:6514"), Some(("::1", 6514)));
        for bad in [
            "",
            "host",
            "host:",
            ":514",
            "host:0",
            "host:65536",
            "host:+5",
            "::1:514",
            "[::1]",
            "[nope]:514",
            "[::1]514",
        ] {
            assert_eq!(split_address(bad), None, "{bad:?}");
        }
    }
}
