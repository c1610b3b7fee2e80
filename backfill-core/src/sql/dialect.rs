//! Where the SQL engines differ.

use std::fmt::Debug;

use super::stmt::{self, schema_of};
use super::{Sql, SqlBuilder};
use crate::{ColumnType, Ident, TableRef, TableSchema, Value};

/// The prefix of the text an instance's session lock is keyed by.
pub const INSTANCE_KEY: &str = "backfill:instance:";

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

    /// The SQL type a column of type `ty` is created with.
    fn type_name(&self, ty: ColumnType) -> &'static str {
        stmt::sql_type(ty)
    }

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

    /// A condition true when the float `expr` is NaN or infinite.
    fn non_finite(&self, expr: &str) -> String;

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

    /// What this engine's copy of `table` ([`Dialect::copy_shape`]) would
    /// not carry, one text row each (see `Warehouse::swap_hazards`).
    fn swap_hazards(&self, table: &TableRef) -> Sql;

    /// An index on a pre-image or key log by its batch column, where the
    /// engine needs one to find a batch's rows without reading the whole
    /// table; `None` where it prunes by itself (DuckDB's zone maps, the
    /// batches being written in order).
    fn index_snapshot(&self, _snapshot: &TableRef) -> Option<Sql> {
        None
    }

    /// The setting that starts the engine's automatic checkpoints, the
    /// value that defers them for a run, and the statement that runs one
    /// at its end; `None` where commits trigger no such work.
    fn deferred_checkpoints(&self) -> Option<DeferredCheckpoints> {
        None
    }

    /// A lock on a text key, held until the transaction ends, for engines
    /// where several sessions write at once; `None` where the engine lets
    /// one session write at a time, so transactions already serialize.
    fn advisory_lock(&self, _key: &str) -> Option<Sql> {
        None
    }

    /// Text that makes a `SELECT` lock the rows it reads until the
    /// transaction ends (empty where transactions serialize).
    fn lock_rows(&self) -> &'static str {
        ""
    }

    /// Text that makes a `SELECT` lock the rows it reads and skip rows
    /// another session has locked, so concurrent claimers get distinct
    /// rows without waiting (empty where transactions serialize).
    fn lock_rows_skip_locked(&self) -> &'static str {
        ""
    }

    /// The statement that takes an instance's session lock (held until
    /// the session ends), for engines whose ledgers judge liveness by it.
    fn instance_lock(&self, _instance: &str) -> Option<Sql> {
        None
    }

    /// An SQL condition, true while the instance named by the text
    /// expression `instance` holds its session lock.
    fn instance_alive(&self, _instance: &str) -> Option<String> {
        None
    }

    /// Whether the ledger's shared tables get secondary indexes.
    fn secondary_indexes(&self) -> bool {
        false
    }

    /// `expr` as a column a table made by `CREATE TABLE … AS SELECT` keeps
    /// nullable, whatever `expr` reads: a pre-image's marker row has no
    /// data. `expr` itself by default, where such tables never take
    /// `NOT NULL` from the query.
    fn nullable(&self, expr: &str) -> String {
        expr.to_string()
    }

    /// Whether the engine refuses a view that reads itself when the view
    /// is made or read. Where it does not (Sail overflows its stack on
    /// such a read), a view is only ever pointed at a table, which can
    /// never close a cycle.
    fn finds_view_cycles(&self) -> bool {
        true
    }

    /// The schema of the session's temporary tables; `None` where they
    /// are named without one (Spark's temporary views).
    fn temp_schema(&self) -> Option<&'static str>;

    /// How a statement's result is kept for the session's next statements
    /// and let go: the text before `name AS query`, and before `name` to
    /// drop it. A temporary table by default; a temporary view where the
    /// engine has no temporary tables (Spark), read again each time.
    fn scratch(&self) -> (&'static str, &'static str) {
        ("CREATE TEMP TABLE ", "DROP TABLE IF EXISTS ")
    }

    /// Statements that refresh the planner's statistics of a table just
    /// filled and read next (none where the engine keeps them itself).
    fn analyze(&self, _table: &TableRef) -> Vec<Sql> {
        Vec::new()
    }

    /// Statements that make a staged source quick to read by `column`.
    fn index_staged(&self, _table: &TableRef, _column: &Ident) -> Vec<Sql> {
        Vec::new()
    }

    /// Statements that create `to` empty with the shape of `from` (whose
    /// columns are `schema`), keeping at least column types and `NOT
    /// NULL`.
    fn copy_shape(&self, to: &TableRef, from: &TableRef, schema: &TableSchema) -> Vec<Sql>;

    /// Whether `CREATE OR REPLACE VIEW` refuses to change a view's columns
    /// (so a view whose columns change is dropped and created again in
    /// the same transaction, behind a savepoint).
    fn replace_view_keeps_columns(&self) -> bool {
        false
    }
}

/// An engine's automatic checkpoints, as a run defers them (see
/// [`Dialect::deferred_checkpoints`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredCheckpoints {
    /// The setting (`checkpoint_threshold`).
    pub setting: &'static str,
    /// Its value while a run writes.
    pub deferred: &'static str,
    /// Its default, as the engine reports it: only a setting at its
    /// default is deferred (and reset after), so that a value the user
    /// chose is left exactly as it is.
    pub default: &'static str,
    /// The statement that checkpoints once at the run's end.
    pub checkpoint: &'static str,
}

/// DuckDB.
#[derive(Clone, Copy, Debug, Default)]
pub struct DuckDbDialect;

impl Dialect for DuckDbDialect {
    fn deferred_checkpoints(&self) -> Option<DeferredCheckpoints> {
        // DuckDB checkpoints once the write-ahead log passes the
        // threshold; with a day a commit, that is every few batches, and
        // each analyzes the compression of what changed.
        Some(DeferredCheckpoints {
            setting: "checkpoint_threshold",
            deferred: "100GB",
            default: "16.0 MiB",
            checkpoint: "CHECKPOINT",
        })
    }

    fn non_finite(&self, expr: &str) -> String {
        format!("(isnan({expr}) OR isinf({expr}))")
    }

    fn name(&self) -> &'static str {
        "duckdb"
    }

    fn temp_schema(&self) -> Option<&'static str> {
        Some("temp")
    }

    fn copy_shape(&self, to: &TableRef, from: &TableRef, schema: &TableSchema) -> Vec<Sql> {
        let mut out = vec![stmt::create_table_like(self, to, from)];
        for col in schema.columns.iter().filter(|c| !c.nullable) {
            out.push(stmt::set_not_null(self, to, &col.name));
        }
        out
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

    fn swap_hazards(&self, table: &TableRef) -> Sql {
        // A copy is `CREATE TABLE AS` plus NOT NULL: keys, checks,
        // defaults and indexes stay behind. (Views bind by name, so they
        // read the new table.)
        let mut b = SqlBuilder::new(self);
        let whose = |b: &mut SqlBuilder<'_>| {
            b.push(" WHERE schema_name = ");
            schema_of(b, table);
            b.push(" AND table_name = ")
                .param(Value::Text(table.name.to_string()));
        };
        b.push("SELECT lower(constraint_type) || ' ' || constraint_text FROM duckdb_constraints()");
        whose(&mut b);
        b.push(" AND constraint_type IN ('PRIMARY KEY', 'UNIQUE', 'CHECK', 'FOREIGN KEY') UNION ALL SELECT 'default of ' || column_name || ': ' || column_default FROM duckdb_columns()");
        whose(&mut b);
        b.push(" AND column_default IS NOT NULL UNION ALL SELECT 'index ' || index_name FROM duckdb_indexes()");
        whose(&mut b);
        b.push(" ORDER BY 1");
        b.finish()
    }

    fn dependents(&self, table: &TableRef) -> Sql {
        // DuckDB binds views lazily and records no dependency on their
        // tables, so a view depends on a table when its SQL names it as a
        // whole word (a name is a validated identifier: safe in a pattern).
        let mut b = SqlBuilder::new(self);
        let word = format!("(^|[^A-Za-z0-9_]){}($|[^A-Za-z0-9_])", table.name);
        b.push("SELECT schema_name, view_name, 'view', sql FROM duckdb_views() WHERE NOT internal AND regexp_matches(sql, ")
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
    fn non_finite(&self, expr: &str) -> String {
        format!("({expr} IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8))")
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    fn temp_schema(&self) -> Option<&'static str> {
        Some("pg_temp")
    }

    fn advisory_lock(&self, key: &str) -> Option<Sql> {
        Some(stmt::advisory_xact_lock(self, key))
    }

    fn lock_rows(&self) -> &'static str {
        " FOR UPDATE"
    }

    fn lock_rows_skip_locked(&self) -> &'static str {
        " FOR UPDATE SKIP LOCKED"
    }

    fn secondary_indexes(&self) -> bool {
        true
    }

    fn instance_lock(&self, instance: &str) -> Option<Sql> {
        let mut b = SqlBuilder::new(self);
        b.push("SELECT pg_advisory_lock(hashtextextended(")
            .param(Value::Text(format!("{INSTANCE_KEY}{instance}")))
            .push(", 0))");
        Some(b.finish())
    }

    fn instance_alive(&self, instance: &str) -> Option<String> {
        // A bigint advisory lock shows in pg_locks as its high and low 32
        // bits (classid, objid) with objsubid 1.
        let key = format!("hashtextextended('{INSTANCE_KEY}' || ({instance}), 0)");
        Some(format!(
            "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
             AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::bigint = (({key} >> 32) & 4294967295) \
             AND l.objid::bigint = ({key} & 4294967295))"
        ))
    }

    fn analyze(&self, table: &TableRef) -> Vec<Sql> {
        vec![stmt::analyze(self, table)]
    }

    fn index_staged(&self, table: &TableRef, column: &Ident) -> Vec<Sql> {
        stmt::index_and_analyze(self, table, column).into()
    }

    fn copy_shape(&self, to: &TableRef, from: &TableRef, _schema: &TableSchema) -> Vec<Sql> {
        vec![stmt::create_table_like_including(self, to, from)]
    }

    fn replace_view_keeps_columns(&self) -> bool {
        true
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

    fn index_snapshot(&self, snapshot: &TableRef) -> Option<Sql> {
        // Unnamed: the server picks a name unique in the schema.
        let mut b = SqlBuilder::new(self);
        b.push("CREATE INDEX ON ")
            .table(snapshot)
            .push(" (")
            .ident(&Ident::new(super::BATCH_COLUMN).expect("the batch column is an identifier"))
            .push(")");
        Some(b.finish())
    }

    fn swap_hazards(&self, table: &TableRef) -> Sql {
        // A copy is `LIKE … INCLUDING` defaults, constraints and indexes;
        // what stays with the old table (views bind it by identity) is
        // listed here.
        let mut b = SqlBuilder::new(self);
        b.push("WITH t AS (SELECT c.oid, c.relowner, c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ");
        schema_of(&mut b, table);
        b.push(" AND c.relname = ")
            .param(Value::Text(table.name.to_string()))
            .push(") ");
        b.push("SELECT 'view ' || vn.nspname::text || '.' || v.relname::text FROM t JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class AND v.oid <> t.oid JOIN pg_namespace vn ON vn.oid = v.relnamespace ");
        b.push("UNION SELECT 'trigger ' || tg.tgname::text FROM t JOIN pg_trigger tg ON tg.tgrelid = t.oid AND NOT tg.tgisinternal ");
        b.push("UNION SELECT 'foreign key ' || co.conname::text FROM t JOIN pg_constraint co ON co.contype = 'f' AND (co.conrelid = t.oid OR co.confrelid = t.oid) ");
        b.push("UNION SELECT 'grant of ' || lower(acl.privilege_type) || ' to ' || COALESCE(ro.rolname::text, 'PUBLIC') FROM t CROSS JOIN LATERAL aclexplode(t.relacl) acl LEFT JOIN pg_roles ro ON ro.oid = acl.grantee WHERE acl.grantee <> t.relowner ");
        b.push("UNION SELECT 'sequence ' || s.relname::text || ' (owned by a column)' FROM t JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' ");
        b.push("UNION SELECT 'row security policy ' || p.polname::text FROM t JOIN pg_policy p ON p.polrelid = t.oid ");
        b.push("ORDER BY 1");
        b.finish()
    }

    fn dependents(&self, table: &TableRef) -> Sql {
        let mut b = SqlBuilder::new(self);
        b.push("SELECT DISTINCT vn.nspname::text, v.relname::text, CASE v.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, pg_get_viewdef(v.oid) FROM pg_class t JOIN pg_namespace tn ON tn.oid = t.relnamespace JOIN pg_depend d ON d.refobjid = t.oid AND d.classid = 'pg_rewrite'::regclass JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace WHERE tn.nspname = ");
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
