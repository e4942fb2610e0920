//! Source set-up over an ordinary connection: checks, publication, slot,
//! and the catalog lookups that turn a Relation message into a schema.
//!
//! Everything the reader needs from the source is checked before streaming
//! starts, with an error that names what is missing and how to fix it. The
//! reader creates its publication and slot when they are absent and never
//! drops either: a slot holds WAL the user may still need. A publication it
//! creates carries [`publication_marker`], so that `strata-reader teardown`
//! (`crate::teardown`), asked explicitly, can tell it from one that
//! somebody else created.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use strata_common::config::SourceConfig;
use strata_common::ident::{quote_ident, quote_literal};
use strata_common::pgtext::{parse_text, setting_statements};
use strata_common::types::CatalogType;
use strata_common::{ColumnType, Lsn, TableName, Value};
use strata_stager::schema::{ColumnSchema, GeneratedColumn};
use tokio_postgres::Client;

use crate::source::RelationColumn;

/// The comment on a publication the reader created for `stream`. Teardown
/// drops a publication only when its comment is exactly this: one an
/// administrator created (the least-privilege set-up), one that another
/// stream's reader created, or one from before readers marked theirs is
/// used as it is and never dropped by strata.
pub fn publication_marker(stream: &str) -> String {
    format!("created by strata-reader for stream {stream:?}; strata-reader teardown drops it")
}

/// An ordinary (non-replication) connection to the source.
pub struct SourceDb {
    client: Client,
    conn_task: tokio::task::JoinHandle<()>,
    type_cache: HashMap<u32, Option<CatalogType>>,
    name_cache: HashMap<(u32, i32), String>,
    database: Option<String>,
    /// The stream this connection serves, for the publication's marker.
    stream: String,
}

impl Drop for SourceDb {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

/// A slot's state as `pg_replication_slots` shows it.
#[derive(Debug, Clone)]
pub struct SlotState {
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
}

impl SourceDb {
    pub async fn connect(source: &SourceConfig) -> Result<SourceDb> {
        let (client, conn_task) = strata_common::pgconn::connect(source.url.expose(), "source").await?;
        // Values read from the catalog (a column's missing value) come in
        // the same text forms as the stream's.
        let settings: Vec<String> = setting_statements().map(|(_, sql)| sql).collect();
        client.batch_execute(&settings.join("; ")).await.context("pinning the session settings of the source connection")?;
        Ok(SourceDb { client, conn_task, type_cache: HashMap::new(), name_cache: HashMap::new(), database: None, stream: source.stream.clone() })
    }

    /// The table's storage file (`pg_relation_filenode`), which a rewrite
    /// changes; `None` for relations without storage (partitioned tables).
    pub async fn relfilenode(&self, oid: u32) -> Result<Option<u32>> {
        let node: Option<u32> = self
            .client
            .query_one("SELECT pg_relation_filenode($1::oid)", &[&oid])
            .await
            .with_context(|| format!("reading the storage file of relation {oid}"))?
            .get(0);
        Ok(node.filter(|n| *n != 0))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `current_database()`, read once.
    pub async fn database(&mut self) -> Result<String> {
        if let Some(d) = &self.database {
            return Ok(d.clone());
        }
        let d: String = self.client.query_one("SELECT current_database()::text", &[]).await.context("reading the database name")?.get(0);
        self.database = Some(d.clone());
        Ok(d)
    }

    /// Checks server settings and privileges logical replication needs.
    pub async fn check(&self) -> Result<()> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('wal_level'), current_setting('server_version_num')::int, \
                        (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text",
                &[],
            )
            .await
            .context("reading source settings")?;
        let wal_level: String = row.get(0);
        let version: i32 = row.get(1);
        let can_replicate: Option<bool> = row.get(2);
        let user: String = row.get(3);
        if wal_level != "logical" {
            bail!(
                "the source has wal_level = {wal_level}; logical replication needs wal_level = logical \
                 (set it in postgresql.conf or with ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)"
            );
        }
        if version < 140000 {
            bail!("the source runs PostgreSQL {}.{}; strata needs 14 or newer", version / 10000, version % 10000 / 100);
        }
        if can_replicate != Some(true) {
            bail!("role {user:?} may not start replication: ALTER ROLE {} REPLICATION (or use a superuser)", quote_ident(&user));
        }
        Ok(())
    }

    /// Creates the publication for `tables` (`schema.table` or `schema.*`)
    /// unless it exists; an existing one is used as it is.
    pub async fn ensure_publication(&self, name: &str, tables: &[String]) -> Result<()> {
        let exists = self.client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name]).await.context("looking up the publication")?.is_some();
        if exists {
            tracing::info!(publication = name, "using existing publication");
            return Ok(());
        }
        let mut schemas = Vec::new();
        let mut named = Vec::new();
        for t in tables {
            match t.strip_suffix(".*") {
                Some(schema) => schemas.push(quote_ident(&TableName::parse(&format!("{schema}.x"))?.schema)),
                None => named.push(TableName::parse(t)?.quoted()),
            }
        }
        let mut parts = Vec::new();
        if !named.is_empty() {
            parts.push(format!("TABLE {}", named.join(", ")));
        }
        if !schemas.is_empty() {
            parts.push(format!("TABLES IN SCHEMA {}", schemas.join(", ")));
        }
        self.check_can_create_publication(name, tables).await?;
        // One simple query is one transaction: the publication never exists
        // without its marker.
        let sql = format!(
            "CREATE PUBLICATION {name_sql} FOR {}; COMMENT ON PUBLICATION {name_sql} IS {}",
            parts.join(", "),
            quote_literal(&publication_marker(&self.stream)),
            name_sql = quote_ident(name)
        );
        self.client
            .batch_execute(&sql)
            .await
            .with_context(|| format!("creating publication {name:?} ({sql}); the role needs CREATE on the database and ownership of the tables"))?;
        tracing::info!(publication = name, "created publication");
        Ok(())
    }

    /// What `CREATE PUBLICATION` needs, checked first so the error names
    /// every missing privilege and its object: CREATE on the database,
    /// ownership of each named table, superuser for `schema.*` (PostgreSQL
    /// 15 allows `FOR TABLES IN SCHEMA` to superusers only).
    async fn check_can_create_publication(&self, name: &str, tables: &[String]) -> Result<()> {
        let row = self
            .client
            .query_one(
                "SELECT current_user::text, current_database()::text, has_database_privilege(current_database(), 'CREATE'), \
                        (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                &[],
            )
            .await
            .context("reading the role's privileges")?;
        let (user, db, can_create, superuser): (String, String, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
        if superuser {
            return Ok(());
        }
        let mut missing = Vec::new();
        if !can_create {
            missing.push(format!("CREATE on database {db} (GRANT CREATE ON DATABASE {} TO {})", quote_ident(&db), quote_ident(&user)));
        }
        for t in tables {
            if t.ends_with(".*") {
                missing.push(format!("superuser, for all tables of schema {} ({t}); list the tables instead", t.trim_end_matches(".*")));
                continue;
            }
            let table = TableName::parse(t)?;
            let owned: Option<bool> = self
                .client
                .query_opt(
                    "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2",
                    &[&table.schema, &table.name],
                )
                .await
                .with_context(|| format!("looking up table {table}"))?
                .map(|r| r.get(0));
            match owned {
                None => missing.push(format!("table {table}, which does not exist")),
                Some(false) => missing.push(format!("ownership of table {table} (PostgreSQL lets only a table's owner publish it)")),
                Some(true) => {}
            }
        }
        if !missing.is_empty() {
            bail!(
                "publication {name:?} does not exist, and role {user:?} cannot create it; it lacks {}. \
                 Either have an administrator create it (CREATE PUBLICATION {} FOR TABLE …), which strata then uses as it is, \
                 or grant what is missing",
                missing.join("; "),
                quote_ident(name)
            );
        }
        Ok(())
    }

    /// Checks that the role can read every table of `publication` (the
    /// snapshot and backfills select from them) and write the backfill's
    /// watermark messages; names every missing privilege and its object.
    pub async fn check_read_privileges(&self, publication: &str) -> Result<()> {
        let rows = self
            .client
            .query(
                "SELECT schemaname::text, tablename::text, has_schema_privilege(schemaname, 'USAGE'), \
                        has_table_privilege(format('%I.%I', schemaname, tablename), 'SELECT') \
                 FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
                &[&publication],
            )
            .await
            .with_context(|| format!("reading the tables of publication {publication:?}"))?;
        let user: String = self.client.query_one("SELECT current_user::text", &[]).await.context("reading the role")?.get(0);
        let role = quote_ident(&user);
        let mut missing = Vec::new();
        let mut schemas_named = std::collections::BTreeSet::new();
        for r in &rows {
            let (schema, table, usage, select): (String, String, bool, bool) = (r.get(0), r.get(1), r.get(2), r.get(3));
            if !usage && schemas_named.insert(schema.clone()) {
                missing.push(format!("USAGE on schema {schema} (GRANT USAGE ON SCHEMA {} TO {role})", quote_ident(&schema)));
            }
            if !select {
                let name = TableName { schema, name: table };
                missing.push(format!("SELECT on table {name} (GRANT SELECT ON {} TO {role})", name.quoted()));
            }
        }
        let emit: bool = self
            .client
            .query_one("SELECT has_function_privilege('pg_logical_emit_message(boolean, text, text)', 'EXECUTE')", &[])
            .await
            .context("checking EXECUTE on pg_logical_emit_message")?
            .get(0);
        if !emit {
            missing.push(format!(
                "EXECUTE on pg_logical_emit_message, for backfill watermarks \
                 (GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {role})"
            ));
        }
        if !missing.is_empty() {
            bail!("role {user:?} lacks privileges strata needs on publication {publication:?}: {}", missing.join("; "));
        }
        Ok(())
    }

    pub async fn slot(&self, name: &str) -> Result<Option<SlotState>> {
        let row = self
            .client
            .query_opt("SELECT plugin::text, database::text, active_pid, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&name])
            .await
            .context("looking up the replication slot")?;
        Ok(row.map(|r| SlotState {
            plugin: r.get(0),
            database: r.get(1),
            active_pid: r.get(2),
            confirmed_flush: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
        }))
    }

    /// Returns the slot, creating a pgoutput slot if absent, and whether it
    /// was created now. A slot of another plugin or database is an error: it
    /// belongs to someone else.
    pub async fn ensure_slot(&self, name: &str) -> Result<(SlotState, bool)> {
        let mut created_now = false;
        if self.slot(name).await?.is_none() {
            let created = self.client.query_one("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", &[&name]).await;
            match created {
                Ok(row) => {
                    tracing::info!(slot = name, lsn = row.get::<_, String>(0), "created replication slot");
                    created_now = true;
                }
                // Another reader created it between our check and our create.
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT) => {}
                Err(e) => return Err(e).with_context(|| format!("creating replication slot {name:?}")),
            }
        }
        let slot = self.slot(name).await?.with_context(|| format!("replication slot {name:?} vanished after creation"))?;
        self.check_slot_owner(name, &slot).await?;
        Ok((slot, created_now))
    }

    /// Drops the slot `name` (one this reader just created and cannot use).
    pub async fn drop_slot(&self, name: &str) -> Result<()> {
        self.client.execute("SELECT pg_drop_replication_slot($1)", &[&name]).await.with_context(|| format!("dropping replication slot {name:?}"))?;
        Ok(())
    }

    /// Refuses a slot of another plugin or database: it belongs to someone
    /// else, and its position says nothing about this database.
    pub async fn check_slot_owner(&self, name: &str, slot: &SlotState) -> Result<()> {
        let db: String = self.client.query_one("SELECT current_database()::text", &[]).await?.get(0);
        if slot.plugin.as_deref() != Some("pgoutput") || slot.database.as_deref() != Some(db.as_str()) {
            bail!(
                "replication slot {name:?} exists for plugin {:?} in database {:?}, not pgoutput in {db:?}; \
                 choose another source.slot",
                slot.plugin,
                slot.database
            );
        }
        Ok(())
    }

    /// What the catalog says about a non-built-in type.
    async fn catalog_type(&mut self, oid: u32) -> Result<Option<CatalogType>> {
        if let Some(t) = self.type_cache.get(&oid) {
            return Ok(t.clone());
        }
        let t = catalog_type(&self.client, oid).await?;
        self.type_cache.insert(oid, t.clone());
        Ok(t)
    }

    /// The staged type of a column: built-in mapping, else resolved through
    /// the catalog (domains to their base, arrays to their element).
    pub async fn column_type(&mut self, oid: u32, modifier: i32) -> Result<ColumnType> {
        if let Some(t) = ColumnType::from_builtin(oid, modifier) {
            return Ok(t);
        }
        // Fetch the chain of catalog entries the resolution will ask about.
        let mut pending = vec![oid];
        let mut seen = std::collections::HashSet::new();
        while let Some(o) = pending.pop() {
            if !seen.insert(o) || ColumnType::from_builtin(o, -1).is_some() {
                continue;
            }
            match self.catalog_type(o).await? {
                Some(CatalogType::Domain { base_oid, .. }) => pending.push(base_oid),
                Some(CatalogType::Array { element_oid }) => pending.push(element_oid),
                _ => {}
            }
        }
        let cache = &self.type_cache;
        Ok(ColumnType::resolve(oid, modifier, &|o| cache.get(&o).cloned().flatten()))
    }

    /// The staged columns of relation `oid`'s columns, with their attnums
    /// looked up by name in the catalog of now (a column renamed again since
    /// the Relation message gets none).
    pub async fn column_schemas(&mut self, oid: u32, columns: &[RelationColumn]) -> Result<Vec<ColumnSchema>> {
        let rows = self
            .client
            .query(
                "SELECT attname::text, attnum, CASE WHEN atthasmissing THEN attmissingval::text END \
                 FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped",
                &[&oid],
            )
            .await
            .with_context(|| format!("reading the columns of relation {oid}"))?;
        let numbers: HashMap<String, (i16, Option<String>)> = rows.into_iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        let mut out = Vec::with_capacity(columns.len());
        for c in columns {
            out.push(ColumnSchema {
                name: c.name.clone(),
                pg_type: self.type_name(c.type_oid, c.type_modifier).await?,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                column_type: self.column_type(c.type_oid, c.type_modifier).await?,
                key: c.key,
                attnum: numbers.get(&c.name).map(|(n, _)| *n),
                former_names: Vec::new(),
                missing_value: numbers.get(&c.name).and_then(|(_, m)| m.as_deref()).and_then(missing_element),
            });
        }
        Ok(out)
    }

    /// The stored generated columns of relation `oid`, in column order.
    pub async fn generated_columns(&self, oid: u32) -> Result<Vec<GeneratedColumn>> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnum \
                 FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = $1::oid AND a.attgenerated = 's' AND NOT a.attisdropped ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .with_context(|| format!("reading the generated columns of relation {oid}"))?;
        Ok(rows.iter().map(|r| GeneratedColumn { name: r.get(0), pg_type: r.get(1), expression: r.get(2), attnum: Some(r.get(3)) }).collect())
    }

    /// The numbers of relation `oid`'s columns that are not generated, by
    /// name, as the catalog has them now.
    pub async fn plain_column_numbers(&self, oid: u32) -> Result<Vec<(String, i16)>> {
        let rows = self
            .client
            .query("SELECT attname::text, attnum FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped AND attgenerated = ''", &[&oid])
            .await
            .with_context(|| format!("reading the column numbers of relation {oid}"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `format_type(oid, typmod)`: the type as PostgreSQL spells it.
    pub async fn type_name(&mut self, oid: u32, modifier: i32) -> Result<String> {
        if let Some(n) = self.name_cache.get(&(oid, modifier)) {
            return Ok(n.clone());
        }
        let name: Option<String> =
            self.client.query_one("SELECT format_type($1::oid, $2::int)", &[&oid, &modifier]).await.with_context(|| format!("formatting type {oid}"))?.get(0);
        let name = name.unwrap_or_else(|| format!("oid {oid}"));
        self.name_cache.insert((oid, modifier), name.clone());
        Ok(name)
    }
}

/// The value inside `pg_attribute.attmissingval`'s text form, a one-element
/// array of the column's type (`{42}`, `{"a \"b\""}`, `{"{1,2}"}` for an
/// array column); `None` for NULL or a form that is not one element.
fn missing_element(array_text: &str) -> Option<String> {
    let list = ColumnType::Array { element: Box::new(ColumnType::Text) };
    match parse_text(&list, array_text) {
        Ok(Value::Array(items)) => match items.as_slice() {
            [Value::Text(v)] => Some(v.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// What `pg_type` says about a type that is not built in (`None`: no such
/// type). Shared by the replication reader and query pulls.
pub async fn catalog_type(client: &Client, oid: u32) -> Result<Option<CatalogType>> {
    let row = client
        .query_opt("SELECT typtype::text, typbasetype::oid, typtypmod, typelem::oid, typcategory::text FROM pg_type WHERE oid = $1::oid", &[&oid])
        .await
        .with_context(|| format!("looking up type {oid}"))?;
    Ok(row.map(|r| {
        let typtype: String = r.get(0);
        let category: String = r.get(4);
        match typtype.as_str() {
            "e" => CatalogType::Enum,
            "d" => CatalogType::Domain { base_oid: r.get(1), base_modifier: r.get(2) },
            _ if category == "A" && r.get::<_, u32>(3) != 0 => CatalogType::Array { element_oid: r.get(3) },
            _ => CatalogType::Other,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_values_come_out_of_their_one_element_array() {
        assert_eq!(missing_element("{42}").as_deref(), Some("42"));
        assert_eq!(missing_element(r#"{"he said \"hi\", {x}"}"#).as_deref(), Some(r#"he said "hi", {x}"#));
        assert_eq!(missing_element(r#"{"{1,2}"}"#).as_deref(), Some("{1,2}"));
        assert_eq!(missing_element(r#"{"{}"}"#).as_deref(), Some("{}"));
        assert_eq!(missing_element("{NULL}"), None);
        assert_eq!(missing_element("{1,2}"), None);
    }
}
