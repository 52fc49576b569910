//! `[policy]`: where the Dovecot auth policy endpoint listens, its API key, the tarpit.
//! Field docs are the operator reference (`exim-config/oracle/access-oracle.toml` and
//! `docs/DOVECOT.md` mirror them).

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::problems::Problems;
use crate::rules::{RulesConfig, validate_message};

/// The longest tarpit, in seconds: Dovecot's login processes keep the client waiting
/// that long, and its own auth timeouts are not much longer.
pub const MAX_TARPIT_SECS: u64 = 30;

/// The shortest API key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// The longest API key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// `[policy]`
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Address and port of the HTTP endpoint, e.g. `"127.0.0.1:8091"`; absent (the
    /// default): no endpoint. Dovecot's `auth_policy_server_url` points here. Plain
    /// HTTP: keep it on loopback or a trusted network.
    pub listen: Option<String>,
    /// The URL path Dovecot posts to: `auth_policy_server_url` without its
    /// `?command=...`. Default `/policy`.
    pub path: String,
    /// The request header that carries the key: the part before the `:` of Dovecot's
    /// `auth_policy_server_api_header` (`X-API-Key: <key>`, the default). For
    /// `Authorization: Basic <base64>`, set `Authorization` and the key
    /// `Basic <base64>`.
    pub api_key_header: String,
    /// The API key itself (16 to 1024 printable ASCII characters, no spaces at the ends).
    /// Prefer `api_key_file`, which keeps it out of this file. One of the two is
    /// required when `listen` is set.
    pub api_key: Option<Secret>,
    /// A file holding the API key on one line (white space around it is ignored). It
    /// must not be readable by everyone (`chmod 0640`, group of the oracle's user).
    /// Read at start.
    pub api_key_file: Option<PathBuf>,
    /// Failed logins of one account within `[rules.failed_logins_account]`'s window
    /// from which its next logins are tarpitted; below that rule's threshold (which
    /// holds the account). 0: no tarpit by account.
    pub tarpit_after: u64,
    /// Failed logins from one address within `[rules.failed_logins_ip]`'s window from
    /// which its next logins are tarpitted; below that rule's threshold (which blocks
    /// the address). 0: no tarpit by address.
    pub tarpit_after_ip: u64,
    /// How long Dovecot waits before it checks the password of a tarpitted login, in
    /// seconds (1 to 30).
    pub tarpit_secs: u64,
    /// What a refused IMAP / POP3 client sees instead of the hold's or block's own
    /// `message`. Dovecot shows it as `NO [ALERT] <text>` (IMAP) and
    /// `-ERR [AUTH] <text>` (POP3); SMTP clients of Exim's dovecot authenticator only
    /// see `535 Incorrect authentication data`.
    pub reject_message: Option<String>,
    /// Connections served at once. Dovecot opens up to 100 per auth process. At the
    /// cap, the keep-alive connection idle the longest is closed to make room; when none
    /// is idle, the newcomer waits for a slot (which `head_timeout_ms` bounds).
    pub max_connections: usize,
    /// Connections from one address at once (Dovecot's auth process on loopback counts
    /// as one address: keep this above its 100). At the cap, that address's idlest
    /// connection is closed to make room; when none is idle, the newcomer is closed.
    pub max_connections_per_ip: usize,
    /// How long a request's head (request line and header fields) may take to arrive,
    /// from its first byte (or from the connection's start for its first request), in
    /// milliseconds. Dovecot sends a head in one piece.
    pub head_timeout_ms: u64,
    /// How long a whole request (head and body) may take to arrive, from its first byte,
    /// in milliseconds.
    pub request_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request, in seconds
    /// (Dovecot closes its own idle ones after 5 s).
    pub idle_timeout_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            listen: None,
            path: "/policy".into(),
            api_key_header: "X-API-Key".into(),
            api_key: None,
            api_key_file: None,
            tarpit_after: 3,
            tarpit_after_ip: 10,
            tarpit_secs: 5,
            reject_message: None,
            max_connections: 512,
            max_connections_per_ip: 256,
            head_timeout_ms: 1000,
            request_timeout_ms: 10_000,
            idle_timeout_secs: 60,
        }
    }
}

impl fmt::Debug for PolicyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyConfig")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field("api_key_header", &self.api_key_header)
            .field("api_key", &self.api_key)
            .field("api_key_file", &self.api_key_file)
            .field("tarpit_after", &self.tarpit_after)
            .field("tarpit_after_ip", &self.tarpit_after_ip)
            .field("tarpit_secs", &self.tarpit_secs)
            .field("reject_message", &self.reject_message)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("head_timeout_ms", &self.head_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .finish()
    }
}

/// A secret from the config file: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PolicyConfig {
    /// The address to listen on; `None` when the endpoint is off (or `listen` is invalid,
    /// which [`PolicyConfig::validate`] reports).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_deref().and_then(|l| l.parse().ok())
    }

    /// Checks the table, adding each problem found. The key file is checked (exists, not
    /// readable by everyone) but read only at start.
    pub fn validate(&self, problems: &mut Problems, rules: &RulesConfig) {
        let Some(listen) = &self.listen else {
            return;
        };
        if listen.parse::<SocketAddr>().is_err() {
            problems.add(format!(
                "policy.listen must be an address and port like \"127.0.0.1:8091\" or \"[::1]:8091\", got {listen:?}"
            ));
        }
        if !self.path.starts_with('/')
            || self.path.len() > 200
            || !self
                .path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
        {
            problems.add(format!(
                "policy.path must start with / and hold no spaces, ? or # (at most 200 bytes), got {:?}",
                self.path
            ));
        }
        if !is_header_name(&self.api_key_header) {
            problems.add(format!(
                "policy.api_key_header is not an HTTP header name: {:?}",
                self.api_key_header
            ));
        }
        match (&self.api_key, &self.api_key_file) {
            (Some(_), Some(_)) => {
                problems.add("policy.api_key and policy.api_key_file are both set: keep one")
            }
            (None, None) => problems.add(
                "policy.listen is set but neither policy.api_key nor policy.api_key_file: the endpoint requires a key",
            ),
            (Some(key), None) => {
                if let Err(e) = check_key(&key.0) {
                    problems.add(format!("policy.api_key {e}"));
                }
            }
            (None, Some(path)) => {
                if let Err(e) = check_key_file(path) {
                    problems.add(format!("policy.api_key_file {}: {e}", path.display()));
                }
            }
        }
        let account = &rules.failed_logins_account;
        if self.tarpit_after > 0 && account.enabled && self.tarpit_after >= account.threshold {
            problems.add(format!(
                "policy.tarpit_after ({}) must be below [rules.failed_logins_account] threshold ({}), or 0 for no tarpit by account",
                self.tarpit_after, account.threshold
            ));
        }
        let ip = &rules.failed_logins_ip;
        if self.tarpit_after_ip > 0 && ip.enabled && self.tarpit_after_ip >= ip.threshold {
            problems.add(format!(
                "policy.tarpit_after_ip ({}) must be below [rules.failed_logins_ip] threshold ({}), or 0 for no tarpit by address",
                self.tarpit_after_ip, ip.threshold
            ));
        }
        if self.tarpit_secs == 0 || self.tarpit_secs > MAX_TARPIT_SECS {
            problems.add(format!(
                "policy.tarpit_secs must be between 1 and {MAX_TARPIT_SECS}, got {}",
                self.tarpit_secs
            ));
        }
        if let Some(m) = &self.reject_message {
            validate_message(problems, "policy.reject_message", m);
        }
        if self.max_connections == 0 || self.max_connections > 65_536 {
            problems.add(format!(
                "policy.max_connections must be between 1 and 65536, got {}",
                self.max_connections
            ));
        }
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            problems.add(format!(
                "policy.max_connections_per_ip must be between 1 and policy.max_connections ({}), got {}",
                self.max_connections, self.max_connections_per_ip
            ));
        }
        if self.head_timeout_ms < 10 || self.head_timeout_ms > 60_000 {
            problems.add(format!(
                "policy.head_timeout_ms must be between 10 and 60000, got {}",
                self.head_timeout_ms
            ));
        }
        if self.request_timeout_ms < self.head_timeout_ms || self.request_timeout_ms > 300_000 {
            problems.add(format!(
                "policy.request_timeout_ms must be between policy.head_timeout_ms ({}) and 300000, got {}",
                self.head_timeout_ms, self.request_timeout_ms
            ));
        }
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > 3600 {
            problems.add(format!(
                "policy.idle_timeout_secs must be between 1 and 3600, got {}",
                self.idle_timeout_secs
            ));
        }
    }

    /// The API key: inline, or read from `api_key_file`.
    pub fn load_key(&self) -> Result<String, String> {
        match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => Ok(key.0.clone()),
            (None, Some(path)) => {
                check_key_file(path)
                    .map_err(|e| format!("policy.api_key_file {}: {e}", path.display()))?;
                let limit = crate::files::Limit {
                    what: "an API key file",
                    max_bytes: 4 * MAX_KEY_BYTES as u64,
                    why: "a key is at most 1024 bytes",
                };
                let text = crate::files::read_text_bounded(path, limit).map_err(|e| {
                    format!("cannot read policy.api_key_file {}: {e}", path.display())
                })?;
                let key = text.trim();
                check_key(key)
                    .map_err(|e| format!("policy.api_key_file {}: the key {e}", path.display()))?;
                Ok(key.to_string())
            }
            (None, None) => Err("no policy.api_key or policy.api_key_file".into()),
        }
    }
}

/// Checks a key as Dovecot can send it in a header line.
/// Whether `name` is an HTTP header name: a token (RFC 9110, section 5.1).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_key(key: &str) -> Result<(), String> {
    if key.len() < MIN_KEY_BYTES || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes long, is {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) || key.trim() != key {
        return Err(
            "must be printable ASCII, without spaces at either end (it is sent in an HTTP header)"
                .into(),
        );
    }
    Ok(())
}

/// Checks that the key file exists, is a file, and is not readable by everyone.
fn check_key_file(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            crate::files::describe_type(&meta)
        ));
    }
    if meta.permissions().mode() & 0o004 != 0 {
        return Err("is readable by everyone; refusing it (chmod o-r)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RawConfig};

    fn problems(toml_text: &str) -> Vec<String> {
        let raw: RawConfig = toml::from_str(toml_text).unwrap();
        match Config::from_raw(raw) {
            Ok(_) => Vec::new(),
            Err(p) => p.list().to_vec(),
        }
    }

    #[test]
    fn off_by_default() {
        let c = Config::from_raw(RawConfig::default()).unwrap();
        assert_eq!(c.policy.listen_addr(), None);
        assert_eq!(c.policy.path, "/policy");
        assert_eq!(
            crate::engine::policy::PolicySettings::from(&c.policy),
            crate::engine::policy::PolicySettings::default()
        );
    }

    #[test]
    fn an_inline_key_is_enough() {
        let text = "[policy]\nlisten = \"127.0.0.1:8091\"\napi_key = \"0123456789abcdef0123\"\n";
        assert_eq!(problems(text), Vec::<String>::new());
        let raw: RawConfig = toml::from_str(text).unwrap();
        assert_eq!(raw.policy.load_key().unwrap(), "0123456789abcdef0123");
        assert!(
            !format!("{raw:?}").contains("0123456789abcdef0123"),
            "Debug never shows the key"
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let all = problems(
            "[policy]\nlisten = \"localhost\"\npath = \"policy?x\"\napi_key_header = \"X Key\"\n\
             tarpit_after = 5\ntarpit_after_ip = 30\ntarpit_secs = 0\nreject_message = \"\"\n\
             max_connections = 0\n",
        )
        .join("\n");
        for want in [
            "policy.listen must be an address and port",
            "policy.path must start with /",
            "policy.api_key_header is not an HTTP header name",
            "neither policy.api_key nor policy.api_key_file",
            "policy.tarpit_after (5) must be below [rules.failed_logins_account] threshold (5)",
            "policy.tarpit_after_ip (30) must be below [rules.failed_logins_ip] threshold (20)",
            "policy.tarpit_secs must be between 1 and 30",
            "policy.reject_message must not be empty",
            "policy.max_connections must be between 1 and 65536",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn short_keys_and_both_sources_are_refused() {
        let all = problems(
            "[policy]\nlisten = \"127.0.0.1:1\"\napi_key = \"short\"\napi_key_file = \"/x\"\n",
        )
        .join("\n");
        assert!(all.contains("both set"), "{all}");
        let all = problems("[policy]\nlisten = \"127.0.0.1:1\"\napi_key = \"short\"\n").join("\n");
        assert!(all.contains("must be 16 to 1024 bytes long, is 5"), "{all}");
    }

    #[test]
    fn key_files_must_not_be_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[policy]\nlisten = \"127.0.0.1:8091\"\napi_key_file = {:?}\n",
            path.display().to_string()
        );
        let all = problems(&text).join("\n");
        assert!(
            all.contains("is readable by everyone; refusing it"),
            "{all}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(problems(&text), Vec::<String>::new());
        let raw: RawConfig = toml::from_str(&text).unwrap();
        assert_eq!(raw.policy.load_key().unwrap(), "0123456789abcdef0123");
        let missing = problems(
            "[policy]\nlisten = \"127.0.0.1:8091\"\napi_key_file = \"/nonexistent/key\"\n",
        );
        assert!(missing[0].contains("/nonexistent/key"), "{missing:?}");
    }

    /// The commented `[policy]` example of the shipped config, uncommented, is valid
    /// and says what the defaults are.
    #[test]
    fn the_shipped_example_is_valid_and_shows_the_defaults() {
        let shipped = include_str!("../../../exim-config/oracle/access-oracle.toml");
        let start = shipped.find("# [policy]").expect("a [policy] example");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("policy.key");
        std::fs::write(&key, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let example: String = shipped[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter(|l| !l.starts_with("# #"))
            .map(|l| {
                l.trim_start_matches("# ")
                    .replace("/etc/access-oracle/policy.key", &key.display().to_string())
            })
            .collect::<Vec<_>>()
            .join("\n");
        let raw: RawConfig = toml::from_str(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        let defaults = PolicyConfig::default();
        assert_eq!(raw.policy.path, defaults.path);
        assert_eq!(raw.policy.api_key_header, defaults.api_key_header);
        assert_eq!(raw.policy.tarpit_after, defaults.tarpit_after);
        assert_eq!(raw.policy.tarpit_after_ip, defaults.tarpit_after_ip);
        assert_eq!(raw.policy.tarpit_secs, defaults.tarpit_secs);
        assert_eq!(raw.policy.max_connections, defaults.max_connections);
        assert_eq!(
            raw.policy.max_connections_per_ip,
            defaults.max_connections_per_ip
        );
        assert_eq!(raw.policy.head_timeout_ms, defaults.head_timeout_ms);
        assert_eq!(raw.policy.request_timeout_ms, defaults.request_timeout_ms);
        assert_eq!(raw.policy.idle_timeout_secs, defaults.idle_timeout_secs);
        Config::from_raw(raw).unwrap_or_else(|p| panic!("{p}"));
    }

    #[test]
    fn a_tarpit_at_the_threshold_of_a_disabled_rule_is_fine() {
        let text = "[policy]\nlisten = \"127.0.0.1:8091\"\napi_key = \"0123456789abcdef0123\"\n\
                    tarpit_after = 9\n[rules.failed_logins_account]\nenabled = false\n";
        assert_eq!(problems(text), Vec::<String>::new());
    }
}
