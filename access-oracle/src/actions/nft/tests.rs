//! The firewall's config checks and the exact nft runs it makes; the process handling
//! (timeout, standard error) with a shell standing for a program. Applying to a real
//! nftables set is tested end to end in `tests/tests/firewall.rs`, in a network
//! namespace the test creates.

use std::time::Instant;

use super::*;

fn problems(config: &FirewallConfig) -> Vec<String> {
    let mut p = Vec::new();
    config.validate(&mut p);
    p
}

fn parse(toml_text: &str) -> Result<FirewallConfig, toml::de::Error> {
    toml::from_str(toml_text)
}

fn with_sets(v4: &str, v6: Option<&str>) -> FirewallConfig {
    FirewallConfig {
        nft_set: v4.into(),
        nft_set_v6: v6.map(String::from),
        ..FirewallConfig::default()
    }
}

fn block(net: &str, until: Secs) -> Step {
    Step::Block {
        net: net.parse().unwrap(),
        until,
        by: "password_spraying".into(),
        reason: "many accounts".into(),
    }
}

fn unblock(net: &str) -> Step {
    Step::Unblock {
        net: net.parse().unwrap(),
    }
}

#[test]
fn an_empty_table_takes_the_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config, FirewallConfig::default());
    assert!(problems(&config).is_empty(), "{:?}", problems(&config));
    let fw = config.firewall().unwrap();
    assert_eq!(fw.v4.to_string(), "inet access_oracle blocked");
    assert_eq!(fw.v6.to_string(), "inet access_oracle blocked_v6");
    assert!(!fw.create);
    assert_eq!(fw.nft, PathBuf::from("/usr/sbin/nft"));
    assert_eq!(fw.timeout, Duration::from_millis(5000));
    assert_eq!(config.name(), "firewall");
    assert!(fw.expires_by_itself());
}

#[test]
fn every_key_is_read_and_an_unknown_one_refused() {
    let config = parse(
        r#"
        nft_set = "ip filter bad_v4"
        nft_set_v6 = "ip6 filter6 bad"
        create = true
        nft = "/usr/local/sbin/nft"
        timeout_ms = 900
        "#,
    )
    .unwrap();
    assert!(problems(&config).is_empty(), "{:?}", problems(&config));
    let fw = config.firewall().unwrap();
    assert_eq!(fw.v4.to_string(), "ip filter bad_v4");
    assert_eq!(fw.v6.to_string(), "ip6 filter6 bad");
    assert!(fw.create);
    assert_eq!(fw.timeout, Duration::from_millis(900));
    let e = parse("nft_sets = \"inet a b\"\n").unwrap_err().to_string();
    assert!(e.contains("unknown field `nft_sets`"), "{e}");
}

#[test]
fn set_names_are_three_checked_words() {
    for (text, expected) in [
        ("inet access_oracle", "is not \"FAMILY TABLE SET\""),
        ("inet a b c", "is not \"FAMILY TABLE SET\""),
        ("", "is not \"FAMILY TABLE SET\""),
        ("bridge a b", "family \"bridge\" must be ip, ip6 or inet"),
        (
            "inet a-b c",
            "table name \"a-b\" must be letters, digits and _",
        ),
        ("inet a b;flush", "set name \"b;flush\" must be letters"),
        ("inet 1a b", "table name \"1a\" must be letters"),
        ("inet a {b}", "set name \"{b}\" must be letters"),
        ("inet a b\u{1b}[2J", "set name \"b\\x1b[2J\""),
    ] {
        let p = problems(&with_sets(text, Some("inet t v6")));
        assert_eq!(p.len(), 1, "{text:?}: {p:?}");
        assert!(p[0].starts_with("nft_set: "), "{text:?}: {p:?}");
        assert!(p[0].contains(expected), "{text:?}: {p:?}");
        assert!(!p[0].contains('\u{1b}'), "escaped: {p:?}");
    }
    // Blanks between the words are any whitespace; a name of 255 is the longest.
    let long = "t".repeat(255);
    let config = with_sets(&format!("  ip6\t{long} s "), None);
    let p = problems(&config);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("ip6 table, whose rules never see an IPv4 packet"),
        "{p:?}"
    );
    assert!(problems(&with_sets(&format!("inet {long} s"), None)).is_empty());
    let p = problems(&with_sets(&format!("inet t{long} s"), None));
    assert!(p[0].contains("at most 255"), "{p:?}");
}

#[test]
fn the_v6_set_is_the_v4_set_with_v6_added_unless_named() {
    let fw = with_sets("ip6 t s", Some("inet t s")).firewall();
    assert!(fw.is_err(), "ip6 for IPv4 refused");
    let fw = with_sets("ip filter drop_me", None).firewall();
    // The default v6 set is in an ip table too: refused with its name.
    let p = fw.unwrap_err();
    assert_eq!(
        p,
        [
            "nft_set_v6 ip filter drop_me_v6 is in an ip table, whose rules never see an IPv6 packet: use inet or ip6"
        ]
    );
    let fw = with_sets("ip filter drop_me", Some("ip6 filter drop_me"))
        .firewall()
        .unwrap();
    assert_eq!(fw.v6.to_string(), "ip6 filter drop_me");
    let p = problems(&with_sets("inet t s", Some("inet t s")));
    assert_eq!(
        p,
        ["nft_set and nft_set_v6 are both inet t s: a set holds one address type, IPv4 or IPv6"]
    );
    // A v4 name of 255 leaves no room for _v6.
    let long = "s".repeat(255);
    let p = problems(&with_sets(&format!("inet t {long}"), None));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("nft_set_v6 (nft_set's name with _v6): set name"),
        "{p:?}"
    );
    // A bad nft_set is said once, not again for the v6 set made from it.
    let p = problems(&with_sets("inet t", None));
    assert_eq!(p.len(), 1, "{p:?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let config = FirewallConfig {
        nft_set: "netdev t s".into(),
        nft_set_v6: Some("inet t".into()),
        create: true,
        nft: "nft".into(),
        timeout_ms: 0,
    };
    let p = problems(&config);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].starts_with("nft_set: family \"netdev\""), "{p:?}");
    assert!(p[1].starts_with("nft_set_v6: \"inet t\" is not"), "{p:?}");
    assert_eq!(
        p[2],
        "nft must be an absolute path (it is run without a search of PATH), got nft"
    );
    assert_eq!(p[3], "timeout_ms must be between 1 and 600000, got 0");
    let c = FirewallConfig {
        timeout_ms: 600_001,
        ..FirewallConfig::default()
    };
    assert_eq!(problems(&c).len(), 1);
    assert!(c.build().is_ok());
    let bad = FirewallConfig {
        nft_set: "inet t".into(),
        ..FirewallConfig::default()
    };
    assert!(bad.build().is_err());
}

#[test]
fn preflight_looks_at_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Vec::new();
    let missing = FirewallConfig {
        nft: dir.path().join("nft"),
        ..FirewallConfig::default()
    };
    missing.preflight(&mut p);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("No such file or directory"), "{p:?}");
    assert!(p[0].contains("package nftables"), "{p:?}");

    let plain = dir.path().join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let mut p = Vec::new();
    FirewallConfig {
        nft: plain.clone(),
        ..FirewallConfig::default()
    }
    .preflight(&mut p);
    assert_eq!(p, [format!("nft {} is not executable", plain.display())]);

    let mut p = Vec::new();
    FirewallConfig {
        nft: dir.path().to_path_buf(),
        ..FirewallConfig::default()
    }
    .preflight(&mut p);
    assert!(p[0].ends_with("is a directory, not a program"), "{p:?}");

    let mut p = Vec::new();
    FirewallConfig {
        nft: "/bin/sh".into(),
        ..FirewallConfig::default()
    }
    .preflight(&mut p);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn elements_are_bare_addresses_or_networks() {
    assert_eq!(element(&"192.0.2.7/32".parse().unwrap()), "192.0.2.7");
    assert_eq!(element(&"192.0.2.77/24".parse().unwrap()), "192.0.2.0/24");
    assert_eq!(element(&"2001:db8::1/128".parse().unwrap()), "2001:db8::1");
    assert_eq!(
        element(&"2001:db8:0:1:2:3:4:5/64".parse().unwrap()),
        "2001:db8:0:1::/64"
    );
    assert_eq!(element(&"0.0.0.0/0".parse().unwrap()), "0.0.0.0/0");
}

#[test]
fn a_block_is_one_transaction_with_the_remaining_time() {
    let fw = FirewallConfig::default().firewall().unwrap();
    let now = 1_700_000_000;
    let run = fw.plan(&block("192.0.2.7/32", now + 3600), now).unwrap();
    assert_eq!(run.args, ["-f", "-"]);
    assert_eq!(
        run.script.as_deref(),
        Some(
            "add element inet access_oracle blocked { 192.0.2.7 timeout 3600s }\n\
             delete element inet access_oracle blocked { 192.0.2.7 }\n\
             add element inet access_oracle blocked { 192.0.2.7 timeout 3600s }\n"
        )
    );
    assert_eq!(
        run.what,
        "nft add element inet access_oracle blocked { 192.0.2.7 timeout 3600s }"
    );
    // IPv6 to the v6 set; a network as a prefix.
    let run = fw
        .plan(&block("2001:db8:1:2::9/64", now + 61), now)
        .unwrap();
    assert_eq!(
        run.script.as_deref(),
        Some(
            "add element inet access_oracle blocked_v6 { 2001:db8:1:2::/64 timeout 61s }\n\
             delete element inet access_oracle blocked_v6 { 2001:db8:1:2::/64 }\n\
             add element inet access_oracle blocked_v6 { 2001:db8:1:2::/64 timeout 61s }\n"
        )
    );
    // One second left is one second; an ended block is nothing to do.
    let run = fw.plan(&block("192.0.2.7/32", now + 1), now).unwrap();
    assert!(run.script.unwrap().contains("timeout 1s"));
    assert_eq!(fw.plan(&block("192.0.2.7/32", now), now), None);
    assert_eq!(fw.plan(&block("192.0.2.7/32", now - 5), now), None);
}

#[test]
fn with_create_the_transaction_first_adds_the_table_and_sets() {
    let fw = FirewallConfig {
        create: true,
        ..FirewallConfig::default()
    }
    .firewall()
    .unwrap();
    let now = 1_700_000_000;
    let run = fw.plan(&block("198.51.100.4/32", now + 5), now).unwrap();
    assert_eq!(run.args, ["-f", "-"]);
    assert_eq!(
        run.script.as_deref(),
        Some(
            "add table inet access_oracle\n\
             add set inet access_oracle blocked { type ipv4_addr; flags interval, timeout; }\n\
             add set inet access_oracle blocked_v6 { type ipv6_addr; flags interval, timeout; }\n\
             add element inet access_oracle blocked { 198.51.100.4 timeout 5s }\n\
             delete element inet access_oracle blocked { 198.51.100.4 }\n\
             add element inet access_oracle blocked { 198.51.100.4 timeout 5s }\n"
        )
    );
    // Sets in two tables: both tables.
    let fw = FirewallConfig {
        nft_set: "ip filter bad4".into(),
        nft_set_v6: Some("ip6 filter bad6".into()),
        create: true,
        ..FirewallConfig::default()
    }
    .firewall()
    .unwrap();
    let run = fw.plan(&block("2001:db8::7/128", now + 10), now).unwrap();
    assert_eq!(
        run.script.as_deref(),
        Some(
            "add table ip filter\n\
             add table ip6 filter\n\
             add set ip filter bad4 { type ipv4_addr; flags interval, timeout; }\n\
             add set ip6 filter bad6 { type ipv6_addr; flags interval, timeout; }\n\
             add element ip6 filter bad6 { 2001:db8::7 timeout 10s }\n\
             delete element ip6 filter bad6 { 2001:db8::7 }\n\
             add element ip6 filter bad6 { 2001:db8::7 timeout 10s }\n"
        )
    );
    // An unblock creates nothing.
    assert_eq!(
        fw.plan(&unblock("2001:db8::7/128"), now).unwrap().script,
        None
    );
}

#[test]
fn an_unblock_is_one_delete_by_arguments() {
    let fw = FirewallConfig::default().firewall().unwrap();
    let run = fw.plan(&unblock("192.0.2.7/32"), 0).unwrap();
    assert_eq!(
        run.args,
        [
            "delete",
            "element",
            "inet",
            "access_oracle",
            "blocked",
            "{",
            "192.0.2.7",
            "}"
        ]
    );
    assert_eq!(run.script, None);
    assert_eq!(
        run.what,
        "nft delete element inet access_oracle blocked { 192.0.2.7 }"
    );
    let run = fw.plan(&unblock("2001:db8::/64"), 0).unwrap();
    assert_eq!(run.args[4..], ["blocked_v6", "{", "2001:db8::/64", "}"]);
}

#[test]
fn nft_errors_are_one_escaped_line_naming_the_script_line() {
    assert_eq!(
        nft_error(
            "/dev/stdin:4:24-35: Error: interval overlaps with an existing one\n\
             add element inet a b { 198.51.100.1 timeout 5s }\n\
             \x20                      ^^^^^^^^^^^^\n"
        ),
        "Error: interval overlaps with an existing one in `add element inet a b { 198.51.100.1 timeout 5s }`"
    );
    assert_eq!(
        nft_error(
            "Error: Could not process rule: No such file or directory\n\
             delete element inet a b { 192.0.2.7 }\n\
             \x20                         ^^^^^^^^^\n"
        ),
        "Error: Could not process rule: No such file or directory"
    );
    assert_eq!(
        nft_error("\nOperation not permitted (you must be root)\nnetlink: Error: x\n"),
        "Operation not permitted (you must be root)"
    );
    assert_eq!(nft_error(""), "");
    assert_eq!(nft_error("Error: \u{1b}[31mred"), "Error: \\x1b[31mred");
}

fn shell(script: &str) -> Run {
    Run {
        args: vec!["-c".into(), script.into()],
        script: None,
        what: "test".into(),
    }
}

#[tokio::test]
async fn a_run_reports_the_exit_and_the_first_line_of_standard_error() {
    let sh = std::path::Path::new("/bin/sh");
    let t = Duration::from_secs(30);
    assert!(run_nft(sh, &shell("exit 0"), t).await.is_ok());
    let e = run_nft(
        sh,
        &shell("printf 'Error: no \\033[2J way\\nsecond line\\n' >&2; exit 1"),
        t,
    )
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "exit status: 1: Error: no \\x1b[2J way");
    // The script is nft's standard input.
    let run = Run {
        args: vec![
            "-c".into(),
            "read line; test \"$line\" = 'add table inet t' || exit 3".into(),
        ],
        script: Some("add table inet t\n".into()),
        what: "test".into(),
    };
    assert!(run_nft(sh, &run, t).await.is_ok());
    let e = run_nft(std::path::Path::new("/nonexistent/nft"), &shell(""), t)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("cannot run it: "), "{e}");
}

#[tokio::test]
async fn a_run_past_its_timeout_is_killed() {
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    let run = shell(&format!(
        "echo $$ > {}; exec sleep 600",
        pid_file.path().display()
    ));
    let started = Instant::now();
    let e = run_nft(
        std::path::Path::new("/bin/sh"),
        &run,
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "killed at its timeout (300 ms)");
    assert!(started.elapsed() < Duration::from_secs(60));
    // The process is gone (killed and reaped in the background): poll with a deadline.
    let pid = std::fs::read_to_string(pid_file.path()).unwrap();
    let proc_dir = format!("/proc/{}", pid.trim());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = std::fs::read_to_string(format!("{proc_dir}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting to be reaped: killed either way.
        if state.is_empty() || state.contains(") Z ") {
            break;
        }
        assert!(Instant::now() < deadline, "{proc_dir}: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn failures_carry_a_hint_an_administrator_can_act_on() {
    let fw = FirewallConfig::default().firewall().unwrap();
    let exit = |text: &str| {
        use std::os::unix::process::ExitStatusExt;
        RunError::Exit(std::process::ExitStatus::from_raw(256), text.into())
    };
    assert!(
        fw.hint(&exit("Operation not permitted (you must be root)"))
            .contains("CAP_NET_ADMIN")
    );
    assert!(
        fw.hint(&exit(
            "Error: Could not process rule: No such file or directory"
        ))
        .contains("set create = true")
    );
    assert!(
        fw.hint(&exit("Error: interval overlaps with an existing one"))
            .contains("overlap")
    );
    assert_eq!(fw.hint(&RunError::Timeout(Duration::from_secs(1))), "");
    let creating = FirewallConfig {
        create: true,
        ..FirewallConfig::default()
    }
    .firewall()
    .unwrap();
    assert!(
        creating
            .hint(&exit("Error: Could not process rule: File exists"))
            .contains("flags interval, timeout")
    );
}
