//! The report as CSV: one file per table in a directory (RFC 4180: comma-separated,
//! fields with a comma, quote or line break quoted, a header row). A text cell that a
//! spreadsheet would take for a formula (starting with `=`, `+`, `-`, `@`, a tab or a
//! carriage return) is written with a leading `'`.

use std::io::Write;
use std::path::Path;

use jiff::Timestamp;

use super::Report;
use super::aggregate::{KeyedOutcomes, List};

/// One table: its file's name (without `.csv`), its header and its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The file's name without `.csv`, and the table's title.
    pub name: &'static str,
    /// The column names.
    pub header: &'static [&'static str],
    /// The rows, one cell per column.
    pub rows: Vec<Vec<Cell>>,
    /// Rows left out of a list (beyond its cap).
    pub omitted: u64,
}

/// One cell: a number or a text (texts from the trail included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// A count or number.
    Num(i64),
    /// A text.
    Text(String),
    /// Nothing.
    Empty,
}

impl Cell {
    /// The cell as shown (numbers as digits, nothing as "").
    pub fn text(&self) -> String {
        match self {
            Cell::Num(n) => n.to_string(),
            Cell::Text(t) => t.clone(),
            Cell::Empty => String::new(),
        }
    }
}

fn num(n: u64) -> Cell {
    Cell::Num(i64::try_from(n).unwrap_or(i64::MAX))
}

fn opt_num<N: Into<u64>>(n: Option<N>) -> Cell {
    n.map_or(Cell::Empty, |n| num(n.into()))
}

fn text(t: impl Into<String>) -> Cell {
    Cell::Text(t.into())
}

fn opt(t: &Option<String>) -> Cell {
    t.as_ref().map_or(Cell::Empty, |t| Cell::Text(t.clone()))
}

fn time(t: Timestamp) -> Cell {
    Cell::Text(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn opt_time(t: Option<Timestamp>) -> Cell {
    t.map_or(Cell::Empty, time)
}

fn outcomes(name: &'static str, key: &'static str, rows: &[KeyedOutcomes]) -> Table {
    Table {
        name,
        header: match key {
            "protocol" => &["protocol", "ok", "failed", "refused", "total"],
            "day" => &["day", "ok", "failed", "refused", "total"],
            _ => &["country", "ok", "failed", "refused", "total"],
        },
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    text(r.key.clone()),
                    num(r.logins.ok),
                    num(r.logins.failed),
                    num(r.logins.refused),
                    num(r.logins.total()),
                ]
            })
            .collect(),
        omitted: 0,
    }
}

fn list<T>(
    name: &'static str,
    header: &'static [&'static str],
    l: &List<T>,
    row: impl Fn(&T) -> Vec<Cell>,
) -> Table {
    Table {
        name,
        header,
        rows: l.rows.iter().map(row).collect(),
        omitted: l.omitted,
    }
}

/// The report's tables, in the order the HTML page shows them.
pub fn tables(r: &Report) -> Vec<Table> {
    let g = &r.gathered;
    let v = &r.trail.verification;
    let summary: Vec<(&str, Cell)> = vec![
        ("schema", text(r.schema)),
        ("generated", time(r.generated)),
        ("since", opt_time(r.period.since)),
        ("until", time(r.period.until)),
        ("user", opt(&r.user)),
        ("pseudonymised", text(r.pseudonymised.to_string())),
        (
            "addresses_truncated",
            text(r.addresses_truncated.to_string()),
        ),
        ("geoip", text(r.geoip.clone())),
        ("trail_dir", text(r.trail.dir.clone())),
        ("verification_ok", text(v.ok.to_string())),
        ("verification_broken", opt(&v.broken)),
        ("verification_problems", text(v.problems.join("; "))),
        ("verified_records", num(v.records)),
        ("first_seq", opt_num(v.first_seq)),
        ("last_seq", opt_num(v.last_seq)),
        ("last_logged", opt_time(v.last_logged)),
        ("removed_through_seq", opt_num(v.removed_through_seq)),
        ("head_seq", opt_num(r.trail.head.as_ref().map(|h| h.seq))),
        (
            "head_chain",
            r.trail
                .head
                .as_ref()
                .map_or(Cell::Empty, |h| text(h.chain.clone())),
        ),
        ("head_error", opt(&r.trail.head_error)),
        ("records_read", num(r.trail.records_read)),
        ("records_reported", num(r.trail.records_reported)),
        ("unreadable_lines", num(r.trail.unreadable)),
        ("encrypted_unread", num(r.trail.encrypted_unread)),
        ("logins_ok", num(g.logins.total.ok)),
        ("logins_failed", num(g.logins.total.failed)),
        ("logins_refused", num(g.logins.total.refused)),
        ("alerts", num(g.alerts.total)),
        ("alerts_observed", num(g.alerts.observed)),
        ("messages_sent", num(g.sending.messages)),
        ("recipients", num(g.sending.recipients)),
        (
            "top_lists_approximate",
            text(
                (g.top_failing_addresses.approximate || g.top_failing_accounts.approximate)
                    .to_string(),
            ),
        ),
        ("holds_and_blocks_omitted", num(g.holds_and_blocks.omitted)),
        ("admin_actions_omitted", num(g.admin_actions.omitted)),
    ];
    let top = |name, t: &super::aggregate::Top| Table {
        name,
        header: &["name", "failures"],
        rows: t
            .rows
            .iter()
            .map(|x| vec![text(x.name.clone()), num(x.failures)])
            .collect(),
        omitted: 0,
    };
    let counts = |name, header, c: &[super::aggregate::Count]| Table {
        name,
        header,
        rows: c
            .iter()
            .map(|x| vec![text(x.key.clone()), num(x.count)])
            .collect(),
        omitted: 0,
    };
    let mut out = vec![
        Table {
            name: "summary",
            header: &["item", "value"],
            rows: summary.into_iter().map(|(k, v)| vec![text(k), v]).collect(),
            omitted: 0,
        },
        outcomes("logins_by_day", "day", &g.logins.by_day),
        outcomes("logins_by_protocol", "protocol", &g.logins.by_protocol),
        outcomes("logins_by_country", "country", &g.logins.by_country),
        Table {
            name: "logins_by_as",
            header: &["asn", "org", "ok", "failed", "refused", "total"],
            rows: g
                .logins
                .by_as
                .iter()
                .map(|a| {
                    vec![
                        opt_num(a.asn),
                        opt(&a.org),
                        num(a.logins.ok),
                        num(a.logins.failed),
                        num(a.logins.refused),
                        num(a.logins.total()),
                    ]
                })
                .collect(),
            omitted: 0,
        },
        top("top_failing_addresses", &g.top_failing_addresses),
        top("top_failing_accounts", &g.top_failing_accounts),
        counts("alerts_by_rule", &["rule", "count"], &g.alerts.by_rule),
        counts(
            "alerts_by_severity",
            &["severity", "count"],
            &g.alerts.by_severity,
        ),
        list(
            "holds_and_blocks",
            &[
                "time", "kind", "what", "account", "address", "by", "reason", "until", "for_secs",
            ],
            &g.holds_and_blocks,
            |h| {
                vec![
                    time(h.time),
                    text(h.kind),
                    text(h.what.clone()),
                    opt(&h.account),
                    opt(&h.address),
                    opt(&h.by),
                    opt(&h.reason),
                    opt_time(h.until),
                    h.for_secs.map_or(Cell::Empty, Cell::Num),
                ]
            },
        ),
        list(
            "admin_actions",
            &[
                "time", "kind", "action", "admin", "account", "address", "mailbox", "msgid",
                "reason",
            ],
            &g.admin_actions,
            |a| {
                vec![
                    time(a.time),
                    text(a.kind),
                    opt(&a.action),
                    opt(&a.admin),
                    opt(&a.account),
                    opt(&a.address),
                    opt(&a.mailbox),
                    opt(&a.msgid),
                    opt(&a.reason),
                ]
            },
        ),
    ];
    if let Some(a) = &g.access {
        out.push(list(
            "access_logins",
            &[
                "time",
                "protocol",
                "address",
                "reverse_name",
                "country",
                "asn",
                "as_org",
                "client",
                "tls",
                "mech",
                "outcome",
                "verdict",
            ],
            &a.logins,
            |x| {
                vec![
                    time(x.time),
                    opt(&x.protocol),
                    opt(&x.address),
                    opt(&x.reverse_name),
                    opt(&x.country),
                    opt_num(x.asn),
                    opt(&x.as_org),
                    opt(&x.client),
                    x.tls.map_or(Cell::Empty, |t| text(t.to_string())),
                    opt(&x.mech),
                    text(x.outcome.as_str()),
                    opt(&x.verdict),
                ]
            },
        ));
        out.push(list(
            "access_sent",
            &["time", "msgid", "recipients", "address"],
            &a.sent,
            |x| {
                vec![
                    time(x.time),
                    opt(&x.msgid),
                    opt_num(x.recipients),
                    opt(&x.address),
                ]
            },
        ));
        out.push(list(
            "access_mailbox",
            &[
                "time",
                "kind",
                "action",
                "mailbox",
                "from_mailbox",
                "uid",
                "msgid",
                "admin",
            ],
            &a.mailbox,
            |x| {
                vec![
                    time(x.time),
                    text(x.kind),
                    opt(&x.action),
                    opt(&x.mailbox),
                    opt(&x.from_mailbox),
                    opt_num(x.uid),
                    opt(&x.msgid),
                    opt(&x.admin),
                ]
            },
        ));
        out.push(list(
            "access_sessions",
            &[
                "time",
                "protocol",
                "address",
                "bytes_in",
                "bytes_out",
                "fetched",
                "deleted",
            ],
            &a.sessions,
            |x| {
                vec![
                    time(x.time),
                    opt(&x.protocol),
                    opt(&x.address),
                    opt_num(x.bytes_in),
                    opt_num(x.bytes_out),
                    opt_num(x.fetched),
                    opt_num(x.deleted),
                ]
            },
        ));
    }
    out.push(Table {
        name: "controls",
        header: &["control", "asks", "sections"],
        rows: r
            .controls
            .iter()
            .map(|c| vec![text(c.control), text(c.asks), text(c.sections.join(" "))])
            .collect(),
        omitted: 0,
    });
    out
}

/// One field as CSV.
fn field(cell: &Cell, out: &mut String) {
    let Cell::Text(t) = cell else {
        out.push_str(&cell.text());
        return;
    };
    let guarded;
    let t = if t.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{t}");
        &guarded
    } else {
        t
    };
    if t.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&t.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(t);
    }
}

/// A table as CSV text (CRLF line ends, as RFC 4180 says).
pub fn render(t: &Table) -> String {
    let mut out = String::new();
    out.push_str(&t.header.join(","));
    out.push_str("\r\n");
    for row in &t.rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(cell, &mut out);
        }
        out.push_str("\r\n");
    }
    out
}

/// Writes every table as `<dir>/<name>.csv` (the directory made 0700 if missing).
pub fn write_dir(r: &Report, dir: &Path) -> std::io::Result<()> {
    crate::files::create_private_dir(dir)?;
    for t in tables(r) {
        let path = dir.join(format!("{}.csv", t.name));
        let mut f = crate::files::private_create().open(&path)?;
        f.write_all(render(&t).as_bytes())?;
    }
    Ok(())
}
