//! CIDR block and allow lists from files (`[lists]`).
//!
//! A list file has one network per line, IPv4 or IPv6, as a CIDR (`192.0.2.0/24`) or a
//! bare address (`192.0.2.7`, meaning /32 or /128). `#` and `;` start a comment; blank
//! lines are skipped. A comment after the network is kept and shown with a hit, which
//! is how Spamhaus DROP files name their SBL records:
//!
//! ```text
//! ; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project SLU
//! 1.10.16.0/20 ; SBL256894
//! 2001:db8::/32   # documentation, not routed
//! ```
//!
//! A line that is not a network is reported with `file:line` and skipped (counted in
//! [`IpLists::status`]), never fatal. Host bits are cleared (`192.0.2.7/24` is
//! `192.0.2.0/24`) and IPv4-mapped IPv6 networks (`::ffff:192.0.2.0/120`) are stored as
//! IPv4, like looked-up addresses.
//!
//! All networks of all files are in two longest-prefix-match tries (`prefix-trie`), one
//! for blocking and one for allowing, rebuilt aside on a reload and swapped as a whole.
//! A file that cannot be read at start is an error; on reload it keeps its old networks.
//! [`IpLists::blocked`] does not look at the allow list: the engine asks
//! [`IpLists::allowed`] first, since an allowed address is exempt from every IP rule.

use std::fmt;
use std::hash::{DefaultHasher, Hasher};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use jiff::Timestamp;
use prefix_trie::joint::JointPrefixMap;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::canonical_ip;
use super::watch::{FileStamp, Trigger, read_with_stamp, watch_files};
use crate::problems::Problems;

/// `[lists]`: files of networks to block or to exempt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListsConfig {
    /// Files of networks the known-bad-IP rule acts on, e.g. Spamhaus DROP
    /// (`/var/lib/access-oracle/drop_v4.txt`) or a site's own list.
    pub block: Vec<PathBuf>,
    /// Files of networks exempt from the IP rules (failed logins per IP, password
    /// spraying, known-bad IP): an office NAT, the webmail host.
    pub allow: Vec<PathBuf>,
    /// How often the files are checked for a change when no file notification comes, in
    /// seconds (changes are normally seen at once through inotify).
    pub reload_check_secs: u64,
}

impl Default for ListsConfig {
    fn default() -> Self {
        ListsConfig {
            block: Vec::new(),
            allow: Vec::new(),
            reload_check_secs: 60,
        }
    }
}

impl ListsConfig {
    /// Checks the settings (not the files: [`IpLists::open`] reads them), adding each
    /// problem found.
    pub fn validate(&self, problems: &mut Problems) {
        let mut seen = std::collections::BTreeSet::new();
        for (key, paths) in [("block", &self.block), ("allow", &self.allow)] {
            for path in paths {
                if !path.is_absolute() {
                    problems.add(format!(
                        "[lists] {key} must list absolute paths, got {}",
                        path.display()
                    ));
                }
                if !seen.insert(path) {
                    problems.add(format!(
                        "[lists] {} is listed more than once",
                        path.display()
                    ));
                }
            }
        }
        if self.reload_check_secs == 0 || self.reload_check_secs > 86_400 {
            problems.add(format!(
                "[lists] reload_check_secs must be between 1 and 86400, got {}",
                self.reload_check_secs
            ));
        }
    }
}

/// The most read of one list file: 64 MiB. Lists are read whole into memory; the
/// largest public ones (full bogon lists, country aggregates) are a few MiB, so more
/// is a wrong path (`/dev/zero`, a log file) rather than a list.
pub const MAX_LIST_BYTES: u64 = 64 << 20;

const LIST_LIMIT: crate::files::Limit = crate::files::Limit {
    what: "a list file",
    max_bytes: MAX_LIST_BYTES,
    why: "the limit for [lists] files",
};

/// Why a block matched: the list, the network and the line's comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListHit {
    /// The list's file name, e.g. `drop_v4.txt`.
    pub list: Arc<str>,
    /// The most specific listed network containing the address.
    pub network: IpNet,
    /// The comment on that line, e.g. `SBL256894`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<Arc<str>>,
}

/// Why a list file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a reload did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListReloadReport {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub outcome: ListReloadOutcome,
}

/// What a reload did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListReloadOutcome {
    /// Same content as before: nothing done.
    Unchanged,
    /// The new content is in use.
    Reloaded {
        /// Networks read.
        networks: usize,
        /// Lines skipped as bad.
        bad_lines: usize,
    },
}

/// Block or allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Allow,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Block => "block",
            Kind::Allow => "allow",
        }
    }
}

/// One line's network.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    network: IpNet,
    comment: Option<Arc<str>>,
}

/// A file's content as parsed.
#[derive(Debug, Default, PartialEq, Eq)]
struct ParsedList {
    networks: Vec<Listed>,
    /// `name:line: reason`, every bad line.
    bad: Vec<String>,
}

/// Bad lines kept per file for `status`.
const BAD_EXAMPLES: usize = 5;
/// Bad lines logged one by one per read of a file; the rest are summed up.
const BAD_LOGGED: usize = 10;

/// One configured file and what was last read from it.
struct FileState {
    kind: Kind,
    path: PathBuf,
    name: Arc<str>,
    networks: Arc<[Listed]>,
    content_hash: u64,
    stamp: FileStamp,
    bad_lines: usize,
    bad_examples: Vec<String>,
    loaded_at: Timestamp,
    reloads: u64,
    refused: Option<(Option<FileStamp>, String, Timestamp)>,
}

/// What a block entry says.
struct BlockEntry {
    list: Arc<str>,
    comment: Option<Arc<str>>,
}

/// The lookup tables, built from all files.
#[derive(Default)]
struct Tables {
    block: JointPrefixMap<IpNet, BlockEntry>,
    allow: JointPrefixMap<IpNet, ()>,
}

/// The block and allow lists in use. Shared (`Arc<IpLists>`) between the engine and
/// [`watch`].
pub struct IpLists {
    tables: RwLock<Arc<Tables>>,
    /// The files, in configuration order (block files first); its lock also serialises
    /// reloads.
    files: Mutex<Vec<FileState>>,
    reload_check_secs: u64,
    block_hits: AtomicU64,
    allow_hits: AtomicU64,
}

impl fmt::Debug for IpLists {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tables();
        f.debug_struct("IpLists")
            .field("files", &self.paths())
            .field("block_networks", &t.block.len())
            .field("allow_networks", &t.allow.len())
            .finish()
    }
}

impl IpLists {
    /// Reads the configured files. A file that cannot be read is an error; bad lines are
    /// logged and skipped.
    pub fn open(config: &ListsConfig) -> Result<IpLists, ListError> {
        let mut files = Vec::new();
        let configured = config
            .block
            .iter()
            .map(|p| (Kind::Block, p))
            .chain(config.allow.iter().map(|p| (Kind::Allow, p)));
        for (kind, path) in configured {
            let (bytes, stamp) =
                read_with_stamp(path, LIST_LIMIT).map_err(|source| ListError::Read {
                    path: path.clone(),
                    source,
                })?;
            let name: Arc<str> = path
                .file_name()
                .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
                .into();
            let parsed = parse_list(&bytes, &path.display().to_string());
            log_bad_lines(&parsed.bad);
            files.push(FileState {
                kind,
                path: path.clone(),
                name,
                content_hash: hash(&bytes),
                stamp,
                bad_lines: parsed.bad.len(),
                bad_examples: parsed.bad.into_iter().take(BAD_EXAMPLES).collect(),
                networks: parsed.networks.into(),
                loaded_at: Timestamp::now(),
                reloads: 0,
                refused: None,
            });
        }
        Ok(IpLists {
            tables: RwLock::new(Arc::new(build(&files))),
            files: Mutex::new(files),
            reload_check_secs: config.reload_check_secs,
            block_hits: AtomicU64::new(0),
            allow_hits: AtomicU64::new(0),
        })
    }

    /// No lists: nothing is allowed or blocked.
    pub fn empty() -> IpLists {
        IpLists {
            tables: RwLock::new(Arc::new(Tables::default())),
            files: Mutex::new(Vec::new()),
            reload_check_secs: ListsConfig::default().reload_check_secs,
            block_hits: AtomicU64::new(0),
            allow_hits: AtomicU64::new(0),
        }
    }

    /// Whether `ip` is in an allow list (exempt from the IP rules).
    pub fn allowed(&self, ip: IpAddr) -> bool {
        let hit = self
            .tables()
            .allow
            .get_lpm(&IpNet::from(canonical_ip(ip)))
            .is_some();
        if hit {
            self.allow_hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// The most specific block-list network containing `ip`, if any. Does not look at
    /// the allow list.
    pub fn blocked(&self, ip: IpAddr) -> Option<ListHit> {
        let tables = self.tables();
        let (network, entry) = tables.block.get_lpm(&IpNet::from(canonical_ip(ip)))?;
        self.block_hits.fetch_add(1, Ordering::Relaxed);
        Some(ListHit {
            list: entry.list.clone(),
            network,
            comment: entry.comment.clone(),
        })
    }

    /// Reads every file again and puts the changed ones into use (SIGHUP). One result
    /// per file, block files first; a file that cannot be read keeps its old networks.
    /// Logs what it did.
    pub fn reload(&self) -> Vec<Result<ListReloadReport, ListError>> {
        self.reload_where(|_| true)
    }

    /// Like [`reload`](Self::reload), but only for files whose size, times or inode
    /// changed since they were last read (and not again for an unreadable file that did
    /// not change): the cheap check polling runs. One result per file it read.
    pub fn reload_if_changed(&self) -> Vec<Result<ListReloadReport, ListError>> {
        self.reload_where(|f| {
            let stamp = FileStamp::of(&f.path).ok();
            stamp != Some(f.stamp) && f.refused.as_ref().is_none_or(|r| r.0 != stamp)
        })
    }

    /// Files, network counts, bad lines, hits and the last refusal, for `ctl status`.
    pub fn status(&self) -> serde_json::Value {
        let tables = self.tables();
        let files = self.files();
        json!({
            "block_networks": tables.block.len(),
            "allow_networks": tables.allow.len(),
            "block_hits": self.block_hits.load(Ordering::Relaxed),
            "allow_hits": self.allow_hits.load(Ordering::Relaxed),
            "reload_check_secs": self.reload_check_secs,
            "files": files.iter().map(|f| json!({
                "path": f.path,
                "kind": f.kind.name(),
                "networks": f.networks.len(),
                "bad_lines": f.bad_lines,
                "bad_line_examples": f.bad_examples,
                "loaded_at": f.loaded_at.to_string(),
                "reloads": f.reloads,
                "last_refusal": f.refused.as_ref().map(|(_, error, at)| json!({
                    "at": at.to_string(),
                    "error": error,
                })),
            })).collect::<Vec<_>>(),
        })
    }

    fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Vec<FileState>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.files().iter().map(|f| f.path.clone()).collect()
    }

    fn reload_where(
        &self,
        wanted: impl Fn(&FileState) -> bool,
    ) -> Vec<Result<ListReloadReport, ListError>> {
        let mut files = self.files();
        let mut results = Vec::new();
        let mut changed = false;
        for f in files.iter_mut().filter(|f| wanted(f)) {
            let result = reload_file(f);
            changed |= matches!(
                result,
                Ok(ListReloadReport {
                    outcome: ListReloadOutcome::Reloaded { .. },
                    ..
                })
            );
            results.push(result);
        }
        if changed {
            let tables = Arc::new(build(&files));
            *self.tables.write().unwrap_or_else(PoisonError::into_inner) = tables;
        }
        results
    }
}

/// Watches the list files and reloads one when it changes, until `shutdown` turns true:
/// inotify on the files' directories, and polling every `reload_check_secs` as the
/// fallback. Each reload and refusal is logged.
pub async fn watch(lists: Arc<IpLists>, shutdown: watch::Receiver<bool>) {
    let paths = lists.paths();
    let poll = Duration::from_secs(lists.reload_check_secs.max(1));
    watch_files(
        "lists",
        paths,
        poll,
        true,
        shutdown,
        move |trigger| match trigger {
            Trigger::Notified => drop(lists.reload()),
            Trigger::Poll => drop(lists.reload_if_changed()),
        },
    )
    .await;
}

/// Reads one file again; on success its networks are replaced (the caller rebuilds).
fn reload_file(f: &mut FileState) -> Result<ListReloadReport, ListError> {
    let report = |outcome| ListReloadReport {
        path: f.path.clone(),
        outcome,
    };
    let (bytes, stamp) = match read_with_stamp(&f.path, LIST_LIMIT) {
        Ok(read) => read,
        Err(source) => {
            tracing::warn!(path = %f.path.display(), list = f.kind.name(), error = %source,
                "list file unreadable; its networks in use stay");
            f.refused = Some((
                FileStamp::of(&f.path).ok(),
                source.to_string(),
                Timestamp::now(),
            ));
            return Err(ListError::Read {
                path: f.path.clone(),
                source,
            });
        }
    };
    f.stamp = stamp;
    f.refused = None;
    let content_hash = hash(&bytes);
    if content_hash == f.content_hash {
        tracing::debug!(path = %f.path.display(), "list file unchanged");
        return Ok(report(ListReloadOutcome::Unchanged));
    }
    let parsed = parse_list(&bytes, &f.path.display().to_string());
    log_bad_lines(&parsed.bad);
    f.content_hash = content_hash;
    f.bad_lines = parsed.bad.len();
    f.bad_examples = parsed.bad.into_iter().take(BAD_EXAMPLES).collect();
    f.networks = parsed.networks.into();
    f.loaded_at = Timestamp::now();
    f.reloads += 1;
    tracing::info!(path = %f.path.display(), list = f.kind.name(), networks = f.networks.len(),
        bad_lines = f.bad_lines, "list file reloaded");
    Ok(report(ListReloadOutcome::Reloaded {
        networks: f.networks.len(),
        bad_lines: f.bad_lines,
    }))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

fn log_bad_lines(bad: &[String]) {
    for line in bad.iter().take(BAD_LOGGED) {
        tracing::warn!(bad_line = %line, "list line skipped");
    }
    if bad.len() > BAD_LOGGED {
        tracing::warn!(
            more = bad.len() - BAD_LOGGED,
            "more bad lines skipped in the same list file (counted in status)"
        );
    }
}

/// Both tries from every file; where two files list the same network, the first keeps it.
fn build(files: &[FileState]) -> Tables {
    let mut t = Tables::default();
    for f in files {
        for l in f.networks.iter() {
            match f.kind {
                Kind::Block => {
                    if t.block.get(&l.network).is_none() {
                        t.block.insert(
                            l.network,
                            BlockEntry {
                                list: f.name.clone(),
                                comment: l.comment.clone(),
                            },
                        );
                    }
                }
                Kind::Allow => {
                    t.allow.insert(l.network, ());
                }
            }
        }
    }
    t
}

/// Parses a list file's content; `name` (the file's path) prefixes each bad line's
/// report.
fn parse_list(bytes: &[u8], name: &str) -> ParsedList {
    let mut out = ParsedList::default();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let Ok(line) = std::str::from_utf8(raw) else {
            out.bad.push(format!("{name}:{line_no}: not UTF-8"));
            continue;
        };
        match parse_line(line) {
            Ok(Some(listed)) => out.networks.push(listed),
            Ok(None) => {}
            Err(reason) => out.bad.push(format!("{name}:{line_no}: {reason}")),
        }
    }
    out
}

/// One line: `Ok(None)` for a blank or comment line.
fn parse_line(line: &str) -> Result<Option<Listed>, String> {
    let (data, comment) = match line.find(['#', ';']) {
        Some(i) => (&line[..i], Some(line[i + 1..].trim())),
        None => (line, None),
    };
    let mut tokens = data.split_whitespace();
    let Some(token) = tokens.next() else {
        return Ok(None);
    };
    if tokens.next().is_some() {
        return Err(format!(
            "expected one network, got {:?}",
            shorten(data.trim())
        ));
    }
    let network = if token.contains('/') {
        token
            .parse::<IpNet>()
            .map_err(|_| format!("not a network: {:?}", shorten(token)))?
            .trunc()
    } else {
        IpNet::from(
            token
                .parse::<IpAddr>()
                .map_err(|_| format!("not an address or network: {:?}", shorten(token)))?,
        )
    };
    Ok(Some(Listed {
        network: canonical_net(network),
        comment: comment.filter(|c| !c.is_empty()).map(Arc::from),
    }))
}

/// An IPv4-mapped IPv6 network (`::ffff:0:0/96` and longer) as its IPv4 network.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(n);
            }
        }
    }
    net
}

/// A bad token, cut for the log.
fn shorten(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn config(block: &[&Path], allow: &[&Path]) -> ListsConfig {
        ListsConfig {
            block: block.iter().map(|p| p.to_path_buf()).collect(),
            allow: allow.iter().map(|p| p.to_path_buf()).collect(),
            ..ListsConfig::default()
        }
    }

    const DROP: &str = "\
; Spamhaus DROP List 2024/05/01 - (c) 2024 The Spamhaus Project SLU
; https://www.spamhaus.org/drop/drop.txt
; Last-Modified: Wed, 01 May 2024 12:00:00 GMT
; Expires: Wed, 01 May 2024 13:00:00 GMT
1.10.16.0/20 ; SBL256894
1.19.0.0/16 ; SBL434604
198.51.100.0/24 ; SBL000001
";

    #[test]
    fn lines_parse_as_networks_comments_or_errors() {
        let listed = |s: &str| parse_line(s).unwrap().unwrap();
        assert_eq!(listed("192.0.2.0/24").network, net("192.0.2.0/24"));
        assert_eq!(listed("  192.0.2.7  ").network, net("192.0.2.7/32"));
        assert_eq!(listed("2001:db8::1").network, net("2001:db8::1/128"));
        assert_eq!(listed("2001:db8::/32\r").network, net("2001:db8::/32"));
        // Host bits are cleared; IPv4-mapped networks become IPv4.
        assert_eq!(listed("192.0.2.77/24").network, net("192.0.2.0/24"));
        assert_eq!(listed("::ffff:192.0.2.0/120").network, net("192.0.2.0/24"));
        assert_eq!(listed("::ffff:192.0.2.9").network, net("192.0.2.9/32"));
        let l = listed("1.10.16.0/20 ; SBL256894");
        assert_eq!(
            (l.network, l.comment.as_deref()),
            (net("1.10.16.0/20"), Some("SBL256894"))
        );
        assert_eq!(
            listed("10.0.0.0/8 # office").comment.as_deref(),
            Some("office")
        );
        assert_eq!(listed("10.0.0.0/8 ;").comment, None);
        for skip in ["", "   ", "# comment", "; Spamhaus", "\r"] {
            assert_eq!(parse_line(skip), Ok(None), "{skip:?}");
        }
        for (bad, why) in [
            ("192.0.2.0/33", "not a network"),
            ("example.org", "not an address"),
            ("192.0.2.1 192.0.2.2", "expected one network"),
            ("1.2.3.4-1.2.3.9", "not an address"),
            ("/24", "not a network"),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_lines_are_reported_with_file_and_line_and_skipped() {
        let parsed = parse_list(
            b"192.0.2.0/24\nnonsense\n\n\xff\xfe\n2001:db8::/32 ; ok\n",
            "my.list",
        );
        assert_eq!(parsed.networks.len(), 2);
        assert_eq!(
            parsed.bad,
            vec![
                "my.list:2: not an address or network: \"nonsense\"".to_string(),
                "my.list:4: not UTF-8".to_string(),
            ]
        );
    }

    #[test]
    fn a_spamhaus_drop_file_blocks_with_its_sbl_record() {
        let dir = tempfile::tempdir().unwrap();
        let drop = write(dir.path(), "drop_v4.txt", DROP);
        let lists = IpLists::open(&config(&[&drop], &[])).unwrap();
        let hit = lists.blocked(ip("1.10.20.30")).unwrap();
        assert_eq!(
            hit,
            ListHit {
                list: "drop_v4.txt".into(),
                network: net("1.10.16.0/20"),
                comment: Some("SBL256894".into()),
            }
        );
        assert_eq!(
            serde_json::to_value(&hit).unwrap(),
            json!({"list": "drop_v4.txt", "network": "1.10.16.0/20", "comment": "SBL256894"})
        );
        assert!(lists.blocked(ip("1.10.32.1")).is_none());
        assert!(!lists.allowed(ip("1.10.20.30")));
        // IPv4-mapped IPv6 addresses match IPv4 entries.
        assert_eq!(
            lists
                .blocked(ip("::ffff:198.51.100.9"))
                .unwrap()
                .comment
                .as_deref(),
            Some("SBL000001")
        );
        let s = lists.status();
        assert_eq!(s["block_networks"], 3);
        assert_eq!(s["block_hits"], 2);
        assert_eq!(s["files"][0]["bad_lines"], 0);
    }

    #[test]
    fn the_longest_prefix_wins_and_the_first_file_keeps_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.txt",
            "192.0.2.0/24 ; wide\n2001:db8::/32 ; v6 wide\n",
        );
        let b = write(
            dir.path(),
            "b.txt",
            "192.0.2.128/25 ; narrow\n192.0.2.0/24 ; dup\n2001:db8:1::/48\n",
        );
        let lists = IpLists::open(&config(&[&a, &b], &[])).unwrap();
        let hit = |s| lists.blocked(ip(s)).unwrap();
        assert_eq!(
            (hit("192.0.2.200").list.as_ref(), hit("192.0.2.200").network),
            ("b.txt", net("192.0.2.128/25"))
        );
        assert_eq!(hit("192.0.2.5").comment.as_deref(), Some("wide"));
        assert_eq!(hit("2001:db8:1::9").network, net("2001:db8:1::/48"));
        assert_eq!(hit("2001:db8:2::9").network, net("2001:db8::/32"));
        assert!(lists.blocked(ip("2001:db9::1")).is_none());
        assert_eq!(lists.status()["block_networks"], 4);
    }

    #[test]
    fn the_allow_list_is_separate_from_the_block_list() {
        let dir = tempfile::tempdir().unwrap();
        let block = write(dir.path(), "block.txt", "203.0.113.0/24\n");
        let allow = write(
            dir.path(),
            "allow.txt",
            "# office NAT\n203.0.113.10\n2001:db8::/48 ; webmail\n",
        );
        let lists = IpLists::open(&config(&[&block], &[&allow])).unwrap();
        assert!(lists.allowed(ip("203.0.113.10")));
        assert!(lists.allowed(ip("::ffff:203.0.113.10")));
        assert!(lists.allowed(ip("2001:db8::25")));
        assert!(!lists.allowed(ip("203.0.113.11")));
        assert!(!lists.allowed(ip("2001:db8:1::25")));
        // blocked() answers for the block list alone; the engine checks allowed() first.
        assert!(lists.blocked(ip("203.0.113.10")).is_some());
        let s = lists.status();
        assert_eq!(
            (s["allow_networks"].clone(), s["allow_hits"].clone()),
            (json!(2), json!(3))
        );
        assert_eq!(s["files"][1]["kind"], "allow");
    }

    #[test]
    fn no_lists_match_nothing() {
        let lists = IpLists::empty();
        assert!(!lists.allowed(ip("192.0.2.1")));
        assert!(lists.blocked(ip("192.0.2.1")).is_none());
        assert!(lists.reload().is_empty());
        assert_eq!(lists.status()["files"], json!([]));
    }

    #[test]
    fn an_unreadable_file_is_an_error_at_start_and_kept_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.txt");
        let err = IpLists::open(&config(&[&missing], &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let a_dir = dir.path().join("subdir");
        std::fs::create_dir(&a_dir).unwrap();
        assert!(IpLists::open(&config(&[], &[&a_dir])).is_err());

        let block = write(dir.path(), "block.txt", "192.0.2.0/24\n");
        let lists = IpLists::open(&config(&[&block], &[])).unwrap();
        std::fs::remove_file(&block).unwrap();
        let r = lists.reload_if_changed();
        assert!(
            matches!(r.as_slice(), [Err(ListError::Read { .. })]),
            "{r:?}"
        );
        assert!(
            lists.blocked(ip("192.0.2.1")).is_some(),
            "old networks stay"
        );
        assert!(
            lists.reload_if_changed().is_empty(),
            "not retried while unchanged"
        );
        assert!(lists.status()["files"][0]["last_refusal"]["error"].is_string());

        write(dir.path(), "block.txt", "198.51.100.0/24\n");
        let r = lists.reload_if_changed();
        assert!(
            matches!(
                r.as_slice(),
                [Ok(ListReloadReport {
                    outcome: ListReloadOutcome::Reloaded {
                        networks: 1,
                        bad_lines: 0
                    },
                    ..
                })]
            ),
            "{r:?}"
        );
        assert!(lists.blocked(ip("192.0.2.1")).is_none());
        assert!(lists.blocked(ip("198.51.100.1")).is_some());
        assert!(lists.status()["files"][0]["last_refusal"].is_null());
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_and_the_networks_in_use_stay() {
        let dir = tempfile::tempdir().unwrap();
        let e = IpLists::open(&config(&[Path::new("/dev/zero")], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a character device"), "{e}");
        let e = IpLists::open(&config(&[dir.path()], &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a directory"), "{e}");
        let block = write(dir.path(), "block.txt", "192.0.2.0/24\n");
        let lists = IpLists::open(&config(&[&block], &[])).unwrap();
        std::fs::remove_file(&block).unwrap();
        nix::unistd::mkfifo(&block, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let r = lists.reload();
        let e = r[0].as_ref().unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        assert!(lists.blocked(ip("192.0.2.1")).is_some(), "kept");
    }

    #[test]
    fn reloads_replace_changed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let block = write(dir.path(), "block.txt", "192.0.2.0/24\n");
        let allow = write(dir.path(), "allow.txt", "198.51.100.1\n");
        let lists = IpLists::open(&config(&[&block], &[&allow])).unwrap();
        let r = lists.reload();
        assert!(
            r.iter().all(|r| matches!(
                r,
                Ok(ListReloadReport {
                    outcome: ListReloadOutcome::Unchanged,
                    ..
                })
            )),
            "{r:?}"
        );

        // Renamed into place.
        let tmp = write(
            dir.path(),
            "block.txt.new",
            "203.0.113.0/24\nbad line here\n",
        );
        std::fs::rename(&tmp, &block).unwrap();
        let r = lists.reload_if_changed();
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0].as_ref().unwrap().outcome,
            ListReloadOutcome::Reloaded {
                networks: 1,
                bad_lines: 1
            }
        );
        assert!(lists.blocked(ip("192.0.2.1")).is_none());
        assert!(lists.blocked(ip("203.0.113.1")).is_some());
        assert!(lists.allowed(ip("198.51.100.1")));
        let s = lists.status();
        assert_eq!(s["files"][0]["bad_lines"], 1);
        assert_eq!(
            s["files"][0]["bad_line_examples"],
            json!([format!(
                "{}:2: expected one network, got \"bad line here\"",
                block.display()
            )])
        );
        assert_eq!(s["files"][0]["reloads"], 1);

        // Rewritten in place.
        std::fs::write(&allow, "198.51.100.2\n").unwrap();
        let r = lists.reload();
        assert!(
            matches!(
                r[1],
                Ok(ListReloadReport {
                    outcome: ListReloadOutcome::Reloaded { .. },
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(!lists.allowed(ip("198.51.100.1")));
        assert!(lists.allowed(ip("198.51.100.2")));
    }

    #[test]
    fn a_large_list_answers_like_a_linear_scan() {
        let mut text = String::new();
        for i in 0..20_000u32 {
            // Networks of varying length, spread over the IPv4 space, some nested.
            let addr = Ipv4Net::new((i.wrapping_mul(2_654_435_761)).into(), 16 + (i % 17) as u8)
                .unwrap()
                .trunc();
            text.push_str(&format!("{addr} ; n{i}\n"));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "big.txt", &text);
        let lists = IpLists::open(&config(&[&path], &[])).unwrap();
        let nets: Vec<IpNet> = text
            .lines()
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        for i in 0..2_000u32 {
            let probe = IpAddr::V4(i.wrapping_mul(0x9E37_79B9).wrapping_add(i).into());
            let want = nets
                .iter()
                .filter(|n| n.contains(&probe))
                .max_by_key(|n| n.prefix_len())
                .copied();
            assert_eq!(lists.blocked(probe).map(|h| h.network), want, "{probe}");
        }
    }

    #[test]
    fn config_parses_and_validates() {
        let c: ListsConfig = toml::from_str("block = [\"/etc/access-oracle/drop.txt\"]").unwrap();
        assert_eq!((c.allow.len(), c.reload_check_secs), (0, 60));
        assert!(toml::from_str::<ListsConfig>("blocks = []").is_err());
        let mut p = Problems::default();
        c.validate(&mut p);
        assert!(p.is_empty());
        let bad = ListsConfig {
            block: vec!["drop.txt".into(), "/a".into()],
            allow: vec!["/a".into()],
            reload_check_secs: 100_000,
        };
        let mut p = Problems::default();
        bad.validate(&mut p);
        assert_eq!(
            p.list(),
            [
                "[lists] block must list absolute paths, got drop.txt",
                "[lists] /a is listed more than once",
                "[lists] reload_check_secs must be between 1 and 86400, got 100000",
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watcher_reloads_a_changed_list() {
        let dir = tempfile::tempdir().unwrap();
        let block = write(dir.path(), "block.txt", "192.0.2.0/24\n");
        let mut c = config(&[&block], &[]);
        c.reload_check_secs = 3600;
        let lists = Arc::new(IpLists::open(&c).unwrap());
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(watch(lists.clone(), rx));
        std::fs::write(&block, "198.51.100.0/24\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while lists.blocked(ip("198.51.100.1")).is_none() {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(lists.blocked(ip("192.0.2.1")).is_none());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}
