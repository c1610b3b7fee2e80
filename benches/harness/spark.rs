//! The refunds fix on Spark (Sail, Delta tables): `orders` generated in
//! the engine, the buggy fact recreated before each measured run, and the
//! six months (181 daily batches) restated
//!
//! - by the library: a partition overwrite with the ledger in DuckDB (a
//!   Spark ledger is refused), the source staged once, each day one
//!   `INSERT INTO … REPLACE WHERE` after its guard; P1 with no pre-image,
//!   P2 with pre-images, per-batch counts and uniqueness, and the
//!   end-of-run reconciliation and row diff;
//! - by the library as a merge by `order_id` (P3), with pre-images of the
//!   keys it touches and the same checks as P2, each day one `MERGE INTO`
//!   after its key checks, pre-image and key log;
//! - by hand: one `REPLACE WHERE` over the six months, the same 181 days
//!   as 181 statements, and one `MERGE INTO` over the six months.
//!
//! Every side's table is checked to be the same.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backfill::duckdb::DuckDbWarehouse;
use backfill::jiff::civil::Date;
use backfill::ledger::Ledger;
use backfill::runner::RunOptions;
use backfill::spark::SparkWarehouse;
use backfill::warehouse::Warehouse;
use backfill::{Predicate, Runner, Source};

use super::refunds::{self, Safety};
use super::{median, ms, table_in, Figure};

/// The corrected logic of the other engines' runs, joined `ON` the key:
/// Sail 0.7.2 does not resolve `o.order_id` after `USING (order_id)`.
const CORRECTED: &str = "
    SELECT o.order_id, o.order_date, o.customer_id, o.gross,
           CAST(coalesce(r.refunds, 0) AS DECIMAL(18,2)) AS refunds,
           CAST(o.gross - coalesce(r.refunds, 0) AS DECIMAL(18,2)) AS net
    FROM shop.orders AS o
    LEFT JOIN (SELECT order_id, sum(amount) AS refunds FROM shop.refunds GROUP BY order_id) AS r
      ON o.order_id = r.order_id";

/// Orders, refunds and the schemas, generated in the engine with Spark
/// SQL (the same shape as the SQL engines' data, not the same rows).
fn setup_sql(orders: u64) -> String {
    let per_day = (orders / 365).max(1);
    format!(
        "DROP TABLE IF EXISTS shop.orders;
         DROP TABLE IF EXISTS shop.refunds;
         CREATE SCHEMA IF NOT EXISTS shop;
         CREATE SCHEMA IF NOT EXISTS analytics;
         CREATE TABLE shop.orders AS
         SELECT CAST(row_number() OVER (ORDER BY d, k) AS BIGINT) AS order_id,
                d AS order_date,
                CAST(100 + pmod(xxhash64(d, k), 60000) AS BIGINT) AS customer_id,
                CAST(5 + pmod(xxhash64(k, d, 1), 20000) / 100.0 AS DECIMAL(18,2)) AS gross
         FROM (SELECT date_add(DATE '2025-07-01', CAST(id AS INT)) AS d FROM range(365)) AS days
         CROSS JOIN (SELECT id AS k FROM range({per_day})) AS r;
         CREATE TABLE shop.refunds AS
         SELECT order_id,
                CAST(round(gross * (30 + pmod(xxhash64(order_id, 7), 71)) / 100.0, 2) AS DECIMAL(18,2)) AS amount
         FROM shop.orders WHERE pmod(xxhash64(order_id, 5), 100) < 5"
    )
}

/// The buggy fact (`net = gross`), recreated, and what the library made
/// of the last run dropped.
fn reset_sql(run: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS analytics.revenue;
         DROP TABLE IF EXISTS analytics.revenue__bf_pre_{run};
         DROP TABLE IF EXISTS analytics.revenue__bf_keys_{run};
         CREATE TABLE analytics.revenue AS
         SELECT order_id, order_date, customer_id, gross,
                CAST(0 AS DECIMAL(18,2)) AS refunds, gross AS net
         FROM shop.orders"
    )
}

fn range(from: Date, to: Date) -> String {
    format!("order_date >= DATE '{from}' AND order_date < DATE '{to}'")
}

fn replace(from: Date, to: Date) -> String {
    let r = range(from, to);
    format!("INSERT INTO analytics.revenue REPLACE WHERE {r} SELECT * FROM ({CORRECTED}) AS c WHERE {r}")
}

/// The six months merged by hand on `order_id`, in one statement.
fn merge(from: Date, to: Date) -> String {
    let r = range(from, to);
    format!(
        "MERGE INTO analytics.revenue AS t USING (SELECT * FROM ({CORRECTED}) AS c WHERE {r}) AS s
         ON t.order_id = s.order_id
         WHEN MATCHED THEN UPDATE SET order_date = s.order_date, customer_id = s.customer_id,
              gross = s.gross, refunds = s.refunds, net = s.net
         WHEN NOT MATCHED THEN INSERT (order_id, order_date, customer_id, gross, refunds, net)
              VALUES (s.order_id, s.order_date, s.customer_id, s.gross, s.refunds, s.net)"
    )
}

/// How the library's run is shaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A partition overwrite in daily batches.
    Daily,
    /// The same in weekly batches.
    Weekly,
    /// A merge by `order_id` in daily batches.
    Merge,
}

fn six_months() -> (Date, Date) {
    (
        backfill::jiff::civil::date(2026, 1, 1),
        backfill::jiff::civil::date(2026, 7, 1),
    )
}

async fn exec(w: &SparkWarehouse, sql: &str) -> Duration {
    let t = Instant::now();
    w.execute(sql).await.expect("Spark SQL");
    t.elapsed()
}

/// The fact's rows and checksum, which every side must leave the same.
async fn fingerprint(w: &SparkWarehouse) -> String {
    let c = w
        .checksum(&table_in("analytics", "revenue"), &Predicate::All)
        .await
        .expect("checksum");
    format!("{c:?}")
}

/// The library's run of `safety` with a fresh in-memory DuckDB ledger and
/// default options, shaped by `shape`; its time.
async fn library(w: &SparkWarehouse, run: &str, safety: Safety, shape: Shape) -> Duration {
    let mut job = refunds::job(run, safety, Source::query(CORRECTED));
    if shape == Shape::Merge {
        job.brief.strategy = backfill::StrategySpec::Merge {
            keys: vec![backfill::Ident::new("order_id").expect("identifier")],
        };
    }
    if shape == Shape::Weekly {
        job.plan = backfill::Plan::build(
            job.plan.scope.clone(),
            backfill::Planner::Windows {
                grain: backfill::Grain::Week,
            },
        )
        .expect("weekly plan");
    }
    let ledger: Arc<dyn Ledger> = Arc::new(
        DuckDbWarehouse::in_memory()
            .expect("duckdb")
            .ledger(refunds::LEDGER)
            .await
            .expect("ledger"),
    );
    let runner = Runner::new(Arc::new(w.clone()), ledger).with_options(RunOptions {
        worker: "bench".into(),
        ..RunOptions::default()
    });
    let t = Instant::now();
    let report = runner.run(&job).await.expect("library run on Spark");
    let took = t.elapsed();
    assert_eq!(report.batches_this_run, job.plan.batches.len());
    took
}

/// Measures the refunds fix on the Sail server at `url`; returns the
/// figures and the detail lines.
pub async fn measure(url: &str, orders: u64, runs: usize) -> (Vec<Figure>, Vec<String>) {
    let spark = backfill::spark::Spark::connect(url)
        .await
        .expect("Spark session");
    if let Ok(dir) = std::env::var("BACKFILL_SPARK_WAREHOUSE") {
        // Tables made without a location go here (Sail's catalog lives
        // with the session), and they are Delta tables.
        let dir = format!("{dir}/bench-{}", std::process::id());
        spark
            .set_config("spark.sql.warehouse.dir", &dir)
            .await
            .expect("warehouse directory");
        spark
            .set_config("spark.sql.sources.default", "delta")
            .await
            .expect("Delta tables");
    }
    let w = SparkWarehouse::on(spark);
    eprintln!("Spark: generating {orders} orders…");
    let t = Instant::now();
    exec(&w, &setup_sql(orders)).await;
    eprintln!("Spark: generated in {:.1}s", t.elapsed().as_secs_f64());
    let (s, e) = six_months();
    let (mut single, mut daily, mut p1, mut p2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut weekly, mut merged, mut p3) = (Vec::new(), Vec::new(), Vec::new());
    let mut expected: Option<String> = None;
    let mut same = |got: String, who: &str| match &expected {
        None => expected = Some(got),
        Some(want) => assert_eq!(&got, want, "{who} left another table"),
    };
    for i in 0..runs {
        exec(&w, &reset_sql("none")).await;
        single.push(exec(&w, &replace(s, e)).await);
        same(fingerprint(&w).await, "one REPLACE WHERE");

        exec(&w, &reset_sql("none")).await;
        let mut d = s;
        let mut took = Duration::ZERO;
        while d < e {
            let next = d.tomorrow().expect("date");
            took += exec(&w, &replace(d, next)).await;
            d = next;
        }
        daily.push(took);
        same(fingerprint(&w).await, "181 REPLACE WHERE");

        let run = format!("sp1_{i}");
        exec(&w, &reset_sql(&run)).await;
        p1.push(library(&w, &run, Safety::Bare, Shape::Daily).await);
        same(fingerprint(&w).await, "the library (P1)");

        let run = format!("sp1w_{i}");
        exec(&w, &reset_sql(&run)).await;
        weekly.push(library(&w, &run, Safety::Bare, Shape::Weekly).await);
        same(fingerprint(&w).await, "the library (P1w)");

        let run = format!("sp2_{i}");
        exec(&w, &reset_sql(&run)).await;
        p2.push(library(&w, &run, Safety::Full, Shape::Daily).await);
        same(fingerprint(&w).await, "the library (P2)");

        exec(&w, &reset_sql("none")).await;
        merged.push(exec(&w, &merge(s, e)).await);
        same(fingerprint(&w).await, "one MERGE INTO");

        let run = format!("sp3_{i}");
        exec(&w, &reset_sql(&run)).await;
        p3.push(library(&w, &run, Safety::Full, Shape::Merge).await);
        same(fingerprint(&w).await, "the library (P3)");
    }
    let (single, daily, p1, p2) = (median(single), median(daily), median(p1), median(p2));
    let (weekly, merged, p3) = (median(weekly), median(merged), median(p3));
    let figure = |name: &str, lib: Duration, base: Duration| Figure {
        engine: "Spark (Sail)".into(),
        figure: name.into(),
        rows: orders,
        library_ms: ms(lib),
        baseline_ms: ms(base),
        ratio: lib.as_secs_f64() / base.as_secs_f64().max(1e-9),
        goal: None,
    };
    let figures = vec![
        figure("P1: refunds fix, 181 daily batches", p1, single),
        figure("P2: P1 with pre-images and checks", p2, single),
        figure("P1w: P1 in weekly batches", weekly, single),
        figure(
            "P3: the fix as a merge by order_id, with P2's pre-images and checks, against one MERGE INTO",
            p3,
            merged,
        ),
    ];
    let details = vec![
        format!(
            "| Spark (Sail) | the 181 days by hand, one `REPLACE WHERE` each | {:.0} ms | P1 is {:.2}× this |",
            ms(daily),
            p1.as_secs_f64() / daily.as_secs_f64().max(1e-9)
        ),
        format!(
            "| Spark (Sail) | P1 per batch | {:.1} ms | {:.2} batches a second; one `REPLACE WHERE` by hand: {:.1} ms a day |",
            ms(p1) / 181.0,
            181.0 / p1.as_secs_f64().max(1e-9),
            ms(daily) / 181.0
        ),
        format!(
            "| Spark (Sail) | P3 per batch | {:.1} ms | one `MERGE INTO` of the six months by hand: {:.0} ms |",
            ms(p3) / 181.0,
            ms(merged)
        ),
    ];
    (figures, details)
}
