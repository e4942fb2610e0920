//! Environment overrides of `strata.toml`: `STRATA_<SECTION>__<KEY>`,
//! its value typed like the key it replaces and its `${…}` references
//! expanded as in the file.

/// Prefix of configuration override variables.
pub const ENV_PREFIX: &str = "STRATA_";
/// Separator between levels in an override variable's name.
pub const ENV_SEPARATOR: &str = "__";

/// Applies the `STRATA_<SECTION>__<KEY>` variables of `env` to `table`,
/// each typed like the key it replaces (in `table`, else in `defaults`);
/// returns the keys set and by which variable. An error names the
/// variable and says why.
pub(super) fn apply(table: &mut toml::Table, env: &[(String, String)], defaults: Option<&toml::Table>) -> Result<Vec<(String, String)>, (String, String)> {
    let mut applied = Vec::new();
    let mut vars: Vec<&(String, String)> = env.iter().collect();
    vars.sort();
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if !rest.contains(ENV_SEPARATOR) {
            continue;
        }
        let path: Vec<String> = rest.split(ENV_SEPARATOR).map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err((var.clone(), "empty key segment".to_owned()));
        }
        // `${NAME}` and `${file:PATH}` expand as in the file.
        let env_var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let raw = super::expand_references(raw, &env_var).map_err(|e| (var.clone(), e.to_string()))?;
        let existing = lookup(table, &path).cloned().or_else(|| defaults.and_then(|d| lookup(d, &path)).cloned());
        let value = typed_like(existing.as_ref(), &raw).map_err(|message| (var.clone(), message))?;
        let (last, parents) = path.split_last().expect("path has at least two segments");
        let mut cur = &mut *table;
        for p in parents {
            let entry = cur.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry.as_table_mut().ok_or_else(|| (var.clone(), format!("`{p}` is not a section")))?;
        }
        cur.insert(last.clone(), value);
        applied.push((path.join("."), var.clone()));
    }
    Ok(applied)
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = table.get(first)?;
    if rest.is_empty() { Some(v) } else { lookup(v.as_table()?, rest) }
}

fn typed_like(existing: Option<&toml::Value>, raw: &str) -> Result<toml::Value, String> {
    let parse_scalar = |raw: &str| -> Option<toml::Value> {
        let doc: toml::Table = format!("v = {raw}").parse().ok()?;
        doc.get("v").cloned()
    };
    match existing {
        Some(toml::Value::String(_)) => Ok(toml::Value::String(raw.to_owned())),
        // A byte size is written with its unit in the file (`16MiB`) and
        // may be here too: the key's own parser reads the string.
        Some(toml::Value::Integer(_)) => match raw.trim().parse() {
            Ok(n) => Ok(toml::Value::Integer(n)),
            Err(_) if super::parse_byte_size(raw.trim()).is_ok() => Ok(toml::Value::String(raw.trim().to_owned())),
            Err(_) => Err(format!("expected an integer (or a size like 16MiB), got {raw:?}")),
        },
        Some(toml::Value::Float(_)) => raw.trim().parse().map(toml::Value::Float).map_err(|_| format!("expected a number, got {raw:?}")),
        Some(toml::Value::Boolean(_)) => match raw.trim() {
            "true" => Ok(toml::Value::Boolean(true)),
            "false" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        Some(toml::Value::Array(_)) => match parse_scalar(raw) {
            Some(v @ toml::Value::Array(_)) => Ok(v),
            _ => Err(format!("expected a TOML array like [\"a\", \"b\"], got {raw:?}")),
        },
        Some(toml::Value::Table(_)) => Err("names a section, not a key".to_owned()),
        _ => Ok(match parse_scalar(raw) {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Array(_))) => v,
            _ => toml::Value::String(raw.to_owned()),
        }),
    }
}
