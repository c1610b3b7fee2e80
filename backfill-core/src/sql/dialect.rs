//! Where the SQL engines differ.

use std::fmt::Debug;

use super::stmt::schema_of;
use super::{Sql, SqlBuilder};
use crate::{Ident, TableRef, Value};

/// The small set of things that differ between SQL engines.
pub trait Dialect: Send + Sync + Debug {
    /// Engine name.
    fn name(&self) -> &'static str;

    /// Quotes an identifier (already validated; quotes are doubled anyway).
    fn quote_ident(&self, ident: &Ident) -> String {
        format!("\"{}\"", ident.as_str().replace('"', "\"\""))
    }

    /// The placeholder for parameter `n` (1-based) holding `value`.
    fn placeholder(&self, n: usize, value: &Value) -> String;

    /// An expression giving the bucket (`0..buckets`) of `expr`, with NULL
    /// in bucket 0.
    fn hash_bucket(&self, expr: &str, buckets: u32) -> String;

    /// An expression hashing a whole row of `alias` to an integer, for
    /// order-independent checksums.
    fn row_hash(&self, alias: &str) -> String;

    /// An expression hashing the values of `exprs` together to an integer
    /// whose sum does not overflow (NULLs hash too).
    fn values_hash(&self, exprs: &[String]) -> String;

    /// The text before and after a filter condition of an aggregate giving
    /// the first `n` values of `text` in the order of `order` among the
    /// rows where the condition holds, joined by U+001F (NULL for none).
    fn first_texts(&self, text: &str, order: &[String], n: usize) -> (String, String);

    /// Casts `expr` to text.
    fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS VARCHAR)")
    }

    /// Seconds since the epoch of a timestamp expression, as a float.
    fn epoch_seconds(&self, expr: &str) -> String;

    /// A table's size from the catalog: one row `(rows, bytes)`, where
    /// `bytes` may be NULL; no row when the table is unknown.
    fn table_size(&self, table: &TableRef) -> Sql;

    /// A relation's columns: rows `(name, data_type, is_nullable)` in
    /// order, none when it does not exist.
    fn describe_relation(&self, table: &TableRef) -> Sql;

    /// The kind of a relation: one row `(table_type)`, `'BASE TABLE'` or
    /// `'VIEW'`, or no row when it does not exist.
    fn relation_kind(&self, table: &TableRef) -> Sql;

    /// Whether row estimates come from `EXPLAIN (FORMAT JSON)` (the
    /// planner's statistics) rather than a count.
    fn estimates_by_explain(&self) -> bool {
        false
    }

    /// The views and materialized views that read `table` directly: rows
    /// `(schema, name, kind)` with kind `view` or `materialized view`.
    fn dependents(&self, table: &TableRef) -> Sql;
}

/// DuckDB.
#[derive(Clone, Copy, Debug, Default)]
pub struct DuckDbDialect;

impl Dialect for DuckDbDialect {
    fn name(&self) -> &'static str {
        "duckdb"
    }

    fn placeholder(&self, n: usize, value: &Value) -> String {
        // DuckDB infers parameter types from context, but not inside
        // arithmetic or derived tables; a cast keeps intent explicit.
        match value {
            Value::Date(_) => format!("CAST(${n} AS DATE)"),
            Value::DateTime(_) => format!("CAST(${n} AS TIMESTAMP)"),
            Value::Timestamp(_) => format!("CAST(${n} AS TIMESTAMPTZ)"),
            _ => format!("${n}"),
        }
    }

    fn hash_bucket(&self, expr: &str, buckets: u32) -> String {
        format!(
            "(CASE WHEN {expr} IS NULL THEN 0 ELSE CAST(hash({expr}) % {buckets} AS BIGINT) END)"
        )
    }

    fn row_hash(&self, alias: &str) -> String {
        format!("CAST(hash({alias}) AS HUGEINT)")
    }

    fn values_hash(&self, exprs: &[String]) -> String {
        format!("CAST(hash({}) AS HUGEINT)", exprs.join(", "))
    }

    fn first_texts(&self, text: &str, order: &[String], n: usize) -> (String, String) {
        let by = if order.len() == 1 {
            order[0].clone()
        } else {
            format!("row({})", order.join(", "))
        };
        (
            format!("array_to_string(arg_min({text}, {by}, {n}) FILTER (WHERE "),
            "), chr(31))".to_string(),
        )
    }

    fn epoch_seconds(&self, expr: &str) -> String {
        format!("(epoch_us({expr}) / 1000000.0)")
    }

    fn describe_relation(&self, table: &TableRef) -> Sql {
        // The catalog functions, not `information_schema`: its views cost
        // several times more per lookup, and writes look their target up
        // on every batch.
        let mut b = SqlBuilder::new(self);
        b.push("SELECT column_name, data_type, CASE WHEN is_nullable THEN 'YES' ELSE 'NO' END FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = ");
        schema_of(&mut b, table);
        b.push(" AND table_name = ")
            .param(Value::Text(table.name.to_string()))
            .push(" ORDER BY column_index");
        b.finish()
    }

    fn relation_kind(&self, table: &TableRef) -> Sql {
        let mut b = SqlBuilder::new(self);
        b.push("SELECT 'BASE TABLE' FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = ");
        schema_of(&mut b, table);
        b.push(" AND table_name = ")
            .param(Value::Text(table.name.to_string()))
            .push(" UNION ALL SELECT 'VIEW' FROM duckdb_views() WHERE database_name = current_database() AND schema_name = ");
        schema_of(&mut b, table);
        b.push(" AND view_name = ")
            .param(Value::Text(table.name.to_string()));
        b.finish()
    }

    fn dependents(&self, table: &TableRef) -> Sql {
        // DuckDB binds views lazily and records no dependency on their
        // tables, so a view depends on a table when its SQL names it as a
        // whole word (a name is a validated identifier: safe in a pattern).
        let mut b = SqlBuilder::new(self);
        let word = format!("(^|[^A-Za-z0-9_]){}($|[^A-Za-z0-9_])", table.name);
        b.push("SELECT schema_name, view_name, 'view' FROM duckdb_views() WHERE NOT internal AND regexp_matches(sql, ")
            .param(Value::Text(word))
            .push(") AND NOT (schema_name = ");
        schema_of(&mut b, table);
        b.push(" AND view_name = ")
            .param(Value::Text(table.name.to_string()))
            .push(") ORDER BY 1, 2");
        b.finish()
    }

    fn table_size(&self, table: &TableRef) -> Sql {
        // DuckDB keeps an exact row count per table; bytes are only
        // reported per database, so they stay unknown here.
        let mut b = SqlBuilder::new(self);
        b.push("SELECT CAST(estimated_size AS BIGINT), CAST(NULL AS BIGINT) FROM duckdb_tables() WHERE schema_name = ");
        schema_of(&mut b, table);
        b.push(" AND table_name = ")
            .param(Value::Text(table.name.to_string()));
        b.finish()
    }
}

/// PostgreSQL.
#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresDialect;

impl Dialect for PostgresDialect {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn placeholder(&self, n: usize, value: &Value) -> String {
        match value {
            Value::Date(_) => format!("${n}::date"),
            Value::DateTime(_) => format!("${n}::timestamp"),
            Value::Timestamp(_) => format!("${n}::timestamptz"),
            _ => format!("${n}"),
        }
    }

    fn hash_bucket(&self, expr: &str, buckets: u32) -> String {
        format!("(CASE WHEN {expr} IS NULL THEN 0 ELSE mod(abs(hashtext(({expr})::text)::bigint), {buckets}) END)")
    }

    fn row_hash(&self, alias: &str) -> String {
        format!("hashtext({alias}::text)::numeric")
    }

    fn values_hash(&self, exprs: &[String]) -> String {
        format!("hashtext(ROW({})::text)::numeric", exprs.join(", "))
    }

    fn first_texts(&self, text: &str, order: &[String], n: usize) -> (String, String) {
        (
            format!(
                "array_to_string((array_agg({text} ORDER BY {}) FILTER (WHERE ",
                order.join(", ")
            ),
            format!("))[1:{n}], chr(31))"),
        )
    }

    fn text(&self, expr: &str) -> String {
        format!("({expr})::text")
    }

    fn epoch_seconds(&self, expr: &str) -> String {
        format!("extract(epoch FROM {expr})::float8")
    }

    fn estimates_by_explain(&self) -> bool {
        true
    }

    fn dependents(&self, table: &TableRef) -> Sql {
        let mut b = SqlBuilder::new(self);
        b.push("SELECT DISTINCT vn.nspname::text, v.relname::text, CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END FROM pg_class t JOIN pg_namespace tn ON tn.oid = t.relnamespace JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace WHERE tn.nspname = ");
        schema_of(&mut b, table);
        b.push(" AND t.relname = ")
            .param(Value::Text(table.name.to_string()))
            .push(" AND v.oid <> t.oid ORDER BY 1, 2");
        b.finish()
    }

    fn relation_kind(&self, table: &TableRef) -> Sql {
        super::stmt::relation_kind_standard(self, table)
    }

    fn describe_relation(&self, table: &TableRef) -> Sql {
        // The catalog, not information_schema, so materialized views (and
        // partitioned tables' partitions) are described too.
        let mut b = SqlBuilder::new(self);
        b.push("SELECT a.attname::text, format_type(a.atttypid, NULL), CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ");
        schema_of(&mut b, table);
        b.push(" AND c.relname = ")
            .param(Value::Text(table.name.to_string()))
            .push(" AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum");
        b.finish()
    }

    fn table_size(&self, table: &TableRef) -> Sql {
        // reltuples is -1 until the table is first analyzed.
        let mut b = SqlBuilder::new(self);
        b.push("SELECT greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ");
        schema_of(&mut b, table);
        b.push(" AND c.relname = ")
            .param(Value::Text(table.name.to_string()));
        b.finish()
    }
}
