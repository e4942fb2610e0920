//! What a snapshot copies, read from the catalog inside the exported
//! snapshot: the published tables and their columns exactly as pgoutput will
//! announce them (so the change stream reuses the snapshot's schema
//! versions), their size for splitting into page ranges, and the
//! foreign-key graph that orders loading.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, Result, anyhow};
use strata_common::TableName;
pub use strata_stager::control::Membership;
use strata_stager::manifest::SnapshotTable;
use tokio_postgres::Client;

use crate::source::{Relation, RelationColumn};

/// One published table to copy.
#[derive(Debug, Clone)]
pub struct PlannedTable {
    pub table: TableName,
    /// The columns pgoutput sends, as a Relation message would carry them.
    pub relation: Relation,
    /// Heap pages at planning time (0 for a partitioned table's root).
    pub pages: u64,
    /// The planner's row estimate, for progress.
    pub estimated_rows: u64,
    /// A partitioned root has no heap of its own: one range, no TID bounds.
    pub partitioned: bool,
    pub graph: SnapshotTable,
    pub level: u32,
    /// The table as the snapshot sees it, to tell whether DDL since then
    /// invalidates its copy.
    pub shape: Shape,
}

/// What a table's copy relies on keeping the state it had in the snapshot:
/// the name it is read by, the files its rows are read from, and each
/// column by number, name and type. Reading catalog tables by SQL sees them
/// as of the transaction's snapshot, while a COPY resolves names against
/// the current catalog and reads the current files; so DDL committed after
/// the snapshot point makes a copy fail (a dropped or renamed column) or,
/// worse, read nothing: TRUNCATE and table rewrites (`ALTER COLUMN … TYPE`,
/// a volatile default) are not MVCC-safe, and an older snapshot sees the
/// new files empty. Comparing the two states catches both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    name: (String, String),
    /// `(oid, relfilenode)` of the table and, for a partitioned root, of
    /// every partition below it.
    files: Vec<(u32, u32)>,
    columns: Vec<(i16, String, u32)>,
}

impl Shape {
    /// Whether a copy of `copied` columns made as of `self` still reads
    /// the same rows and columns from a table now shaped as `now`; columns
    /// added since do not matter.
    pub fn still_holds<'a>(&self, now: Option<&Shape>, mut copied: impl Iterator<Item = &'a str>) -> bool {
        let Some(now) = now else { return false };
        self.name == now.name
            && self.files == now.files
            && copied.all(|c| {
                let then = self.columns.iter().find(|(_, name, _)| name == c);
                then.is_some_and(|then| now.columns.contains(then))
            })
    }
}

/// `oid`'s [`Shape`] as `client` sees the catalog (`None`: no such table).
pub async fn shape(client: &Client, oid: u32) -> Result<Option<Shape>> {
    let row = client
        .query_opt(
            "WITH RECURSIVE tree(oid) AS ( \
                 SELECT $1::oid UNION ALL \
                 SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid \
                 WHERE (SELECT relkind FROM pg_class WHERE oid = $1::oid) = 'p'), \
             files AS (SELECT p.oid, p.relfilenode FROM tree JOIN pg_class p ON p.oid = tree.oid), \
             cols AS (SELECT attnum, attname::text AS attname, atttypid FROM pg_attribute \
                      WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped) \
             SELECT n.nspname::text, c.relname::text, \
                    ARRAY(SELECT oid FROM files ORDER BY oid), ARRAY(SELECT relfilenode FROM files ORDER BY oid), \
                    ARRAY(SELECT attnum FROM cols ORDER BY attnum), ARRAY(SELECT attname FROM cols ORDER BY attnum), \
                    ARRAY(SELECT atttypid FROM cols ORDER BY attnum) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid",
            &[&oid],
        )
        .await
        .with_context(|| format!("reading the shape of relation {oid}"))?;
    let Some(row) = row else { return Ok(None) };
    let files = row.get::<_, Vec<u32>>(2).into_iter().zip(row.get::<_, Vec<u32>>(3)).collect();
    let (numbers, names, types): (Vec<i16>, Vec<String>, Vec<u32>) = (row.get(4), row.get(5), row.get(6));
    let columns = numbers.into_iter().zip(names).zip(types).map(|((n, name), t)| (n, name, t)).collect();
    Ok(Some(Shape { name: (row.get(0), row.get(1)), files, columns }))
}

/// A page range `[start, end)` of a table; `end = None` is open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub start: u64,
    pub end: Option<u64>,
}

impl PlannedTable {
    /// The table split into ranges of `range_pages` pages. The last range is
    /// open-ended: rows the snapshot sees live in pages that existed when it
    /// was taken, but the size is read after, so the bound must not cut.
    pub fn ranges(&self, range_pages: u64) -> Vec<PageRange> {
        let range_pages = range_pages.max(1);
        if self.partitioned || self.pages <= range_pages {
            return vec![PageRange { start: 0, end: None }];
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start + range_pages < self.pages {
            out.push(PageRange { start, end: Some(start + range_pages) });
            start += range_pages;
        }
        out.push(PageRange { start, end: None });
        out
    }
}

/// Reads the published tables and their load order. `client` must be inside
/// the snapshot's transaction, so the catalog is the snapshot's.
pub async fn plan(client: &Client, publication: &str) -> Result<Vec<PlannedTable>> {
    let version: i32 = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
    // PostgreSQL 15 publications may publish a column list.
    let attnames = if version >= 150000 { "pt.attnames::text[]" } else { "NULL::text[]" };
    let rows = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, c.relkind::text, \
                        pg_relation_size(c.oid) / current_setting('block_size')::int8, \
                        greatest(c.reltuples, 0)::float8, {attnames} \
                 FROM pg_publication_tables pt \
                 JOIN pg_namespace n ON n.nspname = pt.schemaname \
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
                 WHERE pt.pubname = $1 ORDER BY 2, 3"
            ),
            &[&publication],
        )
        .await
        .with_context(|| format!("listing the tables of publication {publication:?}"))?;
    let mut tables = Vec::with_capacity(rows.len());
    for r in rows {
        let oid: u32 = r.get(0);
        let table = TableName::new(r.get::<_, String>(1), r.get::<_, String>(2)).map_err(|e| anyhow!("table {oid}: {e}"))?;
        let identity: String = r.get(3);
        let kind: String = r.get(4);
        let published: Option<Vec<String>> = r.get(7);
        let columns = columns(client, oid, &identity, published.as_deref()).await.with_context(|| format!("reading the columns of {table}"))?;
        let shape = shape(client, oid).await?.with_context(|| format!("{table} (relation {oid}) vanished from the snapshot's catalog"))?;
        tables.push(PlannedTable {
            relation: Relation {
                oid,
                namespace: table.schema.clone(),
                name: table.name.clone(),
                replica_identity: identity.bytes().next().unwrap_or(b'd'),
                columns,
            },
            graph: SnapshotTable { table: table.clone(), depends_on: Vec::new(), cycle: Vec::new() },
            table,
            pages: r.get::<_, i64>(5).max(0) as u64,
            estimated_rows: r.get::<_, f64>(6) as u64,
            partitioned: kind == "p",
            level: 0,
            shape,
        });
    }
    let edges = client
        .query("SELECT DISTINCT conrelid::oid, confrelid::oid FROM pg_constraint WHERE contype = 'f'", &[])
        .await
        .context("reading foreign keys")?
        .into_iter()
        .map(|r| (r.get::<_, u32>(0), r.get::<_, u32>(1)))
        .collect::<Vec<_>>();
    order(&mut tables, &edges);
    Ok(tables)
}

/// One table as pgoutput would announce it now, and the columns of its
/// primary key (else of its replica identity index), in index order; `None`
/// if there is no such table.
pub async fn relation(client: &Client, table: &TableName) -> Result<Option<(Relation, Vec<String>)>> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&table.schema, &table.name],
        )
        .await
        .with_context(|| format!("looking up {table}"))?;
    let Some(row) = row else { return Ok(None) };
    let (oid, identity): (u32, String) = (row.get(0), row.get(1));
    let columns = columns(client, oid, &identity, None).await.with_context(|| format!("reading the columns of {table}"))?;
    let key = client
        .query(
            "SELECT a.attname::text FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, pos) \
             JOIN pg_attribute a ON a.attnum = k.attnum \
             WHERE i.indrelid = $1::oid AND a.attrelid = $1::oid \
               AND i.indexrelid = (SELECT indexrelid FROM pg_index WHERE indrelid = $1::oid AND (indisprimary OR indisreplident) \
                                   ORDER BY indisprimary DESC LIMIT 1) \
             ORDER BY k.pos",
            &[&oid],
        )
        .await
        .with_context(|| format!("reading the key of {table}"))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let relation =
        Relation { oid, namespace: table.schema.clone(), name: table.name.clone(), replica_identity: identity.bytes().next().unwrap_or(b'd'), columns };
    Ok(Some((relation, key)))
}

/// Reads how `publication` names its tables (see [`Membership`]).
pub async fn membership(client: &Client, publication: &str) -> Result<Membership> {
    let all_tables: bool = client
        .query_opt("SELECT puballtables FROM pg_publication WHERE pubname = $1", &[&publication])
        .await?
        .with_context(|| format!("publication {publication:?} does not exist"))?
        .get(0);
    let mut tables = Vec::new();
    for r in client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid \
             JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .context("reading the publication's tables")?
    {
        tables.push(TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)).map_err(|e| anyhow!("{e}"))?);
    }
    let version: i32 = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
    let schemas = if version >= 150000 {
        client
            .query(
                "SELECT n.nspname::text FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid \
                 JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = $1 ORDER BY 1",
                &[&publication],
            )
            .await
            .context("reading the publication's schemas")?
            .into_iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Membership { all_tables, tables, schemas })
}

/// Published tables that joined the publication since `before`: those
/// named (or partitions of those named) and those of newly named schemas.
pub async fn joined_since(client: &Client, publication: &str, before: &Membership, now: &Membership) -> Result<Vec<TableName>> {
    let mut out = Vec::new();
    for t in now.tables.iter().filter(|t| !before.tables.contains(t)) {
        for r in client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables, \
                        LATERAL (SELECT format('%I.%I', schemaname, tablename)::regclass AS rel) r \
                 WHERE pubname = $1 AND coalesce(pg_partition_root(r.rel), r.rel) = format('%I.%I', $2::text, $3::text)::regclass",
                &[&publication, &t.schema, &t.name],
            )
            .await?
        {
            out.push(TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)).map_err(|e| anyhow!("{e}"))?);
        }
    }
    let schemas: Vec<&String> = now.schemas.iter().filter(|s| !before.schemas.contains(s)).collect();
    if !schemas.is_empty() {
        for r in client
            .query("SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 AND schemaname = ANY($2)", &[&publication, &schemas])
            .await?
        {
            out.push(TableName::new(r.get::<_, String>(0), r.get::<_, String>(1)).map_err(|e| anyhow!("{e}"))?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The columns pgoutput announces: attnum order, no dropped or generated
/// columns, only the published ones, and the key flag per replica identity
/// (FULL flags every column).
async fn columns(client: &Client, oid: u32, identity: &str, published: Option<&[String]>) -> Result<Vec<RelationColumn>> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid::oid, a.atttypmod, \
                    CASE $2::text WHEN 'f' THEN true WHEN 'n' THEN false ELSE EXISTS ( \
                        SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND a.attnum = ANY(i.indkey::int2[]) \
                          AND CASE $2::text WHEN 'd' THEN i.indisprimary ELSE i.indisreplident END) END \
             FROM pg_attribute a \
             WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid, &identity],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| RelationColumn { name: r.get(0), type_oid: r.get(1), type_modifier: r.get(2), key: r.get(3) })
        .filter(|c| published.is_none_or(|p| p.contains(&c.name)))
        .collect())
}

/// Fills each table's dependencies, cycle and level from foreign keys
/// `(referencing, referenced)`: strongly connected components (Tarjan) are
/// the cycles; a component's level is one more than the highest level it
/// references, so loading by increasing level puts parents first.
fn order(tables: &mut [PlannedTable], edges: &[(u32, u32)]) {
    let index: HashMap<u32, usize> = tables.iter().enumerate().map(|(i, t)| (t.relation.oid, i)).collect();
    let n = tables.len();
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (from, to) in edges {
        if let (Some(&a), Some(&b)) = (index.get(from), index.get(to))
            && a != b
        {
            deps[a].insert(b);
        }
    }
    let components = tarjan(&deps);
    let mut component_of = vec![0; n];
    for (c, members) in components.iter().enumerate() {
        for &m in members {
            component_of[m] = c;
        }
    }
    // Tarjan emits components in reverse topological order of the edges
    // (a component after every component it reaches): referenced first.
    let mut level = vec![0u32; components.len()];
    for (c, members) in components.iter().enumerate() {
        let l = members.iter().flat_map(|&m| deps[m].iter()).filter(|&&d| component_of[d] != c).map(|&d| level[component_of[d]] + 1).max().unwrap_or(0);
        level[c] = l;
    }
    let names: Vec<TableName> = tables.iter().map(|t| t.table.clone()).collect();
    for (i, t) in tables.iter_mut().enumerate() {
        let c = component_of[i];
        t.level = level[c];
        t.graph.depends_on = deps[i].iter().map(|&d| names[d].clone()).collect();
        if components[c].len() > 1 {
            t.graph.cycle = components[c].iter().filter(|&&m| m != i).map(|&m| names[m].clone()).collect();
            t.graph.cycle.sort();
        }
    }
}

/// Strongly connected components, each after every component it reaches.
fn tarjan(deps: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        deps: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.deps[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            s.out.push(component);
        }
    }
    let n = deps.len();
    let mut s = State { deps, index: vec![None; n], low: vec![0; n], on_stack: vec![false; n], stack: Vec::new(), next: 0, out: Vec::new() };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(oid: u32, name: &str) -> PlannedTable {
        let table = TableName::new("public", name).unwrap();
        PlannedTable {
            relation: Relation { oid, namespace: "public".into(), name: name.into(), replica_identity: b'd', columns: vec![] },
            graph: SnapshotTable { table: table.clone(), depends_on: vec![], cycle: vec![] },
            table,
            pages: 0,
            estimated_rows: 0,
            partitioned: false,
            level: 0,
            shape: Shape { name: ("public".into(), name.into()), files: vec![], columns: vec![] },
        }
    }

    fn levels(tables: &[PlannedTable]) -> Vec<(String, u32)> {
        tables.iter().map(|t| (t.table.name.clone(), t.level)).collect()
    }

    #[test]
    fn parents_load_before_children() {
        // orders → customers, order_items → orders and products; notes unrelated.
        let mut t = vec![table(1, "customers"), table(2, "orders"), table(3, "order_items"), table(4, "products"), table(5, "notes")];
        order(&mut t, &[(2, 1), (3, 2), (3, 4), (99, 1)]);
        assert_eq!(levels(&t), [("customers".into(), 0), ("orders".into(), 1), ("order_items".into(), 2), ("products".into(), 0), ("notes".into(), 0)]);
        assert_eq!(t[2].graph.depends_on.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["orders", "products"]);
        assert!(t.iter().all(|t| t.graph.cycle.is_empty()));
    }

    #[test]
    fn cycles_are_reported_and_share_a_level() {
        // a ⇄ b, c → a, self-reference on d is not a cycle between tables.
        let mut t = vec![table(1, "a"), table(2, "b"), table(3, "c"), table(4, "d")];
        order(&mut t, &[(1, 2), (2, 1), (3, 1), (4, 4)]);
        assert_eq!(levels(&t), [("a".into(), 0), ("b".into(), 0), ("c".into(), 1), ("d".into(), 0)]);
        assert_eq!(t[0].graph.cycle, [TableName::new("public", "b").unwrap()]);
        assert_eq!(t[1].graph.cycle, [TableName::new("public", "a").unwrap()]);
        assert!(t[2].graph.cycle.is_empty() && t[3].graph.cycle.is_empty() && t[3].graph.depends_on.is_empty());
    }

    #[test]
    fn ranges_cover_the_table_and_end_open() {
        let mut t = table(1, "big");
        t.pages = 10;
        assert_eq!(t.ranges(4), [PageRange { start: 0, end: Some(4) }, PageRange { start: 4, end: Some(8) }, PageRange { start: 8, end: None }]);
        assert_eq!(t.ranges(10), [PageRange { start: 0, end: None }]);
        t.partitioned = true;
        assert_eq!(t.ranges(4), [PageRange { start: 0, end: None }]);
    }
}
