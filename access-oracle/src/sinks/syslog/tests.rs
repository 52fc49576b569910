//! The syslog sink: the exact bytes of its messages, its config checks, and delivery to
//! receivers on loopback (a TCP listener, a UDP socket, a TLS server with a CA made
//! here, a peer that never reads).

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::transport::{Endpoint, Link, SendError};
use super::*;
use crate::alert::{Context, Group};
use crate::audit::{Kind, Source};
use crate::rules::{Response, Severity};

fn alert() -> Alert {
    Alert {
        time: Timestamp::from_second(1_800_000_000).unwrap(),
        rule: "failed_logins_account",
        severity: Severity::High,
        account: Some("alice".into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        rdns: None,
        protocol: Some("smtp".into()),
        count: 5,
        counts: json!({ "failed_logins": 5 }),
        threshold: 5,
        window_secs: 300,
        response: Response::HoldAccount,
        expires: Timestamp::from_second(1_800_000_900).unwrap(),
        summary: "account alice held for 15 min after 5 failed logins in 5 min from 203.0.113.9"
            .into(),
        group: None,
        context: None,
        observed: false,
    }
}

fn header() -> Header {
    Header {
        facility: Facility::Auth,
        hostname: "mx1.example.org".into(),
        app_name: "exim-access".into(),
        procid: 4242,
    }
}

/// A sender to nowhere in particular (its bytes are looked at, not sent).
fn sender(format: Format) -> Sender {
    Sender {
        link: Link::new(
            Endpoint {
                address: "127.0.0.1:9".into(),
                transport: Transport::Tcp,
                tls: None,
            },
            Duration::from_secs(1),
        ),
        header: header(),
        format,
        retries: 0,
        truncated: std::cell::Cell::new(0),
        cut_warning: ratelog::Warning::new(ratelog::PERIOD),
    }
}

fn config(toml_text: &str) -> Result<SyslogConfig, String> {
    let table: toml::Table = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    // Through the registry, as the config is read; then the same table as the struct.
    let kind = crate::sinks::kind("syslog").expect("syslog is a sink type");
    kind.parse(&table)?;
    Ok(toml::Value::Table(table).try_into().unwrap())
}

fn ctx() -> BuildContext {
    BuildContext {
        state_dir: "/var/lib/access-oracle".into(),
        alert_file: "/var/lib/access-oracle/alerts.jsonl".into(),
        audit: None,
    }
}

fn problems(c: &SyslogConfig) -> Vec<String> {
    let mut p = Vec::new();
    c.validate(&ctx(), &mut p);
    p
}

#[test]
fn an_alert_is_one_rfc5424_message_exactly() {
    let a = alert();
    assert_eq!(
        String::from_utf8(sender(Format::Text).alert_bytes(&a)).unwrap(),
        "<35>1 2027-01-15T08:00:00Z mx1.example.org exim-access 4242 failed_logins_account \
         [alert@32473 rule=\"failed_logins_account\" severity=\"high\" account=\"alice\" \
         ip=\"203.0.113.9\" protocol=\"smtp\" count=\"5\" threshold=\"5\" window_secs=\"300\" \
         response=\"hold_account\" expires=\"2027-01-15T08:15:00Z\"] \
         account alice held for 15 min after 5 failed logins in 5 min from 203.0.113.9"
    );
}

#[test]
fn a_grouped_alert_with_context_and_a_hostile_account() {
    let a = Alert {
        account: Some("ev\"il]\\\x1b[2J".into()),
        rdns: Some("host.example".into()),
        severity: Severity::Critical,
        group: Some(Group {
            count: 4,
            first: Timestamp::from_second(1_799_999_800).unwrap(),
            last: Timestamp::from_second(1_800_000_000).unwrap(),
        }),
        context: Some(Box::new(Context {
            undo: Some("access-oracle ctl release 'ev\"il'".into()),
            ..Context::default()
        })),
        summary: "account ev\"il]\\\x1b[2J held".into(),
        ..alert()
    };
    let mut sender = sender(Format::Text);
    sender.header.facility = Facility::Local3;
    assert_eq!(
        String::from_utf8(sender.alert_bytes(&a)).unwrap(),
        concat!(
            r#"<154>1 2027-01-15T08:00:00Z mx1.example.org exim-access 4242 failed_logins_account "#,
            r#"[alert@32473 rule="failed_logins_account" severity="critical" account="ev\"il\]\\\\\\x1b[2J" "#,
            r#"ip="203.0.113.9" rdns="host.example" protocol="smtp" count="5" threshold="5" window_secs="300" "#,
            r#"response="hold_account" expires="2027-01-15T08:15:00Z" group_count="4" "#,
            r#"group_first="2027-01-15T07:56:40Z" group_last="2027-01-15T08:00:00Z" "#,
            r#"undo="access-oracle ctl release 'ev\"il'"] "#,
            r#"account ev"il]\\\x1b[2J held (4 alerts of failed_logins_account in 200 s)"#
        )
    );
}

fn item() -> AuditItem {
    let mut record = Record::new(
        Kind::Auth,
        Source::Live,
        Timestamp::from_second(1_800_000_000).unwrap(),
    )
    .user("alice")
    .ip("192.0.2.10".parse().ok())
    .protocol(Some("smtp"));
    record.seq = 17;
    record.result = Some(crate::protocol::Outcome::Fail);
    record.verdict = Some("accept".into());
    let (line, _) =
        crate::audit::record::seal(&record, &crate::audit::record::GENESIS, b"key of the trail");
    AuditItem { record, line }
}

#[test]
fn an_audit_record_is_one_message_with_its_line() {
    let item = item();
    let chain =
        crate::audit::record::chain_hex(&crate::audit::record::unseal(&item.line).unwrap().chain);
    let mut sender = sender(Format::Json);
    let text = String::from_utf8(sender.record_bytes(&item)).unwrap();
    assert_eq!(
        text,
        format!(
            "<37>1 2027-01-15T08:00:00Z mx1.example.org exim-access 4242 auth \
             [audit@32473 seq=\"17\" kind=\"auth\" source=\"live\" user=\"alice\" ip=\"192.0.2.10\" \
             protocol=\"smtp\" result=\"fail\" verdict=\"accept\" chain=\"{chain}\"] {}",
            item.line
        )
    );
    assert!(item.line.starts_with('{') && item.line.ends_with('}'));

    sender.format = Format::Ecs;
    let text = String::from_utf8(sender.record_bytes(&item)).unwrap();
    let (_, msg) = text.split_once("\"] ").unwrap();
    let doc: serde_json::Value = serde_json::from_str(msg).unwrap();
    assert_eq!(doc["event"]["id"], json!(chain), "{doc}");
    assert_eq!(doc["user"]["name"], "alice");

    // An alert record takes its severity; a success is info.
    let mut alert_record = item.record.clone();
    alert_record.severity = Some(Severity::Medium);
    assert_eq!(record_level(&alert_record), Level::Warning);
    let mut ok = item.record.clone();
    ok.result = Some(crate::protocol::Outcome::Ok);
    assert_eq!(record_level(&ok), Level::Info);
    assert_eq!(record_level(&item.record), Level::Notice);
}

#[test]
fn alert_formats_put_json_or_ecs_in_msg() {
    let mut sender = sender(Format::Json);
    // A name JSON leaves as it is (a bidirectional control) is escaped the JSON way.
    let a = Alert {
        account: Some("ev\"il\\\u{202e}".into()),
        ..alert()
    };
    let text = String::from_utf8(sender.alert_bytes(&a)).unwrap();
    let (_, msg) = text.split_once("Z\"] ").unwrap();
    assert!(msg.contains(r#""account":"ev\"il\\\u202e""#), "{msg}");
    let doc: serde_json::Value = serde_json::from_str(msg).unwrap();
    assert_eq!(doc, serde_json::to_value(&a).unwrap());
    sender.format = Format::Ecs;
    let text = String::from_utf8(sender.alert_bytes(&a)).unwrap();
    let (_, msg) = text.split_once("Z\"] ").unwrap();
    let doc: serde_json::Value = serde_json::from_str(msg).unwrap();
    assert_eq!(doc, crate::sinks::ecs::alert(&a));
}

#[test]
fn config_defaults_and_every_problem_named() {
    let c = config("address = \"siem.example.org:6514\"\ntransport = \"tls\"").unwrap();
    assert_eq!(c.facility, Facility::Auth);
    assert_eq!(c.app_name, "exim-access");
    assert_eq!(c.timeout_ms, 5000);
    assert_eq!(c.retries, 2);
    assert_eq!(c.format, Format::Text);
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    assert_eq!(c.target(&ctx()), "tls://siem.example.org:6514");
    assert_eq!(c.server_name(), Some("siem.example.org"));
    assert!(c.forwards_audit());

    let c = config("address = \"[2001:db8::1]:6514\"\ntransport = \"tcp\"").unwrap();
    assert!(problems(&c).is_empty());
    assert_eq!(c.server_name(), Some("2001:db8::1"));

    let c = config(
        "address = \"2001:db8::1:514\"\ntransport = \"udp\"\nca_file = \"ca.pem\"\n\
         cert_file = \"/c.pem\"\napp_name = \"exim access\"\nhostname = \"\"\n\
         timeout_ms = 0\nretries = 11\nserver_name = \"bad name!\"",
    )
    .unwrap();
    let p = problems(&c);
    for wanted in [
        "address must be host:port",
        "ca_file, cert_file, server_name only apply to transport = \"tls\", not \"udp\"",
        "cert_file and key_file go together",
        "ca_file must be an absolute path",
        "server_name \"bad name!\" is not a host name",
        "app_name must be 1 to 48 printable ASCII",
        "hostname must be 1 to 255",
        "timeout_ms must be between 1 and 600000, got 0",
        "retries must be at most 10, got 11",
    ] {
        assert!(p.iter().any(|x| x.contains(wanted)), "{wanted:?} in {p:#?}");
    }
    assert_eq!(p.len(), 9, "{p:#?}");

    let c = config("address = \"bad host:514\"\ntransport = \"tcp\"").unwrap();
    assert!(problems(&c)[0].contains("not a host name or an IP address"));

    for (text, wanted) in [
        (
            "address = \"a:1\"\ntransport = \"tcp\"\nport = 1",
            "unknown field `port`",
        ),
        (
            "address = \"a:1\"\ntransport = \"smoke\"",
            "unknown variant",
        ),
        ("address = \"a:1\"", "missing field `transport`"),
        (
            "address = \"a:1\"\ntransport = \"tcp\"\nfacility = \"local9\"",
            "unknown variant `local9`",
        ),
    ] {
        let e = config(text).unwrap_err();
        assert!(e.contains(wanted), "{wanted:?}: {e}");
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server: rustls::ServerConfig,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path, require_client: bool) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("syslog test CA");
    let (other, _) = ca("another CA");
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["client.example".into()]);
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap(),
        )
    } else {
        builder.with_no_client_auth()
    };
    let server = builder
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        other_ca: write("other.pem", other.pem()),
        server,
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// Reads octet-counted frames from `stream` until it ends or `n` were read.
fn read_frames(stream: &mut impl Read, n: usize) -> Vec<String> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while frames.len() < n {
        if let Some(sp) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            if buf.len() >= sp + 1 + len {
                let frame = buf[sp + 1..sp + 1 + len].to_vec();
                buf.drain(..sp + 1 + len);
                frames.push(String::from_utf8(frame).unwrap());
                continue;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    frames
}

fn sink_for(toml_text: &str) -> Box<dyn Sink> {
    let c = config(toml_text).unwrap();
    assert!(problems(&c).is_empty(), "{:?}", problems(&c));
    let mut p = Vec::new();
    c.preflight(&ctx(), &mut p);
    assert!(p.is_empty(), "{p:?}");
    c.build(&ctx()).unwrap()
}

fn alerts(n: usize) -> Vec<Arc<Alert>> {
    (0..n)
        .map(|i| {
            Arc::new(Alert {
                account: Some(format!("user{i}")),
                ..alert()
            })
        })
        .collect()
}

#[tokio::test]
async fn tcp_frames_are_octet_counted_on_one_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let frames = read_frames(&mut s, 3);
        listener.set_nonblocking(true).unwrap();
        let second = listener.accept().is_ok();
        (frames, second)
    });
    let mut sink = sink_for(&format!(
        "address = \"{addr}\"\ntransport = \"tcp\"\nhostname = \"mx1\""
    ));
    let outcome = sink.deliver(&alerts(3)).await;
    assert_eq!(
        outcome,
        Outcome {
            delivered: 3,
            ..Outcome::default()
        }
    );
    let (frames, second) = server.join().unwrap();
    assert!(!second, "one connection for the three");
    assert_eq!(frames.len(), 3);
    for (i, f) in frames.iter().enumerate() {
        assert!(
            f.starts_with("<35>1 2027-01-15T08:00:00Z mx1 exim-access "),
            "{f}"
        );
        assert!(f.contains(&format!("account=\"user{i}\"")), "{f}");
    }
}

#[tokio::test]
async fn a_connection_the_receiver_closed_is_made_again_before_writing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            got.extend(read_frames(&mut s, 1));
            // Closed by the receiver (a restart) after one message.
            drop(s);
            tx.send(()).unwrap();
        }
        got
    });
    let endpoint = Endpoint {
        address: addr.to_string(),
        transport: Transport::Tcp,
        tls: None,
    };
    let mut link = Link::new(endpoint, Duration::from_secs(5));
    link.send(b"first").await.unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Polled, bounded: the close reaches this side a moment after the receiver's drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !link.peer_closed_now() {
        assert!(
            std::time::Instant::now() < deadline,
            "the close never showed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    link.send(b"second").await.unwrap();
    let got = server.join().unwrap();
    assert_eq!(got, ["first", "second"], "nothing lost in the dead socket");
}

#[tokio::test]
async fn udp_sends_one_datagram_per_alert_cut_to_2048_bytes() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let addr = receiver.local_addr().unwrap();
    let mut sink = sink_for(&format!(
        "address = \"{addr}\"\ntransport = \"udp\"\nhostname = \"mx1\"\nfacility = \"local0\""
    ));
    let long = Arc::new(Alert {
        summary: "x".repeat(5000),
        ..alert()
    });
    let outcome = sink.deliver(&[alerts(1)[0].clone(), long]).await;
    assert_eq!(outcome.delivered, 2);
    let mut buf = [0u8; 65536];
    let n = receiver.recv(&mut buf).unwrap();
    let first = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(
        first.starts_with("<131>1 2027-01-15T08:00:00Z mx1 "),
        "{first}"
    );
    assert!(first.ends_with("from 203.0.113.9"), "{first}");
    let n = receiver.recv(&mut buf).unwrap();
    assert_eq!(n, 2048, "cut to a safe datagram");
    assert!(buf[..n].ends_with(b"xxxx"));
}

#[tokio::test]
async fn tls_delivers_with_the_ca_and_fails_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), false);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(pki.server.clone());
    let srv = std::thread::spawn(move || {
        let mut frames = Vec::new();
        // The sink with the wrong CA connects first and gives up; then the right one.
        for _ in 0..2 {
            let (s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(server.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, s);
            frames.extend(read_frames(&mut tls, 2));
        }
        frames
    });
    let wrong = format!(
        "address = \"{addr}\"\ntransport = \"tls\"\nca_file = \"{}\"\nretries = 0\ntimeout_ms = 3000",
        pki.other_ca.display()
    );
    let mut sink = sink_for(&wrong);
    let outcome = sink.deliver(&alerts(1)).await;
    assert_eq!(outcome.failed, 1, "{outcome:?}");
    assert_eq!(outcome.delivered, 0);

    let right = format!(
        "address = \"{addr}\"\ntransport = \"tls\"\nca_file = \"{}\"\nserver_name = \"localhost\"",
        pki.ca.display()
    );
    let mut sink = sink_for(&right);
    let outcome = sink.deliver(&alerts(2)).await;
    assert_eq!(outcome.delivered, 2, "{outcome:?}");
    drop(sink);
    let frames = srv.join().unwrap();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[1].contains("account=\"user1\""));
}

#[tokio::test]
async fn tls_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path(), true);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(pki.server.clone());
    let srv = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(server).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let frames = read_frames(&mut tls, 1);
        let presented = tls.conn.peer_certificates().map_or(0, |c| c.len());
        (frames, presented)
    });
    let mut sink = sink_for(&format!(
        "address = \"{addr}\"\ntransport = \"tls\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    ));
    assert_eq!(sink.deliver(&alerts(1)).await.delivered, 1);
    let (frames, presented) = srv.join().unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(presented, 1);
}

#[test]
fn preflight_names_unreadable_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let c = config(&format!(
        "address = \"a:1\"\ntransport = \"tls\"\nca_file = \"{}\"",
        empty.display()
    ))
    .unwrap();
    let mut p = Vec::new();
    c.preflight(&ctx(), &mut p);
    assert!(
        p.len() == 1 && p[0].starts_with("ca_file ") && p[0].contains("no PEM certificate"),
        "{p:?}"
    );
    let c = config(&format!(
        "address = \"a:1\"\ntransport = \"tls\"\nca_file = \"{0}/missing.pem\"",
        dir.path().display()
    ))
    .unwrap();
    let mut p = Vec::new();
    c.preflight(&ctx(), &mut p);
    assert!(p.len() == 1 && p[0].contains("missing.pem"), "{p:?}");
    assert!(c.build(&ctx()).is_err());
}

#[tokio::test]
async fn a_peer_that_never_reads_makes_writes_time_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let endpoint = Endpoint {
        address: addr.to_string(),
        transport: Transport::Tcp,
        tls: None,
    };
    let mut link = Link::new(endpoint, Duration::from_millis(200));
    let message = vec![b'x'; 1000];
    let mut sent = 0usize;
    let error = loop {
        match link.send(&message).await {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100_000, "a peer that never reads took 100 MB");
    };
    assert!(matches!(error, SendError::WriteTimeout(200)), "{error}");
    assert!(!link.is_connected(), "the connection is dropped");
    // The send buffer is bounded: the peer swallowed some 200 KiB before the write
    // waited (with the kernel's own autotuning, megabytes).
    assert!(sent < 1000, "{sent} KiB went into a silent peer");
    let _stream = held.join().unwrap();
}

#[tokio::test]
async fn the_forwarder_stops_at_the_first_record_not_delivered() {
    // Nobody listens: nothing is delivered.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let c = config(&format!("address = \"{addr}\"\ntransport = \"tcp\"")).unwrap();
    let mut fwd = c.build_forwarder(&ctx()).unwrap();
    let batch = vec![item(), item()];
    assert_eq!(fwd.forward(&batch).await, 0);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        read_frames(&mut s, 3)
    });
    let c = config(&format!("address = \"{addr}\"\ntransport = \"tcp\"")).unwrap();
    let mut fwd = c.build_forwarder(&ctx()).unwrap();
    let mut batch = vec![item(), item(), item()];
    for (i, it) in batch.iter_mut().enumerate() {
        it.record.seq = i as u64 + 1;
    }
    assert_eq!(fwd.forward(&batch).await, 3);
    let frames = server.join().unwrap();
    let seqs: Vec<_> = frames
        .iter()
        .map(|f| f.split("seq=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(seqs, ["1", "2", "3"], "in order");
    assert!(frames[0].contains(" auth [audit@32473 "));
}
