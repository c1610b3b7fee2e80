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
