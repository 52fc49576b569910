//! The webhook's config checks, signature, ids and answers (the bodies are tested in
//! `format.rs`; a real HTTPS receiver in `tests/tests/sink_webhook.rs`).

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::sinks::{SinkTable, validate};

fn ctx() -> BuildContext {
    BuildContext {
        state_dir: "/var/lib/access-oracle".into(),
        alert_file: "/var/lib/access-oracle/alerts.jsonl".into(),
        audit: None,
    }
}

fn parse(toml_text: &str) -> Result<WebhookConfig, String> {
    toml::from_str(toml_text).map_err(|e| e.to_string())
}

fn problems(toml_text: &str) -> Vec<String> {
    let config = parse(toml_text).unwrap();
    let mut p = Vec::new();
    config.validate(&ctx(), &mut p);
    p
}

#[test]
fn a_complete_table_reads_with_its_defaults() {
    let c = parse("url = \"https://hooks.example.org/x\"\n").unwrap();
    assert_eq!(c.format, Format::Json);
    assert_eq!((c.timeout_ms, c.retries), (5000, 2));
    assert!(c.headers.is_empty() && c.ca_file.is_none() && c.secret_file.is_none());
    assert!(problems("url = \"https://hooks.example.org/x\"\n").is_empty());
    let c = parse(
        "url = \"https://splunk.example.org:8088/services/collector/event\"\n\
         format = \"splunk_hec\"\n\
         headers = { Authorization = \"Splunk 0000\" }\n\
         ca_file = \"/etc/access-oracle/ca.pem\"\n\
         secret_file = \"/etc/access-oracle/webhook.secret\"\n\
         timeout_ms = 2000\nretries = 0\n",
    )
    .unwrap();
    assert_eq!(c.format, Format::SplunkHec);
    assert_eq!(c.headers["Authorization"], "Splunk 0000");
    let e = parse("url = \"https://x.example\"\nformat = \"xml\"\n").unwrap_err();
    assert!(e.contains("unknown variant `xml`"), "{e}");
    let e = parse("url = \"https://x.example\"\nheader = {}\n").unwrap_err();
    assert!(e.contains("unknown field `header`"), "{e}");
}

#[test]
fn bad_settings_are_each_named() {
    let p = problems(
        "url = \"ftp://files.example.org/drop\"\n\
         headers = { \"Bad Name\" = \"x\", \"X-Ok\" = \"a\\r\\nX-Injected: 1\", \"X-Access-Signature\" = \"forged\", Host = \"other\" }\n\
         ca_file = \"relative/ca.pem\"\n\
         timeout_ms = 0\nretries = 11\n",
    );
    let expect = [
        "url must start with http:// or https://, got ftp:",
        "headers: \"Bad Name\" is not an HTTP header name",
        "headers: Host is set by the sink itself",
        "headers: X-Access-Signature is set by the sink itself",
        "headers.X-Ok: the value must be printable ASCII",
        "timeout_ms must be between 1 and 600000, got 0",
        "retries must be at most 10, got 11",
        "ca_file must be an absolute path, got relative/ca.pem",
    ];
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    for (got, want) in p.iter().zip(expect) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
    let p = problems("url = \"not a url\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("url is not a URL"), "{p:?}");
    let p = problems("url = \"https://\"\n");
    assert!(
        p.len() == 1 && p[0].starts_with("url is not a URL (empty host)"),
        "{p:?}"
    );
}

#[test]
fn the_sink_list_names_the_webhook_problem_and_refuses_two_sinks_on_one_url() {
    let table = |name: &str, url: &str| {
        let mut t = SinkTable::new(name, "webhook");
        t.options.insert("url".into(), url.into());
        t
    };
    let mut p = Vec::new();
    let planned = validate(
        &[
            table("a", "https://hooks.example.org/in?token=1"),
            table("b", "https://hooks.example.org/in?token=2"),
            table("c", "gopher://x"),
        ],
        &ctx(),
        &mut p,
    );
    assert_eq!(planned.len(), 5, "the two defaults and these three");
    assert_eq!(
        p,
        [
            "sinks[1] (b): https://hooks.example.org/in is already the target of sink a",
            "sinks[2] (c): url must start with http:// or https://, got gopher:",
        ]
    );
}

#[test]
fn the_shown_url_keeps_no_secret() {
    let shown = |url: &str, f: Format| shown_url(url, f);
    assert_eq!(
        shown(
            "https://user:pw@siem.example.org:8088/services/collector/event?token=abc#x",
            Format::SplunkHec
        ),
        "https://siem.example.org:8088/services/collector/event"
    );
    assert_eq!(
        shown(
            "https://gotify.example.org/message?token=AbCdEf",
            Format::Gotify
        ),
        "https://gotify.example.org/message"
    );
    // Slack's and ntfy's paths are the secret: a fingerprint tells two apart.
    let a = shown(
        "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
        Format::Slack,
    );
    let b = shown(
        "https://hooks.slack.com/services/T000/B000/YYYYSECRET",
        Format::Slack,
    );
    assert!(
        a.starts_with("https://hooks.slack.com/\u{2026} (url "),
        "{a}"
    );
    assert!(!a.contains("SECRET") && !a.contains("T000"), "{a}");
    assert_ne!(a, b);
    let n = shown("https://ntfy.example.org/mail-alerts-9f3k2", Format::Ntfy);
    assert!(!n.contains("9f3k2"), "{n}");
    // Not a URL: no query, no user info.
    assert_eq!(shown("bad://u:p@h x?token=1", Format::Json), "h x");
    // Debug shows neither the token nor the header values.
    let c = parse(
        "url = \"https://h.example/x?token=SECRET1\"\nheaders = { Authorization = \"Splunk SECRET2\" }\n",
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(debug.contains("Authorization"), "{debug}");
}

#[test]
fn the_signature_is_hmac_sha256_of_the_body() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // And as a receiver computes it, independently, over a real body.
    let body = Format::Json.alert(&format_tests_alert(), "h").unwrap().body;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"s3cret-shared").unwrap();
    mac.update(&body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature(b"s3cret-shared", &body), want);
    assert_ne!(signature(b"s3cret-shared", b"{}"), want);
}

fn format_tests_alert() -> Alert {
    Alert {
        time: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        rule: "failed_logins_account",
        severity: crate::rules::Severity::High,
        account: Some("alice".into()),
        ip: Some("192.0.2.7".parse().unwrap()),
        rdns: None,
        protocol: Some("smtp".into()),
        count: 5,
        counts: json!({ "failed_logins": 5 }),
        threshold: 5,
        window_secs: 300,
        response: crate::rules::Response::HoldAccount,
        expires: jiff::Timestamp::from_second(1_800_000_900).unwrap(),
        summary: "account alice held".into(),
        group: None,
        context: None,
        observed: false,
    }
}

#[test]
fn delivery_ids_are_128_bits_and_differ() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| delivery_id()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(
        ids.iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit()))
    );
}

#[test]
fn the_secret_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let write = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("  shared-secret\n", 0o600);
    assert_eq!(read_secret(&path).unwrap(), b"shared-secret");
    write("shared-secret\n", 0o644);
    let e = read_secret(&path).unwrap_err();
    assert!(
        e.ends_with("is readable by every local user; refusing it (chmod o-r)"),
        "{e}"
    );
    write("\n\n", 0o600);
    assert!(read_secret(&path).unwrap_err().ends_with("is empty"));
    let e = read_secret(dir.path()).unwrap_err();
    assert!(e.contains("is a directory"), "{e}");
    let e = read_secret(&dir.path().join("missing")).unwrap_err();
    assert!(e.starts_with("secret_file "), "{e}");

    // check-config's preflight says the same, naming the key.
    write("", 0o600);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let config = parse(&format!(
        "url = \"https://h.example/\"\nsecret_file = {:?}\nca_file = {:?}\n",
        path.display().to_string(),
        ca.display().to_string()
    ))
    .unwrap();
    let mut p = Vec::new();
    config.preflight(&ctx(), &mut p);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("ca_file ")
            && p[0].ends_with("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
        "{p:?}"
    );
    assert!(p[1].ends_with("is empty"), "{p:?}");
    let e = config.build(&ctx()).err().unwrap();
    assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
}

#[test]
fn which_answers_are_tried_again() {
    use reqwest::StatusCode as S;
    for s in [500, 502, 503, 504, 408, 429] {
        assert!(retryable(S::from_u16(s).unwrap()), "{s}");
    }
    for s in [400, 401, 403, 404, 410, 413, 301, 302] {
        assert!(!retryable(S::from_u16(s).unwrap()), "{s}");
    }
}

/// A loopback HTTP server answering each request with the next of `answers` (status,
/// body); returns its URL and the requests' heads and bodies as they came.
async fn answering(
    answers: Vec<(u16, &'static str)>,
) -> (String, tokio::task::JoinHandle<Vec<(String, Vec<u8>)>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook?token=t0k",
        listener.local_addr().unwrap().port()
    );
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (status, body) in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let (head, len) = loop {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    buf.drain(..end + 4);
                    break (head, len);
                }
            };
            while buf.len() < len {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            seen.push((head, buf));
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).await.unwrap();
        }
        seen
    });
    (url, task)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_2xx_delivers_and_a_4xx_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (url, server) = answering(vec![(204, ""), (403, "bad token\x1b[31m for you")]).await;
    let config = parse(&format!(
        "url = {url:?}\nheaders = {{ Authorization = \"Bearer abc\" }}\nsecret_file = {:?}\nretries = 3\n",
        secret.display().to_string()
    ))
    .unwrap();
    let mut sink = config.build(&ctx()).unwrap();
    let a = Arc::new(format_tests_alert());
    let outcome = sink.deliver(&[a.clone(), a.clone()]).await;
    assert_eq!(
        outcome,
        Outcome {
            delivered: 1,
            failed: 1,
            retried: 0
        }
    );
    let seen = server.await.unwrap();
    assert_eq!(seen.len(), 2, "no retry after the 403");
    let (head, body) = &seen[0];
    assert!(head.starts_with("POST /hook?token=t0k HTTP/1.1"), "{head}");
    assert_eq!(body, &serde_json::to_vec(&*a).unwrap());
    assert_eq!(header(head, "content-type"), Some("application/json"));
    assert_eq!(header(head, "authorization"), Some("Bearer abc"));
    assert_eq!(
        header(head, "x-access-signature"),
        Some(signature(b"s3cret", body).as_str())
    );
    let id0 = header(head, "x-access-delivery").unwrap();
    let id1 = header(&seen[1].0, "x-access-delivery").unwrap();
    assert_eq!(id0.len(), 32);
    assert_ne!(id0, id1, "one id per notification");
}

#[tokio::test]
async fn a_refusing_answer_is_shown_escaped_and_short() {
    let long = "x".repeat(1000);
    let long: &'static str = Box::leak(long.into_boxed_str());
    let (url, server) = answering(vec![(400, "no\x1b[2J way"), (404, long)]).await;
    let config = parse(&format!("url = {url:?}\n")).unwrap();
    let poster = Poster::new(&config).unwrap();
    let p = Format::Json.alert(&format_tests_alert(), "h").unwrap();
    assert_eq!(
        poster.attempt(&p, "id").await,
        Attempt::Refused("answered 400 Bad Request: no\\x1b[2J way".into())
    );
    match poster.attempt(&p, "id").await {
        Attempt::Refused(why) => {
            assert!(why.starts_with("answered 404 Not Found: xxx"), "{why}");
            assert!(why.len() < 250, "{}", why.len());
        }
        other => panic!("{other:?}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn nobody_listening_is_worth_another_try() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = parse(&format!(
        "url = \"http://127.0.0.1:{port}/?token=SECRET\"\n"
    ))
    .unwrap();
    let poster = Poster::new(&config).unwrap();
    let p = Format::Json.alert(&format_tests_alert(), "h").unwrap();
    match poster.attempt(&p, "id").await {
        Attempt::Retry(why) => assert!(!why.contains("SECRET"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn chat_formats_cannot_forward_the_audit_trail() {
    for (format, ok) in [
        ("json", true),
        ("splunk_hec", true),
        ("ecs", true),
        ("slack", false),
        ("teams", false),
        ("ntfy", false),
        ("gotify", false),
    ] {
        let c = parse(&format!(
            "url = \"https://h.example/\"\nformat = \"{format}\"\n"
        ))
        .unwrap();
        assert_eq!(c.forwards_audit(), ok, "{format}");
        let built = c.build_forwarder(&ctx());
        assert_eq!(built.is_ok(), ok, "{format}");
        if let Err(e) = built {
            assert!(
                e.to_string().contains("cannot forward the audit trail"),
                "{e}"
            );
        }
    }
}

/// Audit records sealed one after another, as the trail holds them.
fn items(n: u64) -> Vec<AuditItem> {
    use crate::audit::record::{GENESIS, seal};
    use crate::audit::{Kind, Record, Source};
    let mut prev = GENESIS;
    (1..=n)
        .map(|seq| {
            let mut record = Record::new(
                Kind::Auth,
                Source::Live,
                jiff::Timestamp::from_second(1_800_000_000 + seq as i64).unwrap(),
            )
            .user("alice")
            .ip("192.0.2.10".parse().ok())
            .protocol(Some("smtp"));
            record.seq = seq;
            let (line, chain) = seal(&record, &prev, b"key of the trail");
            prev = chain;
            AuditItem { record, line }
        })
        .collect()
}

#[tokio::test]
async fn audit_records_go_in_order_and_stop_at_the_first_refused() {
    let (url, server) = answering(vec![(200, ""), (400, "no")]).await;
    let config = parse(&format!("url = {url:?}\nretries = 0\n")).unwrap();
    let mut forwarder = config.build_forwarder(&ctx()).unwrap();
    let batch = items(3);
    assert_eq!(
        forwarder.forward(&batch).await,
        1,
        "the first delivered, then stopped"
    );
    let seen = server.await.unwrap();
    assert_eq!(
        seen.len(),
        2,
        "the third is not tried after the second failed"
    );
    for ((head, body), item) in seen.iter().zip(&batch) {
        assert_eq!(
            body,
            item.line.as_bytes(),
            "json sends the line as the trail holds it"
        );
        let chain = crate::audit::record::chain_hex(
            &crate::audit::record::unseal(&item.line).unwrap().chain,
        );
        assert_eq!(header(head, "x-access-delivery"), Some(chain.as_str()));
    }
}

#[tokio::test]
async fn audit_records_as_splunk_and_ecs_events() {
    let batch = items(1);
    let (url, server) = answering(vec![(200, ""), (200, "")]).await;
    for format in ["splunk_hec", "ecs"] {
        let config = parse(&format!("url = {url:?}\nformat = \"{format}\"\n")).unwrap();
        let mut forwarder = config.build_forwarder(&ctx()).unwrap();
        assert_eq!(forwarder.forward(&batch).await, 1, "{format}");
    }
    let seen = server.await.unwrap();
    let hec: serde_json::Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(hec["sourcetype"], "exim-access:audit");
    assert_eq!(hec["source"], "exim-access");
    assert_eq!(hec["time"], json!(1_800_000_001.0));
    assert_eq!(
        hec["event"],
        serde_json::from_str::<serde_json::Value>(&batch[0].line).unwrap()
    );
    let ecs: serde_json::Value = serde_json::from_slice(&seen[1].1).unwrap();
    assert_eq!(ecs, crate::sinks::ecs::item(&batch[0]));
}

#[test]
fn stream_audit_is_refused_for_the_formats_meant_for_people() {
    let ctx = BuildContext::new(
        "/srv/s".into(),
        "/srv/s/alerts.jsonl".into(),
        &crate::audit::AuditConfig::default(),
    );
    for (format, ok) in [("splunk_hec", true), ("slack", false)] {
        let mut t = SinkTable::new("siem", "webhook");
        t.stream = crate::sinks::Stream::Audit;
        t.group_secs = Some(0);
        t.options.insert("url".into(), "https://siem.example.org/in".into());
        t.options.insert("format".into(), format.into());
        let mut p = Vec::new();
        validate(&[t], &ctx, &mut p);
        assert_eq!(p.is_empty(), ok, "{format}: {p:?}");
        if !ok {
            assert!(p[0].contains("cannot forward the audit trail"), "{p:?}");
        }
    }
}
