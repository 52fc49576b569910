//! The exposition's names, labels and types, and the endpoint over real HTTP on
//! loopback. The end-to-end test (`tests/tests/metrics.rs`) parses it strictly after
//! traffic through Exim and Dovecot.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::config::{Config, RawConfig};
use crate::protocol::parse_line;

fn engine() -> Arc<Engine> {
    let config = Config::from_raw(RawConfig::default()).unwrap();
    let (engine, _alerts) = Engine::new(&config, Timestamp::now());
    Arc::new(engine)
}

fn drive(engine: &Engine, lines: &[&str]) {
    for line in lines {
        let cmd = parse_line(line.as_bytes()).unwrap();
        engine.handle(&cmd, Timestamp::now());
    }
}

/// `# TYPE` of each family, and each sample line as (name with labels, value).
fn read(text: &str) -> (HashMap<String, String>, HashMap<String, f64>) {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(series.to_string(), value.parse().unwrap());
        }
    }
    (types, samples)
}

#[test]
fn verdicts_latency_and_state_are_exported_with_their_types() {
    let engine = engine();
    drive(
        &engine,
        &[
            "auth user=alice ip=192.0.2.1 result=fail pwhash=1",
            "auth user=alice ip=192.0.2.1 result=ok",
            "rcpt user=alice ip=192.0.2.1 rcpt=bob@example.org",
            "ping",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let scrape = Scrape::new(engine.clone(), Arc::default(), dir.path().into());
    let text = scrape.render(Timestamp::now());
    let (types, samples) = read(&text);
    for (name, kind) in [
        ("exim_access_verdicts_total", "counter"),
        ("exim_access_policy_requests_total", "counter"),
        ("exim_access_events_total", "counter"),
        ("exim_access_dead_letters_total", "counter"),
        ("exim_access_alerts_total", "counter"),
        ("exim_access_sink_deliveries_total", "counter"),
        ("exim_access_sink_failures_total", "counter"),
        ("exim_access_sink_drops_total", "counter"),
        ("exim_access_tracked_accounts", "gauge"),
        ("exim_access_tracked_addresses", "gauge"),
        ("exim_access_holds_in_force", "gauge"),
        ("exim_access_blocks_in_force", "gauge"),
        ("exim_access_verdict_duration_seconds", "histogram"),
        ("exim_access_listener_connections_total", "counter"),
        ("exim_access_geoip_database_age_seconds", "gauge"),
        ("exim_access_enrichment_loaded_age_seconds", "gauge"),
        ("exim_access_action_applied_total", "counter"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name} in\n{text}"
        );
    }
    assert_eq!(
        samples[r#"exim_access_verdicts_total{verb="auth",result="accept"}"#], 2.0,
        "a failure not yet at a threshold is accepted too"
    );
    assert_eq!(
        samples[r#"exim_access_verdicts_total{verb="rcpt",result="accept"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"exim_access_verdicts_total{verb="ping",result="pong"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"exim_access_verdicts_total{verb="mail",result="deny"}"#],
        0.0
    );
    assert_eq!(samples[r#"exim_access_events_total{source="exim"}"#], 4.0);
    assert_eq!(samples["exim_access_tracked_accounts"], 1.0);
    assert_eq!(samples["exim_access_tracked_addresses"], 1.0);
    assert_eq!(samples["exim_access_verdict_duration_seconds_count"], 4.0);
    assert_eq!(
        samples[r#"exim_access_verdict_duration_seconds_bucket{le="+Inf"}"#],
        4.0
    );
    assert!(
        samples.contains_key(r#"exim_access_verdict_duration_seconds_bucket{le="5e-06"}"#),
        "{text}"
    );
    assert!(
        !samples.contains_key(r#"exim_access_verdicts_total{verb="auth",result="pong"}"#),
        "pong is ping's answer only"
    );
    assert!(
        !text.contains("exim_access_snapshot_age_seconds"),
        "no snapshot written yet: no age"
    );
    assert!(
        !text.contains("# EOF"),
        "the Prometheus format, not OpenMetrics"
    );
}

#[test]
fn the_snapshot_age_is_the_files_and_alerts_are_counted_by_rule() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(crate::persist::snapshot::FILE_NAME), b"x").unwrap();
    engine
        .stats
        .alert_raised("failed_logins_ip", crate::rules::Severity::High);
    let source = engine.stats.source("/var/log/exim4/mainlog");
    source
        .lines
        .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
    assert!(Arc::ptr_eq(
        &source,
        &engine.stats.source("/var/log/exim4/mainlog")
    ));
    let scrape = Scrape::new(engine, Arc::default(), dir.path().into());
    let later = Timestamp::now() + jiff::SignedDuration::from_secs(30);
    let (_, samples) = read(&scrape.render(later));
    let age = samples["exim_access_snapshot_age_seconds"];
    assert!((29.0..40.0).contains(&age), "{age}");
    assert_eq!(
        samples[r#"exim_access_alerts_total{rule="failed_logins_ip",severity="high"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"exim_access_source_lines_total{path="/var/log/exim4/mainlog"}"#],
        7.0
    );
}

#[test]
fn label_values_are_escaped() {
    let mut facts = Facts::default();
    facts.add(
        "exim_access_test",
        "A test",
        MetricType::Gauge,
        vec![(vec![("sink", "a\"b\\c\nd".to_string())], 1.0)],
    );
    let mut registry = Registry::default();
    registry.register_collector(Box::new(facts));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
    assert!(
        out.contains(r#"exim_access_test{sink="a\"b\\c\nd"} 1"#),
        "{out}"
    );
}

async fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn the_endpoint_answers_get_metrics_and_nothing_else() {
    let engine = engine();
    let dir = tempfile::tempdir().unwrap();
    let listeners: Arc<Listeners> = Arc::default();
    let config = MetricsConfig {
        listen: Some("127.0.0.1:0".into()),
        ..MetricsConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    let endpoint = start(
        &config,
        Scrape::new(engine, listeners.clone(), dir.path().into()),
        listeners.clone(),
        stopped,
    )
    .await
    .unwrap();
    let ok = get(
        endpoint.addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert!(ok.contains("# TYPE exim_access_verdicts_total counter\n"));
    let post = get(
        endpoint.addr,
        "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.contains("Allow: GET\r\n"), "{post}");
    let other = get(endpoint.addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    // The endpoint's own connections are counted, in its own answer too.
    let again = get(
        endpoint.addr,
        "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        again.contains(
            "exim_access_listener_connections_total{listener=\"metrics\",event=\"accepted\"} 4\n"
        ),
        "{again}"
    );
    let _ = stop.send(true);
    assert!(
        endpoint
            .finish(tokio::time::Instant::now() + std::time::Duration::from_secs(5))
            .await
    );
}

#[tokio::test]
async fn a_port_in_use_stops_the_start_with_the_key_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = MetricsConfig {
        listen: Some(taken.local_addr().unwrap().to_string()),
        ..MetricsConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (_stop, stopped) = watch::channel(false);
    let err = start(
        &config,
        Scrape::new(engine(), Arc::default(), dir.path().into()),
        Arc::default(),
        stopped,
    )
    .await
    .err()
    .expect("the port is taken");
    assert!(format!("{err:#}").contains("(metrics.listen)"), "{err:#}");
}

#[test]
fn the_table_is_read_from_the_config_file_and_checked_there() {
    let raw: RawConfig = toml::from_str(
        "[metrics]\nlisten = \"127.0.0.1:9464\"\nmax_connections = 4\nidle_timeout_secs = 30\n",
    )
    .unwrap();
    let config = Config::from_raw(raw).unwrap();
    assert_eq!(
        config.raw.metrics.listen_addr(),
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert_eq!(limits(&config.raw.metrics).max_connections, 4);
    let bad: RawConfig = toml::from_str("[metrics]\nlisten = \"9464\"\n").unwrap();
    let problems = Config::from_raw(bad).unwrap_err();
    assert!(
        problems
            .to_string()
            .contains("metrics.listen must be an address and port"),
        "{problems}"
    );
    assert!(toml::from_str::<RawConfig>("[metrics]\nport = 9464\n").is_err());
}

/// Reads one answer (head and `Content-Length` body) from a keep-alive connection.
async fn answer(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole answer");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if body.len() >= length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn at_its_cap_the_idle_scraper_is_closed_for_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let listeners: Arc<Listeners> = Arc::default();
    let config = MetricsConfig {
        listen: Some("127.0.0.1:0".into()),
        max_connections: 1,
        ..MetricsConfig::default()
    };
    let (stop, stopped) = watch::channel(false);
    let endpoint = start(
        &config,
        Scrape::new(engine(), listeners.clone(), dir.path().into()),
        listeners.clone(),
        stopped,
    )
    .await
    .unwrap();
    let scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(endpoint.addr).await.unwrap();
    first.write_all(scrape).await.unwrap();
    assert!(answer(&mut first).await.starts_with("HTTP/1.1 200"));
    // `first` is idle on keep-alive: a second scraper takes its slot.
    let mut second = tokio::net::TcpStream::connect(endpoint.addr).await.unwrap();
    second.write_all(scrape).await.unwrap();
    assert!(answer(&mut second).await.starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        first.read_to_end(&mut rest),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0))), "the idle one was closed");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(listeners.metrics.shed_idle.load(Relaxed), 1);
    assert_eq!(listeners.metrics.accepted.load(Relaxed), 2);
    let _ = stop.send(true);
}
