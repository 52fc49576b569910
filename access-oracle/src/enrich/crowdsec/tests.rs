use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn entry(id: i64, scope: &str, value: &str, kind: &str, duration: &str) -> StreamDecision {
    StreamDecision {
        id,
        origin: Some("cscli".into()),
        scenario: Some(format!("scenario {id}")),
        scope: Some(scope.into()),
        kind: Some(kind.into()),
        value: Some(value.into()),
        duration: Some(duration.into()),
    }
}

fn stream(new: Vec<StreamDecision>, deleted: Vec<StreamDecision>) -> Stream {
    Stream { new, deleted }
}

#[test]
fn go_durations() {
    let d = |s| go_duration_secs(s);
    assert_eq!(d("1h"), Some(3600.0));
    assert_eq!(d("4h0m0s"), Some(14400.0));
    assert!((d("3h59m58.2s").unwrap() - 14398.2).abs() < 1e-9);
    assert!((d("59m55.236716446s").unwrap() - 3595.236716446).abs() < 1e-9);
    assert!((d("-18.207821ms").unwrap() + 0.018207821).abs() < 1e-12);
    assert_eq!(d("0"), Some(0.0));
    assert_eq!(d("1.5m"), Some(90.0));
    assert!((d("250\u{b5}s").unwrap() - 0.00025).abs() < 1e-12);
    assert!((d("7ns").unwrap() - 7e-9).abs() < 1e-15);
    for bad in ["", "-", "h", "1", "1x", "1h-2m", "s1", "1..2s", "1h 2m"] {
        assert_eq!(d(bad), None, "{bad:?}");
    }
}

#[test]
fn stream_answers_parse_with_nulls_and_unknown_members() {
    let s = Stream::parse(br#"{"deleted":null,"new":null}"#).unwrap();
    assert!(s.new.is_empty() && s.deleted.is_empty());
    let s = Stream::parse(
        br#"{"new":[{"duration":"59m55.2s","id":1,"origin":"cscli","scenario":"manual 'ban' from 'cli'","scope":"Ip","type":"ban","value":"192.0.2.7","simulated":false,"uuid":"x"}]}"#,
    )
    .unwrap();
    assert_eq!(s.new[0].id, 1);
    assert_eq!(s.new[0].value.as_deref(), Some("192.0.2.7"));
    assert!(Stream::parse(b"\"banned\"").is_err());
    assert!(Stream::parse(b"{\"message\":\"access forbidden\"").is_err());
}

#[test]
fn addresses_and_ranges_ban_until_their_end() {
    let t = Decisions::new(false);
    let now = 1_000_000;
    let a = t.apply(
        &stream(
            vec![
                entry(1, "Ip", "192.0.2.7", "ban", "1h"),
                entry(2, "range", "198.51.100.0/24", "ban", "10m"),
                entry(3, "IP", "2001:db8::1", "ban", "1h"),
                entry(4, "Range", "2001:db8:1::/48", "ban", "1h"),
            ],
            vec![],
        ),
        true,
        now,
    );
    assert_eq!(
        a,
        Applied {
            added: 4,
            removed: 0,
            ignored: 0,
            in_force: 4
        }
    );
    let b = t.banned(ip("192.0.2.7"), now + 1).unwrap();
    assert_eq!(b.decision.id, 1);
    assert_eq!(&*b.text, "CrowdSec decision scenario 1");
    assert!(!b.deny);
    assert_eq!(t.banned(ip("192.0.2.8"), now), None);
    assert_eq!(
        t.banned(ip("198.51.100.200"), now)
            .unwrap()
            .decision
            .network,
        "198.51.100.0/24".parse::<IpNet>().unwrap()
    );
    // IPv4-mapped addresses are looked up as IPv4.
    assert_eq!(
        t.banned(ip("::ffff:198.51.100.1"), now)
            .unwrap()
            .decision
            .id,
        2
    );
    assert_eq!(t.banned(ip("2001:db8::1"), now).unwrap().decision.id, 3);
    assert_eq!(t.banned(ip("2001:db8:1:2::5"), now).unwrap().decision.id, 4);
    assert_eq!(t.banned(ip("2001:db8::2"), now), None);
    // The range's ten minutes are over: it lapses without word from the stream.
    assert_eq!(
        t.banned(ip("198.51.100.200"), now + 599)
            .unwrap()
            .decision
            .id,
        2
    );
    assert_eq!(t.banned(ip("198.51.100.200"), now + 600), None);
    assert_eq!(
        t.banned(ip("192.0.2.7"), now + 3599).unwrap().decision.id,
        1
    );
    assert_eq!(t.banned(ip("192.0.2.7"), now + 3600), None);
}

#[test]
fn a_wider_ban_still_holds_when_the_narrower_one_ended() {
    let t = Decisions::new(true);
    t.apply(
        &stream(
            vec![
                entry(1, "Ip", "192.0.2.7", "ban", "1m"),
                entry(2, "Range", "192.0.2.0/24", "ban", "1h"),
            ],
            vec![],
        ),
        true,
        0,
    );
    let b = t.banned(ip("192.0.2.7"), 10).unwrap();
    assert_eq!((b.decision.id, b.deny), (1, true));
    assert_eq!(t.banned(ip("192.0.2.7"), 60).unwrap().decision.id, 2);
}

#[test]
fn only_bans_on_addresses_and_ranges_are_kept() {
    let t = Decisions::new(false);
    let a = t.apply(
        &stream(
            vec![
                entry(1, "Ip", "192.0.2.1", "captcha", "1h"),
                entry(2, "Ip", "192.0.2.2", "throttle", "1h"),
                entry(3, "Country", "FR", "ban", "1h"),
                entry(4, "AS", "64496", "ban", "1h"),
                entry(5, "Ip", "not-an-address", "ban", "1h"),
                entry(6, "Ip", "192.0.2.6", "ban", "forever"),
                entry(7, "Ip", "192.0.2.7", "ban", "-5ms"),
                entry(8, "Ip", "192.0.2.8", "BAN", "1h"),
                StreamDecision {
                    id: 9,
                    ..StreamDecision::default()
                },
            ],
            vec![],
        ),
        true,
        0,
    );
    assert_eq!((a.added, a.ignored, a.in_force), (1, 8, 1));
    for n in 1..=7 {
        assert_eq!(t.banned(ip(&format!("192.0.2.{n}")), 1), None, "{n}");
    }
    assert_eq!(t.banned(ip("192.0.2.8"), 1).unwrap().decision.id, 8);
}

#[test]
fn deletions_and_full_lists_replace_what_was_kept() {
    let t = Decisions::new(false);
    t.apply(
        &stream(
            vec![
                entry(1, "Ip", "192.0.2.1", "ban", "1h"),
                entry(2, "Ip", "192.0.2.2", "ban", "1h"),
                entry(3, "Ip", "192.0.2.2", "ban", "2h"),
            ],
            vec![],
        ),
        true,
        0,
    );
    // Two decisions on one address: deleting one leaves the other.
    let a = t.apply(
        &stream(vec![], vec![entry(2, "Ip", "192.0.2.2", "ban", "-1ms")]),
        false,
        5,
    );
    assert_eq!((a.removed, a.in_force), (1, 2));
    assert_eq!(t.banned(ip("192.0.2.2"), 6).unwrap().decision.id, 3);
    // An empty answer changes nothing.
    let a = t.apply(&Stream::default(), false, 7);
    assert_eq!(
        a,
        Applied {
            in_force: 2,
            ..Applied::default()
        }
    );
    // A full list (after the API was unreachable) drops what it does not name.
    let a = t.apply(
        &stream(vec![entry(4, "Ip", "192.0.2.4", "ban", "1h")], vec![]),
        true,
        8,
    );
    assert_eq!((a.added, a.removed, a.in_force), (1, 2, 1));
    assert_eq!(t.banned(ip("192.0.2.1"), 9), None);
    assert_eq!(t.banned(ip("192.0.2.2"), 9), None);
    assert!(t.banned(ip("192.0.2.4"), 9).is_some());
    // A decision that ended is dropped at the next answer.
    let a = t.apply(&Stream::default(), false, 3609);
    assert_eq!((a.removed, a.in_force), (1, 0));
    assert!(t.is_empty());
}

#[test]
fn scenarios_reach_clients_as_short_printable_ascii() {
    let t = Decisions::new(false);
    let mut d = entry(1, "Ip", "192.0.2.1", "ban", "1h");
    d.scenario = Some(format!("evil\r\n250 ok \u{202e}{}", "x".repeat(300)));
    t.apply(&stream(vec![d], vec![]), true, 0);
    let b = t.banned(ip("192.0.2.1"), 1).unwrap();
    assert!(b.text.starts_with("CrowdSec decision evil??250 ok ?xxx"));
    assert_eq!(
        b.decision.scenario.chars().count(),
        MAX_SCENARIO_CHARS,
        "cut"
    );
    assert!(b.text.bytes().all(|c| (b' '..=b'~').contains(&c)));
}

#[test]
fn status_counts_polls_errors_and_hits() {
    let t = Decisions::new(false);
    t.apply(
        &stream(vec![entry(1, "Ip", "192.0.2.1", "ban", "1h")], vec![]),
        true,
        0,
    );
    t.poll_failed("connection refused", 10);
    t.banned(ip("192.0.2.1"), 11);
    let s = t.status();
    assert_eq!(s["decisions"], 1);
    assert_eq!(s["polls"], 1);
    assert_eq!(s["poll_errors"], 1);
    assert_eq!(s["hits"], 1);
    assert_eq!(s["last_error"]["error"], "connection refused");
    assert_eq!(s["response"], "defer");
}
