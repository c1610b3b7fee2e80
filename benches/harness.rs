//! The benchmark harness: the library against hand-written SQL, in one
//! run, so every figure is a ratio against a baseline measured beside it
//! on the same machine and data.
//!
//! ```sh
//! ./scripts/bench.sh                      # 10M rows, DuckDB and Postgres
//! ./scripts/bench.sh --rows 1000000       # smaller
//! ./scripts/bench.sh --only refunds --profile   # one group; statements by kind
//! ```
//!
//! `--only` takes `plan`, `inspect`, `refunds`, `workers`, or, for
//! profiling under `perf record`, `p1` (one P1 run on DuckDB) and `ledger`
//! (the ledger alone). `--orders N` and `--pg-orders N` size the refunds
//! workload (10M by default).
//!
//! Run by `cargo test` (without `--bench`), it is a smoke run on 100k rows
//! that checks the library's answers equal the hand-written ones and
//! asserts nothing about time.
//!
//! Figures (each is the median of the runs):
//! - **row diff**: the library's row diff of two tables (6 columns, 1% of
//!   rows changed, 0.1% removed, 0.1% added) against the same diff written
//!   by hand as one full outer join with a null-safe `IS DISTINCT FROM`
//!   flag per column; once for counts only, once with 10 sampled keys per
//!   kind;
//! - **reconcile**: a metric by month before and after, attributed to
//!   added, removed and changed rows, against the same in one hand-written
//!   query;
//! - **unique**: the grain check (duplicate and null keys, with a sample)
//!   against a hand-written `GROUP BY … HAVING count(*) > 1`;
//! - **P1, P1b, P2, P6, P7**: the refunds workload, in [`refunds`].

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "harness/heap.rs"]
mod heap;
#[path = "harness/refunds.rs"]
mod refunds;
#[path = "harness/statements.rs"]
mod statements;

#[path = "harness/spark.rs"]
mod spark;

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

use backfill::ask;
use backfill::duckdb::DuckDbWarehouse;
use backfill::engine::SqlRead;
use backfill::inspect::{Aggregate, Compared, Diff, Dim, Metric, Period, Rows};
use backfill::postgres::PgWarehouse;
use backfill::sql::Sql;
use backfill::warehouse::Warehouse;
use backfill::{Ident, Predicate, Source, TableRef, Value};
use serde::Serialize;

struct Args {
    rows: u64,
    pg_rows: Option<u64>,
    orders: u64,
    pg_orders: Option<u64>,
    spark_orders: Option<u64>,
    only: Option<String>,
    profile: bool,
    runs: usize,
    json: String,
    full: bool,
    show_sql: bool,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let full = argv.iter().any(|a| a == "--bench");
    let mut a = Args {
        rows: if full { 10_000_000 } else { 100_000 },
        pg_rows: None,
        orders: if full { 10_000_000 } else { 100_000 },
        pg_orders: None,
        spark_orders: None,
        only: None,
        profile: argv.iter().any(|a| a == "--profile"),
        runs: if full { 3 } else { 1 },
        json: "bench-results.json".into(),
        full,
        show_sql: argv.iter().any(|a| a == "--sql"),
    };
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut next = || it.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--rows" => a.rows = next().parse().expect("--rows N"),
            "--pg-rows" => a.pg_rows = Some(next().parse().expect("--pg-rows N")),
            "--runs" => a.runs = next().parse().expect("--runs N"),
            "--orders" => a.orders = next().parse().expect("--orders N"),
            "--pg-orders" => a.pg_orders = Some(next().parse().expect("--pg-orders N")),
            "--spark-orders" => a.spark_orders = Some(next().parse().expect("--spark-orders N")),
            "--only" => a.only = Some(next()),
            "--json" => a.json = next(),
            _ => {}
        }
    }
    a
}

/// One engine under measurement.
enum Engine {
    Duck(DuckDbWarehouse),
    Pg(PgWarehouse),
}

impl Engine {
    fn name(&self) -> &'static str {
        match self {
            Engine::Duck(_) => "DuckDB",
            Engine::Pg(_) => "Postgres",
        }
    }

    fn warehouse(&self) -> &dyn Warehouse {
        match self {
            Engine::Duck(w) => w,
            Engine::Pg(w) => w,
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Engine::Duck(w) => w.execute_batch(sql.to_string()).await,
            Engine::Pg(w) => w.execute_batch(sql).await,
        }
        .expect("setup SQL")
    }

    /// Runs one hand-written query and returns its rows.
    async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let stmt = vec![Sql {
            text: sql.to_string(),
            params: Vec::new(),
        }];
        let mut out = match self {
            Engine::Duck(w) => w.read(stmt).await,
            Engine::Pg(w) => w.read(stmt).await,
        }
        .expect("hand-written query");
        out.pop().unwrap_or_default()
    }
}

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("identifier")
}

fn table(name: &str) -> TableRef {
    table_in("bench", name)
}

fn table_in(schema: &str, name: &str) -> TableRef {
    TableRef::parse(&format!("{schema}.{name}")).expect("table")
}

/// `old`: `rows` rows over a year; `new`: 1% of amounts changed, 0.1% of
/// rows removed and as many added.
fn setup_sql(e: &Engine, rows: u64) -> String {
    let extra = (rows / 1000).max(1);
    match e {
        Engine::Duck(_) => format!(
            "DROP SCHEMA IF EXISTS bench CASCADE;
             CREATE SCHEMA bench;
             CREATE TABLE bench.old AS
             SELECT CAST(i AS BIGINT) AS id,
                    DATE '2025-07-01' + CAST(i % 365 AS INTEGER) AS day,
                    CAST(hash(i) % 100000 AS BIGINT) AS customer,
                    CAST((hash(i, 1) % 1000000) / 100.0 AS DECIMAL(18,2)) AS amount,
                    CASE WHEN i % 7 = 0 THEN 'refunded' ELSE 'paid' END AS status,
                    CAST(hash(i, 2) % 1000 AS DOUBLE) / 10 AS score
             FROM range({rows}) AS t(i);
             CREATE TABLE bench.new AS
             SELECT id, day, customer,
                    CASE WHEN hash(id, 9) % 100 = 0 THEN amount + 1 ELSE amount END AS amount,
                    status, score
             FROM bench.old WHERE hash(id, 8) % 1000 <> 1
             UNION ALL
             SELECT {rows} + i, DATE '2025-07-01' + CAST(i % 365 AS INTEGER), i, 10.00, 'paid', 1.0
             FROM range({extra}) AS t(i);"
        ),
        Engine::Pg(_) => format!(
            "DROP SCHEMA IF EXISTS bench CASCADE;
             CREATE SCHEMA bench;
             CREATE UNLOGGED TABLE bench.old AS
             SELECT i AS id,
                    DATE '2025-07-01' + (i % 365)::int AS day,
                    abs(hashint8(i)) % 100000 AS customer,
                    ((abs(hashint8(i + 1)) % 1000000) / 100.0)::numeric(18,2) AS amount,
                    CASE WHEN i % 7 = 0 THEN 'refunded' ELSE 'paid' END AS status,
                    (abs(hashint8(i + 2)) % 1000)::float8 / 10 AS score
             FROM generate_series(0::bigint, {rows} - 1) AS i;
             CREATE UNLOGGED TABLE bench.new AS
             SELECT id, day, customer,
                    CASE WHEN abs(hashint8(id + 9)) % 100 = 0 THEN amount + 1 ELSE amount END AS amount,
                    status, score
             FROM bench.old WHERE abs(hashint8(id + 8)) % 1000 <> 1
             UNION ALL
             SELECT {rows} + i, DATE '2025-07-01' + (i % 365)::int, i, 10.00, 'paid', 1.0
             FROM generate_series(0::bigint, {extra} - 1) AS i;
             ANALYZE bench.old; ANALYZE bench.new;"
        ),
    }
}

const COLUMNS: [&str; 5] = ["day", "customer", "amount", "status", "score"];

/// The same diff written by hand as one full-join query: rows on each
/// side, added, removed and changed rows, changes per column, and (with
/// `sample`) the first keys of each kind.
fn hand_diff(e: &Engine, sample: usize) -> String {
    let changed: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("o.{c} IS DISTINCT FROM n.{c}"))
        .collect();
    let changed = format!(
        "o.id IS NOT NULL AND n.id IS NOT NULL AND ({})",
        changed.join(" OR ")
    );
    let per_column: Vec<String> = COLUMNS
        .iter()
        .map(|c| {
            format!(
                "count(*) FILTER (WHERE o.id IS NOT NULL AND n.id IS NOT NULL AND o.{c} IS DISTINCT FROM n.{c})"
            )
        })
        .collect();
    let mut samples = String::new();
    if sample > 0 {
        for (side, filter) in [
            ("n", "o.id IS NULL".to_string()),
            ("o", "n.id IS NULL".to_string()),
            ("n", changed.clone()),
        ] {
            samples.push_str(&match e {
                Engine::Duck(_) => {
                    format!(", arg_min({side}.id, {side}.id, {sample}) FILTER (WHERE {filter})")
                }
                Engine::Pg(_) => format!(
                    ", (array_agg({side}.id ORDER BY {side}.id) FILTER (WHERE {filter}))[1:{sample}]"
                ),
            });
        }
    }
    format!(
        "SELECT count(o.id), count(n.id),
                count(*) FILTER (WHERE o.id IS NULL),
                count(*) FILTER (WHERE n.id IS NULL),
                count(*) FILTER (WHERE {changed}),
                {}{samples}
         FROM bench.old AS o FULL JOIN bench.new AS n ON o.id = n.id",
        per_column.join(", ")
    )
}

fn hand_reconcile(e: &Engine) -> String {
    let month = |c: &str| match e {
        Engine::Duck(_) => format!("CAST(date_trunc('month', {c}) AS DATE)"),
        Engine::Pg(_) => format!("date_trunc('month', {c})::date"),
    };
    format!(
        "WITH b AS (SELECT {mo} AS m, sum(amount) AS v FROM bench.old GROUP BY 1),
              a AS (SELECT {mn} AS m, sum(amount) AS v FROM bench.new GROUP BY 1),
              d AS (SELECT {mj} AS m,
                           sum(CASE WHEN o.id IS NULL THEN n.amount END) AS added,
                           sum(CASE WHEN n.id IS NULL THEN -o.amount END) AS removed,
                           sum(CASE WHEN o.id IS NOT NULL AND n.id IS NOT NULL
                                    THEN n.amount - o.amount END) AS changed
                    FROM bench.old AS o FULL JOIN bench.new AS n ON o.id = n.id GROUP BY 1)
         SELECT m, b.v, a.v, d.added, d.removed, d.changed
         FROM b FULL JOIN a USING (m) LEFT JOIN d USING (m) ORDER BY m",
        mo = month("day"),
        mn = month("day"),
        mj = month("coalesce(n.day, o.day)"),
    )
}

fn hand_unique() -> String {
    "SELECT (SELECT count(*) FROM (SELECT id FROM bench.new GROUP BY id HAVING count(*) > 1) AS d),
            (SELECT count(*) FROM bench.new WHERE id IS NULL)"
        .to_string()
}

fn library_diff(sample: usize) -> Diff {
    Diff {
        old: Rows::all(table("old")),
        new: Rows::all(table("new")),
        keys: vec![ident("id")],
        columns: COLUMNS.iter().map(|c| Compared::exact(ident(c))).collect(),
        sample,
        attribute: None,
        partition: None,
    }
}

fn revenue_by_month() -> Metric {
    Metric {
        name: "amount".into(),
        aggregate: Aggregate::Sum(ident("amount")),
        by: vec![Dim::period(ident("day"), Period::Month)],
    }
}

fn count(v: &Value) -> u64 {
    match v {
        Value::Int(n) => *n as u64,
        Value::Text(s) => s.parse().unwrap_or(0),
        Value::Float(f) => *f as u64,
        _ => 0,
    }
}

#[derive(Serialize)]
struct Figure {
    engine: String,
    figure: String,
    rows: u64,
    library_ms: f64,
    baseline_ms: f64,
    ratio: f64,
    goal: Option<f64>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Awaits `f` (futures do nothing until awaited) and times it.
/// Runs the statements one after another; returns the time they took.
async fn exec_each(e: &Engine, stmts: Vec<String>) -> Duration {
    let t = Instant::now();
    for sql in stmts {
        e.exec(&sql).await;
    }
    t.elapsed()
}

/// A goal as written: `3`, `0.25`, `0.33`.
fn short(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

async fn time<T>(f: impl std::future::Future<Output = T>) -> (Duration, T) {
    let t = Instant::now();
    let out = f.await;
    (t.elapsed(), out)
}

async fn measure(e: &Engine, rows: u64, runs: usize) -> Vec<Figure> {
    eprintln!("{}: loading {rows} rows…", e.name());
    let t = Instant::now();
    e.exec(&setup_sql(e, rows)).await;
    eprintln!("{}: loaded in {:.1}s", e.name(), t.elapsed().as_secs_f64());
    let w = e.warehouse();
    let mut figures = Vec::new();
    let mut push = |figure: &str, lib: Vec<Duration>, base: Vec<Duration>, goal| {
        let (l, b) = (median(lib), median(base));
        figures.push(Figure {
            engine: e.name().into(),
            figure: figure.into(),
            rows,
            library_ms: l.as_secs_f64() * 1000.0,
            baseline_ms: b.as_secs_f64() * 1000.0,
            ratio: l.as_secs_f64() / b.as_secs_f64().max(1e-9),
            goal,
        });
    };

    // Row diff: counts only (P4), then with samples, each against the
    // same outputs written by hand.
    for (figure, sample, goal) in [
        ("row diff (P4)", 0, Some(1.2)),
        ("row diff with samples", 10, Some(1.2)),
    ] {
        let (mut lib, mut base) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (d, r) = time(ask::diff(w, library_diff(sample))).await;
            let r = r.expect("library diff");
            lib.push(d);
            let (d, h) = time(e.query(&hand_diff(e, sample))).await;
            base.push(d);
            let h: Vec<u64> = h[0][..10].iter().map(count).collect();
            assert_eq!(
                [r.old_rows, r.new_rows, r.added, r.removed, r.changed],
                [h[0], h[1], h[2], h[3], h[4]],
                "the library's diff answers like the hand-written one"
            );
            let per_column: Vec<u64> = r.column_changes.iter().map(|(_, n)| *n).collect();
            assert_eq!(per_column, h[5..10].to_vec());
            if sample > 0 {
                assert!(
                    r.samples.iter().all(|(_, k)| k.len() == sample),
                    "{:?}",
                    r.samples
                );
            }
        }
        push(figure, lib, base, goal);
    }

    // Reconciliation: metric before, metric after, attribution.
    let (mut lib, mut base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (d, (before, after, diff)) = time(async {
            let before = ask::metric(w, Rows::all(table("old")), revenue_by_month()).await;
            let after = ask::metric(w, Rows::all(table("new")), revenue_by_month()).await;
            let mut diff = library_diff(0);
            diff.columns = vec![
                Compared::exact(ident("amount")),
                Compared::exact(ident("day")),
            ];
            diff.sample = 0;
            diff.attribute = Some(revenue_by_month());
            (before, after, ask::diff(w, diff).await)
        })
        .await;
        let (before, after, diff) = (
            before.expect("before"),
            after.expect("after"),
            diff.expect("diff"),
        );
        lib.push(d);
        let (d, h) = time(e.query(&hand_reconcile(e))).await;
        base.push(d);
        assert_eq!(before.len(), h.len(), "months");
        let sum = |ms: &[backfill::inspect::MetricValue]| {
            backfill::Amount::try_sum(ms.iter().map(|m| m.value)).expect("in range")
        };
        let delta = sum(&after).checked_sub(sum(&before)).expect("in range");
        let explained = backfill::Amount::try_sum(
            diff.contributions
                .iter()
                .map(|c| c.total().expect("in range")),
        )
        .expect("in range");
        assert_eq!(delta, explained, "the change is explained exactly");
    }
    push("reconciliation", lib, base, None);

    // Grain check.
    let (mut lib, mut base) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (d, r) = time(w.key_report(&table("new"), &[ident("id")], &Predicate::All, 10)).await;
        let r = r.expect("key report");
        lib.push(d);
        let (d, h) = time(e.query(&hand_unique())).await;
        base.push(d);
        assert_eq!(
            [r.duplicate_keys, r.null_keys],
            [count(&h[0][0]), count(&h[0][1])]
        );
    }
    push("uniqueness", lib, base, None);
    figures
}

fn same_table(expected: &mut Option<(u64, String, String)>, got: (u64, String, String), who: &str) {
    match expected {
        Some(e) => assert_eq!(*e, got, "{who} ends with the same table"),
        None => *expected = Some(got),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// P6 apart, for profiling: the heap's peak during P1 at a tenth of the
/// orders and at all of them, in commit groups and a batch a transaction.
async fn heap_profile(e: &Engine, orders: u64) {
    use refunds::Safety;
    for n in [(orders / 10).max(1000), orders] {
        e.exec(&refunds::setup_sql(e, n)).await;
        for (name, group) in [
            ("grouped", backfill::runner::DEFAULT_MAX_GROUP),
            ("single", 1),
        ] {
            e.exec(&refunds::reset_sql(e)).await;
            let job = refunds::job(
                &format!("heap_{name}_{n}"),
                Safety::Bare,
                Source::query(refunds::CORRECTED),
            );
            let options = backfill::runner::RunOptions {
                max_group: group,
                ..Default::default()
            };
            let (_, _, held) = refunds::library_run_with(e, &job, options).await;
            eprintln!(
                "heap {name} at {n} orders: {:.3} MiB; resident {:.1} MiB",
                held.heap as f64 / 1048576.0,
                held.resident as f64 / 1048576.0
            );
        }
    }
}

/// P1, P1b, P2 and P6 on the refunds workload, and the ledger's own
/// per-batch cost. Returns the figures and the lines of the detail table.
async fn measure_refunds(
    e: &Engine,
    orders: u64,
    runs: usize,
    profile: bool,
) -> (Vec<Figure>, Vec<String>) {
    use refunds::Safety;
    // P6 first, on a tenth of the orders: the heap's peak during P1 must
    // not grow with the table. As many runs as P1 has, each side's largest
    // taken, so that both sides are read alike.
    let small = (orders / 10).max(1000);
    e.exec(&refunds::setup_sql(e, small)).await;
    let mut small_held = heap::Held::default();
    for i in 0..runs {
        e.exec(&refunds::reset_sql(e)).await;
        let job = refunds::job(
            &format!("p6_small_{i}"),
            Safety::Bare,
            Source::query(refunds::CORRECTED),
        );
        let (_, _, held) = refunds::library_run(e, &job, false).await;
        small_held = small_held.max(held);
    }
    eprintln!("{}: generating {orders} orders…", e.name());
    let t = Instant::now();
    e.exec(&refunds::setup_sql(e, orders)).await;
    eprintln!(
        "{}: generated in {:.1}s",
        e.name(),
        t.elapsed().as_secs_f64()
    );
    let (mut single, mut daily, mut p1, mut p2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut staged_prep, mut staged_days) = (Vec::new(), Vec::new());
    let mut single_checkpoint = Vec::new();
    let mut expected = None;
    let mut details = Vec::new();
    let mut p1_counts = statements::Counts::default();
    let mut p1_held = heap::Held::default();
    let mut batches = 0;
    for i in 0..runs {
        e.exec(&refunds::reset_sql(e)).await;
        let (d, ()) = time(e.exec(&refunds::hand_single())).await;
        single.push(d);
        if matches!(e, Engine::Duck(_)) {
            // What the one transaction leaves for DuckDB's next
            // checkpoint, which a run pays at its end.
            let (c, ()) = time(e.exec("CHECKPOINT")).await;
            single_checkpoint.push(d + c);
        }
        same_table(
            &mut expected,
            refunds::fingerprint(e).await,
            "one transaction",
        );

        e.exec(&refunds::reset_sql(e)).await;
        daily.push(exec_each(e, refunds::hand_days()).await);
        same_table(
            &mut expected,
            refunds::fingerprint(e).await,
            "181 transactions",
        );

        e.exec(&refunds::reset_sql(e)).await;
        let (stage, days) = refunds::hand_staged(e);
        let (d, ()) = time(e.exec(&stage)).await;
        staged_prep.push(d);
        staged_days.push(exec_each(e, days).await);
        same_table(
            &mut expected,
            refunds::fingerprint(e).await,
            "181 transactions from a staged snapshot",
        );

        e.exec(&refunds::reset_sql(e)).await;
        let job = refunds::job(
            &format!("p1_{i}"),
            Safety::Bare,
            Source::query(refunds::CORRECTED),
        );
        statements::start(refunds::LEDGER);
        let (d, report, held) = refunds::library_run(e, &job, false).await;
        let counts = statements::stop();
        batches = report.batches_this_run;
        assert_eq!(batches, job.plan.batches.len(), "every day written");
        p1.push(d);
        p1_held = p1_held.max(held);
        p1_counts = counts;
        same_table(
            &mut expected,
            refunds::fingerprint(e).await,
            "the library (P1)",
        );

        e.exec(&refunds::reset_sql(e)).await;
        let job = refunds::job(
            &format!("p2_{i}"),
            Safety::Full,
            Source::query(refunds::CORRECTED),
        );
        let (d, report, _) = refunds::library_run(e, &job, false).await;
        let validation = report.validation.as_ref().expect("end-of-run validation");
        assert!(validation.passed(), "{validation}");
        assert!(report.failures().next().is_none(), "per-batch checks pass");
        p2.push(d);
        same_table(
            &mut expected,
            refunds::fingerprint(e).await,
            "the library (P2)",
        );
    }
    let (single, daily) = (median(single), median(daily));
    let mut figures = Vec::new();
    let mut push = |figure: &str, lib: Duration, base: Duration, goal: Option<f64>| {
        figures.push(Figure {
            engine: e.name().into(),
            figure: figure.into(),
            rows: orders,
            library_ms: ms(lib),
            baseline_ms: ms(base),
            ratio: lib.as_secs_f64() / base.as_secs_f64().max(1e-9),
            goal,
        })
    };
    let (p1, p2) = (median(p1), median(p2));
    let duck = matches!(e, Engine::Duck(_));
    push(
        "P1: 181 days, ledger + guard, against one transaction",
        p1,
        single,
        Some(if duck { 3.0 } else { 2.0 }),
    );
    push(
        "P1b: the same, against 181 hand-looped transactions",
        p1,
        daily,
        Some(0.25),
    );
    let (prep, by_day) = (median(staged_prep.clone()), median(staged_days.clone()));
    push(
        "P1s: the same, against 181 hand-looped transactions from a staged snapshot",
        p1,
        prep + by_day,
        None,
    );
    push(
        "P2: with pre-images, per-batch checks, reconciliation and row diff",
        p2,
        single,
        Some(if duck { 5.0 } else { 3.0 }),
    );
    // P1 is what a user gets without tuning (a query source is staged
    // once per run); P1q reads the corrected query in each batch instead.
    e.exec(&refunds::reset_sql(e)).await;
    let job = refunds::job(
        "p1_per_batch",
        Safety::Bare,
        Source::query(refunds::CORRECTED),
    );
    let (p1q, _, _) = refunds::library_run(e, &job, true).await;
    same_table(
        &mut expected,
        refunds::fingerprint(e).await,
        "the library reading the query by batch (P1q)",
    );
    push(
        "P1q: P1 with the query read by each batch (`stage_queries: false`)",
        p1q,
        single,
        None,
    );
    // The commit groups' effect: P1 with every batch its own transaction,
    // and P1 tuned for throughput (groups up to 1,000 batches, 5 s each).
    for (name, label, options) in [
        (
            "p1_groups_of_one",
            "P1g1: P1 with each batch its own transaction (`max_group: 1`)",
            backfill::runner::RunOptions {
                max_group: 1,
                ..backfill::runner::RunOptions::default()
            },
        ),
        (
            "p1_tuned",
            "P1t: P1 tuned (`max_group: 1000`, `group_target: 5 s`)",
            backfill::runner::RunOptions {
                max_group: 1000,
                group_target: Duration::from_secs(5),
                ..backfill::runner::RunOptions::default()
            },
        ),
    ] {
        e.exec(&refunds::reset_sql(e)).await;
        let job = refunds::job(name, Safety::Bare, Source::query(refunds::CORRECTED));
        let (d, _, _) = refunds::library_run_with(e, &job, options).await;
        same_table(&mut expected, refunds::fingerprint(e).await, label);
        push(label, d, single, None);
    }
    let per = |n: u64| n as f64 / batches.max(1) as f64;
    details.push(format!(
        "| {} | P1 per batch | {:.1} ms | {:.1} statements ({:.1} on the ledger), {:.1} transactions |",
        e.name(),
        ms(p1) / batches.max(1) as f64,
        per(p1_counts.statements),
        per(p1_counts.ledger),
        per(p1_counts.transactions),
    ));
    if duck {
        let with_checkpoint = median(single_checkpoint);
        details.push(format!(
            "| DuckDB | the one transaction followed by a `CHECKPOINT` | {:.0} ms | P1 is {:.1}× this |",
            ms(with_checkpoint),
            p1.as_secs_f64() / with_checkpoint.as_secs_f64().max(1e-9),
        ));
        // The same run with DuckDB's automatic checkpoints off (a run in
        // commit groups leaves them to the engine): what they cost it.
        e.exec(&refunds::reset_sql(e)).await;
        e.exec("SET checkpoint_threshold = '100GB'").await;
        let job = refunds::job(
            "p1_deferred",
            Safety::Bare,
            Source::query(refunds::CORRECTED),
        );
        let (d, _, _) = refunds::library_run(e, &job, false).await;
        e.exec("RESET checkpoint_threshold").await;
        details.push(format!(
            "| DuckDB | P1 with automatic checkpoints off (`checkpoint_threshold = '100GB'`) | {:.0} ms | {:.1} ms a batch less than P1 |",
            ms(d),
            (ms(p1) - ms(d)) / batches.max(1) as f64,
        ));
    }
    details.push(format!(
        "| {} | the 181 days by hand from a staged snapshot | {:.0} ms to stage, then {:.1} ms a day | the library's data work without its ledger, a transaction a day; P1 takes {:.1} ms a batch, staging included |",
        e.name(),
        ms(prep),
        ms(by_day) / 181.0,
        ms(p1) / batches.max(1) as f64,
    ));
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    details.push(format!(
        "| {} | P6: the library's heap peak during P1 | {:.2} MiB at {orders} orders, {:.2} MiB at {small} | ratio {:.2}; goal within 20% |",
        e.name(),
        mib(p1_held.heap),
        mib(small_held.heap),
        p1_held.heap as f64 / small_held.heap.max(1) as f64,
    ));
    details.push(format!(
        "| {} | P6: the process's resident growth during P1 | {:.1} MiB at {orders} orders, {:.1} MiB at {small} | ratio {:.2}; {} |",
        e.name(),
        mib(p1_held.resident),
        mib(small_held.resident),
        p1_held.resident as f64 / small_held.resident.max(1) as f64,
        match e {
            Engine::Duck(_) => "DuckDB's buffers are in this process",
            Engine::Pg(_) => "the server's memory is its own",
        },
    ));
    let ledger_us = ledger_overhead(e, 181).await;
    details.push(format!(
        "| {} | ledger alone: claim + written mark, per batch | {:.0} µs | — |",
        e.name(),
        ledger_us
    ));
    if profile {
        eprintln!("{}: P1 statements by kind", e.name());
        for (k, n) in &p1_counts.kinds {
            eprintln!("  {n:>6}  {k}");
        }
    }
    (figures, details)
}

/// The ledger's cost per batch, alone: a run of `n` batches claimed and
/// marked written one by one, with no data written.
async fn ledger_overhead(e: &Engine, n: usize) -> f64 {
    let ledger = bench_ledger(e, "bench_ledger_alone").await;
    let job = refunds::job(
        "ledger_alone",
        refunds::Safety::Bare,
        Source::query("SELECT 1"),
    );
    let mut record = bench_record("ledger_alone", &job.plan, ledger.now());
    record.target = job.target().clone();
    record.fingerprint = job.fingerprint();
    let batches = &job.plan.batches[..n.min(job.plan.batches.len())];
    ledger.begin_run(&record, batches).await.expect("begin");
    let t = Instant::now();
    let done = claim_and_mark_all(ledger.as_ref(), &record.run_id)
        .await
        .len();
    let took = t.elapsed();
    assert_eq!(done, batches.len());
    e.exec("DROP SCHEMA bench_ledger_alone CASCADE").await;
    took.as_secs_f64() * 1e6 / done as f64
}

/// The ledger's cost per batch (claim and written mark) early and late in
/// a long run: the median over batches 1–20 against batches 1,000–1,019 of
/// a 2,000-batch plan. Flat means the ledger does not slow down as the run
/// (and the database) grows.
async fn ledger_flatness(e: &Engine) -> String {
    let ledger = bench_ledger(e, "bench_flat").await;
    let plan = key_plan("flat_target", 2_000);
    let record = bench_record("flat", &plan, ledger.now());
    ledger
        .begin_run(&record, &plan.batches)
        .await
        .expect("begin");
    let each = claim_and_mark_all(ledger.as_ref(), &record.run_id).await;
    drop(ledger);
    e.exec("DROP SCHEMA bench_flat CASCADE").await;
    let early = median(each[..20].to_vec());
    let late = median(each[1_000..1_020].to_vec());
    format!(
        "| {} | the ledger per batch at batches 1–20 and 1,000–1,019 of 2,000 | {:.2} ms and {:.2} ms | ratio {:.2}; goal within 20% |",
        e.name(),
        ms(early),
        ms(late),
        late.as_secs_f64() / early.as_secs_f64()
    )
}

/// P8: recording a plan of `n` batches in the ledger (one batch a key, so
/// planning is cheap and the time is the ledger's), from `begin_run` to
/// its commit; the target is held for this long before the first batch.
async fn plan_recording(e: &Engine, n: usize) -> String {
    let ledger = bench_ledger(e, "bench_plan").await;
    let plan = key_plan("plan_target", n);
    let record = bench_record("plan_recording", &plan, ledger.now());
    let (took, r) = time(ledger.begin_run(&record, &plan.batches)).await;
    r.expect("recorded");
    drop(ledger);
    e.exec("DROP SCHEMA bench_plan CASCADE").await;
    format!(
        "| {} | P8: record a plan of {n} batches in the ledger | {:.0} ms | {:.1} µs a batch; goal 100,000 in < 2 s |",
        e.name(),
        ms(took),
        took.as_secs_f64() * 1e6 / n as f64
    )
}

/// A ledger of its own, in schema `schema` of the engine.
async fn bench_ledger(e: &Engine, schema: &str) -> Box<dyn backfill::ledger::Ledger> {
    match e {
        Engine::Duck(w) => Box::new(w.ledger(schema).await.expect("ledger")),
        Engine::Pg(w) => Box::new(w.ledger(schema).await.expect("ledger")),
    }
}

/// A plan of `n` one-key batches on table `target` (cheap to plan, so a
/// measurement of it is the ledger's).
fn key_plan(target: &str, n: usize) -> backfill::Plan {
    let scope = backfill::Scope::new(
        table(target),
        "id",
        backfill::Bounds::Keys {
            start: 0,
            end: n as i64,
        },
        "UTC",
    )
    .expect("scope");
    backfill::Plan::build(scope, backfill::Planner::KeyRanges { width: 1 }).expect("plan")
}

/// A running run's record for `plan`, as the runner would record it.
fn bench_record(
    run: &str,
    plan: &backfill::Plan,
    now: backfill::jiff::Timestamp,
) -> backfill::ledger::RunRecord {
    backfill::ledger::RunRecord {
        run_id: backfill::RunId::new(run).expect("run id"),
        target: plan.scope.target.clone(),
        fingerprint: plan.fingerprint.clone(),
        code_version: "bench".into(),
        parameters: Default::default(),
        operator: "bench".into(),
        status: backfill::ledger::RunStatus::Running,
        started_at: now,
        finished_at: None,
        rows_affected: 0,
        notes: Vec::new(),
    }
}

/// Claims each batch of `run` and marks it written, one at a time, until
/// none is left; returns how long each took.
async fn claim_and_mark_all(
    ledger: &dyn backfill::ledger::Ledger,
    run: &backfill::RunId,
) -> Vec<Duration> {
    use backfill::ledger::{BatchState, BatchUpdate};
    let mut each = Vec::new();
    loop {
        let t = Instant::now();
        let Some(c) = ledger
            .claim(run, "bench", Duration::from_secs(60), None)
            .await
            .expect("claim")
        else {
            break;
        };
        ledger
            .transition(
                run,
                &c.batch.id,
                Some(c.token),
                BatchState::Written,
                BatchUpdate::reason("written"),
            )
            .await
            .expect("mark");
        each.push(t.elapsed());
    }
    each
}

/// DuckDB's cost of one small statement through the same binding the
/// adapter uses (prepared once, then run 500 times on a 1,000-row table):
/// the floor under every per-batch statement.
async fn statement_floor(w: &DuckDbWarehouse) -> Vec<String> {
    w.with_connection(|c| {
        c.execute_batch(
            "CREATE SCHEMA IF NOT EXISTS bench;
             CREATE TABLE bench.floor_t (id BIGINT PRIMARY KEY, x BIGINT);
             INSERT INTO bench.floor_t SELECT i, 0 FROM range(1000) AS t(i);
             CREATE TABLE floor_log (id BIGINT, note VARCHAR);",
        )?;
        let mut out = Vec::new();
        for (what, sql) in [
            ("point SELECT", "SELECT x FROM bench.floor_t WHERE id = ?"),
            ("point UPDATE", "UPDATE bench.floor_t SET x = x + 1 WHERE id = ?"),
            ("one-row INSERT", "INSERT INTO floor_log VALUES (?, 'x')"),
        ] {
            let t = Instant::now();
            for i in 0..500i64 {
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query([i])?;
                while rows.next()?.is_some() {}
            }
            out.push(format!(
                "| DuckDB | one prepared {what} | {:.0} µs | the floor under each per-batch statement |",
                t.elapsed().as_secs_f64() * 1e6 / 500.0
            ));
        }
        // The catalog lookups a write makes of its target, as rendered.
        let target = table("floor_t");
        let d = backfill::sql::DuckDbDialect;
        use backfill::sql::stmt;
        for (what, q) in [
            ("table-kind lookup (catalog functions)", stmt::relation_kind(&d, &target)),
            ("table-kind lookup (`information_schema`)", stmt::relation_kind_standard(&d, &target)),
            ("column lookup (catalog functions)", stmt::describe(&d, &target)),
            ("column lookup (`information_schema`)", stmt::describe_standard(&d, &target)),
        ] {
            let params: Vec<String> = q
                .params
                .iter()
                .map(|v| match v {
                    Value::Text(s) => s.clone(),
                    other => panic!("a text parameter, not {other:?}"),
                })
                .collect();
            let t = Instant::now();
            for _ in 0..100 {
                let mut st = c.prepare_cached(&q.text)?;
                let mut rows = st.query(backfill::duckdb::duckdb::params_from_iter(params.iter()))?;
                while rows.next()?.is_some() {}
            }
            out.push(format!(
                "| DuckDB | one prepared {what} | {:.0} µs | made by every write of its target |",
                t.elapsed().as_secs_f64() * 1e6 / 100.0
            ));
        }
        let t = Instant::now();
        for _ in 0..500 {
            c.execute_batch("BEGIN; COMMIT")?;
        }
        out.push(format!(
            "| DuckDB | an empty transaction | {:.0} µs | — |",
            t.elapsed().as_secs_f64() * 1e6 / 500.0
        ));
        c.execute_batch("DROP TABLE bench.floor_t; DROP TABLE floor_log;")?;
        Ok(out)
    })
    .await
    .expect("statement floor")
}

/// P7 (Postgres): one worker against four sharing one run whose batches
/// wait on I/O; every batch claimed and written exactly once.
async fn measure_workers(url: &str, wait_ms: u64) -> (Figure, String) {
    let setup = PgWarehouse::connect(url).await.expect("postgres");
    let mut took = Vec::new();
    for workers in [1usize, 4] {
        setup
            .execute_batch(refunds::P7_SETUP)
            .await
            .expect("p7 setup");
        let job = refunds::p7_job(&format!("p7_{workers}"), wait_ms);
        let t = Instant::now();
        let mut handles = Vec::new();
        for n in 0..workers {
            let (job, url) = (job.clone(), url.to_string());
            handles.push(tokio::spawn(async move {
                let wh = PgWarehouse::connect(&url).await.expect("postgres");
                let ledger = wh.ledger(refunds::LEDGER).await.expect("ledger");
                // Each batch waits on its own I/O: the query is read by
                // each batch (staged once, it would wait once for all).
                let runner = backfill::Runner::new(Arc::new(wh), Arc::new(ledger)).with_options(
                    backfill::runner::RunOptions {
                        worker: format!("worker-{n}"),
                        stage_queries: false,
                        ..Default::default()
                    },
                );
                runner.run(&job).await.expect("worker run").batches_this_run
            }));
        }
        let mut written = 0;
        for h in handles {
            written += h.await.expect("worker");
        }
        took.push(t.elapsed());
        let ledger = setup.ledger(refunds::LEDGER).await.expect("ledger");
        let (batches, claims, writes) = refunds::claims(&ledger, &job.run_id).await;
        assert_eq!(written, batches, "the workers wrote every batch once");
        assert_eq!(claims, batches, "zero double claims");
        assert_eq!(writes, batches, "every batch written once");
        let keys = setup
            .key_report(
                &table_in("p7", "sales"),
                &[ident("sale_id")],
                &Predicate::All,
                1,
            )
            .await
            .expect("keys");
        assert_eq!(keys.duplicate_keys, 0);
    }
    let speedup = took[0].as_secs_f64() / took[1].as_secs_f64();
    let fig = Figure {
        engine: "Postgres".into(),
        figure: format!("P7: 4 workers against 1, 90 batches waiting {wait_ms} ms on I/O"),
        rows: 90_000,
        library_ms: ms(took[1]),
        baseline_ms: ms(took[0]),
        ratio: took[1].as_secs_f64() / took[0].as_secs_f64(),
        goal: Some(1.0 / 3.0),
    };
    let line = format!(
        "| Postgres | P7: throughput, 4 workers against 1 | {speedup:.2}× ({:.1} s against {:.1} s) | 90 claims for 90 batches, no double claim; goal ≥ 3× |",
        took[1].as_secs_f64(),
        took[0].as_secs_f64()
    );
    (fig, line)
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// P5: planning alone, with no engine. Key ranges over `keys` batches of
/// width 10, and daily windows over `days` days in a zone with DST.
fn planning(keys: u64, days: i64) -> Vec<String> {
    use backfill::{Bounds, Grain, Plan, Planner, Scope};
    let mut out = Vec::new();
    let t = table("old");
    let scope = Scope::new(
        t.clone(),
        "id",
        Bounds::Keys {
            start: 0,
            end: i64::try_from(keys * 10).expect("keys"),
        },
        "UTC",
    )
    .expect("scope");
    let (m0, t0) = (rss_kib(), Instant::now());
    let plan = Plan::build(scope, Planner::KeyRanges { width: 10 }).expect("plan");
    let (took, grew) = (t0.elapsed(), rss_kib().saturating_sub(m0));
    assert_eq!(plan.batches.len() as u64, keys);
    out.push(format!(
        "| P5 | plan {} key-range batches | {:.0} ms | {} MiB resident growth | < 1 s |",
        plan.batches.len(),
        took.as_secs_f64() * 1000.0,
        grew / 1024
    ));
    drop(plan);
    let start = backfill::jiff::civil::date(1800, 1, 1);
    let end = start
        .checked_add(backfill::jiff::Span::new().days(days))
        .expect("end");
    let scope = Scope::new(t, "day", Bounds::dates(start, end), "America/New_York").expect("scope");
    let (m0, t0) = (rss_kib(), Instant::now());
    let plan = Plan::build(scope, Planner::Windows { grain: Grain::Day }).expect("plan");
    let (took, grew) = (t0.elapsed(), rss_kib().saturating_sub(m0));
    assert_eq!(plan.batches.len() as i64, days);
    out.push(format!(
        "| P5 | plan {} daily batches in America/New_York | {:.0} ms | {} MiB resident growth | < 1 s |",
        plan.batches.len(),
        took.as_secs_f64() * 1000.0,
        grew / 1024
    ));
    out
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if a.show_sql {
            // The statements the library runs, beside the hand-written ones.
            let duck = DuckDbWarehouse::in_memory().expect("duckdb");
            let d = duck.dialect().expect("dialect");
            let q = backfill::inspect::Inspect::Diff(Box::new(library_diff(10)));
            for s in backfill::sql::inspect::render(d, &q) {
                println!("{};\n", s.display());
            }
            println!("{};", hand_diff(&Engine::Duck(duck.clone()), 10));
            return;
        }
        statements::install();
        statements::show_statements(a.profile);
        let want = |what: &str| a.only.as_deref().is_none_or(|o| o == what);
        let (keys, days) = if a.full { (1_000_000, 100_000) } else { (10_000, 1_000) };
        let plans = if want("plan") { planning(keys, days) } else { Vec::new() };
        let mut figures = Vec::new();
        let mut details = Vec::new();
        let duck = Engine::Duck(DuckDbWarehouse::in_memory().expect("duckdb"));
        if want("inspect") {
            figures.extend(measure(&duck, a.rows, a.runs).await);
        }
        if a.only.as_deref() == Some("p1") {
            duck.exec(&refunds::setup_sql(&duck, a.orders)).await;
            duck.exec(&refunds::reset_sql(&duck)).await;
            let job = refunds::job("p1", refunds::Safety::Bare, Source::query(refunds::CORRECTED));
            let (d, _, _) = refunds::library_run(&duck, &job, false).await;
            eprintln!("P1 alone: {:.0} ms", ms(d));
        }
        if a.only.as_deref() == Some("heap") {
            heap_profile(&duck, a.orders).await;
        }
        if a.only.as_deref() == Some("ledger") {
            for _ in 0..a.runs {
                eprintln!("ledger alone: {:.0} µs a batch", ledger_overhead(&duck, 181).await);
            }
        }
        // Two thousand batches: part of a full run, or asked for alone.
        let flat = a.full || a.only.as_deref() == Some("flat");
        if flat {
            details.push(ledger_flatness(&duck).await);
        }
        let plan_batches = if a.full { 100_000 } else { 36_525 };
        if want("plan") {
            details.push(plan_recording(&duck, plan_batches).await);
        }
        if want("refunds") {
            if let Engine::Duck(w) = &duck {
                details.extend(statement_floor(w).await);
            }
            let (f, d) = measure_refunds(&duck, a.orders, a.runs, a.profile).await;
            figures.extend(f);
            details.extend(d);
        }
        drop(duck);
        match std::env::var("BACKFILL_PG_URL") {
            Ok(url) => {
                let pg = Engine::Pg(PgWarehouse::connect(&url).await.expect("postgres"));
                if want("inspect") {
                    figures.extend(measure(&pg, a.pg_rows.unwrap_or(a.rows), a.runs).await);
                }
                if want("plan") {
                    details.push(plan_recording(&pg, plan_batches).await);
                }
                if flat {
                    details.push(ledger_flatness(&pg).await);
                }
                if want("refunds") {
                    let orders = a.pg_orders.unwrap_or(a.orders);
                    let (f, d) = measure_refunds(&pg, orders, a.runs, a.profile).await;
                    figures.extend(f);
                    details.extend(d);
                }
                if want("workers") {
                    let (f, d) = measure_workers(&url, if a.full { 100 } else { 20 }).await;
                    figures.push(f);
                    details.push(d);
                }
            }
            Err(_) => eprintln!(
                "BACKFILL_PG_URL is not set: Postgres skipped (run under ./scripts/with-postgres.sh)"
            ),
        }
        // Spark in a full run, or asked for alone (under
        // ./scripts/with-spark.sh, which starts Sail).
        if a.full && want("spark") || a.only.as_deref() == Some("spark") {
            match std::env::var("BACKFILL_SPARK_SAIL_URL") {
                Ok(url) => {
                    let orders = a.spark_orders.unwrap_or(a.orders);
                    let (f, d) = spark::measure(&url, orders, a.runs).await;
                    figures.extend(f);
                    details.extend(d);
                }
                Err(_) => eprintln!(
                    "BACKFILL_SPARK_SAIL_URL is not set: Spark skipped (run under ./scripts/with-spark.sh)"
                ),
            }
        }
        println!(
            "\n| engine | figure | rows | library | hand-written | ratio | goal |\n|---|---|---|---|---|---|---|"
        );
        for f in &figures {
            println!(
                "| {} | {} | {} | {:.0} ms | {:.0} ms | {:.2}× | {} |",
                f.engine,
                f.figure,
                f.rows,
                f.library_ms,
                f.baseline_ms,
                f.ratio,
                f.goal.map_or("—".to_string(), |g| format!("≤ {}×", short(g)))
            );
        }
        println!("\n| engine | what | measured | detail |\n|---|---|---|---|");
        for d in &details {
            println!("{d}");
        }
        println!("\n| # | what | time | memory | goal |\n|---|---|---|---|---|");
        for p in &plans {
            println!("{p}");
        }
        if a.full {
            let json = serde_json::to_string_pretty(&figures).expect("json");
            std::fs::write(&a.json, json).expect("write json");
            println!("\nwritten to {}", a.json);
        }
    });
}
