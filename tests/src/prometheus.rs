//! A strict reader of the Prometheus text exposition format (version 0.0.4), for the
//! oracle's `/metrics`: whatever a Prometheus server would reject, or would take in a
//! way the oracle did not mean, is an error here.
//!
//! Checked: every line is a `# HELP`, a `# TYPE`, another comment or a sample; metric
//! and label names match `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels without `:`); label values
//! use only the escapes `\\`, `\"` and `\n`; a family's `# TYPE` comes once, before its
//! samples, whose lines are all together; every sample belongs to a family declared by
//! `# TYPE` (a histogram's `_bucket`, `_sum` and `_count`); no series twice; counters
//! are named `..._total` and are never negative; each histogram series has ascending
//! `le` bounds, cumulative counts, a `+Inf` bucket equal to its `_count`, and a `_sum`;
//! the text ends with a newline.

use std::collections::{BTreeMap, BTreeSet};

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `summary`
    Summary,
    /// `untyped`
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its name (a histogram's with `_bucket`, `_sum` or `_count`).
    pub name: String,
    /// Its labels, unescaped.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// One family: its type, help and samples in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Its type.
    pub kind: Kind,
    /// Its `# HELP` text, if it had one.
    pub help: Option<String>,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// A whole exposition, by family name.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// The families.
    pub families: BTreeMap<String, Family>,
}

fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && !s.is_empty() =>
        {
            s.parse().map_err(|_| format!("not a number: {s:?}"))
        }
        _ => Err(format!("not a number: {s:?}")),
    }
}

/// Reads `{name="value",...}` from the start of `s`; the labels and the rest.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((out, s));
    };
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name} has no opening quote"));
        }
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}'s value is not closed")),
                Some((i, '"')) => break eq + 1 + i + 1,
                Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("label {name}: bad escape \\{other:?}")),
                },
                Some((_, '\n')) => return Err(format!("label {name}: a raw newline")),
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("after label {name}: expected , or }}"));
        }
    }
}

/// The family a sample named `name` belongs to, given the families declared.
fn family_of<'a>(name: &'a str, declared: &BTreeMap<String, Family>) -> Option<&'a str> {
    if declared.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(f) = declared.get(base)
        {
            let fits = match f.kind {
                Kind::Histogram => true,
                Kind::Summary => suffix != "_bucket",
                _ => false,
            };
            if fits {
                return Some(base);
            }
        }
    }
    None
}

/// Reads an exposition strictly; the first problem found, with its line, is the error.
pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeSet::new();
    let mut finished = BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    let kind = match kind {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        "summary" => Kind::Summary,
                        "untyped" => Kind::Untyped,
                        other => return Err(at(format!("unknown type {other:?}"))),
                    };
                    if families.contains_key(name) {
                        return Err(at(format!("a second # TYPE for {name}")));
                    }
                    if kind == Kind::Counter && !name.ends_with("_total") {
                        return Err(at(format!("counter {name} does not end in _total")));
                    }
                    families.insert(
                        name.to_string(),
                        Family {
                            kind,
                            help: helps.get(name).cloned(),
                            samples: Vec::new(),
                        },
                    );
                }
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if families.get(name).is_some_and(|f| !f.samples.is_empty()) {
                        return Err(at(format!("# HELP for {name} after its samples")));
                    }
                    if helps
                        .insert(name.to_string(), help.unwrap_or("").to_string())
                        .is_some()
                    {
                        return Err(at(format!("a second # HELP for {name}")));
                    }
                    if let Some(f) = families.get_mut(name) {
                        f.help = helps.get(name).cloned();
                    }
                }
                (Some("TYPE" | "HELP"), ..) => return Err(at("an incomplete # line".into())),
                _ => {}
            }
            continue;
        }
        if line.trim().is_empty() {
            return Err(at("an empty line".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = labels(&line[name_end..]).map_err(at)?;
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut parts = rest.split(' ');
        let v = value(parts.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = parts.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at(format!("bad timestamp {ts:?}")));
        }
        if parts.next().is_some() {
            return Err(at("more after the timestamp".into()));
        }
        let family = family_of(name, &families)
            .ok_or_else(|| at(format!("{name} belongs to no family declared by # TYPE")))?
            .to_string();
        if current.as_deref() != Some(family.as_str()) {
            if let Some(previous) = current.take() {
                finished.insert(previous);
            }
            if finished.contains(&family) {
                return Err(at(format!("{family}'s samples are not all together")));
            }
            current = Some(family.clone());
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("the same series twice".into()));
        }
        let f = families.get_mut(&family).expect("declared");
        if f.kind == Kind::Counter && (v.is_nan() || v < 0.0) {
            return Err(at("a counter below 0 (or NaN)".into()));
        }
        if f.kind == Kind::Histogram && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(at("a bucket without le".into()));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value: v,
        });
    }
    for (name, f) in &families {
        if f.kind == Kind::Histogram {
            check_histogram(name, f)?;
        }
    }
    Ok(Exposition { families })
}

/// One histogram series: its buckets (bound, count), its `_count`, whether it has a
/// `_sum`.
type Series = (Vec<(f64, f64)>, Option<f64>, bool);

/// Each series of a histogram (its labels but `le`): ascending bounds, cumulative
/// counts, `+Inf` equal to `_count`, a `_sum`.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let mut by_series: BTreeMap<BTreeMap<String, String>, Series> = BTreeMap::new();
    for s in &f.samples {
        let mut key = s.labels.clone();
        let le = key.remove("le");
        let entry = by_series.entry(key).or_default();
        if s.name.ends_with("_bucket") {
            let le = value(le.as_deref().unwrap_or(""))
                .map_err(|e| format!("{name}: bucket bound: {e}"))?;
            entry.0.push((le, s.value));
        } else if s.name.ends_with("_count") {
            entry.1 = Some(s.value);
        } else {
            entry.2 = true;
        }
    }
    for (labels, (buckets, count, sum)) in by_series {
        let what = format!("histogram {name}{labels:?}");
        for pair in buckets.windows(2) {
            if pair[0].0.partial_cmp(&pair[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(format!("{what}: bounds not ascending: {buckets:?}"));
            }
            if pair[1].1 < pair[0].1 {
                return Err(format!("{what}: counts not cumulative: {buckets:?}"));
            }
        }
        let inf = buckets
            .last()
            .filter(|(le, _)| *le == f64::INFINITY)
            .ok_or_else(|| format!("{what}: no +Inf bucket last"))?;
        let count = count.ok_or_else(|| format!("{what}: no _count"))?;
        if inf.1 != count {
            return Err(format!("{what}: +Inf bucket {} but _count {count}", inf.1));
        }
        if !sum {
            return Err(format!("{what}: no _sum"));
        }
    }
    Ok(())
}

impl Exposition {
    /// Every sample name (a histogram's `_bucket`, `_sum`, `_count` too) and family name.
    pub fn names(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.families.keys().cloned().collect();
        for f in self.families.values() {
            out.extend(f.samples.iter().map(|s| s.name.clone()));
        }
        out
    }

    /// The family `name`; panics when it is not there.
    pub fn family(&self, name: &str) -> &Family {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in the exposition"))
    }

    /// The samples named `name` whose labels include all of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(move |s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
    }

    /// The sum of the samples [`Exposition::samples`] picks (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).map(|s| s.value).sum()
    }

    /// The one sample named `name` with exactly `labels`; panics when it is not there.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples(name, labels)
            .find(|s| s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_total A counter.\n\
        # TYPE a_total counter\n\
        a_total{x=\"q\\\"\\\\\\n\"} 3\n\
        # TYPE h histogram\n\
        h_bucket{le=\"0.1\"} 1\n\
        h_bucket{le=\"+Inf\"} 2\n\
        h_sum 0.3\n\
        h_count 2\n\
        # TYPE g gauge\n\
        g 1.5e-3\n";

    #[test]
    fn a_well_formed_exposition_reads() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.value("a_total", &[("x", "q\"\\\n")]), 3.0);
        assert_eq!(e.family("h").kind, Kind::Histogram);
        assert_eq!(e.family("a_total").help.as_deref(), Some("A counter."));
        assert!(e.names().contains("h_bucket"));
    }

    #[test]
    fn each_kind_of_mistake_is_refused() {
        let bad = [
            ("a_total 1\n", "no family"),
            ("# TYPE a counter\na 1\n", "_total"),
            ("# TYPE a_total counter\na_total -1\n", "below 0"),
            ("# TYPE g gauge\ng{x=\"a\\t\"} 1\n", "bad escape"),
            ("# TYPE g gauge\ng{x=\"a\"} 1\ng{x=\"a\"} 2\n", "twice"),
            ("# TYPE g gauge\n# TYPE g gauge\n", "second # TYPE"),
            ("# TYPE 1g gauge\n", "bad metric name"),
            ("# TYPE g gauge\ng{1x=\"a\"} 1\n", "bad label name"),
            ("# TYPE g gauge\ng 1", "newline"),
            ("# TYPE g gauge\ng one\n", "not a number"),
            (
                "# TYPE g gauge\n# TYPE f gauge\ng{a=\"1\"} 1\nf 1\ng{a=\"2\"} 1\n",
                "not all together",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "not cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
                "_count",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
                "+Inf",
            ),
            ("# TYPE g gauge\ng_count 1\n", "no family"),
        ];
        for (text, why) in bad {
            let e = parse(text).expect_err(text);
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
