//! Checks of values that parse but make no sense, all at once, without I/O.

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{
    BatchConfig, Config, GcConfig, PullConfig, SnapshotConfig, SourceConfig, StageConfig, TelemetryConfig, WakeupConfig, is_queue_url, is_slot_name,
    validate_name,
};
use crate::ident::TableName;

/// One thing wrong with a configuration: the key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Problems as one message: the problem itself, or one per line.
pub fn describe(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => format!("{} problems:{}", many.len(), many.iter().map(|p| format!("\n  - {p}")).collect::<String>()),
    }
}

/// Deserializes each section of `table` on its own, so that a file with
/// problems in several sections has each named (serde stops at the first).
pub(super) fn sections(table: &toml::Table) -> Vec<Problem> {
    fn section<T: DeserializeOwned>(name: &str, value: &toml::Value) -> Option<Problem> {
        serde_path_to_error::deserialize::<_, T>(value.clone()).err().map(|e| {
            let path = e.path().to_string();
            let key = if path == "." { name.to_owned() } else { format!("{name}.{path}") };
            Problem { key, message: e.into_inner().to_string() }
        })
    }
    let mut out = Vec::new();
    for (name, value) in table {
        let problem = match name.as_str() {
            "stage" => section::<StageConfig>(name, value),
            "source" => section::<SourceConfig>(name, value),
            "batch" => section::<BatchConfig>(name, value),
            "snapshot" => section::<SnapshotConfig>(name, value),
            "gc" => section::<GcConfig>(name, value),
            "telemetry" => section::<TelemetryConfig>(name, value),
            "wakeup" => section::<WakeupConfig>(name, value),
            "pull" => section::<Vec<PullConfig>>(name, value),
            _ => Some(Problem {
                key: name.clone(),
                message: "unknown section; expected one of stage, source, batch, snapshot, gc, telemetry, wakeup, pull".to_owned(),
            }),
        };
        out.extend(problem);
    }
    if out.is_empty() {
        // Not expected: every section read alone, yet not together.
        out.push(Problem { key: "(file)".to_owned(), message: "does not read as a configuration".to_owned() });
    }
    out
}

/// Levels a `log_level` directive may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A `tracing` filter as `log_level` takes it: comma-separated directives,
/// each a level (`info`) or `target=level` (`strata_reader=debug`). A bare
/// word that is not a level is a target with no level, which `tracing`
/// reads as "everything from that target only": `"verbose"` would silence
/// every log, so it is refused.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    let known = LEVELS.join(", ");
    if filter.trim().is_empty() {
        return Err(format!("must not be empty; one of {known}, or target=level directives like strata_reader=debug,info"));
    }
    for directive in filter.split(',').map(str::trim) {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) => {
                if target.is_empty() || !target.chars().all(|c| c.is_ascii_alphanumeric() || "_:-[]{}.\"=".contains(c)) {
                    return Err(format!("directive {directive:?} has no valid target before `=`"));
                }
                level
            }
            None => directive,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{level:?} (in {filter:?}) is not a level; use one of {known}, or target=level"));
        }
    }
    Ok(())
}

impl Config {
    /// Every value that parses but makes no sense, each with its key.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut fail = |key: &str, msg: &str| out.push(Problem { key: key.to_owned(), message: msg.to_owned() });
        if self.stage.url.trim().is_empty() {
            fail("stage.url", "must not be empty");
        }
        if self.batch.max_rows == 0 {
            fail("batch.max_rows", "must be > 0");
        }
        if self.batch.max_bytes == 0 {
            fail("batch.max_bytes", "must be > 0");
        }
        if self.batch.max_age.is_zero() {
            fail("batch.max_age", "must be > 0");
        }
        if !(1..=64).contains(&self.snapshot.workers) {
            fail("snapshot.workers", "must be between 1 and 64");
        }
        if self.snapshot.range_bytes < 8192 {
            fail("snapshot.range_bytes", "must be at least one page (8 KiB)");
        }
        if self.snapshot.new_tables_check.is_zero() {
            fail("snapshot.new_tables_check", "must be > 0");
        }
        if let Some(source) = &self.source {
            if source.url.expose().trim().is_empty() {
                fail("source.url", "must not be empty");
            }
            if let Err(m) = validate_name(&source.stream) {
                fail("source.stream", &m);
            }
            for (key, name) in [("source.publication", &source.publication), ("source.slot", &source.slot)] {
                if let Some(n) = name
                    && n.is_empty()
                {
                    fail(key, "must not be empty when set");
                }
            }
            if !is_slot_name(&source.slot_name()) {
                fail(
                    "source.slot",
                    "a replication slot name may contain only lower case letters, digits and underscores, at most 63 \
                     (set source.slot when the stream name does not fit)",
                );
            }
            if source.tables.is_empty() {
                fail("source.tables", "must list at least one table or schema.*");
            }
            for (i, t) in source.tables.iter().enumerate() {
                let pattern = t.strip_suffix(".*").map(|s| format!("{s}.x"));
                if let Err(e) = TableName::parse(pattern.as_deref().unwrap_or(t)) {
                    fail(&format!("source.tables[{i}]"), &e.to_string());
                }
            }
        }
        let queue_hint = "must be an SQS queue URL like https://sqs.us-east-1.amazonaws.com/123456789012/strata-wakeups";
        for (i, url) in self.wakeup.publish.iter().enumerate() {
            if !is_queue_url(url) {
                fail(&format!("wakeup.publish[{i}]"), queue_hint);
            }
        }
        if let Some(url) = &self.wakeup.queue
            && !is_queue_url(url)
        {
            fail("wakeup.queue", queue_hint);
        }
        if let Some(e) = &self.wakeup.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            fail("wakeup.endpoint", "must start with http:// or https://");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.wakeup.fallback_poll) {
            fail("wakeup.fallback_poll", "must be between 1s and 1h");
        }
        if let Some(level) = &self.telemetry.log_level
            && let Err(m) = check_log_level(level)
        {
            fail("telemetry.log_level", &m);
        }
        for (i, pull) in self.pulls.iter().enumerate() {
            out.extend(pull_problems(self, i, pull));
        }
        out
    }
}

/// Largest `page_rows`: a page is held in memory while it is encoded.
const MAX_PULL_PAGE_ROWS: u64 = 1_000_000;

/// What is wrong with `[[pull]]` number `i`, each problem keyed
/// `pull[i].key` and naming the pull.
fn pull_problems(config: &Config, i: usize, pull: &PullConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut fail = |key: &str, msg: String| out.push(Problem { key: format!("pull[{i}].{key}"), message: format!("(pull {:?}) {msg}", pull.name) });
    if let Err(m) = validate_name(&pull.name) {
        fail("name", m);
    }
    if config.pulls[..i].iter().any(|p| p.name == pull.name) {
        fail("name", "another [[pull]] has this name; each feeds its own stream".to_owned());
    }
    if config.source.as_ref().is_some_and(|s| s.stream == pull.name) {
        fail("name", "is the CDC stream's name (source.stream); a pull feeds a stream of its own".to_owned());
    }
    match (&pull.url, &config.source) {
        (Some(url), _) if url.expose().trim().is_empty() => fail("url", "must not be empty when set".to_owned()),
        (None, None) => fail("url", "must be set when there is no [source] to default to".to_owned()),
        _ => {}
    }
    match (&pull.table, &pull.query) {
        (Some(_), Some(_)) | (None, None) => fail("table", "set exactly one of `table` and `query`".to_owned()),
        (Some(t), None) => {
            if let Err(e) = TableName::parse(t) {
                fail("table", e.to_string());
            }
        }
        (None, Some(q)) if q.trim().is_empty() => fail("query", "must not be empty".to_owned()),
        (None, Some(_)) => {}
    }
    if pull.key.is_empty() {
        fail("key", "must list the columns that identify a row".to_owned());
    }
    for (k, column) in pull.key.iter().enumerate() {
        if column.is_empty() {
            fail(&format!("key[{k}]"), "must not be empty".to_owned());
        } else if pull.key[..k].contains(column) {
            fail(&format!("key[{k}]"), format!("{column:?} is listed twice"));
        }
    }
    if pull.watermark.is_empty() {
        fail("watermark", "must name a column whose value only grows (updated_at, an id)".to_owned());
    }
    if !(1..=MAX_PULL_PAGE_ROWS).contains(&pull.page_rows) {
        fail("page_rows", format!("must be between 1 and {MAX_PULL_PAGE_ROWS}"));
    }
    if pull.soft_delete.as_ref().is_some_and(|e| e.trim().is_empty()) {
        fail("soft_delete", "must not be empty when set".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_name_a_level() {
        for ok in ["info", "WARN", "strata_reader=debug,info", "strata_writer::worker=trace"] {
            assert_eq!(check_log_level(ok), Ok(()), "{ok}");
        }
        for bad in ["verbose", "", "info,loud", "=debug", "strata_reader=chatty"] {
            assert!(check_log_level(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn pulls_are_checked_naming_the_pull_and_key() {
        let base = "[source]\nurl = \"postgres://x\"\n";
        let ok = format!(
            "{base}[[pull]]\nname = \"orders\"\ntable = \"public.orders\"\nkey = [\"id\"]\nwatermark = \"updated_at\"\nschedule = \"every 10m\"\nlook_back = \"30s\"\n"
        );
        let c = Config::from_toml("t", &ok, &[]).unwrap();
        assert_eq!(c.pulls[0].page_rows, super::super::DEFAULT_PULL_PAGE_ROWS);
        assert_eq!(c.pulls[0].look_back, Duration::from_secs(30));
        assert_eq!(c.pulls[0].url(c.source.as_ref()).unwrap().expose(), "postgres://x");
        let cases = [
            ("[[pull]]\nname = \"main\"\ntable = \"public.t\"\nkey = [\"id\"]\nwatermark = \"id\"\n", "pull[0].name", "CDC stream"),
            ("[[pull]]\nname = \"p\"\ntable = \"public.t\"\nquery = \"SELECT 1\"\nkey = [\"id\"]\nwatermark = \"id\"\n", "pull[0].table", "exactly one"),
            ("[[pull]]\nname = \"p\"\ntable = \"public.t\"\nwatermark = \"id\"\n", "pull[0].key", "identify"),
            ("[[pull]]\nname = \"p\"\ntable = \"public.t\"\nkey = [\"id\"]\n", "pull[0].watermark", "grows"),
            ("[[pull]]\nname = \"p\"\ntable = \"public.t\"\nkey = [\"id\"]\nwatermark = \"id\"\npage_rows = 0\n", "pull[0].page_rows", "between"),
            ("[[pull]]\nname = \"p\"\ntable = \"public.t\"\nkey = [\"id\"]\nwatermark = \"id\"\nschedule = \"nightly\"\n", "pull", "nightly"),
        ];
        for (text, key, why) in cases {
            let e = Config::from_toml("t", &format!("{base}{text}"), &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}")) && e.contains(why), "{key}: {e}");
        }
        let twice = format!("{ok}[[pull]]\nname = \"orders\"\nquery = \"SELECT 1 AS id\"\nkey = [\"id\"]\nwatermark = \"id\"\n");
        let e = Config::from_toml("t", &twice, &[]).unwrap_err().to_string();
        assert!(e.contains("`pull[1].name`") && e.contains("\"orders\""), "{e}");
        let alone = "[[pull]]\nname = \"p\"\ntable = \"public.t\"\nkey = [\"id\"]\nwatermark = \"id\"\n";
        let e = Config::from_toml("t", alone, &[]).unwrap_err().to_string();
        assert!(e.contains("`pull[0].url`"), "{e}");
        let with_url = format!("{alone}url = \"postgres://standby/app\"\n");
        assert!(Config::from_toml("t", &with_url, &[]).unwrap().source.is_none(), "a pull-only config is valid");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let text = "[batch]\nmax_rows = 0\nmax_age = \"0s\"\n[snapshot]\nworkers = 0\n[telemetry]\nlog_level = \"verbose\"\n";
        let e = Config::from_toml("t", text, &[]).unwrap_err().to_string();
        for key in ["batch.max_rows", "batch.max_age", "snapshot.workers", "telemetry.log_level"] {
            assert!(e.contains(&format!("`{key}`")), "{key} in: {e}");
        }
    }
}
