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
use backfill_spark::{CatalogColumn, RelationKind, Spark};

/// One server under test and what its tables can do.
struct Server {
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
async fn server(which: Which) -> Option<Server> {
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
            Some(Server {
                spark,
                format: "delta",
                delta: true,
            })
        }
        Which::Jvm => Some(Server {
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
                    if let Some(s) = super::server(super::Which::Sail).await {
                        super::$case(s).await;
                    }
                }
            )*
        }
        mod jvm {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(s) = super::server(super::Which::Jvm).await {
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
/// `None` there and a typed error when queried.
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
        .unwrap()
        .expect("the table exists");
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
    assert_eq!(
        spark
            .columns(&spark.dialect().describe_relation(&missing))
            .await
            .unwrap(),
        None
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
