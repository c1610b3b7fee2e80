//! Integration tests of the Spark client against real Spark Connect
//! servers, which `scripts/with-spark.sh` starts and names:
//! Sail (`BACKFILL_SPARK_SAIL_URL`, Delta tables) and Apache Spark
//! (`BACKFILL_SPARK_JVM_URL`, parquet tables). Every case runs on both.
//! Without a server a case says so and passes, unless `CI` is set, where a
//! missing server fails it.
//!
//! This is the crate's only integration test file; put new tests here.

use backfill_core::jiff::civil::date;
use backfill_core::jiff::Timestamp;
use backfill_core::sql::{Sql, SqlBuilder};
use backfill_core::{ColumnType, Error, Ident, TableRef, Value};
use std::sync::Arc;

use backfill_core::ledger::Ledger;
use backfill_core::sql::stmt;
use backfill_core::{MemoryLedger, Source, TableSchema, Warehouse};
use backfill_spark::{CatalogColumn, RelationKind, Spark, SparkWarehouse, TableFormat};
use backfill_testkit::conformance::{self as c, Capabilities, Env};
use backfill_testkit::fixtures::Seed;

/// One server under test and what its tables can do.
struct Server {
    /// The case's name, which names its schema.
    name: String,
    spark: Spark,
    /// The table format its tables are created in.
    format: &'static str,
    /// Its tables take `DELETE`, `MERGE` and `REPLACE WHERE` and keep
    /// `NOT NULL` (Delta); parquet tables on Apache Spark without the
    /// Delta jars do neither (a file source's columns are all nullable).
    delta: bool,
}

#[derive(Clone, Copy)]
enum Which {
    Sail,
    Jvm,
}

/// A session on the server, or `None` (outside CI) when it was not
/// started.
async fn server(which: Which, name: &str) -> Option<Server> {
    let name = name.to_string();
    let var = match which {
        Which::Sail => "BACKFILL_SPARK_SAIL_URL",
        Which::Jvm => "BACKFILL_SPARK_JVM_URL",
    };
    let Ok(url) = std::env::var(var) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{var} is not set: run the tests through ./scripts/test.sh"
        );
        eprintln!("no Spark Connect server ({var}): skipped");
        return None;
    };
    let spark = Spark::connect(&url).await.expect("connect");
    match which {
        Which::Sail => {
            // Sail keeps its catalog per session and needs a warehouse
            // directory for tables made without a location; Apache Spark
            // has one from its start (a setting fixed at startup there).
            let warehouse = std::env::var("BACKFILL_SPARK_WAREHOUSE").expect("warehouse directory");
            spark
                .set_config("spark.sql.warehouse.dir", &format!("{warehouse}/sail"))
                .await
                .expect("warehouse directory set");
            // Tables made without `USING` (the shared renderer's) are Delta.
            spark
                .set_config("spark.sql.sources.default", "delta")
                .await
                .expect("default format set");
            Some(Server {
                name,
                spark,
                format: "delta",
                delta: true,
            })
        }
        Which::Jvm => Some(Server {
            name,
            spark,
            format: "parquet",
            delta: false,
        }),
    }
}

/// Each case once per server.
macro_rules! on_each_server {
    ($($case:ident),* $(,)?) => {
        mod sail {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(s) = super::server(super::Which::Sail, stringify!($case)).await {
                        super::$case(s).await;
                    }
                }
            )*
        }
        mod jvm {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(s) = super::server(super::Which::Jvm, stringify!($case)).await {
                        super::$case(s).await;
                    }
                }
            )*
        }
    };
}

on_each_server!(
    values_go_out_as_literals_and_come_back_typed,
    hostile_text_is_stored_as_it_is,
    commands_count_rows_and_columns_come_from_analysis,
    dialect_fragments_compute_what_they_say,
    the_catalog_says_kind_columns_and_partitions,
);

/// Writes on parquet tables, which no statement replaces a slice of
/// atomically, are refused.
#[tokio::test]
async fn parquet_writes_are_refused_before_anything_is_written() {
    if let Some(s) = server(Which::Jvm, "parquet_writes_refused").await {
        writes_are_refused_before_anything_is_written(s).await;
    }
}

fn sql(text: &str) -> Sql {
    Sql {
        text: text.to_string(),
        params: Vec::new(),
    }
}

fn tr(s: &str) -> TableRef {
    TableRef::parse(s).unwrap()
}

/// Every kind of value goes out as a literal and comes back as itself.
async fn values_go_out_as_literals_and_come_back_typed(s: Server) {
    let spark = s.spark;
    let instant: Timestamp = "2026-03-04T05:06:07.123456Z".parse().unwrap();
    let values = vec![
        Value::Int(i64::MIN),
        Value::Int(i64::MAX),
        Value::Float(-0.1),
        Value::Float(1e300),
        Value::Bool(true),
        Value::Text("plain".into()),
        Value::Text(String::new()),
        Value::Date(date(2026, 2, 28)),
        Value::DateTime(date(2026, 2, 28).at(23, 59, 58, 500_000_000)),
        Value::Timestamp(instant),
        Value::Null,
    ];
    let mut b = SqlBuilder::new(spark.dialect());
    b.push("SELECT ");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            b.push(", ");
        }
        b.param(v.clone());
    }
    let rows = spark.query(&b.finish()).await.unwrap();
    assert_eq!(rows, vec![values]);
    let nan = spark
        .query(&{
            let mut b = SqlBuilder::new(spark.dialect());
            b.push("SELECT ").param(Value::Float(f64::NAN));
            b.finish()
        })
        .await
        .unwrap();
    assert!(matches!(nan[0][0], Value::Float(f) if f.is_nan()));
}

/// Text that would end a quoted literal, open a comment or escape a quote
/// is stored and read back exactly, and nothing of it runs as SQL.
async fn hostile_text_is_stored_as_it_is(s: Server) {
    let spark = s.spark;
    spark
        .execute(&sql(&format!(
            "CREATE TABLE hostile (id BIGINT, note STRING) USING {}",
            s.format
        )))
        .await
        .unwrap();
    let hostile = [
        "it's",
        "'; DROP TABLE hostile; --",
        "\\'); DELETE FROM hostile; --",
        "back\\slash\\",
        "/* open",
        "`tick`",
        "\"double\"",
        "é ∑ \u{1f}\n\t",
    ];
    for (i, h) in hostile.iter().enumerate() {
        let mut b = SqlBuilder::new(spark.dialect());
        b.push("INSERT INTO ")
            .table(&tr("hostile"))
            .push(" VALUES (")
            .param(Value::Int(i as i64))
            .push(", ")
            .param(Value::Text((*h).to_string()))
            .push(")");
        spark.execute(&b.finish()).await.unwrap();
    }
    let rows = spark
        .query(&sql("SELECT note FROM hostile ORDER BY id"))
        .await
        .unwrap();
    let got: Vec<Value> = rows.into_iter().map(|mut r| r.remove(0)).collect();
    let want: Vec<Value> = hostile
        .iter()
        .map(|h| Value::Text((*h).to_string()))
        .collect();
    assert_eq!(got, want);
    // A value in a filter matches only itself.
    let mut b = SqlBuilder::new(spark.dialect());
    b.push("SELECT count(*) FROM hostile WHERE note = ")
        .param(Value::Text("' OR '1' = '1".into()));
    assert_eq!(
        spark.query(&b.finish()).await.unwrap(),
        vec![vec![Value::Int(0)]]
    );
}

/// Commands run when sent (a Delta `DELETE` too); a query's columns come
/// from the server's analysis without running it, and a missing table is
/// a typed error naming it, there and when queried.
async fn commands_count_rows_and_columns_come_from_analysis(s: Server) {
    let spark = s.spark;
    spark
        .execute(&sql(&format!(
            "CREATE TABLE counted (day DATE, id BIGINT, amount DECIMAL(18,2), note STRING, at TIMESTAMP) USING {}",
            s.format
        )))
        .await
        .unwrap();
    spark
        .execute(&sql(
            "INSERT INTO counted VALUES (DATE'2026-01-01', 1, 1.50, 'a', NULL), (DATE'2026-01-02', 2, 2.25, 'b', NULL), (DATE'2026-01-02', 3, 3.00, 'c', NULL)",
        ))
        .await
        .unwrap();
    let totals = |spark: Spark| async move {
        spark
            .query(&sql("SELECT count(*), sum(amount) FROM counted"))
            .await
            .unwrap()
    };
    assert_eq!(
        totals(spark.clone()).await,
        vec![vec![Value::Int(3), Value::Text("6.75".into())]]
    );
    if s.delta {
        spark
            .execute(&sql("DELETE FROM counted WHERE day = DATE'2026-01-02'"))
            .await
            .unwrap();
        assert_eq!(
            totals(spark.clone()).await,
            vec![vec![Value::Int(1), Value::Text("1.50".into())]]
        );
    }

    let t = tr("counted");
    let cols = spark
        .columns(&spark.dialect().describe_relation(&t))
        .await
        .unwrap();
    let names: Vec<(&str, ColumnType)> = cols.iter().map(|(n, t, _)| (n.as_str(), *t)).collect();
    assert_eq!(
        names,
        vec![
            ("day", ColumnType::Date),
            ("id", ColumnType::Int),
            ("amount", ColumnType::Decimal),
            ("note", ColumnType::Text),
            ("at", ColumnType::Timestamp),
        ]
    );
    let missing = TableRef::new(Ident::new("no_such_table").unwrap());
    let err = spark
        .columns(&spark.dialect().describe_relation(&missing))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTable(ref n) if n == "no_such_table"),
        "{err:?}"
    );
    let err = spark
        .query(&sql("SELECT count(*) FROM no_such_table"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownTable(ref n) if n.contains("no_such_table")),
        "{err:?}"
    );
}

/// The dialect's expressions (buckets, hashes, first texts, non-finite
/// floats, epoch seconds), which the shared checks and inspections are
/// built of, run and give the answers they promise.
async fn dialect_fragments_compute_what_they_say(s: Server) {
    let d = s.spark.dialect();
    let rows = "(SELECT * FROM VALUES (1, 'a', 1.5), (2, NULL, CAST('NaN' AS DOUBLE)), (1, 'a', 1.5), (NULL, 'z', CAST('-Infinity' AS DOUBLE)) AS v(id, note, f)) t";
    let q = format!(
        "SELECT id, {}, {}, {}, {} FROM {rows} ORDER BY id NULLS FIRST, note",
        d.hash_bucket("t.id", 7),
        d.values_hash(&["t.id".into(), "t.note".into()]),
        d.row_hash("t"),
        d.non_finite("t.f"),
    );
    let got = s.spark.query(&sql(&q)).await.unwrap();
    assert_eq!(got.len(), 4);
    // NULL falls in bucket 0; every bucket is in 0..7.
    assert_eq!(got[0][1], Value::Int(0));
    for r in &got {
        assert!(
            matches!(r[1], Value::Int(b) if (0..7).contains(&b)),
            "{r:?}"
        );
    }
    // Equal rows hash alike, different ones not.
    assert_eq!((&got[1][2], &got[1][3]), (&got[2][2], &got[2][3]));
    assert_ne!(got[1][2], got[3][2]);
    assert_ne!(got[1][3], got[3][3]);
    let flags: Vec<&Value> = got.iter().map(|r| &r[4]).collect();
    assert_eq!(
        flags,
        [
            &Value::Bool(true),
            &Value::Bool(false),
            &Value::Bool(false),
            &Value::Bool(true)
        ]
    );
    let (head, tail) = d.first_texts("CAST(t.id AS STRING)", &["t.id".into()], 2);
    let q = format!("SELECT {head}t.id > 0{tail}, {head}t.id > 5{tail} FROM {rows}");
    assert_eq!(
        s.spark.query(&sql(&q)).await.unwrap(),
        vec![vec![Value::Text("1\u{1f}1".into()), Value::Null]]
    );
    let mut b = SqlBuilder::new(d);
    b.push("SELECT ");
    let at: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let lit = {
        let mut l = SqlBuilder::new(d);
        l.param(Value::Timestamp(at));
        l.finish().text
    };
    b.push(&d.epoch_seconds(&lit));
    assert_eq!(
        s.spark.query(&b.finish()).await.unwrap(),
        vec![vec![Value::Float(1_767_225_600.0)]]
    );
}

/// The catalog tells a table from a view, lists columns in order with
/// their types, nullability and partitioning, and says nothing of a name
/// nothing has.
async fn the_catalog_says_kind_columns_and_partitions(s: Server) {
    let spark = &s.spark;
    spark
        .execute(&sql(&format!(
            "CREATE TABLE listed (id BIGINT NOT NULL, amount DECIMAL(18,2), at TIMESTAMP, day DATE) USING {} PARTITIONED BY (day)",
            s.format
        )))
        .await
        .unwrap();
    spark
        .execute(&sql(
            "CREATE OR REPLACE VIEW listed_view AS SELECT id, day FROM listed",
        ))
        .await
        .unwrap();
    let t = spark
        .relation(&tr("listed"))
        .await
        .unwrap()
        .expect("the table");
    assert_eq!(t.kind, RelationKind::Table);
    let col = |name: &str, ty, nullable, partition| CatalogColumn {
        name: name.into(),
        ty,
        nullable,
        partition,
    };
    assert_eq!(
        t.columns,
        vec![
            col("id", ColumnType::Int, !s.delta, false),
            col("amount", ColumnType::Decimal, true, false),
            col("at", ColumnType::Timestamp, true, false),
            col("day", ColumnType::Date, true, true),
        ]
    );
    let v = spark
        .relation(&tr("listed_view"))
        .await
        .unwrap()
        .expect("the view");
    assert_eq!(v.kind, RelationKind::View);
    assert_eq!(
        v.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "day"]
    );
    assert_eq!(spark.relation(&tr("no_such_relation")).await.unwrap(), None);
    assert_eq!(
        spark
            .relation(&tr("default.no_such_relation"))
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------
// The shared conformance suite's read cases, on the Spark warehouse: the
// warehouse is the shared SQL engine on Spark, so its reads are the same
// statements the other engines run, rendered in Spark SQL. The write cases
// wait for Spark's own write paths (Delta's `REPLACE WHERE` and `MERGE`);
// until then a write is refused before it writes anything.
// ---------------------------------------------------------------------------

/// Seeds through the session: tables from the shared renderer's DDL (Delta
/// on Sail, parquet on Apache Spark), rows as literals, views as views.
struct SparkSeed(Spark);

#[async_trait::async_trait]
impl Seed for SparkSeed {
    async fn create_table(
        &self,
        table: &TableRef,
        schema: &TableSchema,
    ) -> backfill_core::Result<()> {
        self.0
            .execute(&stmt::create_table(self.0.dialect(), table, schema))
            .await
    }

    async fn insert_rows(
        &self,
        table: &TableRef,
        rows: &[Vec<Value>],
    ) -> backfill_core::Result<()> {
        let r = self.0.relation(table).await?.expect("a seeded table");
        let names: Vec<Ident> = r
            .columns
            .iter()
            .map(|c| Ident::new(c.name.clone()).unwrap())
            .collect();
        for chunk in rows.chunks(200) {
            self.0
                .execute(&stmt::insert_values(self.0.dialect(), table, &names, chunk))
                .await?;
        }
        Ok(())
    }

    async fn create_view(&self, view: &TableRef, table: &TableRef) -> backfill_core::Result<()> {
        let mut b = SqlBuilder::new(self.0.dialect());
        b.push("CREATE OR REPLACE VIEW ")
            .table(view)
            .push(" AS SELECT * FROM ")
            .table(table);
        self.0.execute(&b.finish()).await
    }
}

/// A bounded query source over `table` in Spark SQL.
fn spark_bounded_source(table: &TableRef, column: &Ident, leaky_end: bool) -> Source {
    let op = if leaky_end { "<=" } else { "<" };
    let t = match &table.schema {
        Some(s) => format!("`{s}`.`{}`", table.name),
        None => format!("`{}`", table.name),
    };
    Source::query(format!(
        "SELECT * FROM {t} WHERE `{column}` >= {{start}} AND `{column}` {op} {{end}}"
    ))
}

/// An env for the read cases: the Spark warehouse, the ledger in memory,
/// the case's tables in a schema of its own (Apache Spark's catalog is
/// shared by every session of the server).
async fn spark_env(s: Server) -> Env {
    let schema = Ident::new(s.name.as_str()).unwrap();
    let delta = s.delta;
    let mut b = SqlBuilder::new(s.spark.dialect());
    b.push("CREATE SCHEMA IF NOT EXISTS ").ident(&schema);
    s.spark.execute(&b.finish()).await.unwrap();
    // Names without a schema are the case's, as on the other engines.
    let mut b = SqlBuilder::new(s.spark.dialect());
    b.push("USE SCHEMA ").ident(&schema);
    s.spark.execute(&b.finish()).await.unwrap();
    Env {
        warehouse: Arc::new(SparkWarehouse::with_format(
            s.spark.clone(),
            if delta {
                TableFormat::Delta
            } else {
                TableFormat::Other
            },
        )),
        ledger: Arc::new(MemoryLedger::new()),
        seed: Arc::new(SparkSeed(s.spark)),
        schema: Some(schema),
        bounded_source: Arc::new(spark_bounded_source),
        clocked_ledger: Arc::new(|clock| {
            let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::with_clock(clock));
            Box::pin(async move { ledger })
        }),
        capabilities: Capabilities {
            ledger_in_data_tx: false,
            // Spark stores a view's SQL and binds it when it is read.
            views_bind_by_name: true,
            runs_sql: true,
            views_of_views: false,
            finds_dependents: false,
            keeps_not_null: delta,
        },
        ledger_batches: None,
    }
}

/// The whole suite on Sail's Delta tables, and the read cases on Apache
/// Spark's parquet tables, each case in a schema of its own.
mod sail_suite {
    use super::*;
    backfill_testkit::conformance_tests!(|name: &str| {
        let name = name.to_string();
        async move { Some(spark_env(server(Which::Sail, &name).await?).await) }
    });
}

mod jvm_reads {
    use super::*;
    backfill_testkit::conformance_read_tests!(|name: &str| {
        let name = name.to_string();
        async move { Some(spark_env(server(Which::Jvm, &name).await?).await) }
    });
}

/// A write, which on the shared protocol needs a transaction, is refused
/// with a typed error and the table is left as it was; so is a ledger
/// kept in Spark.
async fn writes_are_refused_before_anything_is_written(s: Server) {
    let e = spark_env(s).await;
    let schema = c::facts_schema();
    let facts = e.table("refused_facts");
    e.seed.create_table(&facts, &schema).await.unwrap();
    e.seed
        .insert_rows(&facts, &c::original_rows())
        .await
        .unwrap();
    let fix = e.table("refused_fix");
    e.seed.create_table(&fix, &schema).await.unwrap();
    e.seed.insert_rows(&fix, &c::source_rows()).await.unwrap();
    let before = e
        .warehouse
        .checksum(&facts, &backfill_core::Predicate::All)
        .await
        .unwrap();
    let plan = c::daily_plan(facts.clone());
    let run = backfill_core::RunId::new("refused").unwrap();
    let columns = schema.names();
    let err = e
        .warehouse
        .overwrite_slice(&c::writes::slice_write(
            &run,
            &plan.batches[0],
            &facts,
            &Source::Table(fix),
            &columns,
            None,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert_eq!(
        e.warehouse
            .checksum(&facts, &backfill_core::Predicate::All)
            .await
            .unwrap(),
        before
    );
}

/// A decimal column's pre-image and restore on Delta: the pre-image's
/// marker row and the columns a write leaves out are NULLs that take the
/// column's own type (a `DECIMAL(38,10)` NULL in the marker row's branch
/// of the pre-image's `UNION ALL` was refused beside `DECIMAL(18,2)`
/// rows). The write replaces the day; a late pre-image statement keeps
/// the first one's rows; the restore puts the day back exactly.
#[tokio::test]
async fn a_decimal_day_is_kept_overwritten_and_restored() {
    let Some(s) = server(Which::Sail, "decimal_pre_image").await else {
        return;
    };
    let e = spark_env(s).await;
    let w = e.warehouse.as_ref();
    let (facts, fix, pre) = (
        e.table("amounts"),
        e.table("amounts_fix"),
        e.table("amounts_pre"),
    );
    for (t, scale) in [(&facts, 1), (&fix, 3)] {
        w.execute(&format!(
            "CREATE TABLE {t} AS SELECT CAST(id AS BIGINT) AS `id`, \
             date_add(DATE'2026-03-01', CAST(id % 10 AS INT)) AS `day`, \
             CAST(id * {scale} / 100.0 AS DECIMAL(18,2)) AS `amount` FROM range(40)",
            t = e.quote_table(t)
        ))
        .await
        .unwrap();
    }
    let all = backfill_core::Predicate::All;
    let before = w.checksum(&facts, &all).await.unwrap();
    let columns: Vec<Ident> = ["id", "day", "amount"]
        .iter()
        .map(|c| Ident::new(*c).unwrap())
        .collect();
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    let plan = c::daily_plan(facts.clone());
    let run = backfill_core::RunId::new("decimals").unwrap();
    let batch = &plan.batches[0];
    let source = Source::Table(fix.clone());
    let out = w
        .overwrite_slice(&c::writes::slice_write(
            &run,
            batch,
            &facts,
            &source,
            &columns,
            Some(&pre),
        ))
        .await
        .unwrap();
    assert_eq!(
        (out.rows_before, out.rows_written, out.rows_snapshotted),
        (4, 4, 4)
    );
    assert_eq!(
        w.checksum(&fix, &batch.predicate).await.unwrap(),
        w.checksum(&facts, &batch.predicate).await.unwrap(),
        "the day is the fix's"
    );
    assert_ne!(w.checksum(&facts, &all).await.unwrap(), before);
    // The day's change in `amount`, attributed by diffing the pre-image
    // against the day (2026-03-03): each of its four rows (ids 2, 12, 22,
    // 32) tripled.
    let diff = backfill_core::inspect::Diff {
        old: backfill_core::inspect::Rows::pre_image(pre.clone(), batch.predicate.clone()),
        new: backfill_core::inspect::Rows::slice(facts.clone(), batch.predicate.clone()),
        keys: vec![Ident::new("id").unwrap()],
        columns: vec![backfill_core::inspect::Compared::exact(
            Ident::new("amount").unwrap(),
        )],
        sample: 0,
        attribute: Some(backfill_core::inspect::Metric {
            name: "amount".into(),
            aggregate: backfill_core::inspect::Aggregate::Sum(Ident::new("amount").unwrap()),
            by: vec![],
        }),
        partition: None,
    };
    let r = backfill_core::ask::diff(w, diff).await.unwrap();
    assert_eq!((r.changed, r.unchanged), (4, 0));
    let changed: Vec<String> = r
        .contributions
        .iter()
        .map(|c| c.changed.to_string())
        .collect();
    assert_eq!(changed, vec!["1.36"], "(0.02 + 0.12 + 0.22 + 0.32) × 2");
    // A worker that found no marker before this write was made, and
    // keeps the pre-image now: its statement keeps what is kept, not
    // the day as it is now.
    let layout = w.describe(&pre).await.unwrap().unwrap();
    let late = stmt::replace_snapshot(
        e.warehouse.dialect().unwrap(),
        &pre,
        &layout.columns,
        &facts,
        &batch.predicate,
        &batch.id.to_string(),
    );
    w.execute(&late.text).await.unwrap();
    let restored = w
        .restore_slice(&backfill_core::warehouse::Restore {
            table: &facts,
            snapshot: &pre,
            batch,
            footprint: backfill_core::warehouse::Footprint::Slice(&batch.predicate),
            columns: &columns,
        })
        .await
        .unwrap();
    assert_eq!(restored, Some(4));
    assert_eq!(w.checksum(&facts, &all).await.unwrap(), before);
}

// ---------------------------------------------------------------------------
// Real crashes: this binary runs itself as a child that kills itself at a
// named point of a run on Sail, its ledger in PostgreSQL; a fresh process
// resumes the run on the same Spark session (Sail keeps a session's
// catalog, and a client may rejoin a session by its id).
// ---------------------------------------------------------------------------

use backfill_core::engine::SqlWarehouse;
use backfill_postgres::PgWarehouse;
use backfill_spark::SparkExec;
use backfill_testkit::crash::{
    child_main, crash_and_resume_as, crash_resume_and_roll_back, crash_resume_and_roll_back_as,
    CrashPoint, CrashRig, Crashing, CrashingPlan, CRASH_AT, CRASH_PATTERN,
};

const CRASH_SESSION: &str = "BACKFILL_SPARK_CRASH_SESSION";
const CRASH_SCHEMA: &str = "BACKFILL_SPARK_CRASH_SCHEMA";

/// One crash case: a Spark session of its own (its tables in `schema`),
/// and its ledger in a PostgreSQL schema of the same name.
struct SparkRig {
    sail: String,
    pg: String,
    session: String,
    schema: String,
}

impl SparkRig {
    fn new(sail: &str, pg: &str, case: &str) -> SparkRig {
        SparkRig {
            sail: sail.to_string(),
            pg: pg.to_string(),
            session: uuid::Uuid::new_v4().to_string(),
            schema: format!("spark_crash_{case}"),
        }
    }

    /// The case's session, its names without a schema in `schema`.
    async fn spark(&self) -> Spark {
        let url = format!("{}/;session_id={}", self.sail, self.session);
        Spark::connect(&url).await.expect("rejoin the session")
    }

    async fn ledger(&self) -> Arc<dyn Ledger> {
        let pg = PgWarehouse::connect(&self.pg).await.expect("postgres");
        let l = pg.ledger(&self.schema).await.expect("ledger");
        // A killed worker is gone once the server has freed its session
        // lock.
        let run = backfill_testkit::crash::crash_job(c::Pattern::Overwrite).run_id;
        if let Ok(batches) = l.batches(&run).await {
            for lease in batches.iter().filter_map(|b| b.lease.as_ref()) {
                if lease.instance != l.instance() {
                    pg.await_instance_end(&lease.instance).await.unwrap();
                }
            }
        }
        Arc::new(l)
    }
}

#[async_trait::async_trait]
impl CrashRig for SparkRig {
    async fn seed(&self) -> backfill_core::Result<()> {
        let spark = self.spark().await;
        let warehouse = std::env::var("BACKFILL_SPARK_WAREHOUSE").expect("warehouse directory");
        spark
            .set_config(
                "spark.sql.warehouse.dir",
                &format!("{warehouse}/sail-{}", self.session),
            )
            .await?;
        spark
            .set_config("spark.sql.sources.default", "delta")
            .await?;
        let schema = Ident::new(self.schema.as_str())?;
        for head in ["CREATE SCHEMA IF NOT EXISTS ", "USE SCHEMA "] {
            let mut b = SqlBuilder::new(spark.dialect());
            b.push(head).ident(&schema);
            spark.execute(&b.finish()).await?;
        }
        PgWarehouse::connect(&self.pg)
            .await?
            .execute_batch(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
            .await?;
        backfill_testkit::crash::seed_tables(&SparkSeed(spark)).await
    }

    async fn child(&self, plan: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let exec = SparkExec::new(self.spark().await);
        let w = SqlWarehouse::new(Crashing::new(exec, plan));
        (Arc::new(w), self.ledger().await)
    }

    async fn parent(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let w = SparkWarehouse::on(self.spark().await);
        (Arc::new(w), self.ledger().await)
    }

    async fn child_apart(&self, plan: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        self.child(plan).await
    }

    async fn parent_apart(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        self.parent().await
    }

    fn spawn_child(&self, point: CrashPoint, pattern: &str) -> std::process::ExitStatus {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CRASH_AT, point.name())
            .env(CRASH_PATTERN, pattern)
            .env(CRASH_SESSION, &self.session)
            .env(CRASH_SCHEMA, &self.schema)
            .status()
            .unwrap()
    }
}

/// The servers of the crash cases, or `None` (outside CI) when one was
/// not started.
fn crash_servers() -> Option<(String, String)> {
    match (
        std::env::var("BACKFILL_SPARK_SAIL_URL"),
        std::env::var("BACKFILL_PG_URL"),
    ) {
        (Ok(sail), Ok(pg)) => Some((sail, pg)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the Spark crash cases need Sail and PostgreSQL: run them through ./scripts/test.sh"
            );
            eprintln!("no Sail or no PostgreSQL: the Spark crash cases are skipped");
            None
        }
    }
}

/// The child of the crash cases: runs the backfill until its point kills
/// it (nothing without the point set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the crash cases"]
async fn crash_child() {
    if let (Some((sail, pg)), Ok(session), Ok(schema)) = (
        crash_servers(),
        std::env::var(CRASH_SESSION),
        std::env::var(CRASH_SCHEMA),
    ) {
        let rig = SparkRig {
            sail,
            pg,
            session,
            schema,
        };
        child_main(&rig).await;
    }
}

/// A worker killed with SIGKILL on Sail: before a batch's write, after
/// its pre-image and before its slice is replaced, right after the slice
/// is replaced and before the ledger (in PostgreSQL) marks it, while
/// staging the source, inside a staged write, and during the end-of-run
/// checks; and in a parallel version. One plain rerun by a fresh process
/// completes at once (the dead worker's batch is taken back, not waited
/// for), the table equals a clean run's with no duplicate key, and a
/// crash, a resume and a rollback leave the original table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_resume_at_once_on_sail() {
    let Some((sail, pg)) = crash_servers() else {
        return;
    };
    // Every point but the swap's: a staging swap is refused on Spark.
    let points = CrashPoint::ALL
        .into_iter()
        .filter(|p| p.pattern() != Some(c::Pattern::Staging));
    for point in points {
        let rig = SparkRig::new(&sail, &pg, point.name());
        let o = crash_and_resume_as(&rig, point, c::Pattern::Overwrite).await;
        assert_eq!(o.taken_back_as_dead, point.holds_a_batch(), "{o:?}");
    }
    let rig = SparkRig::new(&sail, &pg, "parallel");
    let o = crash_and_resume_as(&rig, CrashPoint::InsideWriteTx, c::Pattern::Parallel).await;
    assert!(o.taken_back_as_dead, "{o:?}");
    let rig = SparkRig::new(&sail, &pg, "rollback");
    crash_resume_and_roll_back(&rig, CrashPoint::InsideWriteTx).await;
    // A merge: before the third batch's merge (its pre-image, marker and
    // key log kept), between its pre-image and its key log, and after its
    // merge, before its ledger mark; then a crash, a resume and a
    // rollback give the original table back.
    for point in [
        CrashPoint::InsideWriteTx,
        CrashPoint::InsideStagedWrite,
        CrashPoint::AfterCommitBeforeMark,
    ] {
        let rig = SparkRig::new(&sail, &pg, &format!("merge_{}", point.name()));
        let o = crash_and_resume_as(&rig, point, c::Pattern::Merge).await;
        assert!(o.taken_back_as_dead, "{o:?}");
    }
    let rig = SparkRig::new(&sail, &pg, "merge_rollback");
    crash_resume_and_roll_back_as(&rig, CrashPoint::InsideStagedWrite, c::Pattern::Merge).await;
}
