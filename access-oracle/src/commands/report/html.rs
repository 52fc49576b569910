//! The report as one self-contained HTML page: inline CSS (printable), inline SVG
//! charts (logins and failures per day, the top lists, countries), no script, font,
//! image or anything else fetched (a Content-Security-Policy of `default-src 'none'`
//! says so to the browser). Every text from the trail is escaped ([`escape`]).

use std::fmt::Write;

use super::Report;
use super::aggregate::KeyedOutcomes;
use super::csv::{Cell, Table, tables};

/// `text` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters have no business in a page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        text.chars().take(max - 1).chain(['…']).collect()
    } else {
        text.to_string()
    }
}

const STYLE: &str = "
body { font-family: sans-serif; font-size: 13px; color: #222; margin: 24px; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; border-bottom: 1px solid #aaa; margin-top: 28px; }
h3 { font-size: 14px; margin-bottom: 4px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #555; }
.ok { color: #1a7f37; font-weight: bold; }
.bad { color: #c62828; font-weight: bold; }
.mono { font-family: monospace; word-break: break-all; }
svg { display: block; margin: 6px 0 12px; }
svg text { font-family: sans-serif; font-size: 11px; fill: #222; }
@media print {
  body { margin: 0; font-size: 10px; }
  h2 { break-after: avoid; }
  table, svg { break-inside: avoid; }
}
";

const OK: &str = "#2e7d32";
const FAILED: &str = "#c62828";
const REFUSED: &str = "#ef6c00";
const BAR: &str = "#1565c0";

/// Logins per day as stacked bars (ok, failed, refused).
fn day_chart(days: &[KeyedOutcomes]) -> String {
    let (w, h, left, bottom, top) = (760.0_f64, 220.0_f64, 50.0, 30.0, 24.0);
    let mut s = String::new();
    let max = days
        .iter()
        .map(|d| d.logins.total())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = w - left - 10.0;
    let plot_h = h - bottom - top;
    let n = days.len().max(1) as f64;
    // One slot per day; a few days do not make slabs.
    let bw = (plot_w / n).min(48.0);
    let _ = write!(
        s,
        r##"<svg class="chart" id="chart-days" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="Logins per day">"##
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{y}" stroke="#888"/><line x1="{left}" y1="{y}" x2="{x2}" y2="{y}" stroke="#888"/><text x="{tx}" y="{ty}" text-anchor="end">{max}</text><text x="{tx}" y="{y}" text-anchor="end">0</text>"##,
        y = top + plot_h,
        x2 = w - 10.0,
        tx = left - 4.0,
        ty = top + 4.0,
    );
    for (i, d) in days.iter().enumerate() {
        let x = left + i as f64 * bw + bw * 0.1;
        let mut y = top + plot_h;
        for (count, colour, what) in [
            (d.logins.ok, OK, "ok"),
            (d.logins.failed, FAILED, "failed"),
            (d.logins.refused, REFUSED, "refused"),
        ] {
            if count == 0 {
                continue;
            }
            let bh = plot_h * count as f64 / max as f64;
            y -= bh;
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="{colour}"><title>{day}: {count} {what}</title></rect>"##,
                bw = bw * 0.8,
                day = escape(&d.key),
            );
        }
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            r##"<text x="{left}" y="{y}">{}</text><text x="{x}" y="{y}" text-anchor="end">{}</text>"##,
            escape(&first.key),
            escape(&last.key),
            y = h - 10.0,
            x = w - 10.0,
        );
    }
    for (i, (colour, what)) in [(OK, "ok"), (FAILED, "failed"), (REFUSED, "refused")]
        .into_iter()
        .enumerate()
    {
        let x = left + 10.0 + i as f64 * 90.0;
        let _ = write!(
            s,
            r##"<rect x="{x}" y="4" width="10" height="10" fill="{colour}"/><text x="{tx}" y="13">{what}</text>"##,
            tx = x + 14.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar chart of `items` (label, value), largest first as given.
fn bar_chart(id: &str, label: &str, items: &[(String, u64)]) -> String {
    if items.is_empty() {
        return "<p class=\"meta\">None in the period.</p>".into();
    }
    let row = 20.0_f64;
    let (w, left) = (760.0_f64, 260.0_f64);
    let h = row * items.len() as f64 + 8.0;
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="chart" id="{id}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">"##,
        label = escape(label),
    );
    for (i, (name, value)) in items.iter().enumerate() {
        let y = 4.0 + i as f64 * row;
        let bw = (w - left - 70.0) * *value as f64 / max as f64;
        let _ = write!(
            s,
            r##"<text x="{tx}" y="{ty}" text-anchor="end">{name}</text><rect x="{left}" y="{y}" width="{bw:.1}" height="{bh}" fill="{BAR}"><title>{full}: {value}</title></rect><text x="{vx:.1}" y="{ty}">{value}</text>"##,
            tx = left - 6.0,
            ty = y + 13.0,
            name = escape(&cut(name, 40)),
            full = escape(name),
            bh = row - 4.0,
            vx = left + bw + 4.0,
        );
    }
    s.push_str("</svg>");
    s
}

fn table_html(t: &Table, s: &mut String) {
    let _ = write!(s, r##"<h3>{}</h3>"##, escape(&t.name.replace('_', " ")));
    if t.rows.is_empty() {
        s.push_str("<p class=\"meta\">None in the period.</p>");
        return;
    }
    s.push_str("<table><thead><tr>");
    for h in t.header {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        s.push_str("<tr>");
        for cell in row {
            match cell {
                Cell::Num(n) => {
                    let _ = write!(s, "<td class=\"n\">{n}</td>");
                }
                other => {
                    let _ = write!(s, "<td>{}</td>", escape(&other.text()));
                }
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    if t.omitted > 0 {
        let _ = write!(
            s,
            "<p class=\"meta\">{} more rows not listed (a list keeps its first {}).</p>",
            t.omitted,
            super::aggregate::LIST_CAP
        );
    }
}

/// The report as one HTML page.
pub fn render(r: &Report) -> String {
    let g = &r.gathered;
    let v = &r.trail.verification;
    let mut s = String::with_capacity(64 * 1024);
    let title = match &r.user {
        Some(u) => format!("Access report for {u}"),
        None => "Access report".to_string(),
    };
    let since = r
        .period
        .since
        .map(|t| t.to_string())
        .unwrap_or_else(|| "the trail's beginning".into());
    let _ = write!(
        s,
        r##"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><meta name="viewport" content="width=device-width"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class="meta">From {since} to {until} (UTC) · made {gen} from the audit trail {dir}{ps}</p>"##,
        t = escape(&title),
        since = escape(&since),
        until = escape(&r.period.until.to_string()),
        gen = escape(&r.generated.to_string()),
        dir = escape(&r.trail.dir),
        ps = match (r.pseudonymised, r.addresses_truncated) {
            (true, true) => {
                " · addresses cut to /24 and /48, accounts, addresses and names \
                 pseudonymised for this export; reasons left out"
            }
            (true, false) => {
                " · accounts, addresses and names pseudonymised for this export; reasons left out"
            }
            (false, true) => " · addresses cut to /24 and /48; reasons left out",
            (false, false) => "",
        },
    );
    // The anchor: what the trail said when the report was made.
    s.push_str("<h2>The audit trail</h2><p>");
    if v.ok {
        let _ = write!(
            s,
            r##"<span class="ok">Verified</span>: {} records, seq {} to {}"##,
            v.records,
            v.first_seq.unwrap_or(0),
            v.last_seq.unwrap_or(0)
        );
    } else {
        let _ = write!(
            s,
            r##"<span class="bad">Not verified</span>: {}"##,
            escape(&v.broken.clone().unwrap_or_else(|| v.problems.join("; ")))
        );
    }
    s.push_str("</p>");
    match &r.trail.head {
        Some(h) => {
            let _ = write!(
                s,
                r##"<p>Chain head at report time: record {} <span class="mono">{}</span></p>"##,
                h.seq,
                escape(&h.chain)
            );
        }
        None => {
            let _ = write!(
                s,
                "<p>No chain head{}</p>",
                r.trail
                    .head_error
                    .as_deref()
                    .map(|e| format!(": {}", escape(e)))
                    .unwrap_or_default()
            );
        }
    }
    let t = &g.logins.total;
    let _ = write!(
        s,
        "<h2>Logins</h2><p>{} logins: {} ok, {} failed, {} refused. {} messages sent to {} recipients; {} alerts.</p>",
        t.total(),
        t.ok,
        t.failed,
        t.refused,
        g.sending.messages,
        g.sending.recipients,
        g.alerts.total
    );
    s.push_str("<h3>Logins and failures per day</h3>");
    s.push_str(&day_chart(&g.logins.by_day));
    let countries: Vec<(String, u64)> = g
        .logins
        .by_country
        .iter()
        .take(20)
        .map(|c| (c.key.clone(), c.logins.total()))
        .collect();
    s.push_str("<h3>Logins by country</h3>");
    s.push_str(&bar_chart(
        "chart-countries",
        "Logins by country",
        &countries,
    ));
    let ases: Vec<(String, u64)> = g
        .logins
        .by_as
        .iter()
        .take(20)
        .map(|a| {
            let name = match (a.asn, &a.org) {
                (Some(n), Some(o)) => format!("AS{n} {o}"),
                (Some(n), None) => format!("AS{n}"),
                (None, Some(o)) => o.clone(),
                (None, None) => "unknown".into(),
            };
            (name, a.logins.total())
        })
        .collect();
    s.push_str("<h3>Logins by AS</h3>");
    s.push_str(&bar_chart("chart-as", "Logins by AS", &ases));
    let top = |t: &super::aggregate::Top| -> Vec<(String, u64)> {
        t.rows
            .iter()
            .map(|x| (x.name.clone(), x.failures))
            .collect()
    };
    s.push_str("<h2>Failures</h2><h3>Top failing addresses</h3>");
    s.push_str(&bar_chart(
        "chart-failing-addresses",
        "Top failing addresses",
        &top(&g.top_failing_addresses),
    ));
    s.push_str("<h3>Top failing accounts</h3>");
    s.push_str(&bar_chart(
        "chart-failing-accounts",
        "Top failing accounts",
        &top(&g.top_failing_accounts),
    ));
    s.push_str("<h2>Alerts</h2>");
    let rules: Vec<(String, u64)> = g
        .alerts
        .by_rule
        .iter()
        .map(|c| (c.key.clone(), c.count))
        .collect();
    s.push_str(&bar_chart("chart-alerts", "Alerts by rule", &rules));
    s.push_str("<h2>Tables</h2>");
    for t in tables(r) {
        table_html(&t, &mut s);
    }
    s.push_str("</body></html>\n");
    s
}
