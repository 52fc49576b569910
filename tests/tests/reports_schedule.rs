//! Scheduled reports (`[reports]`, issue 16 point 3) with the real oracle and a real
//! Exim delivering the mail: after a period ends the daemon writes its report and mails
//! it once, and a restart neither writes nor mails it again.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::mail::MailSystem;
use exim_access_e2e::{Oracle, World};

const DEADLINE: Duration = Duration::from_secs(30);

fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("a string")
}

fn wait_until(what: &str, check: impl Fn() -> bool, show: impl Fn() -> String) {
    let until = Instant::now() + DEADLINE;
    while !check() {
        assert!(
            Instant::now() < until,
            "{what}: not after {DEADLINE:?}\n{}",
            show()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn yesterdays_report_is_written_and_mailed_once_across_restarts() {
    let world = World::new(&["alice"]);
    let mail = MailSystem::new(&world);
    let dir = world.path("reports");
    let mut oracle = Oracle::start_with(
        &world,
        &format!(
            "[reports]\nschedule = \"daily\"\ndir = {}\nemail_to = [\"auditor@example.org\"]\n\
             from = \"exim-access@example.org\"\nsendmail = {}\n",
            toml_str(dir.to_string_lossy()),
            toml_str(mail.sendmail.to_string_lossy()),
        ),
    );
    let yesterday = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .yesterday()
        .expect("a date");
    let file = dir.join(format!("exim-access-daily-{yesterday}.html"));
    wait_until(
        "the daily report is mailed",
        || !mail.raw_messages().is_empty(),
        || oracle.log_text(),
    );
    assert!(file.exists(), "{} is written", file.display());
    let html = fs::read_to_string(&file).expect("the report");
    assert!(html.contains("<svg"), "an HTML report with its charts");
    let messages = mail.raw_messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    assert!(m.contains("Envelope-to: auditor@example.org"), "{m}");
    assert!(m.contains("daily access report"), "{m}");
    assert!(
        m.contains(&format!("exim-access-daily-{yesterday}.html")),
        "the report attached: {m}"
    );
    let written = fs::metadata(&file)
        .expect("the report")
        .modified()
        .expect("a time");

    // Restarted: the period's report was made; nothing is written or mailed again.
    oracle.restart();
    wait_until(
        "the restarted oracle checks its reports",
        || {
            oracle
                .log_text()
                .contains("the last period's report was already made")
        },
        || oracle.log_text(),
    );
    assert_eq!(mail.raw_messages().len(), 1, "mailed once");
    assert_eq!(
        fs::metadata(&file)
            .expect("the report")
            .modified()
            .expect("a time"),
        written,
        "not written again"
    );
    let done: serde_json::Value = serde_json::from_slice(
        &fs::read(world.state_dir().join("reports.json")).expect("the record"),
    )
    .expect("JSON");
    assert_eq!(done["written"], done["sent"], "{done}");
}
