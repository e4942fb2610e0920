//! `docs/configuration.md` documents every key of `strata.toml`, and
//! `strata.example.toml` sets every key and loads. The keys are read from
//! the config structs themselves (the field list serde is given), so a key
//! added without documentation, or documented after it was removed, fails.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::{self, Visitor};
use strata_common::config::{BatchConfig, Config, GcConfig, PullConfig, SnapshotConfig, SourceConfig, StageConfig, TelemetryConfig, WakeupConfig};

/// A deserializer that only records the field names a struct asks for.
struct Fields<'a>(&'a mut Vec<&'static str>);

#[derive(Debug)]
struct Recorded;

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields recorded")
    }
}
impl std::error::Error for Recorded {}
impl de::Error for Recorded {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Recorded
    }
}

impl<'de> de::Deserializer<'de> for Fields<'_> {
    type Error = Recorded;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded)
    }
    fn deserialize_struct<V: Visitor<'de>>(self, _: &'static str, fields: &'static [&'static str], _: V) -> Result<V::Value, Recorded> {
        self.0.extend_from_slice(fields);
        Err(Recorded)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

fn fields<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
    let mut out = Vec::new();
    let _ = T::deserialize(Fields(&mut out));
    out
}

/// Every key, `section.key`, from the structs.
fn keys() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for section in fields::<Config>() {
        let keys = match section {
            "stage" => fields::<StageConfig>(),
            "source" => fields::<SourceConfig>(),
            "batch" => fields::<BatchConfig>(),
            "snapshot" => fields::<SnapshotConfig>(),
            "gc" => fields::<GcConfig>(),
            "telemetry" => fields::<TelemetryConfig>(),
            "wakeup" => fields::<WakeupConfig>(),
            "pull" => fields::<PullConfig>(),
            other => panic!("section [{other}] is new: add it here, to docs/configuration.md and to strata.example.toml"),
        };
        assert!(!keys.is_empty(), "[{section}] has keys");
        out.extend(keys.into_iter().map(|k| format!("{section}.{k}")));
    }
    out
}

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn the_reference_documents_every_key_and_no_other() {
    let doc = repo_file("docs/configuration.md");
    let documented: BTreeSet<String> =
        doc.lines().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split_once("` |")).map(|(key, _)| key.to_owned()).collect();
    let keys = keys();
    assert!(keys.len() > 20, "the structs were read ({keys:?})");
    let missing: Vec<&String> = keys.difference(&documented).collect();
    let stale: Vec<&String> = documented.difference(&keys).collect();
    assert!(missing.is_empty(), "keys without a row in docs/configuration.md: {missing:?}");
    assert!(stale.is_empty(), "rows in docs/configuration.md for keys that do not exist: {stale:?}");
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        assert_eq!(row.matches(" | ").count(), 3, "a row has key, type, default and meaning: {row}");
    }
}

#[test]
fn the_example_sets_every_key_and_loads() {
    let text = repo_file("strata.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let text = text.replace("/run/secrets/aws_secret_access_key", &secret.display().to_string());
    let env = vec![("PGPASSWORD".to_owned(), "pw".to_owned())];
    let config = Config::from_toml("strata.example.toml", &text, &env).unwrap();
    assert_eq!(config.stage.options["aws_secret_access_key"].expose(), "s3cret");
    let table: toml::Table = text.parse().unwrap();
    let mut set = BTreeSet::new();
    for (section, v) in &table {
        // `[[pull]]` is an array of tables: every key of each counts.
        let tables: Vec<&toml::Table> = match v {
            toml::Value::Array(items) => items.iter().map(|i| i.as_table().unwrap()).collect(),
            other => vec![other.as_table().unwrap()],
        };
        for key in tables.iter().flat_map(|t| t.keys()) {
            set.insert(format!("{section}.{key}"));
        }
    }
    let unset: Vec<String> = keys().difference(&set).cloned().collect();
    assert!(unset.is_empty(), "strata.example.toml leaves out {unset:?}");
}
