//! What a webhook POSTs, one body per `format`: the alert as `alerts.jsonl` holds it, a
//! chat message (Slack, Mattermost, Rocket.Chat), a Microsoft Teams card, an ntfy or
//! Gotify push, a Splunk HEC event, an ECS document; and, for `stream = "audit"`, an
//! audit record in the formats a SIEM reads.
//!
//! The human formats are rendered from [`Alert::headline`] and [`Alert::describe`] (the
//! same text an e-mail shows), which already escape control characters in everything an
//! outsider chose; each format then escapes what its receiver would read as markup.
//! Pure functions of the alert (and the host name for Splunk): golden-tested below.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::alert::Alert;
use crate::rules::Severity;
use crate::sinks::AuditItem;

/// `format = "..."`: what the body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The alert as one JSON object, exactly as `alerts.jsonl` holds it (`application/json`).
    #[default]
    Json,
    /// `{"text": ...}`: Slack, Mattermost and Rocket.Chat incoming webhooks.
    Slack,
    /// A message with an Adaptive Card, for a Microsoft Teams Workflows webhook.
    Teams,
    /// The text as the body, `Title`, `Priority` and `Tags` as headers (ntfy).
    Ntfy,
    /// `{"title", "message", "priority"}` (Gotify's message API).
    Gotify,
    /// A Splunk HTTP Event Collector event (`/services/collector/event`).
    SplunkHec,
    /// An Elastic Common Schema document.
    Ecs,
}

/// One request's body and the headers that belong to its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The exact bytes sent (and signed).
    pub body: Vec<u8>,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Headers of the format itself (ntfy's `Title`, `Priority`, `Tags`).
    pub headers: Vec<(&'static str, String)>,
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Splunk's `source` for every event.
pub const SPLUNK_SOURCE: &str = "exim-access";
/// Splunk's `sourcetype` of an alert.
pub const SPLUNK_ALERT_SOURCETYPE: &str = "exim-access:alert";
/// Splunk's `sourcetype` of an audit record.
pub const SPLUNK_AUDIT_SOURCETYPE: &str = "exim-access:audit";

impl Format {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Teams => "teams",
            Format::Ntfy => "ntfy",
            Format::Gotify => "gotify",
            Format::SplunkHec => "splunk_hec",
            Format::Ecs => "ecs",
        }
    }

    /// Whether the format can carry audit records (`stream = "audit"`): the machine
    /// formats can; the chat and push formats are for people, one alert at a time.
    pub fn forwards_audit(self) -> bool {
        matches!(self, Format::Json | Format::SplunkHec | Format::Ecs)
    }

    /// The body for one alert. `host` is the name Splunk events carry.
    pub fn alert(self, alert: &Alert, host: &str) -> Result<Payload, serde_json::Error> {
        Ok(match self {
            Format::Json => json_payload(serde_json::to_vec(alert)?),
            Format::Ecs => json_payload(serde_json::to_vec(&super::super::ecs::alert(alert))?),
            Format::SplunkHec => json_payload(serde_json::to_vec(&splunk_event(
                alert.time,
                host,
                SPLUNK_ALERT_SOURCETYPE,
                serde_json::to_value(alert)?,
            ))?),
            Format::Slack => json_payload(serde_json::to_vec(&slack(alert))?),
            Format::Teams => json_payload(serde_json::to_vec(&teams(alert))?),
            Format::Gotify => json_payload(serde_json::to_vec(&gotify(alert))?),
            Format::Ntfy => ntfy(alert),
        })
    }

    /// The body for one audit record, or `None` for a format that cannot carry one
    /// ([`Format::forwards_audit`]). `json` sends the record's line as the trail holds
    /// it (with its `chain`), so a receiver can check the chain itself; `ecs` is
    /// [`crate::sinks::ecs::item`] (the chain value as `event.id`).
    pub fn record(
        self,
        item: &AuditItem,
        host: &str,
    ) -> Option<Result<Payload, serde_json::Error>> {
        let line = item.line.trim_end_matches(['\n', '\r']);
        match self {
            Format::Json => Some(Ok(json_payload(line.as_bytes().to_vec()))),
            Format::SplunkHec => {
                let event = serde_json::from_str::<Value>(line)
                    .or_else(|_| serde_json::to_value(&item.record));
                Some(event.and_then(|event| {
                    serde_json::to_vec(&splunk_event(
                        item.record.time,
                        host,
                        SPLUNK_AUDIT_SOURCETYPE,
                        event,
                    ))
                    .map(json_payload)
                }))
            }
            Format::Ecs => {
                Some(serde_json::to_vec(&super::super::ecs::item(item)).map(json_payload))
            }
            Format::Slack | Format::Teams | Format::Ntfy | Format::Gotify => None,
        }
    }
}

fn json_payload(body: Vec<u8>) -> Payload {
    Payload {
        body,
        content_type: JSON,
        headers: Vec::new(),
    }
}

/// A Splunk HEC event: `time` in seconds since the epoch with milliseconds.
fn splunk_event(time: jiff::Timestamp, host: &str, sourcetype: &str, event: Value) -> Value {
    let ms = time.as_millisecond();
    let secs = serde_json::Number::from_f64(ms as f64 / 1000.0)
        .map(Value::Number)
        .unwrap_or_else(|| json!(time.as_second()));
    json!({
        "time": secs,
        "host": host,
        "source": SPLUNK_SOURCE,
        "sourcetype": sourcetype,
        "event": event,
    })
}

/// The headline and the rest of the description (what follows its first blank line).
fn title_and_text(alert: &Alert) -> (String, String) {
    let title = crate::text::escape_controls(&alert.headline()).into_owned();
    let described = alert.describe();
    let text = described
        .split_once("\n\n")
        .map(|(_, rest)| rest.trim_end().to_string())
        .unwrap_or_default();
    (title, text)
}

/// Slack's three characters that are markup in any message text (`<!channel>`, links).
fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn slack(alert: &Alert) -> Value {
    json!({ "text": slack_escape(alert.describe().trim_end()) })
}

/// Markdown that an Adaptive Card's `TextBlock` and `FactSet` would act on: links
/// (`[text](url)`), emphasis and code, written with a backslash so that a name an
/// attacker chose shows as text.
fn card_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '\\' | '[' | ']' | '*' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Teams Workflows message: the headline, the alert's facts (`Rule`, `Time`,
/// `Account`, ... from the description's first block) as a `FactSet`, then the rest of
/// the description line by line.
fn teams(alert: &Alert) -> Value {
    let (title, text) = title_and_text(alert);
    let color = match alert.severity {
        Severity::Critical | Severity::High => "Attention",
        Severity::Medium => "Warning",
        Severity::Low | Severity::Info => "Default",
    };
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": card_escape(&title),
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true,
    })];
    let (facts, rest) = match text.split_once("\n\n") {
        Some((facts, rest)) => (facts, rest),
        None => (text.as_str(), ""),
    };
    let mut fact_set = Vec::new();
    let mut loose = Vec::new();
    for line in facts.lines() {
        match line.split_once(':') {
            Some((key, value)) if !key.is_empty() && !key.starts_with(' ') => {
                fact_set.push(json!({ "title": key, "value": card_escape(value.trim()) }));
            }
            _ => loose.push(line),
        }
    }
    if !fact_set.is_empty() {
        body.push(json!({ "type": "FactSet", "facts": fact_set }));
    }
    let mut spacing = "Medium";
    for line in loose.into_iter().chain(rest.lines()) {
        if line.trim().is_empty() {
            spacing = "Medium";
            continue;
        }
        body.push(json!({
            "type": "TextBlock",
            "text": card_escape(line),
            "wrap": true,
            "spacing": spacing,
            "fontType": "Monospace",
            "size": "Small",
        }));
        spacing = "None";
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "msteams": { "width": "Full" },
                "body": body,
            },
        }],
    })
}

/// ntfy's priority: 1 (min) to 5 (max).
fn ntfy_priority(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// ntfy's tag that shows as an emoji before the title.
fn ntfy_emoji(s: Severity) -> &'static str {
    match s {
        Severity::Info | Severity::Low => "information_source",
        Severity::Medium => "warning",
        Severity::High | Severity::Critical => "rotating_light",
    }
}

/// A header value: as it is when it is printable ASCII, else an RFC 2047 encoded word
/// (`=?UTF-8?B?...?=`), which ntfy decodes.
fn header_text(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s.to_string()
    } else {
        use base64::Engine as _;
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
        )
    }
}

fn ntfy(alert: &Alert) -> Payload {
    let (title, text) = title_and_text(alert);
    let body = if text.is_empty() { title.clone() } else { text };
    Payload {
        body: body.into_bytes(),
        content_type: TEXT,
        headers: vec![
            ("Title", header_text(&title)),
            ("Priority", ntfy_priority(alert.severity).to_string()),
            (
                "Tags",
                format!("{},exim-access,{}", ntfy_emoji(alert.severity), alert.rule),
            ),
        ],
    }
}

/// Gotify's priority: 0 to 10 (its clients notify quietly below 4 and loudly from 8).
fn gotify_priority(s: Severity) -> u8 {
    match s {
        Severity::Info => 2,
        Severity::Low => 4,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

fn gotify(alert: &Alert) -> Value {
    let (title, text) = title_and_text(alert);
    let message = if text.is_empty() { title.clone() } else { text };
    json!({
        "title": title,
        "message": message,
        "priority": gotify_priority(alert.severity),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Context, Group};
    use crate::rules::Response;
    use jiff::Timestamp;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// One alert, with an account name an attacker chose: markup for every receiver.
    pub(super) fn alert() -> Alert {
        Alert {
            time: at(0),
            rule: "failed_logins_account",
            severity: Severity::High,
            account: Some("<!channel> [x](http://evil) & *b*".into()),
            ip: Some("203.0.113.9".parse().unwrap()),
            rdns: None,
            protocol: Some("smtp".into()),
            count: 5,
            counts: json!({ "failed_logins": 5, "threshold": 5, "window_secs": 300 }),
            threshold: 5,
            window_secs: 300,
            response: Response::HoldAccount,
            expires: at(900),
            summary: "account held for 15 min after 5 failed logins in 5 min".into(),
            group: None,
            context: None,
            observed: false,
        }
    }

    fn body_json(p: &Payload) -> Value {
        serde_json::from_slice(&p.body).unwrap()
    }

    #[test]
    fn json_is_the_line_alerts_jsonl_holds() {
        let a = alert();
        let p = Format::Json.alert(&a, "mx1").unwrap();
        assert_eq!(p.body, serde_json::to_vec(&a).unwrap());
        assert_eq!(p.content_type, "application/json");
        assert!(p.headers.is_empty());
    }

    #[test]
    fn ecs_is_the_shared_mapping() {
        let a = alert();
        let p = Format::Ecs.alert(&a, "mx1").unwrap();
        assert_eq!(body_json(&p), crate::sinks::ecs::alert(&a));
    }

    #[test]
    fn splunk_hec_wraps_the_alert_in_an_event() {
        let a = alert();
        let p = Format::SplunkHec.alert(&a, "mx1.example.org").unwrap();
        assert_eq!(
            body_json(&p),
            json!({
                "time": 1_800_000_000.0,
                "host": "mx1.example.org",
                "source": "exim-access",
                "sourcetype": "exim-access:alert",
                "event": serde_json::to_value(&a).unwrap(),
            })
        );
        let later = Alert {
            time: Timestamp::from_millisecond(1_800_000_000_250).unwrap(),
            ..a
        };
        let p = Format::SplunkHec.alert(&later, "h").unwrap();
        assert_eq!(body_json(&p)["time"], json!(1_800_000_000.25));
    }

    const DESCRIBED: &str = "account held for 15 min after 5 failed logins in 5 min\n\n\
        Rule:      failed_logins_account (High)\n\
        Time:      2027-01-15T08:00:00Z\n\
        Account:   <!channel> [x](http://evil) & *b*\n\
        Address:   203.0.113.9\n\
        Protocol:  smtp\n";

    #[test]
    fn the_golden_description_still_holds() {
        // The human formats below are rendered from this text.
        assert_eq!(alert().describe(), DESCRIBED);
    }

    #[test]
    fn slack_text_escapes_its_markup() {
        let p = Format::Slack.alert(&alert(), "mx1").unwrap();
        assert_eq!(p.content_type, "application/json");
        assert_eq!(
            body_json(&p),
            json!({
                "text": "account held for 15 min after 5 failed logins in 5 min\n\n\
                    Rule:      failed_logins_account (High)\n\
                    Time:      2027-01-15T08:00:00Z\n\
                    Account:   &lt;!channel&gt; [x](http://evil) &amp; *b*\n\
                    Address:   203.0.113.9\n\
                    Protocol:  smtp"
            })
        );
    }

    #[test]
    fn teams_is_an_adaptive_card_with_facts() {
        let p = Format::Teams.alert(&alert(), "mx1").unwrap();
        assert_eq!(
            body_json(&p),
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "msteams": { "width": "Full" },
                        "body": [
                            {
                                "type": "TextBlock",
                                "text": "account held for 15 min after 5 failed logins in 5 min",
                                "weight": "Bolder", "size": "Medium", "color": "Attention",
                                "wrap": true
                            },
                            {
                                "type": "FactSet",
                                "facts": [
                                    { "title": "Rule", "value": "failed_logins_account (High)" },
                                    { "title": "Time", "value": "2027-01-15T08:00:00Z" },
                                    { "title": "Account", "value": "<!channel> \\[x\\](http://evil) & \\*b\\*" },
                                    { "title": "Address", "value": "203.0.113.9" },
                                    { "title": "Protocol", "value": "smtp" }
                                ]
                            }
                        ]
                    }
                }]
            })
        );
    }

    #[test]
    fn teams_shows_the_context_line_by_line() {
        let a = Alert {
            group: Some(Group {
                count: 3,
                first: at(0),
                last: at(120),
            }),
            context: Some(Box::new(Context {
                messages_1h: 2,
                recipients_1h: 7,
                action: Some("account held until 2027-01-15T08:15:00Z".into()),
                undo: Some("access-oracle ctl release alice".into()),
                ..Context::default()
            })),
            ..alert()
        };
        let doc = body_json(&Format::Teams.alert(&a, "h").unwrap());
        let body = doc["attachments"][0]["content"]["body"].as_array().unwrap();
        assert_eq!(
            body[0]["text"],
            "account held for 15 min after 5 failed logins in 5 min (3 alerts of failed_logins_account in 2 min)"
        );
        let facts: Vec<&str> = body[1]["facts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["title"].as_str().unwrap())
            .collect();
        assert_eq!(
            facts,
            [
                "Rule",
                "Time",
                "Account",
                "Address",
                "Protocol",
                "Grouped",
                "Done",
                "Undo with"
            ]
        );
        assert_eq!(
            body[1]["facts"][7]["value"],
            "access-oracle ctl release alice"
        );
        let lines: Vec<(&str, &str)> = body[2..]
            .iter()
            .map(|b| (b["text"].as_str().unwrap(), b["spacing"].as_str().unwrap()))
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0]
                .0
                .starts_with("Sent in the last hour: 2 messages, 7 recipients")
        );
        assert_eq!(lines[0].1, "Medium");
        assert!(lines[1].0.starts_with("Logins in 24 h from 0 addresses"));
        assert_eq!(lines[1].1, "None");
    }

    #[test]
    fn ntfy_sends_text_with_title_priority_and_tags() {
        let p = Format::Ntfy.alert(&alert(), "mx1").unwrap();
        assert_eq!(p.content_type, "text/plain; charset=utf-8");
        assert_eq!(
            String::from_utf8(p.body).unwrap(),
            "Rule:      failed_logins_account (High)\n\
             Time:      2027-01-15T08:00:00Z\n\
             Account:   <!channel> [x](http://evil) & *b*\n\
             Address:   203.0.113.9\n\
             Protocol:  smtp"
        );
        assert_eq!(
            p.headers,
            [
                (
                    "Title",
                    "account held for 15 min after 5 failed logins in 5 min".to_string()
                ),
                ("Priority", "4".to_string()),
                (
                    "Tags",
                    "rotating_light,exim-access,failed_logins_account".to_string()
                ),
            ]
        );
    }

    #[test]
    fn ntfy_title_outside_ascii_is_an_encoded_word() {
        let a = Alert {
            summary: "account jürgen held".into(),
            severity: Severity::Medium,
            ..alert()
        };
        let p = Format::Ntfy.alert(&a, "h").unwrap();
        assert_eq!(
            p.headers[0],
            ("Title", "=?UTF-8?B?YWNjb3VudCBqw7xyZ2VuIGhlbGQ=?=".into())
        );
        assert_eq!(p.headers[1], ("Priority", "3".into()));
        assert!(p.headers[2].1.starts_with("warning,"));
        // A control character an attacker put in a name never reaches a header raw.
        let a = Alert {
            summary: "account a\r\nX-Evil: 1 held".into(),
            ..alert()
        };
        let p = Format::Ntfy.alert(&a, "h").unwrap();
        assert_eq!(p.headers[0].1, "account a\\x0d\\x0aX-Evil: 1 held");
    }

    #[test]
    fn gotify_is_title_message_priority() {
        let p = Format::Gotify.alert(&alert(), "mx1").unwrap();
        assert_eq!(
            body_json(&p),
            json!({
                "title": "account held for 15 min after 5 failed logins in 5 min",
                "message": "Rule:      failed_logins_account (High)\n\
                    Time:      2027-01-15T08:00:00Z\n\
                    Account:   <!channel> [x](http://evil) & *b*\n\
                    Address:   203.0.113.9\n\
                    Protocol:  smtp",
                "priority": 8,
            })
        );
    }

    #[test]
    fn only_machine_formats_forward_the_audit_trail() {
        let yes: Vec<&str> = [
            Format::Json,
            Format::Slack,
            Format::Teams,
            Format::Ntfy,
            Format::Gotify,
            Format::SplunkHec,
            Format::Ecs,
        ]
        .into_iter()
        .filter(|f| f.forwards_audit())
        .map(Format::name)
        .collect();
        assert_eq!(yes, ["json", "splunk_hec", "ecs"]);
    }
}
