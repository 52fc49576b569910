//! Hostile-client tests: config.
//!
//! What a careless operator (or a local user who can write one of the files) sets, run
//! through the real binary: `access-oracle check-config` and `access-oracle serve` must
//! refuse the same things with the same message, quickly and without growing (a path to
//! `/dev/zero`, a FIFO, a directory, an oversized file, a short key, a socket every local
//! user can connect to); what the oracle creates is private under a umask of 022; and a
//! password Dovecot writes into its log never reaches the dead-letter file or `parse`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use exim_access_e2e::process::{self, Finished};
use exim_access_e2e::{Dovecot, DovecotSetup, World, paths};

/// How long a refusal may take: it must come at once, not after reading gigabytes.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(15);

/// A TOML string for a path.
fn toml_path(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).expect("a path as a string")
}

/// A config whose sockets live in the world, with `extra` appended.
fn config(world: &World, name: &str, extra: &str) -> PathBuf {
    let path = world.path(name);
    let text = format!(
        "[server]\n\
         exim_socket = {}\n\
         admin_socket = {}\n\
         shutdown_grace_secs = 1\n\
         {extra}\n",
        toml_path(&world.oracle_dir().join("exim.sock")),
        toml_path(&world.oracle_dir().join("admin.sock")),
    );
    fs::write(&path, text).expect("write a config");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod the config");
    path
}

fn check_config(config: &Path) -> Finished {
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("check-config").arg(config);
    process::run(cmd, b"", REFUSAL_DEADLINE)
}

fn serve(world: &World, config: &Path) -> Finished {
    let mut cmd = Command::new(paths::oracle_bin());
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(world.state_dir());
    process::run(cmd, b"", REFUSAL_DEADLINE)
}

/// Both commands fail, at once, without a crash, and say every one of `needles`.
fn both_refuse(world: &World, config: &Path, needles: &[&str]) {
    for (what, run) in [
        ("check-config", check_config(config)),
        ("serve", serve(world, config)),
    ] {
        let err = run.stderr_text();
        assert!(
            !run.timed_out && run.signal().is_none() && !run.status.success(),
            "{what} did not refuse cleanly within {REFUSAL_DEADLINE:?} ({}, {:?}):\n{err}",
            run.status,
            run.elapsed
        );
        for needle in needles {
            assert!(
                err.contains(needle),
                "{what}: {needle:?} missing in:\n{err}"
            );
        }
    }
}

/// A sparse file of `len` bytes (no disk used), mode 0600.
fn sparse(path: &Path, len: u64) {
    let f = fs::File::create(path).expect("create a sparse file");
    f.set_len(len).expect("size the sparse file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn fifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// The bad targets for one setting: `/dev/zero`, a FIFO, a directory and a file just
/// over `max_bytes`, with what each is called in the refusal.
fn bad_targets(world: &World, tag: &str, max_bytes: u64) -> Vec<(PathBuf, String)> {
    let dir = world.path(&format!("{tag}-dir"));
    fs::create_dir(&dir).expect("create a directory");
    let pipe = world.path(&format!("{tag}.fifo"));
    fifo(&pipe);
    let big = world.path(&format!("{tag}.big"));
    sparse(&big, max_bytes + 1);
    vec![
        (PathBuf::from("/dev/zero"), "a character device".into()),
        (pipe, "a FIFO".into()),
        (dir, "a directory".into()),
        (big, format!("is {} bytes", max_bytes + 1)),
    ]
}

#[test]
fn files_that_are_not_regular_or_too_big_are_refused_by_check_config_and_serve() {
    let world = World::new(&[]);
    // key, the TOML that names the file, the most read of it.
    type Setting = (&'static str, fn(&str) -> String, u64);
    let settings: [Setting; 6] = [
        (
            "[geoip] city_db",
            |p| format!("[geoip]\ncity_db = {p}\nmax_db_mib = 1\n"),
            1 << 20,
        ),
        (
            "[geoip] asn_db",
            |p| format!("[geoip]\nasn_db = {p}\nmax_db_mib = 1\n"),
            1 << 20,
        ),
        (
            "[lists] block",
            |p| format!("[lists]\nblock = [{p}]\n"),
            64 << 20,
        ),
        (
            "[lists] allow",
            |p| format!("[lists]\nallow = [{p}]\n"),
            64 << 20,
        ),
        (
            "[rules.disabled_credentials] file",
            |p| format!("[rules.disabled_credentials]\nfile = {p}\n"),
            64 << 20,
        ),
        (
            "[audit] key_file",
            |p| format!("[audit]\nkey_file = {p}\n"),
            64 << 10,
        ),
    ];
    for (i, (key, toml, max)) in settings.iter().enumerate() {
        for (path, what) in bad_targets(&world, &format!("s{i}"), *max) {
            let started = Instant::now();
            let cfg = config(&world, &format!("c{i}.toml"), &toml(&toml_path(&path)));
            both_refuse(&world, &cfg, &[key, &path.display().to_string(), &what]);
            assert!(
                started.elapsed() < REFUSAL_DEADLINE,
                "{key} {what}: too slow"
            );
        }
    }
    // The policy endpoint's key file: its own checks name the setting.
    for (path, what) in bad_targets(&world, "policy", 4096) {
        let cfg = config(
            &world,
            "policy.toml",
            &format!(
                "[policy]\nlisten = \"127.0.0.1:1\"\napi_key_file = {}\n",
                toml_path(&path)
            ),
        );
        both_refuse(&world, &cfg, &["policy.api_key_file", &what]);
    }
}

#[test]
fn key_files_serve_refuses_are_refused_by_check_config_too() {
    let world = World::new(&[]);
    let write_key = |name: &str, bytes: &[u8]| {
        let p = world.path(name);
        fs::write(&p, bytes).expect("write a key");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    };
    for (name, bytes, why) in [
        (
            "five.key",
            &b"12345"[..],
            "must be 16 to 1024 bytes long, is 5",
        ),
        ("empty.key", b"", "must be 16 to 1024 bytes long, is 0"),
        (
            "two-lines.key",
            b"0123456789abcdef0123\n0123456789abcdef0123\n",
            "must be printable ASCII",
        ),
    ] {
        let key = write_key(name, bytes);
        let cfg = config(
            &world,
            "policy.toml",
            &format!(
                "[policy]\nlisten = \"127.0.0.1:1\"\napi_key_file = {}\n",
                toml_path(&key)
            ),
        );
        both_refuse(&world, &cfg, &["policy.api_key_file", why]);
    }
    for (name, bytes, why) in [
        (
            "audit-five.key",
            &b"12345"[..],
            "has 5 bytes; it needs at least 32",
        ),
        ("audit-empty.key", b"", "has 0 bytes; it needs at least 32"),
    ] {
        let key = write_key(name, bytes);
        let cfg = config(
            &world,
            "audit.toml",
            &format!("[audit]\nkey_file = {}\n", toml_path(&key)),
        );
        both_refuse(&world, &cfg, &["[audit] key_file", why]);
    }
}

#[test]
fn sockets_every_local_user_can_reach_are_refused_unless_allowed() {
    let world = World::new(&[]);
    let cfg = config(&world, "exim.toml", "exim_socket_mode = \"0666\"\n");
    both_refuse(
        &world,
        &cfg,
        &[
            "server.exim_socket_mode 0666 lets every local user connect",
            "hold any account",
            "exim_socket_allow_everyone",
        ],
    );
    let cfg = config(&world, "admin.toml", "admin_socket_mode = \"0777\"\n");
    both_refuse(
        &world,
        &cfg,
        &["server.admin_socket_mode 0777 lets every local user connect"],
    );
    // The explicit override: accepted, with a warning.
    let cfg = config(
        &world,
        "allowed.toml",
        "exim_socket_mode = \"0666\"\nexim_socket_allow_everyone = true\n",
    );
    let run = check_config(&cfg);
    run.assert_success();
    assert!(
        run.stderr_text()
            .contains("warning: server.exim_socket_mode 0666"),
        "{}",
        run.stderr_text()
    );
}

#[test]
fn world_writable_config_and_data_files_are_refused() {
    let world = World::new(&[]);
    let cfg = config(&world, "open.toml", "");
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o666)).expect("chmod");
    both_refuse(&world, &cfg, &["world-writable"]);
    let list = world.path("block.txt");
    fs::write(&list, "192.0.2.0/24\n").expect("write a list");
    fs::set_permissions(&list, fs::Permissions::from_mode(0o666)).expect("chmod");
    let cfg = config(
        &world,
        "list.toml",
        &format!("[lists]\nblock = [{}]\n", toml_path(&list)),
    );
    both_refuse(
        &world,
        &cfg,
        &["[lists] block", "writable by every local user"],
    );
    // A state directory every local user may write.
    let open_state = world.path("open-state");
    fs::create_dir(&open_state).expect("mkdir");
    fs::set_permissions(&open_state, fs::Permissions::from_mode(0o777)).expect("chmod");
    let cfg = config(
        &world,
        "state.toml",
        &format!("state_dir = {}\n", toml_path(&open_state)),
    );
    let run = check_config(&cfg);
    assert!(!run.status.success(), "{}", run.stderr_text());
    assert!(
        run.stderr_text()
            .contains("is writable by every local user"),
        "{}",
        run.stderr_text()
    );
}

/// Waits until `socket` answers `ping`.
fn wait_for_ping(socket: &Path, child: &mut std::process::Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "serve exited with {status}:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if exim_access_e2e::oracle::request(socket, "ping", Duration::from_secs(1)).as_deref()
            == Some("pong")
        {
            return;
        }
        assert!(Instant::now() < deadline, "serve did not answer ping");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops `child` with SIGTERM and waits (bounded).
fn stop(child: &mut std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let (status, killed) = process::wait_until(child, Instant::now() + Duration::from_secs(15));
    assert!(!killed, "serve did not stop on SIGTERM ({status})");
}

/// Every directory and file under `dir`, with its mode.
fn modes(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for entry in fs::read_dir(dir).expect("read a directory") {
        let entry = entry.expect("a directory entry");
        let meta = entry.metadata().expect("metadata");
        out.push((entry.path(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            modes(&entry.path(), out);
        }
    }
}

#[test]
fn state_is_private_under_a_umask_of_022() {
    let world = World::new(&[]);
    let log_file = world.path("source.log");
    fs::write(&log_file, "").expect("create the followed log");
    let state = world.path("fresh/state");
    let cfg = config(
        &world,
        "state.toml",
        &format!(
            "state_dir = {}\n\
             [[sources]]\npath = {}\nformat = \"exim\"\nstart_at = \"beginning\"\n",
            toml_path(&state),
            toml_path(&log_file)
        ),
    );
    let out = world.path("serve.log");
    let log = fs::File::create(&out).expect("create the serve log");
    // A shell sets the umask most systems start daemons with outside systemd.
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\" serve --config \"$1\"")
        .arg(paths::oracle_bin())
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start serve");
    let socket = world.oracle_dir().join("exim.sock");
    wait_for_ping(&socket, &mut child, &out);
    // Alerts: five failures hold an account; a dead letter from the followed log.
    for _ in 0..5 {
        exim_access_e2e::oracle::request(
            &socket,
            "auth user=alice ip=192.0.2.7 result=fail",
            Duration::from_secs(5),
        );
    }
    fs::write(
        &log_file,
        "2026-11-03 10:00:00 something odd: Password mismatch for nobody we know\n",
    )
    .expect("append to the followed log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(state.join("alerts.jsonl").exists() && state.join("dead-letters.log").exists()) {
        assert!(
            Instant::now() < deadline,
            "no alerts or dead letters written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&mut child);
    let mut all = Vec::new();
    modes(&state, &mut all);
    for name in ["alerts.jsonl", "dead-letters.log", "audit.key", "audit"] {
        assert!(
            all.iter()
                .any(|(p, _)| p.file_name().is_some_and(|n| n == name)),
            "{name} missing in {all:?}"
        );
    }
    let parent = fs::metadata(world.path("fresh"))
        .expect("the parent")
        .permissions()
        .mode();
    assert_eq!(parent & 0o777, 0o700, "created parent directory");
    let top = fs::metadata(&state)
        .expect("the state dir")
        .permissions()
        .mode();
    assert_eq!(top & 0o777, 0o700, "the state directory");
    for (path, mode) in &all {
        assert_eq!(mode & 0o077, 0, "{} is mode {mode:04o}", path.display());
    }
}

#[test]
fn an_existing_state_dir_every_user_can_read_is_tightened_and_said() {
    let world = World::new(&[]);
    // The world's state directory is 0755, as an earlier version left it.
    let cfg = config(&world, "plain.toml", "");
    let out = world.path("serve.log");
    let log = fs::File::create(&out).expect("create the serve log");
    let mut child = Command::new(paths::oracle_bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(world.state_dir())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start serve");
    wait_for_ping(&world.oracle_dir().join("exim.sock"), &mut child, &out);
    stop(&mut child);
    let mode = fs::metadata(world.state_dir())
        .expect("state")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750, "other users' access removed, the group's kept");
    let text = fs::read_to_string(&out).expect("the serve log");
    assert!(
        text.contains("was mode 0755, readable by every local user; changed to 0750"),
        "{text}"
    );
    // check-config says so before.
    fs::set_permissions(world.state_dir(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = config(
        &world,
        "with-state.toml",
        &format!("state_dir = {}\n", toml_path(&world.state_dir())),
    );
    let run = check_config(&cfg);
    run.assert_success();
    assert!(
        run.stderr_text()
            .contains("serve removes their access at start"),
        "{}",
        run.stderr_text()
    );
}

/// A wrong password that holds what a naive redaction would stop at.
const WRONG_PASSWORD: &str = "Tr0ub4dor)(x given";

#[test]
fn passwords_dovecot_logs_never_reach_dead_letters_or_parse_output() {
    let world = World::new(&[]);
    let dovecot = Dovecot::start_with_extra(
        &world,
        &["alice"],
        &DovecotSetup::default(),
        "auth_verbose_passwords = plain\n",
    );
    for user in ["alice", "nobody-here"] {
        let mut imap = dovecot.imap();
        let reply = imap.login(user, WRONG_PASSWORD);
        assert!(!reply.is_ok(), "a wrong password was accepted");
    }
    let logged = dovecot.wait_for_log("given password: ", 2, Duration::from_secs(20));
    assert!(
        logged.contains(WRONG_PASSWORD),
        "Dovecot did not log the password:\n{logged}"
    );

    // `parse` read as Exim's log: every Dovecot line is unknown, the failures dead letters.
    let dead = world.path("parse-dead-letters.log");
    for format in ["exim", "dovecot", "auto"] {
        let mut cmd = Command::new(paths::oracle_bin());
        cmd.arg("parse")
            .arg("--format")
            .arg(format)
            .arg("--dead-letters")
            .arg(&dead)
            .arg(dovecot.log_path());
        let run = process::run(cmd, b"", Duration::from_secs(30));
        run.assert_success();
        for text in [run.stdout_text(), run.stderr_text()] {
            assert!(
                !text.contains("Tr0ub4dor"),
                "{format}: password in the output:\n{text}"
            );
        }
    }
    let dead_text = fs::read_to_string(&dead).expect("dead letters written");
    assert!(
        dead_text.contains("given password: [redacted]"),
        "the failures were dead-lettered: {dead_text}"
    );
    assert!(
        !dead_text.contains("Tr0ub4dor"),
        "password in dead letters:\n{dead_text}"
    );

    // serve following the same log as Exim's: the dead-letter file in the state.
    let cfg = config(
        &world,
        "follow.toml",
        &format!(
            "[[sources]]\npath = {}\nformat = \"exim\"\nstart_at = \"beginning\"\n",
            toml_path(&dovecot.log_path())
        ),
    );
    let out = world.path("serve.log");
    let log = fs::File::create(&out).expect("create the serve log");
    let mut child = Command::new(paths::oracle_bin())
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(world.state_dir())
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("start serve");
    wait_for_ping(&world.oracle_dir().join("exim.sock"), &mut child, &out);
    let dead = world.state_dir().join("dead-letters.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(&dead).unwrap_or_default();
        if text.matches("given password: [redacted]").count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letters from the followed log: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&mut child);
    for file in [dead, out, world.state_dir().join("alerts.jsonl")] {
        let text = fs::read_to_string(&file).unwrap_or_default();
        assert!(
            !text.contains("Tr0ub4dor"),
            "password in {}:\n{text}",
            file.display()
        );
    }
}

#[test]
fn every_known_password_wording_is_redacted_through_parse() {
    let world = World::new(&[]);
    let lines = [
        "Nov  3 10:00:00 mx dovecot: auth: Info: passwd-file(alice,192.0.2.1,<abc>): Password mismatch (given password: Tr0ub4dor)(x)",
        "Nov  3 10:00:00 mx dovecot: auth: Info: sql(bob,192.0.2.1): unknown user (given password: Tr0ub4dor x)",
        "Nov  3 10:00:00 mx dovecot: auth: Info: sql(bob,192.0.2.1): Password mismatch (SHA1 of given password: Tr0ub4dor5baa61e4)",
        "Nov  3 10:00:00 mx dovecot: auth: Info: ldap(carol,192.0.2.1): invalid credentials (given password: Tr0ub4dor)",
        "Nov  3 10:00:00 mx dovecot: auth: Info: pam(dave,192.0.2.1): pam_authenticate() failed: Authentication failure (password mismatch?) (given password: Tr0ub4dor)",
        "Nov  3 10:00:00 mx dovecot: auth: Info: checkpassword(erin,192.0.2.1): Login failed (Given password: Tr0ub4dor)",
        "Nov  3 10:00:00 mx dovecot: auth: Error: Password mismatch (given password: Tr0ub4dor)",
        "2026-11-03 10:00:00 SMTP protocol synchronization error (input sent without waiting for greeting): rejected connection from H=[192.0.2.1] input=\"AUTH PLAIN Tr0ub4dorAGFsaWNl\\r\\n\"",
        "2026-11-03 10:00:00 SMTP syntax error in \"AUTH LOGIN Tr0ub4dorYWxpY2U=\" H=[192.0.2.1] unrecognized command",
    ];
    let file = world.path("wordings.log");
    fs::write(&file, lines.join("\n") + "\n").expect("write the log");
    let dead = world.path("dead.log");
    for format in ["auto", "exim", "dovecot"] {
        let mut cmd = Command::new(paths::oracle_bin());
        cmd.arg("parse")
            .arg("--format")
            .arg(format)
            .arg("--dead-letters")
            .arg(&dead)
            .arg(&file);
        let run = process::run(cmd, b"", Duration::from_secs(30));
        run.assert_success();
        let out = run.stdout_text();
        assert!(
            !out.contains("Tr0ub4dor"),
            "{format}: password in events:\n{out}"
        );
        assert!(!run.stderr_text().contains("Tr0ub4dor"), "{format}: stderr");
    }
    let text = fs::read_to_string(&dead).expect("dead letters");
    assert!(
        !text.contains("Tr0ub4dor"),
        "password in dead letters:\n{text}"
    );
    assert!(
        text.contains("[redacted]"),
        "nothing dead-lettered:\n{text}"
    );
}
