//! Integration tests of the PostgreSQL adapter against a real server.
//!
//! What every adapter must do (the Warehouse contract, the ledger mirrored
//! against MemoryLedger, in-transaction ledger marks with fencing,
//! end-to-end runs) is the testkit's conformance suite, run here in a
//! fresh schema per case with PostgreSQL's capabilities. This file adds
//! only what is PostgreSQL's own: its native types and materialized
//! views, copies that keep keys and indexes, statement and lock timeouts,
//! several workers sharing one run, load signals, partition swaps, and a
//! timing.
//!
//! The server comes from `BACKFILL_PG_URL` (a libpq connection string):
//! run `./scripts/with-postgres.sh cargo test -p backfill-postgres` or
//! `./scripts/test.sh`. Without it the tests skip with a message, unless
//! `CI` is set, where they fail. Each test works in a schema of its own
//! (`t_<test>_<pid>`), so tests run in parallel.
//!
//! This is the crate's only integration test file; put new tests here.

use std::sync::Arc;
use std::time::Duration;

use backfill_core::engine::SqlWarehouse;
use backfill_core::jiff::civil::date;
use backfill_core::ledger::{
    BatchState, BatchUpdate, Ledger, Liveness, ManualClock, RunRecord, RunStart, RunStatus,
};
use backfill_core::warehouse::{Checksum, MergeWrite, Warehouse};
use backfill_core::{
    Backfill, Bounds, ColumnType, Error, Grain, Ident, Plan, Planner, Predicate, RunId, Runner,
    Scope, Source, StrategySpec, TableRef, Value,
};
use backfill_postgres::{PgExecutor, PgWarehouse};
use backfill_testkit::conformance::end_to_end::{
    brief_with_row_count, die_inside_first_batch, resume_takes_back_dead_batch, revived_job,
};
use backfill_testkit::conformance::writes::slice_write;
use backfill_testkit::conformance::{
    daily_plan, day, expected_replace, facts_schema, ledger_clock, ledger_record, ledger_t0,
    original_rows, row, source_rows, Capabilities, Env,
};
use backfill_testkit::crash::{
    child_main, crash_resume_and_roll_back, every_point_resumes_at_once, seed_tables, CrashPoint,
    CrashRig, Crashing, CrashingPlan, CRASH_AT, CRASH_PATTERN,
};

fn id(s: &str) -> Ident {
    Ident::new(s).unwrap()
}

fn tr(s: &str) -> TableRef {
    TableRef::parse(s).unwrap()
}

async fn seed(w: &PgWarehouse, name: &str, rows: &[Vec<Value>]) -> TableRef {
    let t = tr(name);
    w.create_table(&t, &facts_schema()).await.unwrap();
    w.insert_rows(&t, rows).await.unwrap();
    t
}

async fn checksum(w: &PgWarehouse, t: &TableRef) -> Checksum {
    w.checksum(t, &Predicate::All).await.unwrap()
}

/// A test's warehouse (in a fresh schema of its own, which is also the
/// connections' search path) with `facts` and `facts_fix` seeded; `None`
/// when there is no server to test against.
async fn setup(test: &str) -> Option<(PgWarehouse, TableRef, TableRef)> {
    let w = fresh(test).await?;
    let facts = seed(&w, "facts", &original_rows()).await;
    let fix = seed(&w, "facts_fix", &source_rows()).await;
    Some((w, facts, fix))
}

// ---------------------------------------------------------------------------
// The server: BACKFILL_PG_URL, one schema per test
// ---------------------------------------------------------------------------

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The server's connection string; `None` (with a message) when unset,
/// a panic when unset under CI.
fn pg_url(test: &str) -> Option<String> {
    match std::env::var("BACKFILL_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if in_ci() => panic!(
            "{test}: BACKFILL_PG_URL is not set, and CI is: the PostgreSQL tests must run \
             against a server; run them via ./scripts/with-postgres.sh or ./scripts/test.sh"
        ),
        _ => {
            eprintln!(
                "skipping {test}: BACKFILL_PG_URL is not set; run via ./scripts/with-postgres.sh \
                 cargo test -p backfill-postgres, or ./scripts/test.sh"
            );
            None
        }
    }
}

/// The schema of one test: `t_<test>_<pid>`, at most 63 bytes.
fn schema_name(test: &str) -> String {
    let pid = std::process::id();
    let mut base = format!("t_{test}");
    base.truncate(63 - 1 - pid.to_string().len());
    format!("{base}_{pid}")
}

/// A pool on the server with `schema` as the search path.
fn pool(url: &str, schema: &str, size: usize) -> backfill_postgres::deadpool_postgres::Pool {
    use backfill_postgres::deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
    let mut cfg: backfill_postgres::tokio_postgres::Config = url.parse().unwrap();
    cfg.options(format!("-c search_path={schema}"));
    let mgr = Manager::from_config(
        cfg,
        backfill_postgres::tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr).max_size(size).build().unwrap()
}

/// Drops and creates a test's schema; returns the server's URL and the
/// schema's name.
async fn fresh_schema(test: &str) -> Option<(String, String)> {
    let url = pg_url(test)?;
    let schema = schema_name(test);
    let admin = PgWarehouse::connect(&url).await.unwrap();
    admin
        .execute_batch(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\""
        ))
        .await
        .unwrap();
    Some((url, schema))
}

/// A warehouse in a fresh schema of its own.
async fn fresh(test: &str) -> Option<PgWarehouse> {
    let (url, schema) = fresh_schema(test).await?;
    Some(PgWarehouse::from_pool(pool(&url, &schema, 8)))
}

// ---------------------------------------------------------------------------
// The conformance suite: each case in a fresh schema, with the ledger in
// the same schema, so batch marks commit with the data.
// ---------------------------------------------------------------------------

/// PostgreSQL's capabilities: its ledger commits with the data and it runs
/// SQL; its views bind tables by identity, not by name, so a view over a
/// swapped target keeps reading the old table.
fn capabilities() -> Capabilities {
    Capabilities {
        ledger_in_data_tx: true,
        views_bind_by_name: false,
        runs_sql: true,
        views_of_views: true,
        finds_dependents: true,
        keeps_not_null: true,
    }
}

/// An env on `w`, whose pool's search path is `schema`: the case's tables
/// and its ledger live there.
async fn env_in(w: &PgWarehouse, schema: &str) -> Env {
    let warehouse = Arc::new(w.clone());
    backfill_testkit::conformance::sql_env(
        warehouse,
        &**w,
        Some(id(schema)),
        schema,
        capabilities(),
    )
    .await
}

/// A fresh schema per case; `None` (the case is skipped, with a message)
/// without a server outside CI.
async fn conformance_env(name: &str) -> Option<Env> {
    let (url, schema) = fresh_schema(&format!("c_{name}")).await?;
    let w = PgWarehouse::from_pool(pool(&url, &schema, 8));
    Some(env_in(&w, &schema).await)
}

backfill_testkit::conformance_tests!(|name: &str| {
    let name = name.to_string();
    async move { conformance_env(&name).await }
});

/// The suite again with the ledger outside the database (in memory).
mod separate_ledger {
    use super::*;
    backfill_testkit::conformance_tests!(|name: &str| {
        let name = format!("m_{name}");
        async move {
            conformance_env(&name)
                .await
                .map(backfill_testkit::conformance::with_separate_ledger)
        }
    });
}

// ---------------------------------------------------------------------------
// Catalog and types
// ---------------------------------------------------------------------------

/// Materialized views are relations too (information_schema omits them);
/// every PostgreSQL type maps, in a schema of its own, in tables and query
/// sources alike; an unqualified name is looked up in the current schema
/// only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_native_types_map() {
    let Some((w, _, _)) = setup("relations_and_native_types_map").await else {
        return;
    };
    assert_eq!(w.engine(), "postgres");
    w.execute_batch(
        "CREATE MATERIALIZED VIEW facts_mv AS \
         SELECT id, day, amount::numeric(18,2) AS amount, now() AS at FROM facts",
    )
    .await
    .unwrap();
    let mv = w.describe(&tr("facts_mv")).await.unwrap().unwrap();
    let types: Vec<(String, ColumnType)> = mv
        .columns
        .iter()
        .map(|c| (c.name.to_string(), c.ty))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id".to_string(), ColumnType::Int),
            ("day".to_string(), ColumnType::Date),
            ("amount".to_string(), ColumnType::Decimal),
            ("at".to_string(), ColumnType::Timestamp),
        ]
    );

    let other = format!("{}_o", schema_name("describe"));
    w.execute_batch(format!(
        "DROP SCHEMA IF EXISTS {other} CASCADE; CREATE SCHEMA {other}; \
         CREATE TABLE {other}.typed (b BOOLEAN, i INTEGER, h BIGINT, s SMALLINT, \
         f DOUBLE PRECISION, r REAL, n NUMERIC(10,2), t VARCHAR(10), c CHAR(3), x TEXT, \
         d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, j INTEGER[], u UUID)"
    ))
    .await
    .unwrap();
    let typed_t = TableRef::qualified(id(&other), id("typed"));
    let typed = w.describe(&typed_t).await.unwrap().unwrap();
    let tys: Vec<ColumnType> = typed.columns.iter().map(|c| c.ty).collect();
    use ColumnType::*;
    let expected = vec![
        Bool, Int, Int, Int, Float, Float, Decimal, Text, Text, Text, Date, DateTime, Timestamp,
        Other, Other,
    ];
    assert_eq!(tys, expected);
    let q = Source::query(format!("SELECT * FROM {other}.typed"));
    let s = w.describe_source(&q).await.unwrap();
    assert_eq!(s.columns.iter().map(|c| c.ty).collect::<Vec<_>>(), expected);
    assert_eq!(w.describe(&tr("typed")).await.unwrap(), None);
    w.execute_batch(format!("DROP SCHEMA {other} CASCADE"))
        .await
        .unwrap();
}

/// Numerics and arrays read back as text (floats for float columns); an
/// Int binds to int4, int2 and numeric columns, a Float to real and
/// numeric ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numerics_read_back_and_bind() {
    let Some(w) = fresh("numerics_read_back_and_bind").await else {
        return;
    };
    w.execute_batch(
        "CREATE TABLE typed (n NUMERIC(10,2), j INTEGER[], i INTEGER, r REAL, sm SMALLINT, \
         big NUMERIC); \
         INSERT INTO typed VALUES (2.25, '{1,2}', 7, 0.5, -3, -12345678901234567890.000100)",
    )
    .await
    .unwrap();
    let typed = tr("typed");
    let rows = w
        .sample_rows(&typed, &Predicate::All, &[], 10)
        .await
        .unwrap();
    let text = |s: &str| Value::Text(s.into());
    assert_eq!(
        rows,
        vec![vec![
            text("2.25"),
            text("{1,2}"),
            Value::Int(7),
            Value::Float(0.5),
            Value::Int(-3),
            text("-12345678901234567890.000100"),
        ]]
    );
    let matching = |c: &str, v: Value| {
        let pred = Predicate::In {
            column: id(c),
            values: vec![v],
        };
        let (w, typed) = (w.clone(), typed.clone());
        async move { w.count(&typed, &pred).await.unwrap() }
    };
    assert_eq!(matching("i", Value::Int(7)).await, 1);
    assert_eq!(matching("sm", Value::Int(-3)).await, 1);
    assert_eq!(matching("r", Value::Float(0.5)).await, 1);
    assert_eq!(matching("n", Value::Float(2.25)).await, 1);
    assert_eq!(matching("n", Value::Int(2)).await, 0);
}

/// A copy keeps primary keys and indexes, so a swapped-in stage serves
/// the same queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_keep_keys_and_indexes() {
    let Some(w) = fresh("copies_keep_keys_and_indexes").await else {
        return;
    };
    w.execute_batch(
        "CREATE TABLE keyed (id BIGINT PRIMARY KEY, v TEXT NOT NULL DEFAULT 'x' CHECK (v <> '')); \
         CREATE INDEX keyed_v ON keyed (v); INSERT INTO keyed VALUES (1, 'a'), (2, 'b')",
    )
    .await
    .unwrap();
    w.create_copy(&tr("keyed"), &tr("keyed_copy"), true)
        .await
        .unwrap();
    let c = w.client().await.unwrap();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'keyed_copy'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "primary key and index copied");
    let err = c
        .execute("INSERT INTO keyed_copy VALUES (1, 'dup')", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&backfill_postgres::tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err:?}"
    );
}

/// A staging swap replaces the target by a copy of it, and a copy made
/// with `LIKE` carries neither the views that read the target (they bind
/// by identity and would keep reading the old table), nor its grants,
/// triggers, foreign keys or identity sequence. Each is named at
/// preflight and the run refused before any write; the same target
/// without them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_refuses_what_a_copy_would_not_carry() {
    let test = "staging_refuses_what_a_copy_would_not_carry";
    let Some((w, facts, fix)) = setup(test).await else {
        return;
    };
    w.execute_batch(
        "ALTER TABLE facts ADD PRIMARY KEY (id); \
         CREATE VIEW facts_report AS SELECT day, sum(amount) AS total FROM facts GROUP BY day; \
         CREATE TABLE refs (fact_id BIGINT REFERENCES facts (id)); \
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER facts_touch BEFORE UPDATE ON facts FOR EACH ROW EXECUTE FUNCTION touch(); \
         GRANT SELECT ON facts TO PUBLIC",
    )
    .await
    .unwrap();
    let before = checksum(&w, &facts).await;
    let env = env_in(&w, &schema_name(test)).await;
    let job = backfill_testkit::conformance::job_on(
        &env,
        backfill_testkit::conformance::Pattern::Staging,
        "carry",
        Source::Table(fix.clone()),
    );
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner.run(&job).await.expect_err("refused");
    let message = err.to_string();
    for named in ["facts_report", "refs", "facts_touch", "PUBLIC"] {
        assert!(message.contains(named), "names {named}: {message}");
    }
    assert!(matches!(err, Error::Preflight(_)), "{err:?}");
    assert_eq!(checksum(&w, &facts).await, before);
    assert!(
        env.ledger.run(&job.run_id).await.is_err(),
        "nothing recorded"
    );

    // Without them, the same run goes ahead.
    w.execute_batch(
        "DROP VIEW facts_report; DROP TABLE refs; DROP TRIGGER facts_touch ON facts; \
         REVOKE SELECT ON facts FROM PUBLIC",
    )
    .await
    .unwrap();
    runner.run(&job).await.expect("runs");
}

/// A pre-image or key log is indexed by batch, so that a batch's marker
/// lookup and its restore read that batch's rows, not the whole snapshot
/// (without it each batch's lookup scans every earlier batch's rows, and a
/// run's cost grows with the square of its length).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_indexed_by_batch() {
    let Some((w, facts, _)) = setup("snapshots_are_indexed_by_batch").await else {
        return;
    };
    let columns = facts_schema().names();
    for (name, cols) in [
        ("facts_pre", columns.clone()),
        ("facts_keys", vec![id("id")]),
    ] {
        w.create_snapshot_table(&facts, &cols, &tr(name))
            .await
            .unwrap();
        let c = w.client().await.unwrap();
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() \
                 AND tablename = $1 AND indexdef LIKE '%__bf_batch%'",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{name} is indexed by batch");
    }
}

// ---------------------------------------------------------------------------
// Timeouts and locks
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_transient_and_write_nothing() {
    let Some((w, facts, _)) = setup("timeouts_are_transient_and_write_nothing").await else {
        return;
    };
    let original = checksum(&w, &facts).await;
    let run = RunId::new("slow").unwrap();
    let p = daily_plan(tr("facts"));
    let b = &p.batches[0]; // day 2: ids 9..12
    let columns = facts_schema().names();
    assert_eq!(
        w.timeouts(),
        (Duration::from_secs(600), Duration::from_secs(10))
    );

    // statement_timeout: a slow source is cancelled.
    let slow = Source::query("SELECT * FROM facts_fix WHERE pg_sleep(0.05) IS NOT NULL");
    let short = w.clone().with_statement_timeout(Duration::from_millis(200));
    let err = short
        .overwrite_slice(&slice_write(&run, b, &facts, &slow, &columns, None))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("57014"), "{err}");
    assert_eq!(checksum(&w, &facts).await, original);

    // lock_timeout: a row of the slice is locked by another session.
    let holder = w.client().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM facts WHERE id = 9 FOR UPDATE")
        .await
        .unwrap();
    let impatient = w.clone().with_lock_timeout(Duration::from_millis(100));
    let src = Source::Table(tr("facts_fix"));
    let err = impatient
        .overwrite_slice(&slice_write(&run, b, &facts, &src, &columns, None))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("55P03"), "{err}");
    assert_eq!(checksum(&w, &facts).await, original);

    // A swap that cannot take its lock gives up with a clear, transient
    // error naming the table and the lock timeout.
    let stage = tr("facts_stage");
    w.create_copy(&facts, &stage, true).await.unwrap();
    holder
        .batch_execute("ROLLBACK; BEGIN; SELECT count(*) FROM facts")
        .await
        .unwrap();
    let swapper = w.clone().with_swap_lock(Duration::from_millis(100), 2);
    let err = swapper
        .swap(&facts, &stage, &tr("facts_old"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("swap of facts") && msg.contains("100ms") && msg.contains("2 attempt"),
        "{msg}"
    );
    assert!(
        w.describe(&stage).await.unwrap().is_some(),
        "nothing swapped"
    );
    holder.batch_execute("ROLLBACK").await.unwrap();
    drop(holder);
    swapper
        .swap(&facts, &stage, &tr("facts_old"))
        .await
        .unwrap();
    assert_eq!(checksum(&w, &facts).await, original);
}

// ---------------------------------------------------------------------------
// Several workers, one run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_get_distinct_batches() {
    let test = "concurrent_claims_get_distinct_batches";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let clock = ledger_clock();
    let p = daily_plan(tr("facts"));
    let run = RunId::new("claims").unwrap();
    let mut ledgers = Vec::new();
    for _ in 0..6 {
        let w = PgWarehouse::from_pool(pool(&url, &schema, 2));
        ledgers.push(w.ledger_with_clock(&schema, clock.clone()).await.unwrap());
    }
    // Everyone begins the same run at once: one plans, the others resume.
    let starts = futures_join(
        ledgers
            .iter()
            .map(|l| {
                let l = l.clone();
                let batches = p.batches.clone();
                async move { l.begin_run(&ledger_record("claims", "fp"), &batches).await }
            })
            .collect(),
    )
    .await;
    let starts: Vec<RunStart> = starts.into_iter().map(|s| s.unwrap()).collect();
    assert_eq!(starts.iter().filter(|s| **s == RunStart::New).count(), 1);
    // Six claims at once on five batches: five distinct batches, one none.
    let claims = futures_join(
        ledgers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (l, run) = (l.clone(), run.clone());
                async move {
                    l.claim(&run, &format!("w{i}"), Duration::from_secs(60), None)
                        .await
                }
            })
            .collect(),
    )
    .await;
    let mut ids: Vec<String> = claims
        .into_iter()
        .filter_map(|c| c.unwrap())
        .map(|c| {
            assert_eq!((c.token, c.attempt), (1, 1));
            c.batch.id.0
        })
        .collect();
    ids.sort();
    let mut all: Vec<String> = p.batches.iter().map(|b| b.id.0.clone()).collect();
    all.sort();
    assert_eq!(ids, all);
    let log = ledgers[0].transitions(&run).await.unwrap();
    let claimed = log
        .iter()
        .filter(|t| t.batch_id.is_some() && t.to == "running")
        .count();
    assert_eq!(claimed, 5);
    // Ledger tables are plain tables in the chosen schema.
    assert_eq!(ledgers[0].schema().as_str(), schema);
    let batches = ledgers[0].table("batches").unwrap();
    assert_eq!(batches.to_string(), format!("{schema}.batches"));
    let w = PgWarehouse::from_pool(pool(&url, &schema, 1));
    assert_eq!(w.count(&batches, &Predicate::All).await.unwrap(), 5);
}

/// Runs the futures concurrently (each on its own task) and collects
/// their outputs in order.
async fn futures_join<T: Send + 'static>(
    futs: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

const WORKER_DAYS: i8 = 24;
const WORKER_ROWS_PER_DAY: i64 = 25;

fn worker_rows(fixed: bool) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for d in 0..WORKER_DAYS {
        for k in 0..WORKER_ROWS_PER_DAY {
            let i = i64::from(d) * WORKER_ROWS_PER_DAY + k + 1;
            let dd = date(2026, 1, 1) + backfill_core::jiff::Span::new().days(i64::from(d));
            if fixed {
                rows.push(row(i, dd, i * 10 + 1, "fixed"));
            } else {
                rows.push(row(i, dd, i * 10, "original"));
            }
        }
    }
    rows
}

/// A job over every day of the worker tables, with the source in
/// `facts_fix`.
fn worker_job(run: &str) -> Backfill {
    let end = date(2026, 1, 1) + backfill_core::jiff::Span::new().days(i64::from(WORKER_DAYS));
    let scope = Scope::new(
        tr("facts"),
        "day",
        Bounds::dates(date(2026, 1, 1), end),
        "UTC",
    )
    .unwrap();
    let plan = Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day }).unwrap();
    Backfill::new(
        RunId::new(run).unwrap(),
        brief_with_row_count(scope, StrategySpec::PartitionOverwrite),
        plan,
        Source::Table(tr("facts_fix")),
    )
}

/// A worker process: its own pool, warehouse and ledger handle on the
/// shared schema, and a runner with concurrency 1 under its own name.
async fn worker(url: &str, schema: &str, name: &str, clock: Arc<ManualClock>) -> Runner {
    let w = PgWarehouse::from_pool(pool(url, schema, 3));
    let ledger = w.ledger_with_clock(schema, clock).await.unwrap();
    let options = backfill_core::RunOptions {
        worker: name.to_string(),
        concurrency: 1,
        lease: Duration::from_secs(60),
        ..backfill_testkit::conformance::fast_options()
    };
    Runner::new(Arc::new(w), Arc::new(ledger)).with_options(options)
}

/// Seeds the worker tables; returns the warehouse and the expected
/// checksum.
async fn seed_workers(
    url: &str,
    schema: &str,
) -> (PgWarehouse, backfill_core::warehouse::Checksum) {
    let w = PgWarehouse::from_pool(pool(url, schema, 2));
    seed(&w, "facts", &worker_rows(false)).await;
    seed(&w, "facts_fix", &worker_rows(true)).await;
    let expected = seed(&w, "facts_expected", &worker_rows(true)).await;
    let sum = checksum(&w, &expected).await;
    (w, sum)
}

/// Every batch went running -> written exactly once; returns the
/// transitions.
async fn assert_written_once(
    l: &dyn Ledger,
    job: &Backfill,
) -> Vec<backfill_core::ledger::Transition> {
    let log = l.transitions(&job.run_id).await.unwrap();
    for b in &job.plan.batches {
        let n = log
            .iter()
            .filter(|t| {
                t.batch_id.as_ref() == Some(&b.id) && t.from == "running" && t.to == "written"
            })
            .count();
        assert_eq!(n, 1, "batch {} written {n} times: {log:#?}", b.id);
    }
    log
}

async fn assert_complete(w: &PgWarehouse, expected: &backfill_core::warehouse::Checksum) {
    let facts = tr("facts");
    let keys = w
        .key_report(&facts, &[id("id")], &Predicate::All, 5)
        .await
        .unwrap();
    assert_eq!(keys.duplicate_keys, 0, "{keys:?}");
    assert_eq!(
        keys.rows,
        (i64::from(WORKER_DAYS) * WORKER_ROWS_PER_DAY) as u64
    );
    assert_eq!(&checksum(w, &facts).await, expected);
}

/// A worker process that dies inside a batch leaves it `running` under an
/// hour-long lease; its instance's session lock goes with its
/// connections, so the next worker knows the holder is dead and takes the
/// batch back at once: a plain rerun completes without waiting for the
/// lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_workers_batch_is_taken_back_at_once() {
    let test = "a_dead_workers_batch_is_taken_back_at_once";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let job = revived_job("revived");
    let w = PgWarehouse::from_pool(pool(&url, &schema, 3));
    seed(&w, "facts", &original_rows()).await;
    seed(&w, "facts_fix", &source_rows()).await;
    seed(&w, "facts_expected", &expected_replace()).await;
    let (batch, lease) = {
        let doomed = PgWarehouse::from_pool(pool(&url, &schema, 2));
        let l = doomed.ledger(&schema).await.unwrap();
        let batch = die_inside_first_batch(&l, &job).await;
        let lease = l.batches(&job.run_id).await.unwrap()[0]
            .lease
            .clone()
            .unwrap();
        assert_eq!(l.liveness(&lease).await.unwrap(), Liveness::Alive);
        (batch, lease)
        // The worker dies here: its connections close.
    };
    // The server frees a closed session's locks as its backend exits:
    // taking the dead instance's lock waits for exactly that.
    let key = format!(
        "hashtextextended('backfill:instance:{}', 0)",
        lease.instance
    );
    w.execute_batch(format!(
        "SELECT pg_advisory_lock({key}); SELECT pg_advisory_unlock({key})"
    ))
    .await
    .unwrap();
    let l = w.ledger(&schema).await.unwrap();
    assert_eq!(l.liveness(&lease).await.unwrap(), Liveness::Dead);
    let runner = Runner::new(Arc::new(w.clone()), Arc::new(l))
        .with_options(backfill_testkit::conformance::fast_options());
    resume_takes_back_dead_batch(&runner, &w, &job, &batch, &tr("facts_expected")).await;
}

// ---------------------------------------------------------------------------
// Real crashes: this binary runs itself as a child worker that kills itself
// at a named point; a fresh worker resumes.
// ---------------------------------------------------------------------------

/// A schema of its own for each crash case.
struct PgRig {
    url: String,
    schema: String,
}

const CRASH_SCHEMA: &str = "BACKFILL_CRASH_SCHEMA";

#[async_trait::async_trait]
impl CrashRig for PgRig {
    async fn seed(&self) -> backfill_core::Result<()> {
        let admin = PgWarehouse::connect(&self.url).await?;
        admin
            .execute_batch(format!(
                "DROP SCHEMA IF EXISTS \"{0}\" CASCADE; CREATE SCHEMA \"{0}\"",
                self.schema
            ))
            .await?;
        let w = PgWarehouse::from_pool(pool(&self.url, &self.schema, 2));
        seed_tables(&*w).await
    }

    async fn child(&self, plan: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let exec = PgExecutor::new(pool(&self.url, &self.schema, 3));
        let w = SqlWarehouse::new(Crashing::new(exec, plan));
        let l = w.ledger(&self.schema).await.unwrap();
        (Arc::new(w), Arc::new(l))
    }

    async fn child_apart(&self, plan: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let (w, _) = self.child(plan).await;
        (w, self.ledger_apart().await)
    }

    async fn parent_apart(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let (w, _) = self.parent().await;
        let l = self.ledger_apart().await;
        self.wait_for_dead(l.as_ref()).await;
        (w, l)
    }

    async fn parent(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let w = PgWarehouse::from_pool(pool(&self.url, &self.schema, 3));
        let l = w.ledger(&self.schema).await.unwrap();
        self.wait_for_dead(&l).await;
        (Arc::new(w), Arc::new(l))
    }

    fn spawn_child(&self, point: CrashPoint, pattern: &str) -> std::process::ExitStatus {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CRASH_AT, point.name())
            .env(CRASH_PATTERN, pattern)
            .env(CRASH_SCHEMA, &self.schema)
            .status()
            .unwrap()
    }
}

impl PgRig {
    /// A ledger on a connection pool of its own, in a schema of its own:
    /// to the data's warehouse it is another database, so its marks
    /// commit apart from the data.
    async fn ledger_apart(&self) -> Arc<dyn Ledger> {
        let other = PgWarehouse::from_pool(pool(&self.url, &self.schema, 2));
        Arc::new(
            other
                .ledger(&format!("{}_ledger", self.schema))
                .await
                .unwrap(),
        )
    }

    /// Waits until every other instance holding a lease in `l` is gone.
    async fn wait_for_dead(&self, l: &dyn Ledger) {
        let w = PgWarehouse::from_pool(pool(&self.url, &self.schema, 1));
        // The server frees a killed worker's session lock as its backend
        // exits.
        let run = revived_job("revived").run_id;
        if let Ok(batches) = l.batches(&run).await {
            for lease in batches.iter().filter_map(|b| b.lease.as_ref()) {
                if lease.instance != l.instance() {
                    w.await_instance_end(&lease.instance).await.unwrap();
                }
            }
        }
    }
}

/// The child of the crash cases: runs the backfill until its point kills
/// it (nothing without the point set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the crash cases"]
async fn crash_child() {
    if let (Ok(url), Ok(schema)) = (
        std::env::var("BACKFILL_PG_URL"),
        std::env::var(CRASH_SCHEMA),
    ) {
        child_main(&PgRig { url, schema }).await;
    }
}

/// A worker process killed with SIGKILL at every crash point (before a
/// write, inside a write's transaction, after the data's commit with the
/// ledger elsewhere, while staging, inside a staged write, during the
/// end-of-run checks, inside the cut-over) and in every write pattern:
/// one plain rerun by a fresh worker completes at once (the
/// dead worker's batch is taken back, not waited for), and the table
/// equals a clean run's, with no duplicate key and no missing batch; and
/// a crash, a resume and a rollback leave the original table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_workers_resume_at_once() {
    let test = "killed_workers_resume_at_once";
    let Some(url) = pg_url(test) else {
        return;
    };
    every_point_resumes_at_once(|case| PgRig {
        url: url.clone(),
        schema: schema_name(&format!("crash_{case}")),
    })
    .await;
    let rig = PgRig {
        url,
        schema: schema_name("crash_rollback"),
    };
    crash_resume_and_roll_back(&rig, CrashPoint::InsideWriteTx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_share_one_run_and_write_each_batch_once() {
    let test = "workers_share_one_run_and_write_each_batch_once";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let (w, expected) = seed_workers(&url, &schema).await;
    let clock = ledger_clock();
    let job = worker_job("shared");
    let mut handles = Vec::new();
    for i in 0..4 {
        let runner = worker(&url, &schema, &format!("w{i}"), clock.clone()).await;
        let job = job.clone();
        handles.push(tokio::spawn(async move { runner.run(&job).await }));
    }
    let mut this_run = 0;
    for h in handles {
        let report = h.await.unwrap().unwrap();
        this_run += report.batches_this_run;
    }
    assert_eq!(
        this_run,
        job.plan.batches.len(),
        "each batch done by one worker"
    );
    let ledger = w.ledger_with_clock(&schema, clock.clone()).await.unwrap();
    let log = assert_written_once(&ledger, &job).await;
    assert_eq!(
        log.iter()
            .filter(|t| t.batch_id.is_some() && t.to == "running")
            .count(),
        job.plan.batches.len(),
        "each batch claimed once"
    );
    let records = ledger.batches(&job.run_id).await.unwrap();
    assert!(records.iter().all(|r| r.state == BatchState::Validated));
    let workers: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.lease.as_ref().map(|l| l.worker.clone()))
        .collect();
    assert!(workers.len() >= 2, "work was shared: {workers:?}");
    assert_complete(&w, &expected).await;
    assert_eq!(
        ledger.run(&job.run_id).await.unwrap().rows_affected,
        (i64::from(WORKER_DAYS) * WORKER_ROWS_PER_DAY) as u64
    );
    // Whichever worker finished last, one more pass settles the run.
    let last = worker(&url, &schema, "closer", clock).await;
    let report = last.run(&job).await.unwrap();
    assert_eq!(report.batches_this_run, 0);
    assert_eq!(report.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_workers_batch_is_taken_over_and_its_late_commit_refused() {
    let test = "a_dead_workers_batch_is_taken_over";
    let Some((url, schema)) = fresh_schema(test).await else {
        return;
    };
    let (w, expected) = seed_workers(&url, &schema).await;
    let original = checksum(&w, &tr("facts")).await;
    let clock = ledger_clock();
    let job = worker_job("takeover");

    // The doomed worker starts the run, claims the first batch and dies
    // before writing it.
    let doomed_w = PgWarehouse::from_pool(pool(&url, &schema, 2));
    let doomed = doomed_w
        .ledger_with_clock(&schema, clock.clone())
        .await
        .unwrap();
    // Locks and runs are keyed by the table the engine resolves.
    let target = doomed_w.resolve(job.target()).await.unwrap();
    doomed.lock_target(&target, &job.run_id).await.unwrap();
    let rec = RunRecord {
        run_id: job.run_id.clone(),
        target,
        fingerprint: job.fingerprint(),
        code_version: job.code_version.clone(),
        parameters: job.parameters.clone(),
        operator: job.brief.operator.clone(),
        status: RunStatus::Running,
        started_at: ledger_t0(),
        finished_at: None,
        rows_affected: 0,
        notes: vec![],
    };
    doomed.begin_run(&rec, &job.plan.batches).await.unwrap();
    let claim = doomed
        .claim(&job.run_id, "doomed", Duration::from_secs(60), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((claim.batch.seq, claim.token), (0, 1));

    // Before the lease expires, the others leave the batch alone.
    let early = worker(&url, &schema, "early", clock.clone()).await;
    let report = early.run(&job).await.unwrap();
    assert_eq!(report.batches_this_run, job.plan.batches.len() - 1);
    assert_eq!(report.gaps, vec![claim.batch.id.clone()]);

    // After it expires, the next worker takes the batch over and finishes.
    clock.advance(Duration::from_secs(61));
    let mut handles = Vec::new();
    for i in 0..4 {
        let runner = worker(&url, &schema, &format!("w{i}"), clock.clone()).await;
        let job = job.clone();
        handles.push(tokio::spawn(async move { runner.run(&job).await }));
    }
    let mut this_run = 0;
    for h in handles {
        this_run += h.await.unwrap().unwrap().batches_this_run;
    }
    assert_eq!(this_run, 1, "only the abandoned batch was left");
    assert_complete(&w, &expected).await;
    let log = assert_written_once(&doomed, &job).await;
    let first: Vec<(&str, &str)> = log
        .iter()
        .filter(|t| t.batch_id.as_ref() == Some(&claim.batch.id))
        .map(|t| (t.from.as_str(), t.to.as_str()))
        .collect();
    assert_eq!(
        first,
        vec![
            ("pending", "running"),
            ("running", "running"),
            ("running", "written"),
            ("written", "validated")
        ]
    );
    assert!(log
        .iter()
        .any(|t| t.reason.contains("taken over") && t.reason.contains("(expired)")));

    // The stale worker wakes up and commits: refused, nothing changes.
    let after = checksum(&w, &tr("facts")).await;
    assert_ne!(after, original);
    let mark = doomed
        .tx_mark(&job.run_id, &claim.batch.id, claim.token)
        .unwrap();
    let fix = Source::Table(tr("facts_fix"));
    let columns = facts_schema().names();
    let pre = tr("facts__bf_pre_takeover");
    let mut late = slice_write(
        &job.run_id,
        &claim.batch,
        job.target(),
        &fix,
        &columns,
        Some(&pre),
    );
    late.mark = Some(&mark);
    let err = doomed_w.overwrite_slice(&late).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { token: 1, .. }), "{err:?}");
    let err = doomed
        .transition(
            &job.run_id,
            &claim.batch.id,
            Some(claim.token),
            BatchState::Written,
            BatchUpdate::reason("late"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err:?}");
    assert_eq!(checksum(&w, &tr("facts")).await, after);
    assert_complete(&w, &expected).await;
    // The pre-image holds each batch's original rows once, so rollback
    // restores the exact prior table.
    assert_eq!(
        w.count(&pre, &Predicate::All).await.unwrap(),
        (i64::from(WORKER_DAYS) * (WORKER_ROWS_PER_DAY + 1)) as u64
    );
    early.rollback(&job).await.unwrap();
    assert_eq!(checksum(&w, &tr("facts")).await, original);
}

// ---------------------------------------------------------------------------
// Load signals
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_read_activity_replication_and_probes() {
    use backfill_core::{Event, Load, LoadSignal};
    use backfill_postgres::Thresholds;
    let Some((w, facts, _)) = setup("signals_read_activity_replication_and_probes").await else {
        return;
    };

    // Replication: a server without replicas reads Ok, and says so.
    let lag = w.replication_lag_signal(Duration::from_secs(1), Duration::from_secs(10));
    let r = lag.replication().await.unwrap();
    assert_eq!((r.replicas, r.max_lag), (0, Duration::ZERO));
    assert_eq!(lag.read().await.unwrap().load, Load::Ok);
    assert_eq!(lag.name(), "postgres replication lag");

    // Activity: a session waiting on a lock is seen.
    let holder = w.client().await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM facts WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let waiter = w.client().await.unwrap();
    let blocked = tokio::spawn(async move {
        waiter
            .batch_execute("UPDATE facts SET amount = amount WHERE id = 1")
            .await
    });
    let act = w.activity_signal(Thresholds::never(), Thresholds::new(1.0, 1000.0));
    let mut seen = None;
    for _ in 0..100 {
        let a = act.activity().await.unwrap();
        if a.waiting_on_locks >= 1 {
            seen = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.expect("the blocked update shows as a lock waiter");
    assert!(seen.active >= 1, "{seen:?}");
    match act.read().await.unwrap().load {
        Load::Throttle(why) => assert!(why.contains("waiting on locks"), "{why}"),
        other => panic!("expected a throttle, got {other:?}"),
    }
    let critical = w.activity_signal(Thresholds::new(0.0, 1.0), Thresholds::never());
    assert!(matches!(
        critical.read().await.unwrap().load,
        Load::Critical(_)
    ));
    holder.batch_execute("ROLLBACK").await.unwrap();
    blocked.await.unwrap().unwrap();
    let calm = w.activity_signal(Thresholds::never(), Thresholds::never());
    assert_eq!(calm.read().await.unwrap().load, Load::Ok);

    // Probes: a number of yours against thresholds.
    let probe = |t: Thresholds| w.probe_signal("facts size", "SELECT count(*) FROM facts", t);
    assert_eq!(
        probe(Thresholds::new(50.0, 100.0))
            .read()
            .await
            .unwrap()
            .load,
        Load::Ok
    );
    assert!(matches!(
        probe(Thresholds::new(10.0, 100.0)).read().await.unwrap().load,
        Load::Throttle(ref why) if why.contains("40")
    ));
    assert!(matches!(
        probe(Thresholds::new(1.0, 20.0)).read().await.unwrap().load,
        Load::Critical(_)
    ));
    assert_eq!(probe(Thresholds::never()).value().await.unwrap(), 40.0);
    let null = w.probe_signal("nothing", "SELECT NULL::int", Thresholds::never());
    assert!(null.read().await.is_err());
    let broken = w.probe_signal("broken", "SELECT * FROM nope", Thresholds::never());
    assert!(broken.read().await.is_err());

    // In a run: the probe throttles until the knob is turned down.
    w.execute_batch("CREATE TABLE knob (v INTEGER); INSERT INTO knob VALUES (5)")
        .await
        .unwrap();
    let knob = w.probe_signal("knob", "SELECT v FROM knob", Thresholds::new(1.0, 100.0));
    let ledger = w
        .ledger(&schema_name("signals_read_activity_replication_and_probes"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let runner = Runner::new(Arc::new(w.clone()), Arc::new(ledger))
        .with_options(backfill_testkit::conformance::fast_options())
        .with_signal(Arc::new(knob))
        .on_event(move |e| {
            if let Event::Throttled { reason } = e {
                let _ = tx.send(reason.clone());
            }
        });
    let plan = daily_plan(tr("facts"));
    let job = Backfill::new(
        RunId::new("knob").unwrap(),
        brief_with_row_count(plan.scope.clone(), StrategySpec::PartitionOverwrite),
        plan,
        Source::Table(tr("facts_fix")),
    );
    let handle = tokio::spawn(async move { runner.run(&job).await });
    let reason = rx.recv().await.unwrap();
    assert!(reason.starts_with("knob: "), "{reason}");
    assert_eq!(
        checksum(&w, &facts).await.rows,
        40,
        "nothing written while throttled"
    );
    w.execute_batch("UPDATE knob SET v = 0").await.unwrap();
    let report = handle.await.unwrap().unwrap();
    assert_eq!(report.status, RunStatus::Completed);
    assert!(report.throttled > Duration::ZERO);
}

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

/// A rough timing of 10k-row batches (an overwrite with pre-image, then a
/// merge) on a 100k-row table: `./scripts/with-postgres.sh cargo test -p
/// backfill-postgres --test postgres -- --ignored --nocapture timing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timing_of_10k_row_batches() {
    let Some(w) = fresh("timing_of_10k_row_batches").await else {
        return;
    };
    w.execute_batch(
        "CREATE TABLE facts AS SELECT i::bigint AS id, DATE '2026-03-01' + (i % 10) AS day, \
         i::bigint * 10 AS amount, 'original'::text AS note FROM generate_series(0, 99999) AS g(i); \
         CREATE TABLE facts_fix AS SELECT id, day, amount + 1 AS amount, 'fixed'::text AS note FROM facts; \
         ANALYZE facts; ANALYZE facts_fix",
    )
    .await
    .unwrap();
    let facts = tr("facts");
    let p = daily_plan(tr("facts"));
    let run = RunId::new("timing").unwrap();
    let columns = facts_schema().names();
    let pre = tr("facts_pre");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    let src = Source::Table(tr("facts_fix"));
    for (i, b) in p.batches.iter().take(3).enumerate() {
        let snap = if i == 0 { Some(&pre) } else { None };
        let t = std::time::Instant::now();
        let out = w
            .overwrite_slice(&slice_write(&run, b, &facts, &src, &columns, snap))
            .await
            .unwrap();
        println!(
            "overwrite (pre-image: {}) {out:?} in {:?}",
            snap.is_some(),
            t.elapsed()
        );
    }
    let log = tr("facts_keys");
    w.create_snapshot_table(&facts, &[id("id")], &log)
        .await
        .unwrap();
    let keys = [id("id")];
    for b in &p.batches[3..5] {
        let t = std::time::Instant::now();
        let out = w
            .merge_slice(&MergeWrite {
                slice: slice_write(&run, b, &facts, &src, &columns, Some(&pre)),
                keys: &keys,
                key_log: Some(&log),
                scope: None,
            })
            .await
            .unwrap();
        println!("merge {out:?} in {:?}", t.elapsed());
    }
    let t = std::time::Instant::now();
    let c = checksum(&w, &facts).await;
    println!("checksum {c:?} in {:?}", t.elapsed());
}

// ---------------------------------------------------------------------------
// Partitions and refreshes
// ---------------------------------------------------------------------------

/// Partition oids by name, for telling a swapped partition from a kept one.
async fn partition_oids(w: &PgWarehouse) -> Vec<(Value, Value)> {
    use backfill_core::engine::SqlRead;
    let q = backfill_core::sql::Sql {
        text: "SELECT relname::text, oid::bigint FROM pg_class \
               WHERE relname LIKE 'facts_p%' AND relkind = 'r' AND relnamespace = current_schema()::regnamespace \
               ORDER BY relname"
            .into(),
        params: vec![],
    };
    let mut rows = w.read(vec![q]).await.unwrap();
    rows.pop()
        .unwrap()
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

/// On a table partitioned by day, a daily overwrite swaps each batch's
/// partition for a new one (DETACH/ATTACH) instead of deleting rows, gives
/// the same table as the plain path, and rolls back to the exact prior
/// state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_overwrite_swaps_partitions() {
    let Some((url, schema)) = fresh_schema("partition_swap").await else {
        return;
    };
    let w = PgWarehouse::from_pool(pool(&url, &schema, 8));
    let mut ddl = String::from(
        "CREATE TABLE facts (id BIGINT NOT NULL, day DATE, amount BIGINT, note TEXT) \
         PARTITION BY RANGE (day);",
    );
    for d in 0..10 {
        ddl.push_str(&format!(
            "CREATE TABLE facts_p{d} PARTITION OF facts FOR VALUES FROM ('{}') TO ('{}');",
            day(d),
            day(d + 1)
        ));
    }
    ddl.push_str("CREATE INDEX facts_id ON facts (id);");
    w.execute_batch(ddl).await.unwrap();
    let env = env_in(&w, &schema).await;
    let facts = env.table("facts");
    env.seed
        .insert_rows(&facts, &original_rows())
        .await
        .unwrap();
    let fix = backfill_testkit::conformance::seed_table(&env, "facts_fix", &source_rows()).await;
    let expected =
        backfill_testkit::conformance::seed_table(&env, "expected", &expected_replace()).await;
    let original = w.checksum(&facts, &Predicate::All).await.unwrap();
    let before = partition_oids(&w).await;
    assert_eq!(before.len(), 10);

    let job = backfill_testkit::conformance::job_on(
        &env,
        backfill_testkit::conformance::Pattern::Overwrite,
        "partswap",
        Source::Table(fix),
    );
    let runner = Runner::new(env.warehouse.clone(), env.ledger.clone());
    let report = runner.run(&job).await.unwrap();
    assert_eq!(report.batches_done, 5);
    assert_eq!(
        w.checksum(&facts, &Predicate::All).await.unwrap(),
        w.checksum(&expected, &Predicate::All).await.unwrap()
    );
    let after = partition_oids(&w).await;
    let swapped: Vec<bool> = before
        .iter()
        .zip(&after)
        .map(|((n0, o0), (n1, o1))| {
            assert_eq!(n0, n1, "partitions keep their names");
            o0 != o1
        })
        .collect();
    // Days 2..7 are in scope: exactly their partitions are new.
    let in_scope: Vec<bool> = (0..10).map(|d| (2..7).contains(&d)).collect();
    assert_eq!(swapped, in_scope);
    // The parent's index covers the new partitions too.
    use backfill_core::engine::SqlRead;
    let idx = w
        .read(vec![backfill_core::sql::Sql {
            text: "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent \
                   WHERE c.relname = 'facts_id'"
                .into(),
            params: vec![],
        }])
        .await
        .unwrap();
    assert_eq!(idx[0][0][0], Value::Int(10));

    runner.rollback(&job).await.unwrap();
    assert_eq!(w.checksum(&facts, &Predicate::All).await.unwrap(), original);
}

/// A refresh's SQL runs as written: a materialized view is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_refreshes_a_materialized_view() {
    let Some((w, facts, _)) = setup("execute_refreshes_a_materialized_view").await else {
        return;
    };
    w.execute("CREATE MATERIALIZED VIEW facts_count AS SELECT count(*) AS n FROM facts")
        .await
        .unwrap();
    w.execute("DELETE FROM facts WHERE id <= 4").await.unwrap();
    w.execute("REFRESH MATERIALIZED VIEW facts_count")
        .await
        .unwrap();
    let n = backfill_core::ask::metric(
        &w,
        backfill_core::inspect::Rows::all(tr("facts_count")),
        backfill_core::inspect::Metric {
            name: "n".into(),
            aggregate: backfill_core::inspect::Aggregate::Sum(id("n")),
            by: vec![],
        },
    )
    .await
    .unwrap();
    assert_eq!(n[0].value.to_string(), "36");
    assert_eq!(w.count(&facts, &Predicate::All).await.unwrap(), 36);
}
