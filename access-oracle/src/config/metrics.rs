//! `[metrics]`: where the Prometheus endpoint (`GET /metrics`) listens, and its
//! connection limits. Field docs are the operator reference
//! (`exim-config/oracle/access-oracle.toml` and `docs/OPERATIONS.md` mirror them).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::problems::Problems;

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port of the endpoint, e.g. `"127.0.0.1:9464"`; absent (the default):
    /// no endpoint. Plain HTTP without a key: keep it on loopback or a trusted network.
    pub listen: Option<String>,
    /// Connections served at once (Prometheus keeps one per scraper). At the cap, the
    /// connection idle the longest is closed to make room; when none is idle, the
    /// newcomer waits for a slot.
    pub max_connections: usize,
    /// Connections from one address at once; that address's idlest one is closed to
    /// make room, and a newcomer with none idle is closed.
    pub max_connections_per_ip: usize,
    /// How long a request's head may take to arrive from its first byte (or from the
    /// connection's start), in milliseconds.
    pub head_timeout_ms: u64,
    /// How long a whole request may take to arrive, and an answer to be taken, in
    /// milliseconds.
    pub request_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next scrape, in seconds.
    pub idle_timeout_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            max_connections: 16,
            max_connections_per_ip: 8,
            head_timeout_ms: 1000,
            request_timeout_ms: 5000,
            idle_timeout_secs: 120,
        }
    }
}

impl MetricsConfig {
    /// The address to listen on; `None` when the endpoint is off (or `listen` is
    /// invalid, which [`MetricsConfig::validate`] reports).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// Checks the table, adding each problem found.
    pub fn validate(&self, problems: &mut Problems) {
        let Some(listen) = &self.listen else {
            return;
        };
        if listen.parse::<SocketAddr>().is_err() {
            problems.add(format!(
                "metrics.listen must be an address and port like \"127.0.0.1:9464\" or \"[::1]:9464\", got {listen:?}"
            ));
        }
        if !(1..=10_000).contains(&self.max_connections) {
            problems.add(format!(
                "metrics.max_connections must be 1 to 10000, got {}",
                self.max_connections
            ));
        }
        if !(1..=10_000).contains(&self.max_connections_per_ip) {
            problems.add(format!(
                "metrics.max_connections_per_ip must be 1 to 10000, got {}",
                self.max_connections_per_ip
            ));
        }
        if !(10..=60_000).contains(&self.head_timeout_ms) {
            problems.add(format!(
                "metrics.head_timeout_ms must be 10 to 60000, got {}",
                self.head_timeout_ms
            ));
        }
        if !(10..=300_000).contains(&self.request_timeout_ms) {
            problems.add(format!(
                "metrics.request_timeout_ms must be 10 to 300000, got {}",
                self.request_timeout_ms
            ));
        }
        if !(1..=86_400).contains(&self.idle_timeout_secs) {
            problems.add(format!(
                "metrics.idle_timeout_secs must be 1 to 86400, got {}",
                self.idle_timeout_secs
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_each_bad_key_is_named() {
        let mut p = Problems::default();
        MetricsConfig::default().validate(&mut p);
        assert!(p.is_empty());
        let bad = MetricsConfig {
            listen: Some("localhost".into()),
            max_connections: 0,
            idle_timeout_secs: 0,
            ..MetricsConfig::default()
        };
        let mut p = Problems::default();
        bad.validate(&mut p);
        let text = format!("{p:?}");
        for key in [
            "metrics.listen",
            "metrics.max_connections",
            "metrics.idle_timeout_secs",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
        let good = MetricsConfig {
            listen: Some("127.0.0.1:9464".into()),
            ..MetricsConfig::default()
        };
        let mut p = Problems::default();
        good.validate(&mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(good.listen_addr(), Some("127.0.0.1:9464".parse().unwrap()));
    }
}
