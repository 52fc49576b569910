//! Driving the real Exim for the demo: the shipped configuration, embedded in the
//! binary, written to a temporary directory and run with `exim -C ... -bh IP`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use base64::Engine as _;
use tokio::io::AsyncWriteExt;

/// The user Exim's SMTP processes run as on Debian.
pub const EXIM_USER: &str = "Debian-exim";

/// The password of the demo accounts.
pub const PASSWORD: &str = "s3cret";

/// SHA-512-crypt of [`PASSWORD`] (`openssl passwd -6 -salt exaccesstest1234 s3cret`).
const PASSWORD_HASH: &str = "$6$exaccesstest1234$bhifDZ6luWMjS1tMp2uIqt/Se9bcUNRUlQYZGjYtUGzlzPLdSRp77fe2TKsQKfNo8/eVqBq.O9Z5ShFQR63q.0";

/// The shipped Exim configuration: the monolithic example and the snippets it includes.
pub const EMBEDDED_CONFIG: &[(&str, &str)] = &[
    (
        "exim4.conf.example",
        include_str!("../../../../exim-config/exim4.conf.example"),
    ),
    (
        "access/macros.conf",
        include_str!("../../../../exim-config/access/macros.conf"),
    ),
    (
        "access/acl_verdict.conf",
        include_str!("../../../../exim-config/access/acl_verdict.conf"),
    ),
    (
        "access/acl_connect.conf",
        include_str!("../../../../exim-config/access/acl_connect.conf"),
    ),
    (
        "access/acl_mail.conf",
        include_str!("../../../../exim-config/access/acl_mail.conf"),
    ),
    (
        "access/acl_rcpt.conf",
        include_str!("../../../../exim-config/access/acl_rcpt.conf"),
    ),
    (
        "access/acl_data.conf",
        include_str!("../../../../exim-config/access/acl_data.conf"),
    ),
    (
        "access/acl_connect_readsocket.conf",
        include_str!("../../../../exim-config/access/acl_connect_readsocket.conf"),
    ),
    (
        "access/acl_mail_readsocket.conf",
        include_str!("../../../../exim-config/access/acl_mail_readsocket.conf"),
    ),
    (
        "access/acl_rcpt_readsocket.conf",
        include_str!("../../../../exim-config/access/acl_rcpt_readsocket.conf"),
    ),
    (
        "access/acl_data_readsocket.conf",
        include_str!("../../../../exim-config/access/acl_data_readsocket.conf"),
    ),
    (
        "access/auth_plaintext.conf",
        include_str!("../../../../exim-config/access/auth_plaintext.conf"),
    ),
];

/// Finds the library: the given path, next to this program (a cargo build puts both in
/// `target/release`), or the installed one.
pub fn find_library(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = given {
        candidates.push(p);
    } else {
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join("libexim_access.so"));
            candidates.push(dir.join("../release/libexim_access.so"));
        }
        candidates.push("/usr/lib/exim4/access/libexim_access.so".into());
    }
    for c in &candidates {
        if c.is_file() {
            return c
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", c.display()));
        }
    }
    bail!(
        "libexim_access.so not found (looked at {}); build it with `cargo build --release -p exim-dlfunc`",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Checks that Exim is installed and has `${dlfunc}`.
pub fn check_exim() -> anyhow::Result<()> {
    let out = std::process::Command::new("exim")
        .arg("-bV")
        .output()
        .context("cannot run exim: install exim4-daemon-heavy (scripts/setup-debian)")?;
    if !String::from_utf8_lossy(&out.stdout).contains("Expand_dlfunc") {
        bail!(
            "this Exim has no ${{dlfunc}} support (exim -bV lists no Expand_dlfunc): install exim4-daemon-heavy"
        );
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo runs `exim -C <its own config>`, which Exim allows only to root");
    }
    Ok(())
}

/// The demo's temporary directory, removed on drop unless kept.
pub struct DemoDir {
    path: PathBuf,
    keep: bool,
}

impl DemoDir {
    /// Creates the tree: config, spool and log (owned by Exim's user), passwd, oracle.
    pub fn create(keep: bool) -> anyhow::Result<DemoDir> {
        let path = std::env::temp_dir().join(format!("access-oracle-demo-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        let dir = DemoDir { path, keep };
        let p = &dir.path;
        for sub in ["", "access", "spool", "log", "oracle", "state"] {
            std::fs::create_dir_all(p.join(sub))?;
            std::fs::set_permissions(p.join(sub), std::fs::Permissions::from_mode(0o755))?;
        }
        if let Some(exim) = nix::unistd::User::from_name(EXIM_USER)? {
            for sub in ["spool", "log"] {
                std::os::unix::fs::chown(
                    p.join(sub),
                    Some(exim.uid.as_raw()),
                    Some(exim.gid.as_raw()),
                )?;
            }
        }
        for (name, text) in EMBEDDED_CONFIG {
            std::fs::write(p.join(name), text)?;
        }
        let passwd: String = ["alice", "bob"]
            .iter()
            .map(|u| format!("{u}:{PASSWORD_HASH}\n"))
            .collect();
        std::fs::write(p.join("passwd"), passwd)?;
        std::fs::set_permissions(p.join("passwd"), std::fs::Permissions::from_mode(0o644))?;
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An SMTP dialogue for `exim -bh`, one command per line.
pub struct Dialogue(Vec<String>);

impl Dialogue {
    /// EHLO, AUTH PLAIN with the given credentials, QUIT.
    pub fn auth(user: &str, password: &str) -> Dialogue {
        Dialogue(vec![
            "EHLO demo.example".into(),
            auth_plain(user, password),
            "QUIT".into(),
        ])
    }

    /// EHLO, AUTH, MAIL, `rcpts` RCPTs, QUIT.
    pub fn burst(user: &str, password: &str, rcpts: usize) -> Dialogue {
        let mut lines = vec![
            "EHLO demo.example".into(),
            auth_plain(user, password),
            format!("MAIL FROM:<{user}@demo.example>"),
        ];
        lines.extend((1..=rcpts).map(|i| format!("RCPT TO:<rcpt{i}@example.org>")));
        lines.push("QUIT".into());
        Dialogue(lines)
    }
}

fn auth_plain(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {token}")
}

/// Exim on the demo's copy of the shipped configuration.
pub struct DemoExim {
    args: Vec<String>,
}

impl DemoExim {
    /// Exim with the demo's paths as `-D` macros.
    pub fn new(dir: &DemoDir, lib: &Path, socket: &Path) -> anyhow::Result<DemoExim> {
        let p = dir.path();
        let mut args = vec![
            "-C".to_string(),
            p.join("exim4.conf.example").display().to_string(),
        ];
        for (name, value) in [
            ("ACCESS_CONFIG_DIR", p.join("access").display().to_string()),
            ("ACCESS_LIB", lib.display().to_string()),
            ("ACCESS_SOCKET", socket.display().to_string()),
            ("ACCESS_PASSWD_FILE", p.join("passwd").display().to_string()),
            ("SPOOLDIR", p.join("spool").display().to_string()),
            ("LOG_FILE_PATH", p.join("log/%slog").display().to_string()),
            ("AUTH_SERVER_ALLOW_NOTLS_PASSWORDS", "1".to_string()),
        ] {
            args.push(format!("-D{name}={value}"));
        }
        Ok(DemoExim { args })
    }

    /// Runs one `exim -bh ip` session and collects the SMTP replies.
    pub async fn session(&self, ip: &str, dialogue: &Dialogue) -> anyhow::Result<Transcript> {
        let mut child = tokio::process::Command::new("exim")
            .args(&self.args)
            .arg("-bh")
            .arg(ip)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run exim")?;
        let input: String = dialogue.0.iter().map(|l| format!("{l}\r\n")).collect();
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).await?;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() && out.status.code().is_none() {
            bail!("exim died: {}", out.status);
        }
        Ok(Transcript::parse(
            &String::from_utf8_lossy(&out.stdout),
            &dialogue.0,
        ))
    }
}

/// The final reply line to each command of a dialogue.
pub struct Transcript {
    replies: Vec<(String, String)>,
}

impl Transcript {
    /// Pairs Exim's replies with the commands: the greeting first, then one per command.
    fn parse(stdout: &str, commands: &[String]) -> Transcript {
        let finals: Vec<String> = stdout
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| {
                l.len() >= 4
                    && l.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                    && l.as_bytes()[3] == b' '
            })
            .map(str::to_string)
            .collect();
        let replies = commands
            .iter()
            .zip(finals.into_iter().skip(1))
            .map(|(c, r)| (c.clone(), r))
            .collect();
        Transcript { replies }
    }

    /// The reply to AUTH.
    pub fn auth_reply(&self) -> String {
        self.replies
            .iter()
            .find(|(c, _)| c.starts_with("AUTH"))
            .map_or_else(|| "(no reply)".into(), |(_, r)| r.clone())
    }

    /// The replies to the RCPTs, in order.
    pub fn rcpt_replies(&self) -> Vec<String> {
        self.replies
            .iter()
            .filter(|(c, _)| c.starts_with("RCPT"))
            .map(|(_, r)| r.clone())
            .collect()
    }
}
