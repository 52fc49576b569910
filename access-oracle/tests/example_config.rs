//! The shipped example config (`exim-config/oracle/access-oracle.toml`) is the operator's
//! reference: it must show every key the oracle reads, with its default, so nothing is
//! only discoverable in the source. A key may be shown commented out (`# key = ...`)
//! when it has no default value (a path to name, a group to choose).

use std::collections::BTreeSet;
use std::path::Path;

use access_oracle::config::RawConfig;

/// Every `table.key` path of `value`, tables of arrays of tables entered through their
/// first element.
fn paths(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v {
                    toml::Value::Table(_) => paths(&path, v, out),
                    _ => {
                        out.insert(path);
                    }
                }
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn the_example_config_shows_every_key() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../exim-config/oracle/access-oracle.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    // The keys as written, commented-out ones included, by the table they stand in.
    let mut shown = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim();
        let bare = line.trim_start_matches('#').trim();
        if let Some(name) = bare.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let array = name.starts_with('[');
            let name = name.trim_matches(|c| c == '[' || c == ']');
            if array {
                // `[[sources]]`: an array of tables, shown by its header.
                shown.insert(name.to_string());
            }
            if !line.starts_with('#') || !shown.iter().any(|s: &String| s.starts_with(name)) {
                table = name.to_string();
            }
            continue;
        }
        if let Some((key, _)) = bare.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                shown.insert(if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                });
            }
        }
    }
    let defaults = toml::Value::try_from(RawConfig::default()).unwrap();
    let mut wanted = BTreeSet::new();
    paths("", &defaults, &mut wanted);
    let missing: Vec<_> = wanted.difference(&shown).collect();
    assert!(
        missing.is_empty(),
        "keys the oracle reads but {} does not show: {missing:?}",
        file.display()
    );
    // And the file is a valid config.
    let parsed: RawConfig = toml::from_str(&text).unwrap();
    assert!(access_oracle::config::Config::from_raw(parsed).is_ok());
}
