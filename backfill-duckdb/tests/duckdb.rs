//! Integration tests of the DuckDB adapter against a real DuckDB.
//!
//! What every adapter must do (the Warehouse contract, the ledger mirrored
//! against MemoryLedger, in-transaction ledger marks, end-to-end runs) is
//! the testkit's conformance suite, run here on a fresh in-memory database
//! per case with DuckDB's capabilities. This file adds only what is
//! DuckDB's own: its native types, file databases, and a timing.
//!
//! This is the crate's only integration test file (each test binary links
//! DuckDB); put new tests here.

use std::sync::Arc;

use backfill_core::engine::SqlWarehouse;
use backfill_core::ledger::Ledger;
use backfill_core::warehouse::{MergeWrite, Warehouse};
use backfill_core::Runner;
use backfill_core::{ColumnType, Ident, Predicate, RunId, Source, TableRef, Value};
use backfill_duckdb::DuckDb;
use backfill_duckdb::DuckDbWarehouse;
use backfill_testkit::conformance::end_to_end::{
    die_inside_first_batch, resume_takes_back_dead_batch, revived_job,
};
use backfill_testkit::conformance::writes::slice_write;
use backfill_testkit::conformance::{
    daily_plan, expected_replace, facts_schema, fast_options, ledger_record, original_rows,
    source_rows, Capabilities, Env,
};
use backfill_testkit::crash::{
    child_main, crash_resume_and_roll_back, every_point_resumes_at_once, seed_tables, CrashPoint,
    CrashRig, Crashing, CrashingPlan, CRASH_AT, CRASH_PATTERN,
};
use backfill_testkit::scratch::ScratchDir;

fn id(s: &str) -> Ident {
    Ident::new(s).unwrap()
}

fn tr(s: &str) -> TableRef {
    TableRef::parse(s).unwrap()
}

async fn seed(w: &DuckDbWarehouse, name: &str, rows: &[Vec<Value>]) -> TableRef {
    let t = tr(name);
    w.create_table(&t, &facts_schema()).await.unwrap();
    w.insert_rows(&t, rows).await.unwrap();
    t
}

// ---------------------------------------------------------------------------
// The conformance suite: a fresh in-memory database per case, with the
// ledger in the same database, so batch marks commit with the data.
// ---------------------------------------------------------------------------

/// DuckDB's capabilities: its ledger commits with the data, its views bind
/// tables by name (a view over a swapped target reads the new table), and
/// it runs SQL.
fn capabilities() -> Capabilities {
    Capabilities {
        ledger_in_data_tx: true,
        views_bind_by_name: true,
        runs_sql: true,
        views_of_views: true,
        finds_dependents: true,
        keeps_not_null: true,
    }
}

async fn conformance_env(_name: &str) -> Env {
    let w = DuckDbWarehouse::in_memory().unwrap();
    backfill_testkit::conformance::sql_env(
        Arc::new(w.clone()),
        &*w,
        None,
        "backfill",
        capabilities(),
    )
    .await
}

backfill_testkit::conformance_tests!(|name: &str| {
    let name = name.to_string();
    async move { Some(conformance_env(&name).await) }
});

/// The suite again with the ledger outside the database (in memory).
mod separate_ledger {
    use super::*;
    backfill_testkit::conformance_tests!(|name: &str| {
        let name = name.to_string();
        async move {
            Some(backfill_testkit::conformance::with_separate_ledger(
                conformance_env(&name).await,
            ))
        }
    });
}

// ---------------------------------------------------------------------------
// DuckDB's own
// ---------------------------------------------------------------------------

/// DuckDB's types map to column types, in a schema of their own (an
/// unqualified name is looked up in the current schema only); DECIMAL and
/// LIST values read back as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_types_map_and_read_back() {
    let w = DuckDbWarehouse::in_memory().unwrap();
    assert_eq!(w.engine(), "duckdb");
    w.execute_batch(
        "CREATE SCHEMA s; CREATE TABLE s.typed (b BOOLEAN, i INTEGER, h HUGEINT, f DOUBLE, r REAL, \
         n DECIMAL(10,2), t VARCHAR, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, j INTEGER[]); \
         CREATE TABLE lists (n DECIMAL(10,2), j INTEGER[]); INSERT INTO lists VALUES (2.25, [1, 2])",
    )
    .await
    .unwrap();
    let typed = w.describe(&tr("s.typed")).await.unwrap().unwrap();
    let tys: Vec<ColumnType> = typed.columns.iter().map(|c| c.ty).collect();
    use ColumnType::*;
    assert_eq!(
        tys,
        vec![Bool, Int, Int, Float, Float, Decimal, Text, Date, DateTime, Timestamp, Other]
    );
    assert_eq!(w.describe(&tr("typed")).await.unwrap(), None);
    let rows = w
        .sample_rows(&tr("lists"), &Predicate::All, &[], 10)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![
            Value::Text("2.25".into()),
            Value::Text("[1, 2]".into())
        ]]
    );
}

/// A file database keeps its ledger across opens; its catalog (named after
/// the file) finds tables; a user table named like the adapter's scratch
/// table is never touched; ledger tables are plain tables in the chosen
/// schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_database_keeps_the_ledger() {
    let dir = ScratchDir::new("duckdb");
    let path = dir.join("ledger.duckdb");
    let _ = std::fs::remove_file(&path);
    let p = daily_plan(tr("facts"));
    {
        let w = DuckDbWarehouse::open(&path).unwrap();
        let l = w.ledger("backfill").await.unwrap();
        l.begin_run(&ledger_record("kept", "fp"), &p.batches)
            .await
            .unwrap();
    }
    let w = DuckDbWarehouse::open(&path).unwrap();
    let facts = seed(&w, "facts", &original_rows()).await;
    assert_eq!(w.describe(&facts).await.unwrap(), Some(facts_schema()));
    let scratch = seed(&w, "__bf_slice", &original_rows()).await;
    let run = RunId::new("scratch").unwrap();
    let fix = seed(&w, "facts_fix", &source_rows()).await;
    let src = Source::Table(fix);
    let columns = facts_schema().names();
    w.overwrite_slice(&slice_write(
        &run,
        &p.batches[0],
        &facts,
        &src,
        &columns,
        None,
    ))
    .await
    .unwrap();
    assert_eq!(w.count(&scratch, &Predicate::All).await.unwrap(), 40);
    let l = w.default_ledger().await.unwrap();
    let recs = l.batches(&RunId::new("kept").unwrap()).await.unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[2].batch, p.batches[2]);
    assert_eq!(l.schema().as_str(), "backfill");
    let batches = l.table("batches").unwrap();
    assert_eq!(batches.to_string(), "backfill.batches");
    assert_eq!(w.count(&batches, &Predicate::All).await.unwrap(), 5);
    drop((w, l));
}

/// The appender (how a plan is recorded) writes inside the connection's
/// transaction: rolled back, nothing of it stays; committed, every row, with
/// the columns it was not given at their defaults. Values it would have to
/// cast from text (dates) are left to statements, with nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_inside_the_transaction() {
    use backfill_core::engine::Executor;
    let w = DuckDbWarehouse::in_memory().unwrap();
    let e = w.executor();
    let mut c = e.connect().await.unwrap();
    c.script("CREATE SCHEMA s; CREATE TABLE s.t (a BIGINT, b VARCHAR, c BIGINT DEFAULT 7)")
        .await
        .unwrap();
    drop(c);
    let t = tr("s.t");
    let rows = vec![
        vec![Value::Int(1), Value::Text("x".into())],
        vec![Value::Int(2), Value::Null],
    ];
    let mut tx = e.begin(None).await.unwrap();
    assert!(tx.append(&t, &["a", "b"], &rows).await.unwrap());
    tx.rollback().await.unwrap();
    drop(tx);
    assert_eq!(w.count(&t, &Predicate::All).await.unwrap(), 0);
    let mut tx = e.begin(None).await.unwrap();
    assert!(tx.append(&t, &["a", "b"], &rows).await.unwrap());
    let dated = vec![vec![
        Value::Int(3),
        Value::Date("2026-01-01".parse().unwrap()),
    ]];
    assert!(!tx.append(&t, &["a", "b"], &dated).await.unwrap());
    tx.commit().await.unwrap();
    drop(tx);
    let got = w
        .with_connection(|c| {
            c.prepare("SELECT a, coalesce(b, '-'), c FROM s.t ORDER BY a")?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<duckdb::Result<Vec<_>>>()
        })
        .await
        .unwrap();
    assert_eq!(got, vec![(1, "x".to_string(), 7), (2, "-".to_string(), 7)]);
}

/// A DuckDB copy is `CREATE TABLE AS` with its NOT NULLs: a primary key,
/// checks, defaults and indexes stay behind, so a staging swap would drop
/// them from the live table. Preflight names them and refuses before any
/// write; the same data in a table without them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_refuses_what_a_copy_would_not_carry() {
    let w = DuckDbWarehouse::in_memory().unwrap();
    w.execute_batch(
        "CREATE TABLE keyed (id BIGINT PRIMARY KEY, day DATE, amount BIGINT DEFAULT 0, \
         note VARCHAR CHECK (note <> ''))",
    )
    .await
    .unwrap();
    let keyed = tr("keyed");
    w.insert_rows(&keyed, &original_rows()).await.unwrap();
    let fix = seed(&w, "facts_fix", &source_rows()).await;
    let ledger: Arc<dyn Ledger> = Arc::new(w.ledger("backfill").await.unwrap());
    let runner = Runner::new(Arc::new(w.clone()), ledger.clone()).with_options(fast_options());
    let job_on = |target: TableRef, run: &str| {
        let plan = daily_plan(target);
        backfill_core::Backfill::new(
            RunId::new(run).unwrap(),
            backfill_testkit::conformance::brief(
                plan.scope.clone(),
                backfill_core::StrategySpec::StagingSwap,
            ),
            plan,
            Source::Table(fix.clone()),
        )
    };
    let before = w.checksum(&keyed, &Predicate::All).await.unwrap();
    let err = runner
        .run(&job_on(keyed.clone(), "keyed"))
        .await
        .expect_err("refused");
    let message = err.to_string();
    for named in ["primary key", "check", "default of amount"] {
        assert!(message.contains(named), "names the {named}: {message}");
    }
    assert!(matches!(err, backfill_core::Error::Preflight(_)), "{err:?}");
    assert_eq!(w.checksum(&keyed, &Predicate::All).await.unwrap(), before);

    let plain = seed(&w, "plain", &original_rows()).await;
    runner.run(&job_on(plain, "plain")).await.expect("runs");
}

/// DuckDB's setting `checkpoint_threshold`, as it reads back.
async fn checkpoint_threshold(w: &DuckDbWarehouse) -> String {
    use backfill_core::engine::SqlRead;
    let d = w.dialect().unwrap();
    let rows = w
        .read(vec![backfill_core::sql::stmt::current_setting(
            d,
            "checkpoint_threshold",
        )])
        .await
        .unwrap();
    match &rows[0][0][0] {
        Value::Text(s) => s.clone(),
        other => panic!("setting read as {other:?}"),
    }
}

/// Reads the checkpoint setting when a run starts writing.
struct SettingProbe(DuckDbWarehouse, std::sync::Mutex<Vec<String>>);

#[async_trait::async_trait]
impl backfill_core::runner::MaintenanceHook for SettingProbe {
    async fn mark(&self, _: &RunId, _: &[String], under: bool) -> backfill_core::Result<()> {
        if under {
            let seen = checkpoint_threshold(&self.0).await;
            self.1.lock().unwrap().push(seen);
        }
        Ok(())
    }
}

/// A run that commits every batch on its own defers DuckDB's automatic
/// checkpoints while it writes (a day a commit would otherwise checkpoint
/// every few batches), and puts the default back however the run ends:
/// completed, or failed on its third batch. A threshold the user set is
/// left exactly as it is, and so is the default under a run in commit
/// groups, whose few commits cost less with the engine's own checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_defer_checkpoints_and_restore_the_setting() {
    use backfill_testkit::{FaultPoint, Faulty};
    let w = DuckDbWarehouse::in_memory().unwrap();
    let users = checkpoint_threshold(&w).await;
    let facts = seed(&w, "facts", &original_rows()).await;
    let fix = seed(&w, "facts_fix", &source_rows()).await;
    let ledger: Arc<dyn Ledger> = Arc::new(w.ledger("backfill").await.unwrap());
    let probe = Arc::new(SettingProbe(w.clone(), std::sync::Mutex::new(Vec::new())));
    let job = |run: &str| {
        let plan = daily_plan(facts.clone());
        backfill_core::Backfill::new(
            RunId::new(run).unwrap(),
            backfill_testkit::conformance::brief(
                plan.scope.clone(),
                backfill_core::StrategySpec::PartitionOverwrite,
            ),
            plan,
            Source::Table(fix.clone()),
        )
    };
    let per_batch = backfill_core::RunOptions {
        max_group: 1,
        ..fast_options()
    };
    Runner::new(Arc::new(w.clone()), ledger.clone())
        .with_options(per_batch.clone())
        .with_maintenance(probe.clone())
        .run(&job("deferred"))
        .await
        .unwrap();
    let seen = probe.1.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_ne!(seen[0], users, "deferred while the run wrote");
    assert_eq!(checkpoint_threshold(&w).await, users, "put back");

    Runner::new(Arc::new(w.clone()), ledger.clone())
        .with_options(fast_options())
        .with_maintenance(probe.clone())
        .run(&job("grouped"))
        .await
        .unwrap();
    assert_eq!(
        probe.1.lock().unwrap().last(),
        Some(&users),
        "a run in groups leaves the engine's checkpoints alone"
    );

    let faulty = Arc::new(Faulty::new(Arc::new(w.clone()) as Arc<dyn Warehouse>));
    faulty.fail_nth(FaultPoint::BeforeWrite, 3);
    Runner::new(faulty, ledger.clone())
        .with_options(per_batch.clone())
        .run(&job("failing"))
        .await
        .expect_err("the third batch fails");
    assert_eq!(
        checkpoint_threshold(&w).await,
        users,
        "put back after a failure"
    );
    Runner::new(Arc::new(w.clone()), ledger.clone())
        .rollback(&job("failing"))
        .await
        .unwrap();

    // The user's own threshold is theirs.
    w.execute_batch("SET checkpoint_threshold = '7MB'")
        .await
        .unwrap();
    let theirs = checkpoint_threshold(&w).await;
    Runner::new(Arc::new(w.clone()), ledger)
        .with_options(per_batch)
        .with_maintenance(probe.clone())
        .run(&job("theirs"))
        .await
        .unwrap();
    assert_eq!(probe.1.lock().unwrap().last(), Some(&theirs), "untouched");
    assert_eq!(checkpoint_threshold(&w).await, theirs);
}

/// A process that dies inside a batch leaves it `running` under an
/// hour-long lease. One process writes a DuckDB file at a time, so the
/// next process to open the file knows the holder is dead and takes the
/// batch back at once: a plain rerun completes without waiting for the
/// lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_processes_batch_is_taken_back_at_once() {
    let dir = ScratchDir::new("duckdb-dead");
    let path = dir.join("dead.duckdb");
    let _ = std::fs::remove_file(&path);
    let job = revived_job("revived");
    let (batch, first) = {
        let w = DuckDbWarehouse::open(&path).unwrap();
        seed(&w, "facts", &original_rows()).await;
        seed(&w, "facts_fix", &source_rows()).await;
        seed(&w, "facts_expected", &expected_replace()).await;
        let l = w.ledger("backfill").await.unwrap();
        let batch = die_inside_first_batch(&l, &job).await;
        (batch, l.instance().to_string())
        // The process ends here: its connection is closed.
    };
    let w = DuckDbWarehouse::open(&path).unwrap();
    let l = w.ledger("backfill").await.unwrap();
    assert_ne!(l.instance(), first);
    let runner = Runner::new(Arc::new(w.clone()), Arc::new(l)).with_options(fast_options());
    resume_takes_back_dead_batch(&runner, &w, &job, &batch, &tr("facts_expected")).await;
    drop((w, runner));
}

// ---------------------------------------------------------------------------
// Real crashes: this binary runs itself as a child that kills itself at a
// named point; the parent resumes in a fresh "process" (a fresh open of
// the file).
// ---------------------------------------------------------------------------

/// A database file of its own for each crash case, in a directory of its
/// own that the parent removes when the case passes (the child only
/// borrows the path).
struct DuckRig {
    path: std::path::PathBuf,
    _dir: Option<ScratchDir>,
}

const CRASH_DB: &str = "BACKFILL_CRASH_DB";

impl DuckRig {
    /// A ledger in a database file of its own beside the data's.
    async fn ledger_apart(&self) -> Arc<dyn Ledger> {
        let other = DuckDbWarehouse::open(self.path.with_extension("ledger.duckdb")).unwrap();
        Arc::new(other.ledger("backfill").await.unwrap())
    }

    fn new(case: &str) -> Self {
        let dir = ScratchDir::new(&format!("crash-{case}"));
        DuckRig {
            path: dir.join(format!("{case}.duckdb")),
            _dir: Some(dir),
        }
    }
}

#[async_trait::async_trait]
impl CrashRig for DuckRig {
    async fn seed(&self) -> backfill_core::Result<()> {
        for f in [
            self.path.clone(),
            self.path.with_extension("duckdb.wal"),
            self.path.with_extension("ledger.duckdb"),
            self.path.with_extension("ledger.duckdb.wal"),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let w = DuckDbWarehouse::open(&self.path)?;
        seed_tables(&*w).await
    }

    async fn child(&self, plan: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let conn = backfill_duckdb::duckdb::Connection::open(&self.path).unwrap();
        let w = SqlWarehouse::new(Crashing::new(DuckDb::new(conn), plan));
        let l = w.ledger("backfill").await.unwrap();
        (Arc::new(w), Arc::new(l))
    }

    async fn parent(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let w = DuckDbWarehouse::open(&self.path).unwrap();
        let l = w.ledger("backfill").await.unwrap();
        (Arc::new(w), Arc::new(l))
    }

    async fn child_apart(&self, plan: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let (w, _) = self.child(plan).await;
        (w, self.ledger_apart().await)
    }

    async fn parent_apart(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>) {
        let w = DuckDbWarehouse::open(&self.path).unwrap();
        (Arc::new(w), self.ledger_apart().await)
    }

    fn spawn_child(&self, point: CrashPoint, pattern: &str) -> std::process::ExitStatus {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CRASH_AT, point.name())
            .env(CRASH_PATTERN, pattern)
            .env(CRASH_DB, &self.path)
            .status()
            .unwrap()
    }
}

/// The child of the crash cases: runs the backfill until its point kills
/// it (nothing without the point set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the crash cases"]
async fn crash_child() {
    if let Ok(path) = std::env::var(CRASH_DB) {
        let rig = DuckRig {
            path: path.into(),
            _dir: None,
        };
        child_main(&rig).await;
    }
}

/// A process killed with SIGKILL at every crash point (before a write,
/// inside a write's transaction, after the data's commit with the ledger
/// in another file, while staging, inside a staged write, during the
/// end-of-run checks, inside the cut-over) and in every write pattern: one
/// plain rerun in a fresh process completes at once
/// (the dead holder's batch is taken back, not waited for), and the table
/// equals a clean run's, with no duplicate key and no missing batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_processes_resume_at_once() {
    every_point_resumes_at_once(DuckRig::new).await;
}

/// Crash inside a write, resume, then roll back: the table is exactly the
/// original again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_resume_then_rollback_restores_the_original() {
    let rig = DuckRig::new("rollback");
    crash_resume_and_roll_back(&rig, CrashPoint::InsideWriteTx).await;
    let _ = std::fs::remove_file(&rig.path);
}

/// A rough timing of one 100k-row batch (overwrite with pre-image, then a
/// merge) on a 1M-row table: `cargo test -p backfill-duckdb --test duckdb
/// -- --ignored --nocapture timing` (about 0.1 s and 0.2 s with the dev
/// profile, DuckDB itself built at opt-level 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timing_of_one_large_batch() {
    let w = DuckDbWarehouse::in_memory().unwrap();
    w.execute_batch(
        "CREATE TABLE facts AS SELECT i AS id, DATE '2026-03-01' + CAST(i % 10 AS INTEGER) AS day, \
         i * 10 AS amount, 'original' AS note FROM range(1000000) t(i); \
         CREATE TABLE facts_fix AS SELECT id, day, amount + 1 AS amount, 'fixed' AS note FROM facts",
    )
    .await
    .unwrap();
    let facts = tr("facts");
    let p = daily_plan(facts.clone());
    let run = RunId::new("timing").unwrap();
    let columns = facts_schema().names();
    let pre = tr("facts_pre");
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .unwrap();
    let src = Source::Table(tr("facts_fix"));
    let write = |b| slice_write(&run, b, &facts, &src, &columns, Some(&pre));
    let t = std::time::Instant::now();
    let out = w.overwrite_slice(&write(&p.batches[0])).await.unwrap();
    println!("overwrite {out:?} in {:?}", t.elapsed());
    let log = tr("facts_keys");
    w.create_snapshot_table(&facts, &[id("id")], &log)
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let keys = [id("id")];
    let merge = MergeWrite {
        slice: write(&p.batches[1]),
        keys: &keys,
        key_log: Some(&log),
        scope: None,
    };
    let out = w.merge_slice(&merge).await.unwrap();
    println!("merge {out:?} in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let c = w.checksum(&facts, &Predicate::All).await.unwrap();
    println!("checksum {c:?} in {:?}", t.elapsed());
}
