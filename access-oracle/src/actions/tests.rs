//! The shared runner: order, retries, expiry, drops and reports, in paused time (it
//! moves on by itself while every task waits), with an action that records what it is
//! asked and fails when told.

use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Log {
    applied: Vec<String>,
    fail_next: u32,
}

struct Recorder {
    log: Arc<Mutex<Log>>,
    lapses: bool,
}

impl Action for Recorder {
    fn apply<'a>(&'a mut self, step: &'a Step, _now: Secs) -> Applying<'a> {
        Box::pin(async move {
            let mut log = self.log.lock().unwrap();
            if log.fail_next > 0 {
                log.fail_next -= 1;
                return Err("refused by the far side".into());
            }
            log.applied.push(step.to_string());
            Ok(())
        })
    }

    fn expires_by_itself(&self) -> bool {
        self.lapses
    }
}

/// What a test holds of a started runner: the way in, what the action saw, the reports,
/// the stop switch.
type Started = (
    Actions,
    Arc<Mutex<Log>>,
    Arc<Mutex<Vec<Report>>>,
    watch::Sender<bool>,
);

fn start(lapses: bool, tuning: Tuning) -> Started {
    let log = Arc::new(Mutex::new(Log::default()));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let (stop, stop_rx) = watch::channel(false);
    let (actions, _tasks) = Actions::start(
        vec![(
            "test",
            Box::new(Recorder {
                log: log.clone(),
                lapses,
            }) as Box<dyn Action>,
        )],
        tuning,
        Arc::new(move |r| seen.lock().unwrap().push(r)),
        stop_rx,
    );
    (actions, log, reports, stop)
}

async fn until(reports: &Mutex<Vec<Report>>, n: usize) {
    for _ in 0..100_000 {
        if reports.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} reports never came: {:?}", reports.lock().unwrap());
}

fn block(net: &str, until: Secs) -> Step {
    Step::Block {
        net: net.parse().unwrap(),
        until,
        by: "spraying".into(),
        reason: "many accounts".into(),
    }
}

fn now() -> Secs {
    jiff::Timestamp::now().as_second()
}

#[tokio::test(start_paused = true)]
async fn steps_are_applied_in_order_and_reported() {
    let (actions, log, reports, _stop) = start(true, Tuning::default());
    let t = now() + 600;
    actions.send(block("192.0.2.7/32", t));
    actions.send(Step::Unblock {
        net: "192.0.2.7/32".parse().unwrap(),
    });
    until(&reports, 2).await;
    let log = log.lock().unwrap();
    assert_eq!(log.applied.len(), 2);
    assert!(log.applied[0].starts_with("block 192.0.2.7/32 until "));
    assert_eq!(log.applied[1], "unblock 192.0.2.7/32");
    let reports = reports.lock().unwrap();
    assert!(reports.iter().all(|r| r.outcome.is_ok() && !r.expiry));
    let c = actions.counters()[0].snapshot();
    assert_eq!((c.applied, c.failed, c.dropped, c.expired), (2, 0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_is_retried_then_given_up_and_reported() {
    let (actions, log, reports, _stop) = start(true, Tuning::default());
    log.lock().unwrap().fail_next = 2;
    actions.send(block("192.0.2.8/32", now() + 600));
    until(&reports, 1).await;
    assert_eq!(reports.lock().unwrap()[0].attempts, 3);
    assert!(reports.lock().unwrap()[0].outcome.is_ok());
    log.lock().unwrap().fail_next = 100;
    actions.send(block("192.0.2.9/32", now() + 600));
    until(&reports, 2).await;
    let r = reports.lock().unwrap()[1].clone();
    assert_eq!(r.outcome, Err("refused by the far side".to_string()));
    assert_eq!(r.attempts, 4, "one try and three retries");
    let c = actions.counters()[0].snapshot();
    assert_eq!((c.applied, c.failed, c.retried), (1, 1, 5));
}

#[tokio::test(start_paused = true)]
async fn an_action_that_does_not_lapse_gets_the_unblock_at_the_end() {
    let (actions, log, reports, _stop) = start(false, Tuning::default());
    let t0 = now();
    actions.send(block("192.0.2.10/32", t0 + 60));
    actions.send(block("2001:db8::/64", t0 + 120));
    // Lifted by hand before its end: no second unblock at the end.
    actions.send(block("198.51.100.1/32", t0 + 90));
    actions.send(Step::Unblock {
        net: "198.51.100.1/32".parse().unwrap(),
    });
    // Extended: ends at the later time only.
    actions.send(block("192.0.2.10/32", t0 + 180));
    until(&reports, 7).await;
    let log = log.lock().unwrap();
    let unblocks: Vec<&String> = log
        .applied
        .iter()
        .filter(|s| s.starts_with("unblock"))
        .collect();
    assert_eq!(
        unblocks,
        [
            "unblock 198.51.100.1/32",
            "unblock 2001:db8::/64",
            "unblock 192.0.2.10/32"
        ]
    );
    let reports = reports.lock().unwrap();
    assert_eq!(reports.iter().filter(|r| r.expiry).count(), 2);
    assert_eq!(actions.counters()[0].snapshot().expired, 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let (actions, log, _reports, _stop) = start(
        true,
        Tuning {
            queue: 2,
            ..Tuning::default()
        },
    );
    // The task cannot run between these sends (the test does not yield).
    log.lock().unwrap().fail_next = 0;
    for i in 0..10 {
        actions.send(block(&format!("192.0.2.{i}/32"), now() + 600));
    }
    assert_eq!(actions.counters()[0].snapshot().dropped, 8);
}

#[tokio::test]
async fn no_actions_take_any_step() {
    let actions = Actions::none();
    assert!(actions.is_empty());
    actions.send(block("192.0.2.1/32", now() + 60));
    assert!(actions.counters().is_empty());
}
