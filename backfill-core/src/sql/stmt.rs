//! Statement renderers shared by the SQL engines.
//!
//! Each function returns one [`Sql`] statement; adapters execute them and
//! override only where their engine has a better native path.

use super::{Dialect, Sql, SqlBuilder};
use super::{BATCH_COLUMN, MARKER_COLUMN};
use crate::plan::Batch;
use crate::{Column, ColumnType, Ident, Predicate, Source, TableRef, TableSchema, Value};

/// `SELECT count(*) FROM table WHERE predicate`.
pub fn count(d: &dyn Dialect, table: &TableRef, predicate: &Predicate) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT count(*) FROM ")
        .table(table)
        .push(" AS __t WHERE ");
    b.predicate(predicate, Some("__t"));
    b.finish()
}

/// Key quality of a slice: `(stats, sample)`.
///
/// `stats` returns one row `(rows, null_keys, duplicate_keys)`; duplicates
/// are found with GROUP BY … HAVING count(*) > 1, never a self-join.
/// `sample` returns up to `limit` duplicate keys as one text column.
pub fn key_report(
    d: &dyn Dialect,
    table: &TableRef,
    keys: &[crate::Ident],
    predicate: &Predicate,
    limit: usize,
) -> (Sql, Sql) {
    let dup_cte = |b: &mut SqlBuilder<'_>| {
        b.push("WITH __s AS (SELECT ")
            .idents(keys, Some("__t"))
            .push(" FROM ")
            .table(table);
        b.push(" AS __t WHERE ")
            .predicate(predicate, Some("__t"))
            .push("), __g AS (SELECT ");
        b.idents(keys, None).push(" FROM __s WHERE ");
        not_null(b, keys);
        b.push(" GROUP BY ")
            .idents(keys, None)
            .push(" HAVING count(*) > 1) ");
    };
    let mut s = SqlBuilder::new(d);
    dup_cte(&mut s);
    s.push("SELECT (SELECT count(*) FROM __s), (SELECT count(*) FROM __s WHERE NOT (");
    not_null(&mut s, keys);
    s.push(")), (SELECT count(*) FROM __g)");

    let mut m = SqlBuilder::new(d);
    dup_cte(&mut m);
    m.push("SELECT ");
    keys_as_text(&mut m, keys, None);
    m.push(" FROM __g ORDER BY ").idents(keys, None);
    m.push(&format!(" LIMIT {limit}"));
    (s.finish(), m.finish())
}

/// The target rows of `table` outside `scope` whose key occurs in
/// `source` (a merge would rewrite them): their count, and a query for up
/// to `limit` of their keys as text.
pub fn keys_outside(
    d: &dyn Dialect,
    table: &TableRef,
    keys: &[crate::Ident],
    source: &TableRef,
    scope: &Predicate,
    limit: usize,
) -> (Sql, Sql) {
    let from = |b: &mut SqlBuilder<'_>| {
        b.push(" FROM ")
            .table(table)
            .push(" AS __t WHERE NOT COALESCE((");
        b.predicate(scope, Some("__t"))
            .push("), FALSE) AND EXISTS (SELECT 1 FROM ");
        b.table(source).push(" AS __s WHERE ");
        keys_equal(b, keys, "__s", "__t");
        b.push(")");
    };
    count_and_sample(d, keys, "__t", from, limit)
}

/// The keys of `source` that `log` holds for another batch than
/// `batch_id` (a key a run's earlier batch wrote): their count, and a
/// query for up to `limit` of them as text.
pub fn keys_logged_elsewhere(
    d: &dyn Dialect,
    log: &TableRef,
    keys: &[crate::Ident],
    source: &TableRef,
    batch_id: &str,
    limit: usize,
) -> (Sql, Sql) {
    let from = |b: &mut SqlBuilder<'_>| {
        b.push(" FROM ")
            .table(source)
            .push(" AS __s WHERE EXISTS (SELECT 1 FROM ");
        b.table(log)
            .push(" AS __l WHERE ")
            .qualified("__l", &batch_ident())
            .push(" <> ");
        text_param(b, batch_id);
        b.push(" AND ");
        keys_equal(b, keys, "__l", "__s");
        b.push(")");
    };
    count_and_sample(d, keys, "__s", from, limit)
}

/// `k1 || ', ' || k2 …` as text, each key qualified by `alias` if given.
fn keys_as_text(b: &mut SqlBuilder<'_>, keys: &[crate::Ident], alias: Option<&str>) {
    let d = b.dialect();
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            b.push(" || ', ' || ");
        }
        let q = match alias {
            Some(a) => format!("{a}.{}", d.quote_ident(k)),
            None => d.quote_ident(k),
        };
        b.push(&d.text(&q));
    }
}

/// `SELECT count(*)` over the rows `from` gives, and a query for up to
/// `limit` of their keys (qualified by `alias`) as text, in key order.
fn count_and_sample(
    d: &dyn Dialect,
    keys: &[crate::Ident],
    alias: &str,
    from: impl Fn(&mut SqlBuilder<'_>),
    limit: usize,
) -> (Sql, Sql) {
    let mut c = SqlBuilder::new(d);
    c.push("SELECT count(*)");
    from(&mut c);
    let mut m = SqlBuilder::new(d);
    m.push("SELECT ");
    keys_as_text(&mut m, keys, Some(alias));
    from(&mut m);
    m.push(" ORDER BY ").idents(keys, Some(alias));
    m.push(&format!(" LIMIT {limit}"));
    (c.finish(), m.finish())
}

fn not_null(b: &mut SqlBuilder<'_>, keys: &[crate::Ident]) {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            b.push(" AND ");
        }
        b.ident(k).push(" IS NOT NULL");
    }
}

// ---------------------------------------------------------------------------
// Transactions and helpers
// ---------------------------------------------------------------------------

/// The current value of engine setting `name`, as text.
pub fn current_setting(d: &dyn Dialect, name: &'static str) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT CAST(current_setting(")
        .param(Value::Text(name.to_string()))
        .push(") AS VARCHAR)");
    b.finish()
}

/// `SET name = 'value'` for a setting and value the library names itself
/// (engines take no parameters in `SET`).
pub fn set_setting(name: &'static str, value: &'static str) -> String {
    format!("SET {name} = '{value}'")
}

/// Starts a transaction.
pub const BEGIN: &str = "BEGIN TRANSACTION";
/// Commits the open transaction.
pub const COMMIT: &str = "COMMIT";
/// Rolls the open transaction back.
pub const ROLLBACK: &str = "ROLLBACK";

fn batch_ident() -> Ident {
    Ident::new(BATCH_COLUMN).expect("BATCH_COLUMN is a valid identifier")
}

fn marker_ident() -> Ident {
    Ident::new(MARKER_COLUMN).expect("MARKER_COLUMN is a valid identifier")
}

/// Binds a text value, cast to text so engines need not infer its type
/// (a bare placeholder in a select list has no context to infer from).
fn text_param(b: &mut SqlBuilder<'_>, s: &str) {
    let v = Value::Text(s.to_string());
    let p = b.dialect().placeholder(b.bind(v.clone()), &v);
    let t = b.dialect().text(&p);
    b.push(&t);
}

/// A data row of the batch in a pre-image or key log (`alias`) whose key
/// is that of `other`'s row.
fn logged_key(b: &mut SqlBuilder<'_>, alias: &str, batch_id: &str, keys: &[Ident], other: &str) {
    of_batch(b, alias, batch_id, Some("IS NOT TRUE"));
    b.push(" AND ");
    keys_equal(b, keys, alias, other);
}

/// `alias.__bf_batch = <batch_id>`: a pre-image's or key log's rows of
/// the batch; with `marker` (`IS TRUE`, `IS NOT TRUE`), only its marker
/// row or only its data rows.
fn of_batch(b: &mut SqlBuilder<'_>, alias: &str, batch_id: &str, marker: Option<&str>) {
    b.qualified(alias, &batch_ident()).push(" = ");
    text_param(b, batch_id);
    if let Some(m) = marker {
        b.push(" AND ")
            .qualified(alias, &marker_ident())
            .push(" ")
            .push(m);
    }
}

/// `a.k1 = b.k1 AND a.k2 = b.k2 …` (NULL keys never match).
fn keys_equal(b: &mut SqlBuilder<'_>, keys: &[Ident], left: &str, right: &str) {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            b.push(" AND ");
        }
        b.qualified(left, k).push(" = ").qualified(right, k);
    }
}

/// The table's schema as a parameter: the given schema, or the session's
/// current schema for an unqualified table.
pub(crate) fn schema_of(b: &mut SqlBuilder<'_>, table: &TableRef) {
    match &table.schema {
        Some(s) => {
            b.param(Value::Text(s.to_string()));
        }
        None => {
            b.push("current_schema()");
        }
    }
}

// ---------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------

/// The session's current schema, one row with one text value: where an
/// unqualified name resolves.
pub fn current_schema(d: &dyn Dialect) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT current_schema()");
    b.finish()
}

/// The columns of a table or view, one row each `(column_name, data_type,
/// is_nullable)` in table order, from `information_schema.columns` of the
/// current database. An unqualified table is looked up in the current
/// schema. No rows: the relation does not exist.
pub fn describe(d: &dyn Dialect, table: &TableRef) -> Sql {
    d.describe_relation(table)
}

/// The standard `information_schema` query behind [`describe`].
pub fn describe_standard(d: &dyn Dialect, table: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_catalog = current_database() AND table_schema = ",
    );
    schema_of(&mut b, table);
    b.push(" AND table_name = ")
        .param(Value::Text(table.name.to_string()));
    b.push(" ORDER BY ordinal_position");
    b.finish()
}

/// The kind of a relation: one row `(table_type)`, `'BASE TABLE'` or
/// `'VIEW'`, or no row when it does not exist.
pub fn relation_kind(d: &dyn Dialect, table: &TableRef) -> Sql {
    d.relation_kind(table)
}

/// The standard `information_schema` query behind [`relation_kind`].
pub fn relation_kind_standard(d: &dyn Dialect, table: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(
        "SELECT table_type FROM information_schema.tables \
         WHERE table_catalog = current_database() AND table_schema = ",
    );
    schema_of(&mut b, table);
    b.push(" AND table_name = ")
        .param(Value::Text(table.name.to_string()));
    b.finish()
}

/// Maps an engine's type name (`information_schema.columns.data_type`)
/// to a [`ColumnType`].
pub fn column_type(data_type: &str) -> ColumnType {
    // Without precision or length, wherever it is written
    // (`TIMESTAMP(3) WITH TIME ZONE`, `NUMERIC(18, 2)`).
    let mut t = String::new();
    let mut depth = 0usize;
    for ch in data_type.trim().to_ascii_uppercase().chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => t.push(c),
            _ => {}
        }
    }
    let base = t.split_whitespace().collect::<Vec<_>>().join(" ");
    match base.as_str() {
        "BOOLEAN" | "BOOL" | "LOGICAL" => ColumnType::Bool,
        "TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "BIGINT" | "HUGEINT" | "UTINYINT"
        | "USMALLINT" | "UINTEGER" | "UBIGINT" | "UHUGEINT" | "INT1" | "INT2" | "INT4" | "INT8"
        | "LONG" | "SHORT" => ColumnType::Int,
        "FLOAT" | "REAL" | "DOUBLE" | "DOUBLE PRECISION" | "FLOAT4" | "FLOAT8" => ColumnType::Float,
        "DECIMAL" | "NUMERIC" => ColumnType::Decimal,
        "VARCHAR" | "TEXT" | "STRING" | "CHAR" | "BPCHAR" | "CHARACTER" | "CHARACTER VARYING" => {
            ColumnType::Text
        }
        "DATE" => ColumnType::Date,
        "TIMESTAMP"
        | "TIMESTAMP WITHOUT TIME ZONE"
        | "DATETIME"
        | "TIMESTAMP_NS"
        | "TIMESTAMP_MS"
        | "TIMESTAMP_S"
        | "TIMESTAMP_US" => ColumnType::DateTime,
        "TIMESTAMP WITH TIME ZONE" | "TIMESTAMPTZ" => ColumnType::Timestamp,
        _ => ColumnType::Other,
    }
}

/// The SQL type used for a [`ColumnType`] when this library creates a
/// table from a [`TableSchema`] (names both DuckDB and PostgreSQL accept).
pub fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Bool => "BOOLEAN",
        ColumnType::Int => "BIGINT",
        ColumnType::Float => "DOUBLE PRECISION",
        ColumnType::Decimal => "NUMERIC(38, 10)",
        ColumnType::Text | ColumnType::Other => "TEXT",
        ColumnType::Date => "DATE",
        ColumnType::DateTime => "TIMESTAMP",
        ColumnType::Timestamp => "TIMESTAMPTZ",
    }
}

/// `CREATE TABLE table (col type [NOT NULL], …)` from a schema.
pub fn create_table(d: &dyn Dialect, table: &TableRef, schema: &TableSchema) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE TABLE ").table(table).push(" (");
    for (i, c) in schema.columns.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.ident(&c.name).push(" ").push(d.type_name(c.ty));
        if !c.nullable {
            b.push(" NOT NULL");
        }
    }
    b.push(")");
    b.finish()
}

/// `INSERT INTO table (columns) VALUES (…), (…)` with every value bound.
pub fn insert_values(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Ident],
    rows: &[Vec<Value>],
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ")
        .table(table)
        .push(" (")
        .idents(columns, None)
        .push(") VALUES ");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push("(");
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                b.push(", ");
            }
            b.param(v.clone());
        }
        b.push(")");
    }
    b.finish()
}

/// `CREATE OR REPLACE VIEW view AS SELECT * FROM table`.
pub fn create_or_replace_view(d: &dyn Dialect, view: &TableRef, table: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE OR REPLACE VIEW ")
        .table(view)
        .push(" AS SELECT * FROM ")
        .table(table);
    b.finish()
}

/// `SELECT * FROM table LIMIT 0`: binds a relation (resolving views)
/// without reading rows.
pub fn probe(d: &dyn Dialect, table: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT * FROM ").table(table).push(" LIMIT 0");
    b.finish()
}

/// `DROP TABLE IF EXISTS table`.
pub fn drop_table(d: &dyn Dialect, table: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("DROP TABLE IF EXISTS ").table(table);
    b.finish()
}

/// Drops a session's scratch relation if it exists (a temporary table,
/// or a temporary view: see [`Dialect::scratch`]).
pub fn drop_scratch(d: &dyn Dialect, scratch: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(d.scratch().1).table(scratch);
    b.finish()
}

/// `CREATE INDEX ON table (column)`, then `ANALYZE table`: a staged
/// snapshot read one batch at a time is read through an index on the
/// batch column, by a planner that knows its size.
pub fn index_and_analyze(d: &dyn Dialect, table: &TableRef, column: &Ident) -> [Sql; 2] {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE INDEX ON ")
        .table(table)
        .push(" (")
        .ident(column)
        .push(")");
    let mut a = SqlBuilder::new(d);
    a.push("ANALYZE ").table(table);
    [b.finish(), a.finish()]
}

/// `ALTER TABLE table RENAME TO new_name` (the schema stays).
pub fn rename(d: &dyn Dialect, table: &TableRef, new_name: &Ident) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("ALTER TABLE ")
        .table(table)
        .push(" RENAME TO ")
        .ident(new_name);
    b.finish()
}

/// `CREATE TABLE to AS SELECT * FROM from LIMIT 0`: the same columns and
/// types, no rows, no constraints (see [`set_not_null`]).
pub fn create_table_like(d: &dyn Dialect, to: &TableRef, from: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE TABLE ")
        .table(to)
        .push(" AS SELECT * FROM ")
        .table(from)
        .push(" LIMIT 0");
    b.finish()
}

/// `CREATE TABLE to AS SELECT * FROM from`: a copy with its rows, in one
/// statement.
pub fn create_table_as_copy(d: &dyn Dialect, to: &TableRef, from: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE TABLE ")
        .table(to)
        .push(" AS SELECT * FROM ")
        .table(from);
    b.finish()
}

/// `ALTER TABLE table ALTER COLUMN column SET NOT NULL`.
pub fn set_not_null(d: &dyn Dialect, table: &TableRef, column: &Ident) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("ALTER TABLE ")
        .table(table)
        .push(" ALTER COLUMN ")
        .ident(column)
        .push(" SET NOT NULL");
    b.finish()
}

/// `INSERT INTO to (columns) SELECT columns FROM from`.
pub fn copy_rows(d: &dyn Dialect, to: &TableRef, from: &TableRef, columns: &[Ident]) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ")
        .table(to)
        .push(" (")
        .idents(columns, None)
        .push(") SELECT ");
    b.idents(columns, Some("__f"))
        .push(" FROM ")
        .table(from)
        .push(" AS __f");
    b.finish()
}

/// Creates a pre-image or key-log table: [`BATCH_COLUMN`] (text),
/// [`MARKER_COLUMN`] (boolean), then `columns` typed as in `like`, all
/// nullable.
pub fn create_snapshot_table(
    d: &dyn Dialect,
    snapshot: &TableRef,
    like: &TableRef,
    columns: &[Ident],
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE TABLE ").table(snapshot).push(" AS SELECT ");
    b.push(&d.text("NULL")).push(" AS ").ident(&batch_ident());
    b.push(", CAST(NULL AS BOOLEAN) AS ").ident(&marker_ident());
    for c in columns {
        let mut col = SqlBuilder::new(d);
        col.qualified("__t", c);
        b.push(", ")
            .push(&d.nullable(col.text()))
            .push(" AS ")
            .ident(c);
    }
    b.push(" FROM ").table(like).push(" AS __t LIMIT 0");
    b.finish()
}

// ---------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------

/// Every `every`-th non-NULL value of `column` in order (the 1st, the
/// `every+1`-th, …) among rows matching `predicate`, numbered in the engine
/// with `row_number()`; only the boundaries come back.
pub fn key_boundaries(
    d: &dyn Dialect,
    table: &TableRef,
    column: &Ident,
    predicate: &Predicate,
    every: u64,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT __k.__v FROM (SELECT ")
        .qualified("__t", column)
        .push(" AS __v, row_number() OVER (ORDER BY ");
    b.qualified("__t", column)
        .push(") AS __rn FROM ")
        .table(table)
        .push(" AS __t WHERE ");
    b.predicate(predicate, Some("__t"))
        .push(" AND ")
        .qualified("__t", column)
        .push(" IS NOT NULL) AS __k");
    b.push(" WHERE (__k.__rn - 1) % ");
    b.param(Value::Int(i64::try_from(every).unwrap_or(i64::MAX)));
    b.push(" = 0 ORDER BY __k.__rn");
    b.finish()
}

/// An order-independent checksum: one row `(rows, hash)`, the hash being
/// the sum of the dialect's row hash over the matching rows, as text.
pub fn checksum(d: &dyn Dialect, table: &TableRef, predicate: &Predicate) -> Sql {
    let mut b = SqlBuilder::new(d);
    let sum = format!("coalesce(sum({}), 0)", d.row_hash("__t"));
    b.push("SELECT count(*), ")
        .push(&d.text(&sum))
        .push(" FROM ")
        .table(table)
        .push(" AS __t WHERE ");
    b.predicate(predicate, Some("__t"));
    b.finish()
}

/// Up to `limit` rows matching `predicate`, ordered by `order_by` (NULLs
/// first), with `columns` selected in order; columns of type
/// [`ColumnType::Other`] come back as text.
pub fn sample_rows(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Column],
    predicate: &Predicate,
    order_by: &[Ident],
    limit: usize,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT ");
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        if c.ty == ColumnType::Other {
            let mut inner = SqlBuilder::new(d);
            inner.qualified("__t", &c.name);
            b.push(&d.text(inner.text()));
        } else {
            b.qualified("__t", &c.name);
        }
    }
    b.push(" FROM ")
        .table(table)
        .push(" AS __t WHERE ")
        .predicate(predicate, Some("__t"));
    if !order_by.is_empty() {
        b.push(" ORDER BY ");
        for (i, c) in order_by.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.qualified("__t", c).push(" ASC NULLS FIRST");
        }
    }
    b.push(" LIMIT ")
        .param(Value::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    b.finish()
}

/// `SELECT * FROM (source) AS __s LIMIT 0`, with a bounded query's bounds
/// bound as NULL: describes a source without reading it.
pub fn source_columns(d: &dyn Dialect, source: &Source) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT * FROM ")
        .source(source, (None, None), "__s")
        .push(" LIMIT 0");
    b.finish()
}

/// Rows of `table` that do not match `predicate` (false or unknown): the
/// out-of-bounds guard, one row `(count)`.
pub fn outside(d: &dyn Dialect, table: &TableRef, predicate: &Predicate) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT count(*) FROM ")
        .table(table)
        .push(" AS __t WHERE (");
    b.predicate(predicate, Some("__t")).push(") IS NOT TRUE");
    b.finish()
}

/// Rows of `table` matching `predicate` whose float `column` is NaN or
/// infinite: one row `(count)`.
pub fn non_finite_count(
    d: &dyn Dialect,
    table: &TableRef,
    column: &crate::Ident,
    predicate: &Predicate,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT count(*) FROM ")
        .table(table)
        .push(" AS __t WHERE (");
    b.predicate(predicate, Some("__t")).push(") AND ");
    let mut col = SqlBuilder::new(d);
    col.qualified("__t", column);
    b.push(&d.non_finite(col.text()));
    b.finish()
}

/// Whether a batch's marker exists in a pre-image or key-log table: one
/// row `(count)`.
pub fn marker_count(d: &dyn Dialect, snapshot: &TableRef, batch_id: &str) -> Sql {
    batch_count(d, snapshot, batch_id, "IS TRUE")
}

/// The rows of a batch in a pre-image or key-log table whose marker
/// column `marker` (`IS TRUE`, `IS NOT TRUE`): one row `(count)`.
fn batch_count(d: &dyn Dialect, snapshot: &TableRef, batch_id: &str, marker: &str) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT count(*) FROM ")
        .table(snapshot)
        .push(" AS __p WHERE ");
    of_batch(&mut b, "__p", batch_id, Some(marker));
    b.finish()
}

// ---------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------

/// `CREATE [TEMP] TABLE into AS SELECT * FROM (source) AS __s [WHERE
/// filter] [ORDER BY order_by]`, binding `bounds` into a bounded query.
pub fn materialize(
    d: &dyn Dialect,
    into: &TableRef,
    temporary: bool,
    source: &Source,
    bounds: (Option<&Value>, Option<&Value>),
    filter: Option<&Predicate>,
    order_by: Option<&Ident>,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(if temporary {
        d.scratch().0
    } else {
        "CREATE TABLE "
    });
    b.table(into)
        .push(" AS SELECT * FROM ")
        .source(source, bounds, "__s");
    if let Some(f) = filter {
        b.push(" WHERE ").predicate(f, Some("__s"));
    }
    if let Some(o) = order_by {
        b.push(" ORDER BY ").qualified("__s", o);
    }
    b.finish()
}

/// Copies the rows of `table` matching `predicate` into a pre-image as
/// data rows of `batch_id` (marker FALSE); `columns` are the pre-image's
/// data columns.
pub fn snapshot_slice(
    d: &dyn Dialect,
    snapshot: &TableRef,
    columns: &[Ident],
    table: &TableRef,
    predicate: &Predicate,
    batch_id: &str,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    snapshot_head(&mut b, snapshot, columns, batch_id);
    b.idents(columns, Some("__t"))
        .push(" FROM ")
        .table(table)
        .push(" AS __t WHERE ");
    b.predicate(predicate, Some("__t"));
    b.finish()
}

fn snapshot_head(b: &mut SqlBuilder<'_>, snapshot: &TableRef, columns: &[Ident], batch_id: &str) {
    b.push("INSERT INTO ")
        .table(snapshot)
        .push(" (")
        .ident(&batch_ident())
        .push(", ")
        .ident(&marker_ident());
    if !columns.is_empty() {
        b.push(", ").idents(columns, None);
    }
    b.push(") SELECT ");
    text_param(b, batch_id);
    b.push(", FALSE");
    if !columns.is_empty() {
        b.push(", ");
    }
}

/// Copies the rows of `table` whose key occurs in `source` into a
/// pre-image as data rows of `batch_id`; with a key log in `unlogged_in`,
/// only the rows of keys it does not hold for `batch_id` yet (a pre-image
/// keeps a key's first state, however often the batch is written).
pub fn snapshot_keys(
    d: &dyn Dialect,
    snapshot: &TableRef,
    columns: &[Ident],
    table: &TableRef,
    keys: &[Ident],
    (source, unlogged_in): (&TableRef, Option<&TableRef>),
    batch_id: &str,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    snapshot_head(&mut b, snapshot, columns, batch_id);
    b.idents(columns, Some("__t"));
    keyed(&mut b, (table, "__t"), (source, "__s"), keys, true);
    if let Some(log) = unlogged_in {
        not_logged(&mut b, log, keys, batch_id);
    }
    b.push(")");
    b.finish()
}

/// [`snapshot_keys`] for an engine where each statement is its own
/// commit, with the pre-image's columns in `order`: the rows of keys
/// `key_log` does not hold for `batch_id` yet and the pre-image does not
/// hold yet either. The pre-image is kept before the key log, so a crash
/// between the two statements repeats this one, which then adds nothing
/// twice. The batch's marker comes with them while it has none. Returns
/// the count of those rows (one row `(count)`) and the statement that
/// keeps them.
pub fn snapshot_unkept_keys(
    d: &dyn Dialect,
    snapshot: &TableRef,
    order: &[Column],
    table: &TableRef,
    keys: &[Ident],
    (source, key_log): (&TableRef, &TableRef),
    batch_id: &str,
) -> (Sql, Sql) {
    let unkept = |b: &mut SqlBuilder<'_>| {
        keyed(b, (table, "__t"), (source, "__s"), keys, true);
        not_logged(b, key_log, keys, batch_id);
        b.push(") AND NOT EXISTS (SELECT 1 FROM ")
            .table(snapshot)
            .push(" AS __k WHERE ");
        logged_key(b, "__k", batch_id, keys, "__t");
        b.push(")");
    };
    let mut count = SqlBuilder::new(d);
    count.push("SELECT count(*)");
    unkept(&mut count);
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ").table(snapshot).push(" SELECT ");
    snapshot_row(&mut b, order, batch_id, Row::Data("__t"));
    unkept(&mut b);
    marker_unless_marked(&mut b, snapshot, order, batch_id);
    (count.finish(), b.finish())
}

/// ` FROM rows AS <alias> WHERE [NOT] EXISTS (SELECT 1 FROM other AS
/// <alias> WHERE <keys equal>`: the rows of `rows` whose key occurs in
/// `other` (or does not), the subquery left open for further conditions
/// on `other`'s alias.
fn keyed(
    b: &mut SqlBuilder<'_>,
    (rows, r): (&TableRef, &str),
    (other, o): (&TableRef, &str),
    keys: &[Ident],
    exists: bool,
) {
    b.push(" FROM ").table(rows).push(" AS ").push(r);
    b.push(if exists {
        " WHERE EXISTS"
    } else {
        " WHERE NOT EXISTS"
    });
    b.push(" (SELECT 1 FROM ")
        .table(other)
        .push(" AS ")
        .push(o)
        .push(" WHERE ");
    keys_equal(b, keys, o, r);
}

/// ` AND NOT EXISTS (…)`: the key of `__s` is not yet in `log` for
/// `batch_id`.
fn not_logged(b: &mut SqlBuilder<'_>, log: &TableRef, keys: &[Ident], batch_id: &str) {
    b.push(" AND NOT EXISTS (SELECT 1 FROM ")
        .table(log)
        .push(" AS __l WHERE ");
    of_batch(b, "__l", batch_id, None);
    b.push(" AND ");
    keys_equal(b, keys, "__l", "__s");
    b.push(")");
}

/// Logs the keys of the rows of `source` that the key log does not hold
/// for `batch_id` yet, as data rows of `batch_id`: every key a write
/// touches is logged once, however often the batch is written.
pub fn log_keys(
    d: &dyn Dialect,
    key_log: &TableRef,
    keys: &[Ident],
    source: &TableRef,
    batch_id: &str,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    snapshot_head(&mut b, key_log, keys, batch_id);
    b.idents(keys, Some("__s"))
        .push(" FROM ")
        .table(source)
        .push(" AS __s WHERE TRUE");
    not_logged(&mut b, key_log, keys, batch_id);
    b.finish()
}

/// Adds the marker row of `batch_id` (marker TRUE, data columns NULL).
pub fn insert_marker(d: &dyn Dialect, snapshot: &TableRef, batch_id: &str) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ")
        .table(snapshot)
        .push(" (")
        .ident(&batch_ident())
        .push(", ")
        .ident(&marker_ident());
    b.push(") VALUES (");
    text_param(&mut b, batch_id);
    b.push(", TRUE)");
    b.finish()
}

/// A batch's data rows in a pre-image (its marker not counted): one row
/// `(count)`.
pub fn snapshot_rows(d: &dyn Dialect, snapshot: &TableRef, batch_id: &str) -> Sql {
    batch_count(d, snapshot, batch_id, "IS NOT TRUE")
}

/// `DELETE FROM table WHERE predicate`.
pub fn delete_slice(d: &dyn Dialect, table: &TableRef, predicate: &Predicate) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("DELETE FROM ")
        .table(table)
        .push(" AS __t WHERE ")
        .predicate(predicate, Some("__t"));
    b.finish()
}

/// Rows of `table` in each of several disjoint slices, in one scan of
/// their union: rows `(slice number, count)`, the number the position in
/// `slices`, a slice without rows absent.
pub fn slice_counts(
    d: &dyn Dialect,
    table: &TableRef,
    slices: &[&Predicate],
    union: &Predicate,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT ");
    let owned: Vec<Predicate> = slices.iter().map(|p| (*p).clone()).collect();
    match Predicate::successive(&owned) {
        // Ranges that follow each other: a row's slice is found by a
        // binary search on their ends, a few comparisons a row.
        Some(s) => bisect(&mut b, s.column, &s.ends, 0, s.ends.len()),
        None => {
            b.push("CASE");
            for (i, p) in slices.iter().enumerate() {
                b.push(" WHEN ").predicate(p, Some("__t"));
                b.push(&format!(" THEN {i}"));
            }
            b.push(" END");
        }
    }
    b.push(" AS \"__bf_slice\", count(*) FROM ")
        .table(table)
        .push(" AS __t WHERE ")
        .predicate(union, Some("__t"))
        .push(" GROUP BY 1");
    b.finish()
}

/// The number of the range, among `lo..hi`, that a row's `column` falls
/// in, given where each range ends: nested `CASE`s, halving each time.
fn bisect(b: &mut SqlBuilder<'_>, column: &Ident, ends: &[&Value], lo: usize, hi: usize) {
    if hi - lo <= 1 {
        b.push(&lo.to_string());
        return;
    }
    let mid = (lo + hi) / 2;
    b.push("CASE WHEN ").qualified("__t", column).push(" < ");
    b.param(ends[mid - 1].clone()).push(" THEN ");
    bisect(b, column, ends, lo, mid);
    b.push(" ELSE ");
    bisect(b, column, ends, mid, hi);
    b.push(" END");
}

/// Inserts a batch's source slice ([`SqlBuilder::source_slice`]) into
/// `table`, columns by name.
pub fn insert_slice(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Ident],
    source: &Source,
    batch: &Batch,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ")
        .table(table)
        .push(" (")
        .idents(columns, None)
        .push(") SELECT ");
    b.idents(columns, Some("__n")).push(" FROM ");
    b.source_slice(source, batch, columns, "__n");
    b.finish()
}

/// Updates the rows of `table` whose key occurs in `source`, setting
/// `columns` from the source row (`UPDATE … FROM`, no constraint needed).
pub fn merge_update(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Ident],
    keys: &[Ident],
    source: &TableRef,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("UPDATE ").table(table).push(" AS __t SET ");
    set_from(&mut b, columns, "__s");
    b.push(" FROM ").table(source).push(" AS __s WHERE ");
    keys_equal(&mut b, keys, "__s", "__t");
    b.finish()
}

/// Inserts the rows of `source` whose key does not occur in `table`.
pub fn merge_insert(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Ident],
    keys: &[Ident],
    source: &TableRef,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ")
        .table(table)
        .push(" (")
        .idents(columns, None)
        .push(") SELECT ");
    b.idents(columns, Some("__s"));
    keyed(&mut b, (source, "__s"), (table, "__t"), keys, false);
    b.push(")");
    b.finish()
}

/// Deletes the rows of `table` whose key was logged for `batch_id`.
pub fn delete_logged_keys(
    d: &dyn Dialect,
    table: &TableRef,
    keys: &[Ident],
    key_log: &TableRef,
    batch_id: &str,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("DELETE FROM ")
        .table(table)
        .push(" AS __t WHERE EXISTS (SELECT 1 FROM ")
        .table(key_log);
    b.push(" AS __l WHERE ");
    logged_key(&mut b, "__l", batch_id, keys, "__t");
    b.push(")");
    b.finish()
}

/// Re-inserts the pre-image rows of `batch_id` into `table`.
pub fn restore_rows(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Ident],
    snapshot: &TableRef,
    batch_id: &str,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ")
        .table(table)
        .push(" (")
        .idents(columns, None)
        .push(") SELECT ");
    b.idents(columns, Some("__p"))
        .push(" FROM ")
        .table(snapshot)
        .push(" AS __p WHERE ");
    of_batch(&mut b, "__p", batch_id, Some("IS NOT TRUE"));
    b.finish()
}

// ---------------------------------------------------------------------------
// Replacing a slice in one statement (engines without transactions)
// ---------------------------------------------------------------------------

/// `INSERT INTO table REPLACE WHERE predicate SELECT …`: the rows of
/// `table` matching `predicate` are replaced by the query's in one atomic
/// commit (Delta). The statement takes no column list, so the query's
/// columns follow `order`, the table's own; each is `pick`ed from the
/// query's alias `__n`, or NULL when `pick` has none: an untyped NULL,
/// which takes the column's own type (a cast to the dialect's type for
/// the kind, `DECIMAL(38,10)` say, would not match a `DECIMAL(18,2)`
/// column in a `UNION`).
fn replace_head(
    b: &mut SqlBuilder<'_>,
    table: &TableRef,
    predicate: &Predicate,
    order: &[Column],
    pick: impl Fn(&mut SqlBuilder<'_>, &Column) -> bool,
) {
    b.push("INSERT INTO ")
        .table(table)
        .push(" REPLACE WHERE ")
        .predicate(predicate, None)
        .push(" SELECT ");
    for (i, col) in order.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        if !pick(b, col) {
            b.push("NULL");
        }
    }
}

/// Picks the columns of `columns` from the query's alias `__n`, and no
/// other (see [`replace_head`]).
fn listed(columns: &[Ident]) -> impl Fn(&mut SqlBuilder<'_>, &Column) -> bool + '_ {
    move |b, col| {
        let listed = columns.contains(&col.name);
        if listed {
            b.qualified("__n", &col.name);
        }
        listed
    }
}

/// Replaces a batch's slice of `table` (columns in `order`) with the
/// source's rows of the batch, in one statement: the batch's overwrite on
/// an engine without transactions. Columns of `order` not in `columns`
/// are NULL, as a delete and an insert of `columns` would leave them.
pub fn replace_slice(
    d: &dyn Dialect,
    table: &TableRef,
    order: &[Column],
    columns: &[Ident],
    source: &Source,
    batch: &Batch,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    replace_head(&mut b, table, &batch.predicate, order, listed(columns));
    b.push(" FROM ");
    b.source_slice(source, batch, columns, "__n");
    b.finish()
}

/// Keeps a batch's pre-image in one statement, which guards itself: while
/// the batch has no marker, the rows of `table` matching `predicate` as
/// data rows of `batch_id` and its marker row; once it has one, what the
/// pre-image holds for the batch, unchanged. So two workers that both saw
/// no marker keep the state before the first one's write, whichever
/// commits last. `order` is the pre-image's columns, the batch and marker
/// columns among them.
pub fn replace_snapshot(
    d: &dyn Dialect,
    snapshot: &TableRef,
    order: &[Column],
    table: &TableRef,
    predicate: &Predicate,
    batch_id: &str,
) -> Sql {
    let mine = Predicate::In {
        column: batch_ident(),
        values: vec![Value::Text(batch_id.to_string())],
    };
    let unmarked = |b: &mut SqlBuilder<'_>| {
        b.push(" NOT EXISTS (SELECT 1 FROM ")
            .table(snapshot)
            .push(" AS __m WHERE ");
        of_batch(b, "__m", batch_id, Some("IS TRUE"));
        b.push(")");
    };
    // What the pre-image holds for the batch (nothing without a marker:
    // the marker comes in the same statement as the rows).
    let mut b = SqlBuilder::new(d);
    replace_head(&mut b, snapshot, &mine, order, |b, col| {
        b.qualified("__k", &col.name);
        true
    });
    b.push(" FROM ").table(snapshot).push(" AS __k WHERE ");
    of_batch(&mut b, "__k", batch_id, None);
    // The slice's rows and the marker, without a marker yet.
    let row = |b: &mut SqlBuilder<'_>, marked: bool| {
        b.push(" UNION ALL SELECT ");
        let row = match marked {
            true => Row::Marker,
            false => Row::Data("__n"),
        };
        snapshot_row(b, order, batch_id, row);
    };
    row(&mut b, false);
    b.push(" FROM ").table(table).push(" AS __n WHERE ");
    b.predicate(predicate, Some("__n")).push(" AND");
    unmarked(&mut b);
    row(&mut b, true);
    b.push(" WHERE");
    unmarked(&mut b);
    b.finish()
}

/// Which row of a batch [`snapshot_row`] selects.
#[derive(Clone, Copy)]
enum Row<'a> {
    /// A data row, its columns taken from the alias.
    Data(&'a str),
    /// The batch's marker row.
    Marker,
}

/// The select list of a pre-image or key-log row of `batch_id`, in the
/// table's column `order` (an insert without a column list, which every
/// engine takes).
fn snapshot_row(b: &mut SqlBuilder<'_>, order: &[Column], batch_id: &str, row: Row<'_>) {
    let (batch, marker) = (batch_ident(), marker_ident());
    for (i, col) in order.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        if col.name == batch {
            text_param(b, batch_id);
        } else if col.name == marker {
            b.push(match row {
                Row::Marker => "TRUE",
                Row::Data(_) => "FALSE",
            });
        } else {
            match row {
                Row::Data(alias) => b.qualified(alias, &col.name),
                Row::Marker => b.push("NULL"),
            };
        }
        // Named, so that a row standing alone has no two columns alike.
        b.push(" AS ").ident(&col.name);
    }
}

/// ` UNION ALL` the marker row of `batch_id` (columns in `order`) while
/// `table` holds none: a statement that keeps rows of a batch in a
/// pre-image or key log marks the batch in the same commit.
fn marker_unless_marked(
    b: &mut SqlBuilder<'_>,
    table: &TableRef,
    order: &[Column],
    batch_id: &str,
) {
    b.push(" UNION ALL SELECT ");
    snapshot_row(b, order, batch_id, Row::Marker);
    b.push(" WHERE NOT EXISTS (SELECT 1 FROM ")
        .table(table)
        .push(" AS __m WHERE ");
    of_batch(b, "__m", batch_id, Some("IS TRUE"));
    b.push(")");
}

/// [`log_keys`] with the key log's columns in `order`; with `marked`, the
/// batch's marker too while the log holds none (a merge that keeps no
/// pre-image marks its batches in its key log).
pub fn log_keys_row(
    d: &dyn Dialect,
    key_log: &TableRef,
    order: &[Column],
    (keys, source): (&[Ident], &TableRef),
    batch_id: &str,
    marked: bool,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("INSERT INTO ").table(key_log).push(" SELECT ");
    snapshot_row(&mut b, order, batch_id, Row::Data("__s"));
    b.push(" FROM ").table(source).push(" AS __s WHERE TRUE");
    not_logged(&mut b, key_log, keys, batch_id);
    if marked {
        marker_unless_marked(&mut b, key_log, order, batch_id);
    }
    b.finish()
}

/// Restores a batch's slice of `table` (columns in `order`) from its
/// pre-image in one statement: the rows matching `predicate` are replaced
/// by the pre-image's data rows of `batch_id`.
pub fn replace_from_snapshot(
    d: &dyn Dialect,
    table: &TableRef,
    order: &[Column],
    columns: &[Ident],
    predicate: &Predicate,
    snapshot: &TableRef,
    batch_id: &str,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    replace_head(&mut b, table, predicate, order, listed(columns));
    b.push(" FROM ").table(snapshot).push(" AS __n WHERE ");
    of_batch(&mut b, "__n", batch_id, Some("IS NOT TRUE"));
    b.finish()
}

/// Merges `source` into `table` on `keys` in one statement (`MERGE
/// INTO`): a target row whose key occurs in `source` gets its `set`
/// columns from the source row; a source row whose key does not occur
/// in `table` is inserted with its `columns`.
pub fn merge_into(
    d: &dyn Dialect,
    table: &TableRef,
    (set, columns): (&[Ident], &[Ident]),
    keys: &[Ident],
    source: &TableRef,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("MERGE INTO ").table(table).push(" AS __t USING ");
    b.table(source).push(" AS __s ON ");
    keys_equal(&mut b, keys, "__s", "__t");
    b.push(" WHEN MATCHED THEN UPDATE SET ");
    set_from(&mut b, set, "__s");
    b.push(" WHEN NOT MATCHED THEN INSERT (")
        .idents(columns, None)
        .push(") VALUES (")
        .idents(columns, Some("__s"))
        .push(")");
    b.finish()
}

/// `c1 = alias.c1, c2 = alias.c2 …`.
fn set_from(b: &mut SqlBuilder<'_>, columns: &[Ident], alias: &str) {
    for (i, c) in columns.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.ident(c).push(" = ").qualified(alias, c);
    }
}

/// The state [`merge_into`] would leave `table` in, as a scratch
/// relation `into` (columns in `order`, the table's): what guards judge
/// before the merge is written.
pub fn merged_state(
    d: &dyn Dialect,
    into: &TableRef,
    order: &[Column],
    table: &TableRef,
    (set, columns): (&[Ident], &[Ident]),
    keys: &[Ident],
    source: &TableRef,
) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(d.scratch().0).table(into).push(" AS SELECT ");
    // Kept rows keep their values; matched rows take the set columns.
    // Source keys are never NULL, so a matched row is one whose joined
    // key is not NULL.
    for (i, col) in order.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        if set.contains(&col.name) {
            b.push("CASE WHEN ")
                .qualified("__s", &keys[0])
                .push(" IS NOT NULL THEN ")
                .qualified("__s", &col.name)
                .push(" ELSE ")
                .qualified("__t", &col.name)
                .push(" END");
        } else {
            b.qualified("__t", &col.name);
        }
        b.push(" AS ").ident(&col.name);
    }
    b.push(" FROM ").table(table).push(" AS __t LEFT JOIN ");
    b.table(source).push(" AS __s ON ");
    keys_equal(&mut b, keys, "__s", "__t");
    // Inserted rows: NULL in the columns not written.
    b.push(" UNION ALL SELECT ");
    for (i, col) in order.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        match columns.contains(&col.name) {
            true => b.qualified("__s", &col.name),
            false => b.push("NULL"),
        };
    }
    keyed(&mut b, (source, "__s"), (table, "__t"), keys, false);
    b.push(")");
    b.finish()
}

/// What [`merge_into`] of `source` would do to `table`, in one query: one
/// row `(rows of table it updates, rows of source it inserts)`.
pub fn merge_counts(d: &dyn Dialect, table: &TableRef, keys: &[Ident], source: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT (SELECT count(*)");
    keyed(&mut b, (table, "__t"), (source, "__s"), keys, true);
    b.push(")), (SELECT count(*)");
    keyed(&mut b, (source, "__s"), (table, "__t"), keys, false);
    b.push("))");
    b.finish()
}

/// Restores the keys a merge logged for `batch_id` in one statement
/// (`MERGE INTO`): a logged key with a pre-image row gets that row back,
/// inserted if it is gone; one without (the merge inserted it) is
/// deleted. A key must have at most one pre-image row: the target's keys
/// were unique when the merge was let run.
pub fn merge_from_snapshot(
    d: &dyn Dialect,
    table: &TableRef,
    columns: &[Ident],
    keys: &[Ident],
    (snapshot, key_log): (&TableRef, &TableRef),
    batch_id: &str,
) -> Sql {
    let kept = Ident::new("__bf_kept").expect("a valid identifier");
    let mut b = SqlBuilder::new(d);
    b.push("MERGE INTO ")
        .table(table)
        .push(" AS __t USING (SELECT ");
    for k in keys {
        b.qualified("__l", k).push(" AS ").ident(k).push(", ");
    }
    for c in columns.iter().filter(|c| !keys.contains(c)) {
        b.qualified("__p", c).push(" AS ").ident(c).push(", ");
    }
    b.qualified("__p", &batch_ident())
        .push(" IS NOT NULL AS ")
        .ident(&kept)
        .push(" FROM ")
        .table(key_log)
        .push(" AS __l LEFT JOIN ")
        .table(snapshot)
        .push(" AS __p ON ");
    logged_key(&mut b, "__p", batch_id, keys, "__l");
    b.push(" WHERE ");
    of_batch(&mut b, "__l", batch_id, Some("IS NOT TRUE"));
    b.push(") AS __s ON ");
    keys_equal(&mut b, keys, "__s", "__t");
    b.push(" WHEN MATCHED AND NOT ")
        .qualified("__s", &kept)
        .push(" THEN DELETE WHEN MATCHED THEN UPDATE SET ");
    let set: Vec<Ident> = columns
        .iter()
        .filter(|c| !keys.contains(c))
        .cloned()
        .collect();
    set_from(&mut b, if set.is_empty() { keys } else { &set }, "__s");
    b.push(" WHEN NOT MATCHED AND ")
        .qualified("__s", &kept)
        .push(" THEN INSERT (")
        .idents(columns, None)
        .push(") VALUES (")
        .idents(columns, Some("__s"))
        .push(")");
    b.finish()
}

/// Binds `v` for use in a select list, where an engine has no context to
/// infer a parameter's type: each value gets a cast to its own type.
pub(crate) fn select_param(b: &mut SqlBuilder<'_>, v: &Value) {
    let d = b.dialect();
    match v {
        Value::Null => {
            b.push("NULL");
        }
        Value::Text(_) => {
            let n = b.bind(v.clone());
            let p = d.placeholder(n, v);
            b.push(&d.text(&p));
        }
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            let ty = match v {
                Value::Int(_) => d.type_name(ColumnType::Int),
                Value::Float(_) => d.type_name(ColumnType::Float),
                _ => d.type_name(ColumnType::Bool),
            };
            let n = b.bind(v.clone());
            let p = d.placeholder(n, v);
            b.push(&format!("CAST({p} AS {ty})"));
        }
        Value::Date(_) | Value::DateTime(_) | Value::Timestamp(_) => {
            b.param(v.clone());
        }
    }
}

// ---------------------------------------------------------------------------
// Statements only some dialects use (through their hooks)
// ---------------------------------------------------------------------------

/// `SELECT set_config(name, value, true), …`: settings for the rest of the
/// open transaction only (PostgreSQL's `SET LOCAL`, with names and values
/// bound as parameters instead of spliced), all in one statement.
pub fn set_local(d: &dyn Dialect, settings: &[(&str, &str)]) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT ");
    for (i, (name, value)) in settings.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.push("set_config(");
        text_param(&mut b, name);
        b.push(", ");
        text_param(&mut b, value);
        b.push(", true)");
    }
    b.finish()
}

/// `SELECT pg_advisory_xact_lock(hashtextextended(key, 0))`: a PostgreSQL
/// advisory lock on a text key, held until the transaction ends.
pub fn advisory_xact_lock(d: &dyn Dialect, key: &str) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT pg_advisory_xact_lock(hashtextextended(");
    text_param(&mut b, key);
    b.push(", 0))");
    b.finish()
}

/// `DROP VIEW IF EXISTS view`.
pub fn drop_view(d: &dyn Dialect, view: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("DROP VIEW IF EXISTS ").table(view);
    b.finish()
}

/// `CREATE TABLE to (LIKE from INCLUDING DEFAULTS INCLUDING CONSTRAINTS
/// INCLUDING INDEXES INCLUDING STORAGE INCLUDING COMMENTS)`: PostgreSQL's
/// copy of a table's shape that keeps defaults, `NOT NULL` and check
/// constraints, primary keys and indexes (identity and generated columns
/// become plain columns, so rows can be copied in as they are).
pub fn create_table_like_including(d: &dyn Dialect, to: &TableRef, from: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("CREATE TABLE ")
        .table(to)
        .push(" (LIKE ")
        .table(from)
        .push(
            " INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES \
             INCLUDING STORAGE INCLUDING COMMENTS)",
        );
    b.finish()
}

/// `ANALYZE table`: fresh planner statistics (PostgreSQL), e.g. for a
/// just-materialized slice that is joined next.
pub fn analyze(d: &dyn Dialect, table: &TableRef) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("ANALYZE ").table(table);
    b.finish()
}

/// Sessions of the current database other than this one, from
/// PostgreSQL's `pg_stat_activity`: one row `(active, waiting_on_locks)`,
/// the client backends running a statement and those waiting for a lock.
pub fn pg_activity(d: &dyn Dialect) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(
        "SELECT count(*) FILTER (WHERE state = 'active'), \
         count(*) FILTER (WHERE wait_event_type = 'Lock') \
         FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    );
    b.finish()
}

/// Streaming replicas of this PostgreSQL server, from
/// `pg_stat_replication`: one row `(replicas, max_replay_lag_seconds)`,
/// the lag 0 when there is no replica or none lags.
pub fn pg_replication_lag(d: &dyn Dialect) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push(
        "SELECT count(*), CAST(coalesce(max(extract(epoch FROM replay_lag)), 0) \
         AS DOUBLE PRECISION) FROM pg_stat_replication",
    );
    b.finish()
}

/// `SELECT CAST((probe) AS DOUBLE PRECISION)`: a caller's trusted scalar
/// query (one row, one numeric column) read as a number.
pub fn scalar_probe(d: &dyn Dialect, probe: &str) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT CAST((")
        .push(probe)
        .push(") AS DOUBLE PRECISION)");
    b.finish()
}

/// Statements of a ledger kept in SQL tables (runs, batches, transitions,
/// locks, assets, documents) in a schema of the user's choice.
///
/// Ledger logic (state machine, fencing, claim order) lives in the
/// adapters; these are the statement shapes they run. Timestamps are
/// `TIMESTAMPTZ`; JSON (predicates, bounds, parameters, notes) is text.
pub mod ledger {
    use super::{select_param, Dialect, Sql, SqlBuilder};
    use crate::ledger::{BatchState, BatchUpdate};
    use crate::{Ident, TableRef, Value};
    use jiff::Timestamp;

    /// Run headers, one row per run.
    pub const RUNS: &str = "runs";
    /// Batches, one row per planned batch.
    pub const BATCHES: &str = "batches";
    /// The transition log.
    pub const TRANSITIONS: &str = "transitions";
    /// Target locks, one row per locked target.
    pub const LOCKS: &str = "locks";
    /// Assets (pre-images, stages, kept tables) with owner and expiry.
    pub const ASSETS: &str = "assets";
    /// Named JSON documents per run (metric baselines, validation
    /// reports, approvals).
    pub const DOCUMENTS: &str = "documents";

    /// A ledger table: name, columns with their SQL types, and trailing
    /// table constraints.
    struct TableDef {
        name: &'static str,
        columns: &'static [(&'static str, &'static str)],
        extra: &'static str,
    }

    const TABLES: &[TableDef] = &[
        TableDef {
            name: RUNS,
            columns: &[
                ("run_id", "TEXT NOT NULL PRIMARY KEY"),
                ("target", "TEXT NOT NULL"),
                ("fingerprint", "TEXT NOT NULL"),
                ("code_version", "TEXT NOT NULL"),
                ("parameters", "TEXT NOT NULL"),
                ("operator", "TEXT NOT NULL"),
                ("status", "TEXT NOT NULL"),
                ("started_at", "TIMESTAMPTZ NOT NULL"),
                ("finished_at", "TIMESTAMPTZ"),
                ("rows_affected", "BIGINT NOT NULL"),
                ("notes", "TEXT NOT NULL"),
                ("steering", "TEXT"),
            ],
            extra: "",
        },
        TableDef {
            name: BATCHES,
            columns: &[
                ("run_id", "TEXT NOT NULL"),
                ("batch_id", "TEXT NOT NULL"),
                ("seq", "BIGINT NOT NULL"),
                ("predicate", "TEXT NOT NULL"),
                ("start_bound", "TEXT"),
                ("end_bound", "TEXT"),
                ("state", "TEXT NOT NULL"),
                ("attempts", "BIGINT NOT NULL"),
                ("lease_worker", "TEXT"),
                ("lease_token", "BIGINT"),
                ("lease_expires", "TIMESTAMPTZ"),
                ("rows_before", "BIGINT NOT NULL"),
                ("rows_written", "BIGINT NOT NULL"),
                ("started_at", "TIMESTAMPTZ"),
                ("finished_at", "TIMESTAMPTZ"),
                ("error", "TEXT"),
                ("lease_instance", "TEXT"),
            ],
            extra: ", PRIMARY KEY (\"run_id\", \"batch_id\")",
        },
        TableDef {
            name: TRANSITIONS,
            columns: &[
                ("id", "BIGINT NOT NULL PRIMARY KEY"),
                ("run_id", "TEXT NOT NULL"),
                ("batch_id", "TEXT"),
                ("from_state", "TEXT NOT NULL"),
                ("to_state", "TEXT NOT NULL"),
                ("at", "TIMESTAMPTZ NOT NULL"),
                ("reason", "TEXT NOT NULL"),
            ],
            extra: "",
        },
        TableDef {
            name: LOCKS,
            columns: &[
                ("target", "TEXT NOT NULL PRIMARY KEY"),
                ("run_id", "TEXT NOT NULL"),
                ("locked_at", "TIMESTAMPTZ NOT NULL"),
            ],
            extra: "",
        },
        TableDef {
            name: ASSETS,
            columns: &[
                ("id", "BIGINT NOT NULL PRIMARY KEY"),
                ("run_id", "TEXT NOT NULL"),
                ("kind", "TEXT NOT NULL"),
                ("table_name", "TEXT NOT NULL"),
                ("owner", "TEXT NOT NULL"),
                ("created_at", "TIMESTAMPTZ NOT NULL"),
                ("expires_at", "TIMESTAMPTZ NOT NULL"),
                ("dropped_at", "TIMESTAMPTZ"),
            ],
            extra: "",
        },
        TableDef {
            name: DOCUMENTS,
            columns: &[
                ("run_id", "TEXT NOT NULL"),
                ("name", "TEXT NOT NULL"),
                ("body", "TEXT NOT NULL"),
                ("updated_at", "TIMESTAMPTZ NOT NULL"),
            ],
            extra: ", PRIMARY KEY (\"run_id\", \"name\")",
        },
    ];

    fn ident(name: &str) -> Ident {
        Ident::new(name).expect("ledger names are valid identifiers")
    }

    /// Statements storing a run's document `name`: `(delete, insert)`.
    /// The insert does nothing when a document of that name exists, so
    /// run alone it stores only if absent (and reports one row when it
    /// stored); after the delete it replaces.
    pub fn store_document(
        d: &dyn Dialect,
        schema: &Ident,
        run_id: &str,
        name: &str,
        body: &str,
        at: jiff::Timestamp,
    ) -> (Sql, Sql) {
        let docs = table(schema, DOCUMENTS);
        let key = |v: &str| Value::Text(v.to_string());
        let delete = delete(d, &docs, &[("run_id", key(run_id)), ("name", key(name))]);
        let mut insert = insert(
            d,
            &docs,
            &["run_id", "name", "body", "updated_at"],
            &[key(run_id), key(name), key(body), Value::Timestamp(at)],
        );
        insert.text.push_str(" ON CONFLICT DO NOTHING");
        (delete, insert)
    }

    /// A run's document `name`: zero or one row `(body)`.
    pub fn select_document(d: &dyn Dialect, schema: &Ident, run_id: &str, name: &str) -> Sql {
        select(
            d,
            &table(schema, DOCUMENTS),
            &["body"],
            &[
                ("run_id", Value::Text(run_id.to_string())),
                ("name", Value::Text(name.to_string())),
            ],
            &[],
        )
    }

    /// A ledger table in `schema`.
    pub fn table(schema: &Ident, name: &str) -> TableRef {
        TableRef::qualified(schema.clone(), ident(name))
    }

    /// Creates the schema and the ledger tables if they do not exist.
    pub fn create(d: &dyn Dialect, schema: &Ident) -> Vec<Sql> {
        let mut out = Vec::new();
        let mut b = SqlBuilder::new(d);
        b.push("CREATE SCHEMA IF NOT EXISTS ").ident(schema);
        out.push(b.finish());
        for def in TABLES {
            let mut b = SqlBuilder::new(d);
            b.push("CREATE TABLE IF NOT EXISTS ")
                .table(&table(schema, def.name))
                .push(" (");
            for (i, (c, ty)) in def.columns.iter().enumerate() {
                if i > 0 {
                    b.push(", ");
                }
                b.ident(&ident(c)).push(" ").push(ty);
            }
            b.push(def.extra).push(")");
            out.push(b.finish());
        }
        out
    }

    fn where_eq(b: &mut SqlBuilder<'_>, conditions: &[(&str, Value)]) {
        if conditions.is_empty() {
            b.push(" WHERE TRUE");
        }
        for (i, (c, v)) in conditions.iter().enumerate() {
            b.push(if i == 0 { " WHERE " } else { " AND " });
            b.ident(&ident(c));
            if v.is_null() {
                b.push(" IS NULL");
            } else {
                b.push(" = ").param(v.clone());
            }
        }
    }

    /// `SELECT columns FROM table WHERE c1 = v1 AND … ORDER BY …` (a NULL
    /// value means `IS NULL`).
    pub fn select(
        d: &dyn Dialect,
        table: &TableRef,
        columns: &[&str],
        conditions: &[(&str, Value)],
        order_by: &[&str],
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("SELECT ");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.ident(&ident(c));
        }
        b.push(" FROM ").table(table);
        where_eq(&mut b, conditions);
        for (i, c) in order_by.iter().enumerate() {
            b.push(if i == 0 { " ORDER BY " } else { ", " });
            b.ident(&ident(c));
        }
        b.finish()
    }

    /// `UPDATE table SET c = v, … WHERE c1 = v1 AND …` (a NULL condition
    /// value means `IS NULL`).
    pub fn update(
        d: &dyn Dialect,
        table: &TableRef,
        set: &[(&str, Value)],
        conditions: &[(&str, Value)],
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("UPDATE ").table(table).push(" SET ");
        for (i, (c, v)) in set.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.ident(&ident(c)).push(" = ").param(v.clone());
        }
        where_eq(&mut b, conditions);
        b.finish()
    }

    /// Moves one batch from `from` to `to`, fenced: the row changes only
    /// while its state and lease token are still `from` and `token` (a
    /// null token matches a batch never claimed), so one changed row means
    /// the move happened and none means another writer moved it first.
    /// Sets the row counts `change` carries, the finish time of a written
    /// or failed batch, and the error of a failed one.
    #[allow(clippy::too_many_arguments)]
    pub fn transition(
        d: &dyn Dialect,
        batches: &TableRef,
        run_id: &str,
        batch_id: &str,
        (from, to): (BatchState, BatchState),
        token: Value,
        change: &BatchUpdate,
        now: Timestamp,
    ) -> Sql {
        let count = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut set: Vec<(&str, Value)> = vec![("state", Value::Text(to.as_str().into()))];
        if let Some(r) = change.rows_before {
            set.push(("rows_before", count(r)));
        }
        if let Some(r) = change.rows_written {
            set.push(("rows_written", count(r)));
        }
        if matches!(to, BatchState::Written | BatchState::Failed) {
            set.push(("finished_at", Value::Timestamp(now)));
        }
        if to == BatchState::Failed {
            set.push((
                "error",
                change.error.clone().map_or(Value::Null, Value::Text),
            ));
        }
        update(
            d,
            batches,
            &set,
            &[
                ("run_id", Value::Text(run_id.into())),
                ("batch_id", Value::Text(batch_id.into())),
                ("state", Value::Text(from.as_str().into())),
                ("lease_token", token),
            ],
        )
    }

    /// `UPDATE table SET column = column + n WHERE …`.
    pub fn increment(
        d: &dyn Dialect,
        table: &TableRef,
        column: &str,
        n: i64,
        conditions: &[(&str, Value)],
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        let c = ident(column);
        b.push("UPDATE ")
            .table(table)
            .push(" SET ")
            .ident(&c)
            .push(" = ")
            .ident(&c)
            .push(" + ");
        b.param(Value::Int(n));
        where_eq(&mut b, conditions);
        b.finish()
    }

    /// `SELECT COALESCE(SUM(column), 0) FROM table WHERE c1 = v1 AND …`.
    pub fn total(
        d: &dyn Dialect,
        table: &TableRef,
        column: &str,
        conditions: &[(&str, Value)],
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("SELECT CAST(COALESCE(SUM(")
            .ident(&ident(column))
            .push("), 0) AS BIGINT) FROM ")
            .table(table);
        where_eq(&mut b, conditions);
        b.finish()
    }

    /// `DELETE FROM table WHERE c1 = v1 AND …`.
    pub fn delete(d: &dyn Dialect, table: &TableRef, conditions: &[(&str, Value)]) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("DELETE FROM ").table(table);
        where_eq(&mut b, conditions);
        b.finish()
    }

    /// `INSERT INTO table (columns) VALUES (…)`.
    pub fn insert(d: &dyn Dialect, table: &TableRef, columns: &[&str], values: &[Value]) -> Sql {
        insert_rows(d, table, columns, &[values.to_vec()])
    }

    /// Inserts `rows` with one statement.
    pub fn insert_rows(
        d: &dyn Dialect,
        table: &TableRef,
        columns: &[&str],
        rows: &[Vec<Value>],
    ) -> Sql {
        let cols: Vec<Ident> = columns.iter().map(|c| ident(c)).collect();
        super::insert_values(d, table, &cols, rows)
    }

    /// Inserts a row numbered one past the table's highest `id`, so rows
    /// read back in insertion order (writers are serialized by the caller's
    /// transaction).
    pub fn insert_numbered(
        d: &dyn Dialect,
        table: &TableRef,
        columns: &[&str],
        values: &[Value],
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("INSERT INTO ").table(table).push(" (\"id\"");
        for c in columns {
            b.push(", ").ident(&ident(c));
        }
        b.push(") SELECT coalesce(max(\"id\"), 0) + 1");
        for v in values {
            b.push(", ");
            select_param(&mut b, v);
        }
        b.push(" FROM ").table(table);
        b.finish()
    }

    /// Logs the same move of several batches of a run (the log's columns
    /// as in `columns`: run, batch, from, to, at, reason), numbered in
    /// plan order after the log's highest id: the batches are read from
    /// the batches table, so the statement binds their ids only.
    #[allow(clippy::too_many_arguments)]
    pub fn log_moves(
        d: &dyn Dialect,
        transitions: &TableRef,
        batches: &TableRef,
        columns: &[&str],
        run_id: &str,
        ids: &[&str],
        (from, to): (&str, &str),
        at: Timestamp,
        reason: &str,
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("INSERT INTO ").table(transitions).push(" (\"id\"");
        for c in columns {
            b.push(", ").ident(&ident(c));
        }
        b.push(") SELECT \"__bf_m\".\"base\" + row_number() OVER (ORDER BY \"__bf_b\".\"seq\"), ");
        b.push("\"__bf_b\".\"run_id\", \"__bf_b\".\"batch_id\", ");
        for v in [
            Value::Text(from.to_string()),
            Value::Text(to.to_string()),
            Value::Timestamp(at),
            Value::Text(reason.to_string()),
        ] {
            select_param(&mut b, &v);
            b.push(", ");
        }
        b.text_truncate(2);
        b.push(" FROM ")
            .table(batches)
            .push(" AS \"__bf_b\" CROSS JOIN (SELECT coalesce(max(\"id\"), 0) AS \"base\" FROM ");
        b.table(transitions)
            .push(") AS \"__bf_m\" WHERE \"__bf_b\".\"run_id\" = ");
        b.param(Value::Text(run_id.to_string()))
            .push(" AND \"__bf_b\".\"batch_id\" IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.param(Value::Text((*id).to_string()));
        }
        b.push(")");
        b.finish()
    }

    /// Claims batches `ids` of a run in one statement: each moves to
    /// `running` with one more attempt and a fencing token one higher,
    /// with the lease's columns `lease`, only while it is claimable
    /// (`pending`, or `running` under a lease being taken over). The rows
    /// changed must be as many as `ids`.
    pub fn claim_batches(
        d: &dyn Dialect,
        batches: &TableRef,
        run_id: &str,
        ids: &[String],
        lease: &[(&str, Value)],
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("UPDATE ").table(batches).push(
            " SET \"state\" = 'running', \"attempts\" = \"attempts\" + 1, \
             \"lease_token\" = coalesce(\"lease_token\", 0) + 1",
        );
        for (c, v) in lease {
            b.push(", ").ident(&ident(c)).push(" = ").param(v.clone());
        }
        b.push(" WHERE \"run_id\" = ")
            .param(Value::Text(run_id.to_string()))
            .push(" AND \"state\" IN ('pending', 'running') AND \"batch_id\" IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.param(Value::Text(id.clone()));
        }
        b.push(")");
        b.finish()
    }

    /// Marks several batches of a run `written` in one statement, each
    /// fenced on `running` under its own token, with its row counts:
    /// `rows` are `(batch, token, rows before, rows written)`.
    pub fn mark_written_many(
        d: &dyn Dialect,
        batches: &TableRef,
        run_id: &str,
        rows: &[(&str, u64, u64, u64)],
        now: Timestamp,
    ) -> Sql {
        let count = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let mut b = SqlBuilder::new(d);
        b.push("UPDATE ").table(batches).push(
            " SET \"state\" = 'written', \"rows_before\" = \"__bf_v\".\"rows_before\", \
             \"rows_written\" = \"__bf_v\".\"rows_written\", \"finished_at\" = ",
        );
        b.param(Value::Timestamp(now)).push(" FROM (");
        for (i, (batch, token, before, written)) in rows.iter().enumerate() {
            if i > 0 {
                b.push(" UNION ALL ");
            }
            b.push("SELECT ");
            select_param(&mut b, &Value::Text((*batch).to_string()));
            b.push(" AS \"batch_id\", ");
            select_param(&mut b, &count(*token));
            b.push(" AS \"token\", ");
            select_param(&mut b, &count(*before));
            b.push(" AS \"rows_before\", ");
            select_param(&mut b, &count(*written));
            b.push(" AS \"rows_written\"");
        }
        let t = ident(BATCHES);
        b.push(") AS \"__bf_v\" WHERE ")
            .ident(&t)
            .push(".\"run_id\" = ");
        b.param(Value::Text(run_id.to_string()));
        b.push(" AND ")
            .ident(&t)
            .push(".\"batch_id\" = \"__bf_v\".\"batch_id\"");
        b.push(" AND ").ident(&t).push(".\"state\" = 'running'");
        b.push(" AND ")
            .ident(&t)
            .push(".\"lease_token\" = \"__bf_v\".\"token\"");
        b.finish()
    }

    /// Which running batches a claim may take over.
    #[derive(Clone, Copy, Debug)]
    pub enum Takeover<'a> {
        /// Those whose lease expired at or before `now`.
        Expired(&'a Value),
        /// Those whose lease expired, or that another instance holds
        /// (one writer at a time: any other instance is dead).
        ExpiredOrNotMine(&'a Value, &'a str),
        /// Those whose lease expired, or whose instance's session lock is
        /// free.
        ExpiredOrUnlocked(&'a Value),
    }

    /// The next claimable batch of a run: `columns` of the first pending
    /// batch in plan order, or, with `takeover`, of the first running
    /// batch it allows; restricted to `only` when given (an empty list
    /// matches nothing). Reading the whole record here saves the claim a
    /// second read. Where sessions write concurrently, the candidate is
    /// locked for the claiming transaction and rows another worker is
    /// claiming are skipped.
    pub fn claim_candidate(
        d: &dyn Dialect,
        batches: &TableRef,
        columns: &[&str],
        run_id: &str,
        only: Option<&[String]>,
        takeover: Option<Takeover<'_>>,
        limit: usize,
    ) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("SELECT ");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                b.push(", ");
            }
            b.ident(&ident(c));
        }
        b.push(" FROM ").table(batches);
        b.push(" WHERE \"run_id\" = ")
            .param(Value::Text(run_id.to_string()));
        let expired = |b: &mut SqlBuilder<'_>, now: &Value| {
            b.push(" AND \"state\" = 'running' AND \"lease_token\" IS NOT NULL AND (\"lease_expires\" <= ");
            b.param(now.clone());
        };
        match takeover {
            None => {
                b.push(" AND \"state\" = 'pending'");
            }
            Some(Takeover::Expired(now)) => {
                expired(&mut b, now);
                b.push(")");
            }
            Some(Takeover::ExpiredOrNotMine(now, me)) => {
                expired(&mut b, now);
                b.push(" OR \"lease_instance\" IS NULL OR \"lease_instance\" <> ");
                b.param(Value::Text(me.to_string()));
                b.push(")");
            }
            Some(Takeover::ExpiredOrUnlocked(now)) => {
                expired(&mut b, now);
                if let Some(alive) = d.instance_alive("\"lease_instance\"") {
                    b.push(" OR \"lease_instance\" IS NULL OR NOT ")
                        .push(&alive);
                }
                b.push(")");
            }
        }
        if let Some(ids) = only {
            if ids.is_empty() {
                b.push(" AND FALSE");
            } else {
                b.push(" AND \"batch_id\" IN (");
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        b.push(", ");
                    }
                    b.param(Value::Text(id.clone()));
                }
                b.push(")");
            }
        }
        b.push(&format!(" ORDER BY \"seq\" LIMIT {}", limit.max(1)))
            .push(d.lock_rows_skip_locked());
        b.finish()
    }

    /// Whether an instance holds its session lock: one row `(alive)`, or
    /// `None` where the dialect has no session locks.
    pub fn instance_alive(d: &dyn Dialect, instance: &str) -> Option<Sql> {
        let mut b = SqlBuilder::new(d);
        let v = Value::Text(instance.to_string());
        let p = d.text(&d.placeholder(b.bind(v.clone()), &v));
        let alive = d.instance_alive(&p)?;
        b.push("SELECT ").push(&alive);
        Some(b.finish())
    }

    /// Adds a column to a ledger table made by an earlier version.
    pub fn add_column(d: &dyn Dialect, schema: &Ident, name: &str, column: &str, ty: &str) -> Sql {
        let mut b = SqlBuilder::new(d);
        b.push("ALTER TABLE ")
            .table(&table(schema, name))
            .push(" ADD COLUMN IF NOT EXISTS ")
            .ident(&ident(column))
            .push(" ")
            .push(ty);
        b.finish()
    }

    /// Indexes a PostgreSQL ledger adds to the shared tables, so reading a
    /// run's transitions and assets does not scan every run's rows.
    pub fn create_indexes(d: &dyn Dialect, schema: &Ident) -> Vec<Sql> {
        [(TRANSITIONS, "run_id"), (ASSETS, "run_id")]
            .iter()
            .map(|(name, col)| {
                let mut b = SqlBuilder::new(d);
                let index = ident(&format!("{name}_{col}_idx"));
                b.push("CREATE INDEX IF NOT EXISTS ")
                    .ident(&index)
                    .push(" ON ")
                    .table(&table(schema, name))
                    .push(" (")
                    .ident(&ident(col))
                    .push(")");
                b.finish()
            })
            .collect()
    }
}
