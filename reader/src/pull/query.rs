//! The SQL of a pull: one page of the pulled rows, in `(watermark, key…)`
//! order, strictly after a position. Pure: no I/O, so the order and the
//! tie-breaker are tested without a database.
//!
//! ```text
//! COPY (SELECT q.* [, (soft_delete) IS TRUE]
//!       FROM (<query> | SELECT * FROM <table>) q
//!       WHERE q.wm IS NOT NULL AND q.k1 IS NOT NULL …
//!         AND (q.wm, q.k1, …) > ('…'::type, '…'::type, …)    -- after a row
//!          or q.wm >= '…'::type - interval '…'                 -- a look-back
//!       ORDER BY q.wm, q.k1, … LIMIT n) TO STDOUT
//! ```
//!
//! The order is total because the key identifies a row: rows sharing a
//! watermark are ordered by key, so a page that ends inside such a run
//! continues with the next key, not the next watermark. Comparing the
//! watermark alone would skip the rest of the run. Rows whose watermark or
//! key is NULL never compare, so they are never pulled (documented).

use std::time::Duration;

use strata_common::ident::{quote_ident, quote_literal};

/// A value of the order's columns, as PostgreSQL's text form and the type
/// (`format_type`) to read it back as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    pub text: String,
    pub pg_type: String,
}

impl Typed {
    /// The value as SQL: a literal cast to its type.
    pub fn sql(&self) -> String {
        format!("CAST({} AS {})", quote_literal(&self.text), self.pg_type)
    }
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// From the first row: a stream's first round.
    First,
    /// Strictly after the row at `(watermark, key…)`: every column of the
    /// order, the key breaking ties of the watermark.
    After(Vec<Typed>),
    /// At or after `watermark - back` (a round with a look-back window);
    /// rows already staged unchanged are skipped by the caller.
    LookBack { watermark: Typed, back: Duration },
}

/// What every page of a pull reads.
#[derive(Debug, Clone)]
pub struct PageQuery {
    /// The rows: a query, or `SELECT * FROM` a table or view.
    pub source: String,
    pub watermark: String,
    pub key: Vec<String>,
    pub soft_delete: Option<String>,
}

impl PageQuery {
    /// The columns that order the rows: the watermark, then the key.
    pub fn order_columns(&self) -> Vec<&str> {
        std::iter::once(self.watermark.as_str()).chain(self.key.iter().map(String::as_str)).collect()
    }

    /// `SELECT q.* FROM (…) q LIMIT 0`: prepared to learn the result's
    /// columns and types without reading a row.
    pub fn describe_sql(&self) -> String {
        format!("SELECT q.* FROM ({}) q LIMIT 0", self.source)
    }

    /// The COPY of one page of at most `limit` rows from `start`.
    pub fn page_sql(&self, start: &Start, limit: u64) -> String {
        let order: Vec<String> = self.order_columns().iter().map(|c| format!("q.{}", quote_ident(c))).collect();
        let mut filters: Vec<String> = order.iter().map(|c| format!("{c} IS NOT NULL")).collect();
        match start {
            Start::First => {}
            Start::After(values) => {
                let values: Vec<String> = values.iter().map(Typed::sql).collect();
                filters.push(format!("({}) > ({})", order.join(", "), values.join(", ")));
            }
            Start::LookBack { watermark, back } => {
                filters.push(format!("{} >= {} - CAST('{} microseconds' AS interval)", order[0], watermark.sql(), back.as_micros()));
            }
        }
        let deleted = match &self.soft_delete {
            Some(expr) => format!(", ({expr}) IS TRUE"),
            None => String::new(),
        };
        format!("COPY (SELECT q.*{deleted} FROM ({}) q WHERE {} ORDER BY {} LIMIT {limit}) TO STDOUT", self.source, filters.join(" AND "), order.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders() -> PageQuery {
        PageQuery { source: "SELECT * FROM public.orders".to_owned(), watermark: "updated_at".to_owned(), key: vec!["id".to_owned()], soft_delete: None }
    }

    fn typed(text: &str, pg_type: &str) -> Typed {
        Typed { text: text.to_owned(), pg_type: pg_type.to_owned() }
    }

    #[test]
    fn a_page_after_a_row_compares_watermark_and_key_together() {
        let start = Start::After(vec![typed("2026-01-01 00:00:00+00", "timestamp with time zone"), typed("7", "bigint")]);
        let sql = orders().page_sql(&start, 100);
        assert_eq!(
            sql,
            "COPY (SELECT q.* FROM (SELECT * FROM public.orders) q WHERE q.\"updated_at\" IS NOT NULL AND q.\"id\" IS NOT NULL \
             AND (q.\"updated_at\", q.\"id\") > (CAST(E'2026-01-01 00:00:00+00' AS timestamp with time zone), CAST(E'7' AS bigint)) \
             ORDER BY q.\"updated_at\", q.\"id\" LIMIT 100) TO STDOUT"
        );
    }

    /// A row of integer columns, by name.
    type Row = Vec<(&'static str, i64)>;

    /// What PostgreSQL does with [`PageQuery::page_sql`], over rows of
    /// integer columns held in memory: filter by the start, order by
    /// [`PageQuery::order_columns`], limit. The pull's pager (below) then
    /// continues after the whole order position of a page's last row, as
    /// `round` does.
    fn page(q: &PageQuery, rows: &[Row], start: &Start, limit: usize) -> Vec<Row> {
        let position = |row: &Row| -> Vec<i64> { q.order_columns().iter().map(|c| row.iter().find(|(n, _)| n == c).unwrap().1).collect() };
        let mut out: Vec<Row> = rows
            .iter()
            .filter(|row| match start {
                Start::First => true,
                Start::After(values) => {
                    let bound: Vec<i64> = values.iter().map(|v| v.text.parse().unwrap()).collect();
                    position(row)[..bound.len()] > bound[..]
                }
                Start::LookBack { watermark, back } => position(row)[0] >= watermark.text.parse::<i64>().unwrap() - i64::try_from(back.as_micros()).unwrap(),
            })
            .cloned()
            .collect();
        out.sort_by_key(|row| position(row));
        out.truncate(limit);
        out
    }

    /// Pages through `rows` from `start` as a round does; returns the ids
    /// read and the position after the last one.
    fn round(q: &PageQuery, rows: &[Row], mut start: Start, limit: usize) -> (Vec<i64>, Option<Vec<String>>) {
        let (mut ids, mut last) = (Vec::new(), None);
        loop {
            let got = page(q, rows, &start, limit);
            for row in &got {
                ids.push(row.iter().find(|(n, _)| *n == "id").unwrap().1);
            }
            let Some(tail) = got.last() else { break };
            let position: Vec<String> = q.order_columns().iter().map(|c| tail.iter().find(|(n, _)| n == c).unwrap().1.to_string()).collect();
            start = Start::After(position.iter().map(|t| typed(t, "bigint")).collect());
            last = Some(position);
            if got.len() < limit {
                break;
            }
        }
        (ids, last)
    }

    fn int_query() -> PageQuery {
        PageQuery { source: "t".to_owned(), watermark: "wm".to_owned(), key: vec!["id".to_owned()], soft_delete: None }
    }

    #[test]
    fn pages_ending_inside_a_run_of_ties_lose_no_row() {
        // Ten rows share watermark 5; pages of three end inside the run.
        let mut rows: Vec<Row> = (1..=10).map(|id| vec![("wm", 5), ("id", 11 - id)]).collect();
        rows.push(vec![("wm", 4), ("id", 99)]);
        rows.push(vec![("wm", 6), ("id", 0)]);
        let (ids, last) = round(&int_query(), &rows, Start::First, 3);
        assert_eq!(ids, [99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0], "every row once, in (watermark, key) order");
        assert_eq!(last, Some(vec!["6".to_owned(), "0".to_owned()]));
        // A later round continues strictly after the last row: a row tied
        // with it but with a greater key is new, one with a smaller key was
        // already read.
        rows.push(vec![("wm", 6), ("id", 1)]);
        let after = Start::After(last.unwrap().iter().map(|t| typed(t, "bigint")).collect());
        assert_eq!(round(&int_query(), &rows, after, 3).0, [1]);
    }

    #[test]
    fn a_look_back_round_reads_the_window_again_and_the_window_stages_only_what_is_new() {
        use super::super::window::Window;
        let q = int_query();
        let mut rows: Vec<Row> = (1..=6).map(|id| vec![("wm", 10 + id / 2), ("id", id)]).collect();
        let mut window = Window::default();
        let (ids, last) = round(&q, &rows, Start::First, 2);
        for id in &ids {
            assert!(window.admit(id.to_be_bytes().to_vec(), 0));
        }
        window.end_round();
        // A transaction that took watermark 11 commits late, after 13 was
        // staged: past the last position it would be missed; a look-back of
        // 2 reads 11.. again and finds it.
        rows.push(vec![("wm", 11), ("id", 100)]);
        let last = last.unwrap();
        let strict = Start::After(last.iter().map(|t| typed(t, "bigint")).collect());
        assert!(round(&q, &rows, strict, 2).0.is_empty(), "without a look-back the late row is not seen");
        let back = Start::LookBack { watermark: typed(&last[0], "bigint"), back: Duration::from_micros(2) };
        let (again, _) = round(&q, &rows, back, 2);
        assert_eq!(again, [2, 3, 100, 4, 5, 6], "the window in (watermark, key) order");
        let staged: Vec<i64> = again.into_iter().filter(|id| window.admit(id.to_be_bytes().to_vec(), 0)).collect();
        assert_eq!(staged, [100], "only the late row is staged again");
    }

    #[test]
    fn look_back_and_soft_delete_render() {
        let mut q = orders();
        q.soft_delete = Some("deleted_at IS NOT NULL".to_owned());
        let sql = q.page_sql(&Start::LookBack { watermark: typed("x'", "timestamp"), back: Duration::from_secs(2) }, 5);
        assert!(sql.starts_with("COPY (SELECT q.*, (deleted_at IS NOT NULL) IS TRUE FROM"), "{sql}");
        assert!(sql.contains("q.\"updated_at\" >= CAST(E'x''' AS timestamp) - CAST('2000000 microseconds' AS interval)"), "{sql}");
        assert!(q.page_sql(&Start::First, 5).contains("WHERE q.\"updated_at\" IS NOT NULL AND q.\"id\" IS NOT NULL ORDER BY"), "{sql}");
    }
}
