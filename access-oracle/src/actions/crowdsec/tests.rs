use std::os::unix::fs::PermissionsExt;

use super::*;

fn problems(c: &CrowdsecConfig) -> Vec<String> {
    let mut p = Vec::new();
    c.validate(&mut p);
    p
}

fn bouncer() -> CrowdsecConfig {
    CrowdsecConfig {
        bouncer_key_file: Some("/etc/access-oracle/crowdsec.key".into()),
        ..CrowdsecConfig::default()
    }
}

#[test]
fn a_bouncer_or_a_machine_is_enough_and_nothing_is_not() {
    assert_eq!(problems(&bouncer()), Vec::<String>::new());
    let push = CrowdsecConfig {
        machine_id: Some("exim-access".into()),
        password_file: Some("/etc/access-oracle/crowdsec.yaml".into()),
        ..CrowdsecConfig::default()
    };
    assert_eq!(problems(&push), Vec::<String>::new());
    assert!(push.pushes() && !bouncer().pushes());
    let p = problems(&CrowdsecConfig::default());
    assert!(p[0].starts_with("nothing to do"), "{p:?}");
}

#[test]
fn bad_settings_are_named() {
    let c = CrowdsecConfig {
        lapi_url: "ftp://lapi".into(),
        bouncer_key_file: Some("key".into()),
        poll_secs: 0,
        timeout_ms: 0,
        machine_id: Some("two words".into()),
        ..CrowdsecConfig::default()
    };
    let p = problems(&c).join("\n");
    for want in [
        "lapi_url must start with http:// or https://, got ftp",
        "machine_id needs password_file",
        "machine_id must be 1 to 128 printable ASCII characters",
        "poll_secs must be between 1 and 3600, got 0",
        "timeout_ms must be between 1 and 120000, got 0",
        "bouncer_key_file must be an absolute path, got key",
    ] {
        assert!(p.contains(want), "{want}\n{p}");
    }
    let c = CrowdsecConfig {
        lapi_url: "http://user:pw@127.0.0.1:8080/?x=1".into(),
        ca_file: Some("/etc/ca.pem".into()),
        ..bouncer()
    };
    let p = problems(&c).join("\n");
    assert!(p.contains("must not have a query"), "{p}");
    let c = CrowdsecConfig {
        lapi_url: "http://user:pw@127.0.0.1:8080/".into(),
        ca_file: Some("/etc/ca.pem".into()),
        ..bouncer()
    };
    let p = problems(&c).join("\n");
    assert!(p.contains("must not carry a user or password"), "{p}");
    let c = CrowdsecConfig {
        ca_file: Some("/etc/ca.pem".into()),
        ..bouncer()
    };
    assert_eq!(problems(&c), ["ca_file is for an https:// lapi_url"]);
    let c = CrowdsecConfig {
        password_file: Some("/x".into()),
        ..bouncer()
    };
    assert_eq!(problems(&c), ["password_file needs machine_id"]);
}

#[test]
fn the_table_reads_as_toml_with_defaults_and_refuses_unknown_keys() {
    let c: CrowdsecConfig = toml::from_str(
        r#"
        bouncer_key_file = "/k"
        response = "deny"
        "#,
    )
    .unwrap();
    assert_eq!(c.lapi_url, "http://127.0.0.1:8080");
    assert_eq!((c.poll_secs, c.timeout_ms), (10, 10_000));
    assert_eq!(c.response, BanResponse::Deny);
    assert!(
        toml::from_str::<CrowdsecConfig>("lapi_uri = \"http://x\"")
            .unwrap_err()
            .to_string()
            .contains("unknown field")
    );
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[test]
fn key_and_password_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(
        dir.path(),
        "key",
        "ee54f3d917992874fa8985c8003fe38c\n",
        0o640,
    );
    assert_eq!(
        read_secret("bouncer_key_file", &key).unwrap(),
        "ee54f3d917992874fa8985c8003fe38c"
    );
    let open = write(dir.path(), "open", "k\n", 0o644);
    assert!(
        read_secret("bouncer_key_file", &open)
            .unwrap_err()
            .contains("readable by every local user")
    );
    let empty = write(dir.path(), "empty", "\n", 0o600);
    assert!(
        read_secret("bouncer_key_file", &empty)
            .unwrap_err()
            .contains("is empty")
    );
    let two = write(dir.path(), "two", "a\nb\n", 0o600);
    assert!(
        read_secret("bouncer_key_file", &two)
            .unwrap_err()
            .contains("one line")
    );
    // The password alone, or cscli's credentials file.
    let plain = write(dir.path(), "pw", "s3cret pass\n", 0o600);
    assert_eq!(read_password(&plain, "m1").unwrap(), "s3cret pass");
    let yaml = write(
        dir.path(),
        "cred.yaml",
        "url: http://127.0.0.1:8080\nlogin: m1\npassword: abc123\n",
        0o600,
    );
    assert_eq!(read_password(&yaml, "m1").unwrap(), "abc123");
    assert!(
        read_password(&yaml, "m2")
            .unwrap_err()
            .contains("credentials of machine \"m1\", not machine_id \"m2\"")
    );
    let c = CrowdsecConfig {
        bouncer_key_file: Some(open),
        machine_id: Some("m2".into()),
        password_file: Some(yaml),
        ..CrowdsecConfig::default()
    };
    let mut p = Vec::new();
    c.preflight(&mut p);
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn networks_become_scopes_and_blocks_become_alerts() {
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    assert_eq!(scope_value(net("192.0.2.7/32")), ("Ip", "192.0.2.7".into()));
    assert_eq!(
        scope_value(net("2001:db8::1/128")),
        ("Ip", "2001:db8::1".into())
    );
    assert_eq!(
        scope_value(net("2001:db8:1:2::9/64")),
        ("Range", "2001:db8:1:2::/64".into())
    );
    assert_eq!(
        scenario("password_spraying"),
        "exim-access/password_spraying"
    );
    assert_eq!(scenario("admin"), "exim-access/admin");
    assert_eq!(scenario("uid 0 (root)"), "exim-access/admin");
    assert_eq!(scenario(""), "exim-access/admin");
    let body = alert_body(
        net("192.0.2.7/32"),
        3600,
        "password_spraying",
        "12 accounts\nfrom 192.0.2.7",
        1_700_000_000,
    );
    let a = &body[0];
    assert_eq!(a["scenario"], "exim-access/password_spraying");
    assert_eq!(
        a["source"],
        json!({"scope": "Ip", "value": "192.0.2.7", "ip": "192.0.2.7"})
    );
    assert_eq!(a["start_at"], "2023-11-14T22:13:20Z");
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .contains("12 accounts\\x0afrom")
    );
    let d = &a["decisions"][0];
    assert_eq!(d["duration"], "3600s");
    assert_eq!(d["type"], "ban");
    assert_eq!(d["scope"], "Ip");
    assert_eq!(d["origin"], "crowdsec");
    let body = alert_body(net("198.51.100.0/24"), 60, "admin", "", 0);
    assert_eq!(body[0]["source"]["range"], "198.51.100.0/24");
}

#[test]
fn only_this_machines_decisions_in_force_are_undone() {
    let answer = br#"[
      {"id": 7, "machine_id": "m1", "scenario": "exim-access/password_spraying",
       "decisions": [{"id": 7, "scenario": "exim-access/password_spraying", "value": "203.0.113.11", "duration": "59m1s", "scope": "Ip", "type": "ban", "origin": "crowdsec"},
                     {"id": 8, "scenario": "exim-access/password_spraying", "value": "203.0.113.11", "duration": "-1s"}]},
      {"id": 5, "machine_id": "cli", "scenario": "manual 'ban' from 'cli'",
       "decisions": [{"id": 5, "scenario": "manual 'ban' from 'cli'", "value": "203.0.113.11", "duration": "59m"}]},
      {"id": 9, "machine_id": "m1", "scenario": "crowdsecurity/ssh-bf",
       "decisions": [{"id": 9, "scenario": "crowdsecurity/ssh-bf", "value": "203.0.113.11", "duration": "1h"}]},
      {"id": 10, "machine_id": "m1", "decisions": null}
    ]"#;
    assert_eq!(own_decisions(answer, "m1", "203.0.113.11").unwrap(), [7]);
    assert_eq!(
        own_decisions(b"null", "m1", "x").unwrap(),
        Vec::<i64>::new()
    );
    assert!(own_decisions(b"{", "m1", "x").is_err());
}

#[test]
fn endpoints_keep_a_base_path() {
    let u = |s: &str| Url::parse(s).unwrap();
    assert_eq!(
        endpoint(&u("http://127.0.0.1:8080"), "v1/alerts").as_str(),
        "http://127.0.0.1:8080/v1/alerts"
    );
    assert_eq!(
        endpoint(
            &u("https://lapi.example.org/crowdsec/"),
            "v1/decisions/stream"
        )
        .as_str(),
        "https://lapi.example.org/crowdsec/v1/decisions/stream"
    );
}
