//! Spark SQL, as a Spark Connect server (Apache Spark, Sail, Databricks)
//! reads it.
//!
//! Spark Connect binds parameters only on some servers, so this dialect
//! binds none: every value is written into the text as a literal built
//! from nothing but digits, hexadecimal digits and fixed keywords. Text
//! travels as the hexadecimal of its UTF-8 bytes (`CAST(X'…' AS STRING)`),
//! so no character of a value (a quote, a backslash, a comment marker) can
//! end the literal it is in: Spark's backslash escapes and its joining of
//! adjacent quoted strings (`'it''s'` is `its`, not `it's`) never apply.
//! Identifiers are validated before they get here and are quoted with
//! backquotes, doubled inside.
//!
//! ```
//! use backfill_core::sql::{Dialect, SparkDialect};
//! use backfill_core::Value;
//!
//! let d = SparkDialect;
//! assert_eq!(d.placeholder(1, &Value::Text("it's".into())), "CAST(X'69742773' AS STRING)");
//! assert_eq!(d.placeholder(2, &Value::Int(-5)), "(-5)");
//! ```

use super::stmt;
use super::{Dialect, Sql, SqlBuilder};
use crate::{ColumnType, Ident, TableRef, TableSchema, Value};

/// Spark SQL over Spark Connect: values as literals, identifiers in
/// backquotes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SparkDialect;

/// `value` as a Spark SQL literal whose text holds no character of the
/// value itself except digits (see the module's documentation).
pub fn literal(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::Bool(true) => "TRUE".to_string(),
        Value::Bool(false) => "FALSE".to_string(),
        // Plain digits where they fit an INT (a `LIMIT` takes nothing
        // else on Apache Spark); wider values cast, since Spark cannot
        // read the magnitude of i64::MIN as a BIGINT literal.
        // A negative one is parenthesised, so no text before it can make
        // its sign part of a comment marker (`--`).
        Value::Int(i) if i32::try_from(*i).is_ok() && *i < 0 => format!("({i})"),
        Value::Int(i) if i32::try_from(*i).is_ok() => i.to_string(),
        Value::Int(i) => format!("CAST({i} AS BIGINT)"),
        Value::Float(f) if f.is_nan() => "CAST('NaN' AS DOUBLE)".to_string(),
        Value::Float(f) if f.is_infinite() && *f > 0.0 => "CAST('Infinity' AS DOUBLE)".to_string(),
        Value::Float(f) if f.is_infinite() => "CAST('-Infinity' AS DOUBLE)".to_string(),
        // Rust's shortest round-trip form: digits, '.', 'e' and '-'.
        Value::Float(f) => format!("CAST('{f:e}' AS DOUBLE)"),
        Value::Text(s) => {
            let mut hex = String::with_capacity(s.len() * 2 + 24);
            hex.push_str("CAST(X'");
            for b in s.as_bytes() {
                hex.push_str(&format!("{b:02X}"));
            }
            hex.push_str("' AS STRING)");
            hex
        }
        // jiff writes these with digits, '-', ':', '.', 'T' and 'Z' only.
        Value::Date(d) => format!("DATE'{d}'"),
        Value::DateTime(d) => format!("TIMESTAMP_NTZ'{d}'"),
        Value::Timestamp(t) => format!("TIMESTAMP'{t}'"),
    }
}

/// The column type a Spark type name stands for, as its catalog writes it
/// (`bigint`, `decimal(18,2)`, `timestamp`, `timestamp_ntz`, …). Spark's
/// `timestamp` is an instant (it carries the session's zone);
/// `timestamp_ntz` is a wall-clock time.
pub fn column_type(name: &str) -> ColumnType {
    let name = name.trim().to_ascii_lowercase();
    let base = name.split('(').next().unwrap_or("");
    match base {
        "boolean" => ColumnType::Bool,
        "tinyint" | "byte" | "smallint" | "short" | "int" | "integer" | "bigint" | "long" => {
            ColumnType::Int
        }
        "float" | "real" | "double" => ColumnType::Float,
        "decimal" | "dec" | "numeric" => ColumnType::Decimal,
        "string" | "varchar" | "char" => ColumnType::Text,
        "date" => ColumnType::Date,
        "timestamp_ntz" => ColumnType::DateTime,
        "timestamp" | "timestamp_ltz" => ColumnType::Timestamp,
        _ => ColumnType::Other,
    }
}

/// A query of the given columns that returns no row, for catalog
/// questions Spark cannot answer in SQL.
fn no_rows(columns: &str) -> Sql {
    Sql {
        text: format!("SELECT {columns} WHERE FALSE"),
        params: Vec::new(),
    }
}

impl Dialect for SparkDialect {
    fn name(&self) -> &'static str {
        "spark"
    }

    fn quote_ident(&self, ident: &Ident) -> String {
        format!("`{}`", ident.as_str().replace('`', "``"))
    }

    fn placeholder(&self, _n: usize, value: &Value) -> String {
        literal(value)
    }

    fn type_name(&self, ty: ColumnType) -> &'static str {
        match ty {
            ColumnType::Bool => "BOOLEAN",
            ColumnType::Int => "BIGINT",
            ColumnType::Float => "DOUBLE",
            ColumnType::Decimal => "DECIMAL(38,10)",
            ColumnType::Text | ColumnType::Other => "STRING",
            ColumnType::Date => "DATE",
            ColumnType::DateTime => "TIMESTAMP_NTZ",
            ColumnType::Timestamp => "TIMESTAMP",
        }
    }

    fn hash_bucket(&self, expr: &str, buckets: u32) -> String {
        format!("(CASE WHEN {expr} IS NULL THEN 0 ELSE CAST(pmod(hash({expr}), {buckets}) AS BIGINT) END)")
    }

    fn row_hash(&self, alias: &str) -> String {
        // A struct of the row: Sail takes no bare `alias.*` in a function.
        format!("CAST(xxhash64(struct({alias}.*)) AS DECIMAL(38,0))")
    }

    fn values_hash(&self, exprs: &[String]) -> String {
        format!("CAST(xxhash64({}) AS DECIMAL(38,0))", exprs.join(", "))
    }

    fn first_texts(&self, text: &str, order: &[String], n: usize) -> (String, String) {
        // Sorting structs compares their fields in order: the order first.
        (
            format!(
                "nullif(array_join(slice(transform(array_sort(collect_list(named_struct('o', struct({}), 't', {text})) FILTER (WHERE ",
                order.join(", ")
            ),
            format!(")), x -> x.t), 1, {n}), chr(31)), '')"),
        )
    }

    fn non_finite(&self, expr: &str) -> String {
        format!("(isnan({expr}) OR {expr} IN (CAST('Infinity' AS DOUBLE), CAST('-Infinity' AS DOUBLE)))")
    }

    fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS STRING)")
    }

    fn epoch_seconds(&self, expr: &str) -> String {
        format!("(CAST(unix_micros({expr}) AS DOUBLE) / 1000000.0)")
    }

    fn table_size(&self, table: &TableRef) -> Sql {
        // No row estimate is readable in SQL on every server: a count.
        let mut b = SqlBuilder::new(self);
        b.push("SELECT count(*), CAST(NULL AS BIGINT) FROM ")
            .table(table);
        b.finish()
    }

    fn describe_relation(&self, table: &TableRef) -> Sql {
        // Spark has no information schema; the result columns of a query
        // of the relation (which the Spark adapter reads by analysis,
        // without running it) are its columns.
        let mut b = SqlBuilder::new(self);
        b.push("SELECT * FROM ").table(table);
        b.finish()
    }

    fn relation_kind(&self, _table: &TableRef) -> Sql {
        // Spark answers this only by its catalog calls, which its
        // connection makes (`Conn::relation`), so the shared code never
        // asks this; were it asked, no row reads as "nothing has the
        // name", and a write to it is refused.
        no_rows("'' AS table_type")
    }

    fn dependents(&self, _table: &TableRef) -> Sql {
        // Spark records no view's dependencies where SQL can read them:
        // none are known (not "none exist").
        no_rows("'' AS schema_name, '' AS view_name, 'view' AS kind, '' AS definition")
    }

    fn swap_hazards(&self, _table: &TableRef) -> Sql {
        no_rows("'' AS hazard")
    }

    fn temp_schema(&self) -> Option<&'static str> {
        // A temporary view takes no schema, and is found before any table
        // of the same name.
        None
    }

    fn finds_view_cycles(&self) -> bool {
        false
    }

    fn nullable(&self, expr: &str) -> String {
        // A Delta table made from a query keeps its columns' NOT NULL; a
        // CASE without ELSE may be NULL.
        format!("CASE WHEN TRUE THEN {expr} END")
    }

    fn scratch(&self) -> (&'static str, &'static str) {
        // Apache Spark refuses `CREATE TEMPORARY TABLE … AS`.
        ("CREATE OR REPLACE TEMPORARY VIEW ", "DROP VIEW IF EXISTS ")
    }

    fn copy_shape(&self, to: &TableRef, from: &TableRef, _schema: &TableSchema) -> Vec<Sql> {
        vec![stmt::create_table_like(self, to, from)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn text_is_only_hex_digits_inside_quotes() {
        for hostile in [
            "it's",
            "a\\'; DROP TABLE t; --",
            "\\",
            "'",
            "`x`",
            "/* c */",
            "é\u{1f}\n",
        ] {
            let l = literal(&Value::Text(hostile.into()));
            let inner = l
                .strip_prefix("CAST(X'")
                .and_then(|r| r.strip_suffix("' AS STRING)"))
                .expect("hex form");
            assert!(inner.chars().all(|c| c.is_ascii_hexdigit()), "{l}");
            let bytes: Vec<u8> = (0..inner.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&inner[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(String::from_utf8(bytes).unwrap(), hostile);
        }
        assert_eq!(literal(&Value::Text(String::new())), "CAST(X'' AS STRING)");
    }

    #[test]
    fn numbers_dates_and_times_are_plain_literals() {
        assert_eq!(
            literal(&Value::Int(i64::MIN)),
            "CAST(-9223372036854775808 AS BIGINT)"
        );
        assert_eq!(literal(&Value::Float(1.5)), "CAST('1.5e0' AS DOUBLE)");
        assert_eq!(literal(&Value::Float(f64::NAN)), "CAST('NaN' AS DOUBLE)");
        assert_eq!(
            literal(&Value::Float(f64::NEG_INFINITY)),
            "CAST('-Infinity' AS DOUBLE)"
        );
        assert_eq!(literal(&Value::Date(date(2026, 1, 2))), "DATE'2026-01-02'");
        assert_eq!(
            literal(&Value::DateTime(date(2026, 1, 2).at(3, 4, 5, 0))),
            "TIMESTAMP_NTZ'2026-01-02T03:04:05'"
        );
        let t: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(
            literal(&Value::Timestamp(t)),
            "TIMESTAMP'2026-01-02T03:04:05Z'"
        );
        assert_eq!(literal(&Value::Null), "NULL");
        assert_eq!(literal(&Value::Bool(true)), "TRUE");
    }

    #[test]
    fn text_bound_inside_the_renderer_is_its_own_literal() {
        let t = TableRef::parse("pre").unwrap();
        let q = stmt::marker_count(&SparkDialect, &t, "b1");
        assert!(
            q.text.contains("CAST(CAST(X'6231' AS STRING) AS STRING)"),
            "{}",
            q.text
        );
    }

    #[test]
    fn catalog_type_names_map_to_column_types() {
        assert_eq!(column_type("bigint"), ColumnType::Int);
        assert_eq!(column_type("decimal(18,2)"), ColumnType::Decimal);
        assert_eq!(column_type("timestamp"), ColumnType::Timestamp);
        assert_eq!(column_type("timestamp_ntz"), ColumnType::DateTime);
        assert_eq!(column_type("varchar(10)"), ColumnType::Text);
        assert_eq!(column_type("array<int>"), ColumnType::Other);
    }

    #[test]
    fn identifiers_are_backquoted() {
        let d = SparkDialect;
        assert_eq!(d.quote_ident(&Ident::new("facts").unwrap()), "`facts`");
    }
}
