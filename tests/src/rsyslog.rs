//! A real rsyslogd from Debian (`rsyslog`, `rsyslog-gnutls`) as the syslog sink's
//! receiver, run by the test as its own process: `rsyslogd -n -f CONF -i PIDFILE` with
//! its own work directory, no local inputs (no `imuxsock`, no `imklog`), only loopback
//! listeners on free ports:
//!
//! | [`Input`] | listener |
//! |---|---|
//! | `Tls` | `imtcp` with the GnuTLS driver, `AuthMode="anon"` (clients need no certificate) |
//! | `TlsClientCert` | `imtcp` with GnuTLS, `AuthMode="x509/certvalid"` (a client certificate the test CA signed) |
//! | `Tcp` | plain `imtcp` (octet counting) |
//! | `Udp` | `imudp` |
//!
//! Both TLS listeners present the [`TestCa`]'s server certificate. Each input writes to
//! its own file, one JSON object per message built by rsyslog itself
//! ([`Received`]): the header fields as rsyslog's RFC 5424 parser read them, the raw
//! message, and the structured data as `mmpstrucdata` took it apart (escapes undone).
//! A test thus sees what a real receiver made of the sink's bytes.
//!
//! [`Rsyslog::start`] returns once each listener is bound by this rsyslogd (its socket
//! inodes looked up in `/proc`, polled), not after a sleep. Drop stops it (SIGTERM,
//! SIGKILL after a grace period) and prints its output when the test is failing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::process;
use crate::tlsca::TestCa;
use crate::world::World;

/// rsyslogd as Debian installs it.
const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// How long rsyslogd may take to bind its listeners.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// How long a SIGTERMed rsyslogd may take to exit.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One of rsyslogd's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// TLS (RFC 5425), no client certificate asked.
    Tls,
    /// TLS, a client certificate signed by the test CA required.
    TlsClientCert,
    /// Plain TCP, octet-counted frames (RFC 6587).
    Tcp,
    /// UDP datagrams (RFC 5426).
    Udp,
}

impl Input {
    /// Every listener.
    pub const ALL: [Input; 4] = [Input::Tls, Input::TlsClientCert, Input::Tcp, Input::Udp];

    fn name(self) -> &'static str {
        match self {
            Input::Tls => "tls",
            Input::TlsClientCert => "tls-client-cert",
            Input::Tcp => "tcp",
            Input::Udp => "udp",
        }
    }
}

/// One message as rsyslog received and parsed it.
#[derive(Debug, Clone)]
pub struct Received {
    /// PRI, as a number.
    pub pri: u16,
    /// HOSTNAME.
    pub hostname: String,
    /// APP-NAME.
    pub app_name: String,
    /// PROCID.
    pub procid: String,
    /// MSGID.
    pub msgid: String,
    /// TIMESTAMP, as rsyslog writes it back (RFC 3339).
    pub timestamp: String,
    /// STRUCTURED-DATA as it came (escapes kept).
    pub structured_data: String,
    /// MSG.
    pub msg: String,
    /// The whole message as it came (without the octet count).
    pub raw: String,
    /// The structured data taken apart by `mmpstrucdata`:
    /// `{"alert@32473": {"rule": "...", ...}}`, values unescaped.
    pub sd: Value,
}

impl Received {
    /// The parameter `name` of the element `sd_id`, unescaped.
    pub fn param(&self, sd_id: &str, name: &str) -> Option<&str> {
        self.sd.get(sd_id)?.get(name)?.as_str()
    }
}

/// A running rsyslogd.
pub struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    ports: [u16; 4],
}

impl Rsyslog {
    /// Starts rsyslogd in `<world>/rsyslog` with the server certificate of `ca`, and
    /// waits until every listener is bound.
    pub fn start(world: &World, ca: &TestCa) -> Rsyslog {
        let dir = world.path("rsyslog");
        fs::create_dir_all(dir.join("work")).expect("create rsyslog's directories");
        let mut last = String::new();
        // A port found free may be taken by a parallel test before rsyslogd binds it:
        // then try other ports.
        for _ in 0..5 {
            let ports = [
                crate::exim::free_port(),
                crate::exim::free_port(),
                crate::exim::free_port(),
                free_udp_port(),
            ];
            let mut r = Rsyslog {
                child: None,
                dir: dir.clone(),
                ports,
            };
            match r.spawn(ca) {
                Ok(()) => return r,
                Err(why) => last = why,
            }
            r.stop();
        }
        panic!("rsyslogd did not start:\n{last}");
    }

    /// The `host:port` of a listener, for a sink's `address`.
    pub fn address(&self, input: Input) -> String {
        format!("127.0.0.1:{}", self.port(input))
    }

    fn port(&self, input: Input) -> u16 {
        self.ports[Input::ALL.iter().position(|i| *i == input).unwrap_or(0)]
    }

    fn output(&self, input: Input) -> PathBuf {
        self.dir.join(format!("{}.jsonl", input.name()))
    }

    /// What rsyslogd wrote to stdout and stderr.
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    /// The messages one listener received so far (complete lines of its file).
    pub fn received(&self, input: Input) -> Vec<Received> {
        let text = fs::read_to_string(self.output(input)).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_line)
            .collect()
    }

    /// Waits (bounded) until one listener has received at least `count` messages, then
    /// returns them all.
    pub fn wait_for(&self, input: Input, count: usize, deadline: Duration) -> Vec<Received> {
        let until = Instant::now() + deadline;
        loop {
            let got = self.received(input);
            if got.len() >= count || Instant::now() >= until {
                return got;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self, ca: &TestCa) -> Result<(), String> {
        let conf = self.dir.join("rsyslog.conf");
        fs::write(&conf, self.config(ca)).expect("write rsyslog.conf");
        let pidfile = self.dir.join("rsyslogd.pid");
        let _ = fs::remove_file(&pidfile);
        let log = fs::File::create(self.dir.join("rsyslogd.log")).expect("rsyslogd's log");
        let mut cmd = Command::new(RSYSLOGD);
        cmd.arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let command = process::describe(&cmd);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {command}: {e} (install rsyslog and rsyslog-gnutls: scripts/setup-debian)")
        });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = process::reap_if_exited(&mut self.child) {
                return Err(format!(
                    "{command} exited with {status}; its output:\n{}",
                    self.log_text()
                ));
            }
            let bound = Input::ALL
                .iter()
                .all(|i| bound_by(pid, *i == Input::Udp, self.port(*i)));
            if bound {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{command} did not bind ports {:?} within {START_DEADLINE:?}; its output:\n{}",
                    self.ports,
                    self.log_text()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn config(&self, ca: &TestCa) -> String {
        let q = |p: &Path| p.display().to_string();
        let mut text = format!(
            r#"# rsyslogd for one test: only loopback listeners, one file per listener.
global(
  workDirectory="{work}"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}"
  maxMessageSize="64k"
)
module(load="imtcp" MaxSessions="200")
module(load="imudp")
module(load="mmpstrucdata")
template(name="record" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="raw" name="rawmsg" format="jsonf")
  property(outname="sd" name="$!rfc5424-sd" format="jsonf")
}}
"#,
            work = q(&self.dir.join("work")),
            ca = q(&ca.ca),
            cert = q(&ca.server_cert),
            key = q(&ca.server_key),
        );
        for input in Input::ALL {
            text.push_str(&format!(
                "ruleset(name=\"{name}\") {{\n  action(type=\"mmpstrucdata\")\n  \
                 action(type=\"omfile\" file=\"{file}\" template=\"record\")\n}}\n",
                name = input.name(),
                file = q(&self.output(input)),
            ));
            let port = self.port(input);
            let listener = match input {
                Input::Tls => format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"tls\" \
                     StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")"
                ),
                Input::TlsClientCert => format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"tls-client-cert\" \
                     StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" \
                     StreamDriver.AuthMode=\"x509/certvalid\")"
                ),
                Input::Tcp => format!(
                    "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"tcp\")"
                ),
                Input::Udp => format!(
                    "input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"udp\")"
                ),
            };
            text.push_str(&listener);
            text.push('\n');
        }
        text
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let (_, killed) = process::wait_until(&mut child, Instant::now() + STOP_GRACE);
        if killed {
            eprintln!("rsyslogd ignored SIGTERM for {STOP_GRACE:?} and was killed");
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("--- rsyslogd output ---\n{}", self.log_text());
        }
    }
}

/// A loopback UDP port free now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind(("127.0.0.1", 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback UDP port")
}

/// Whether process `pid` holds a socket bound to 127.0.0.1:`port` (TCP listening, or
/// UDP): the socket's inode from `/proc/net/{tcp,udp}` among the process's descriptors.
fn bound_by(pid: u32, udp: bool, port: u16) -> bool {
    let table = if udp {
        "/proc/net/udp"
    } else {
        "/proc/net/tcp"
    };
    let Ok(text) = fs::read_to_string(table) else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    // st: 0A is LISTEN for TCP, 07 is an unconnected UDP socket.
    let state = if udp { "07" } else { "0A" };
    let inodes: Vec<String> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == state).then(|| f[9].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok).any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            inodes.iter().any(|i| t == format!("socket:[{i}]"))
        })
    })
}

/// One line of an output file.
fn parse_line(line: &str) -> Received {
    let v: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("rsyslog wrote a line that is not JSON ({e}): {line}"));
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    // mmpstrucdata's tree comes as JSON text inside the string ("" without SD).
    let sd = match v["sd"].as_str() {
        Some(t) if !t.trim().is_empty() => serde_json::from_str(t)
            .unwrap_or_else(|e| panic!("rsyslog's structured data is not JSON ({e}): {t}")),
        _ => Value::Null,
    };
    Received {
        pri: s("pri").parse().unwrap_or(u16::MAX),
        hostname: s("hostname"),
        app_name: s("app_name"),
        procid: s("procid"),
        msgid: s("msgid"),
        timestamp: s("timestamp"),
        structured_data: s("structured_data"),
        msg: s("msg"),
        raw: s("raw"),
        sd,
    }
}
