//! The report as one JSON document (the schema is `docs/REPORTS.md`).

use super::Report;

/// The report as pretty-printed JSON, ending with a newline.
pub fn render(report: &Report) -> anyhow::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(report)?;
    bytes.push(b'\n');
    Ok(bytes)
}
