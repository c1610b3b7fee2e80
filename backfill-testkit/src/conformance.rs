//! The adapter conformance suite.
//!
//! What every adapter must do is written once, here, as public async
//! functions over an [`Env`]; the fake, DuckDB and Postgres each run all of
//! them with one [`conformance_tests!`](crate::conformance_tests) call, the
//! way arrow-rs `object_store` shares its integration tests across
//! backends. Spark, whose writes are not built yet, runs the read cases
//! alone with [`conformance_read_tests!`](crate::conformance_read_tests).
//!
//! Where engines really differ, the env says so in its [`Capabilities`],
//! as OpenDAL's behaviour tests do: a case, or the part of one, that an
//! engine cannot run is gated by the flag that says why ([`Env::gate`]),
//! never skipped silently, and where an engine-specific assertion differs
//! between engines, the flag picks it.
//!
//! Most cases seed a small `facts` table (40 rows over ten days), run a
//! daily backfill over five of those days from a corrected source, and
//! compare order-independent checksums against an expected table seeded
//! beside it. The cases by subject:
//!
//! - this module: the write patterns end to end (expected table, rerun,
//!   crash and resume, rollback, guard, pause, cancel, retries, bad input);
//! - [`catalog`]: describing relations and sources, counts, checksums,
//!   typed samples, key boundaries and key reports;
//! - [`writes`]: each warehouse write on its own (overwrite, merge,
//!   restore, copies, swaps, views, staging, user SQL) and ledger marks in
//!   the data's transaction;
//! - [`ledger`]: the ledger against the in-memory one, refusals, fencing;
//! - [`end_to_end`]: runs through the runner with the env's own ledger;
//! - [`exactness`]: configurations that could lose data are refused, and
//!   nothing of an unfinished run is thrown away;
//! - [`validation`], [`inspect`], [`blast`], [`cleanup`]: checks,
//!   inspection, blast radius, cleanup.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backfill_core::engine::{Executor, SqlWarehouse};
use backfill_core::ledger::{AssetKind, BatchState, Clock, Ledger, RunStatus};
use backfill_core::runner::{Backfill, Event, RetryPolicy, RunOptions, Runner};
use backfill_core::warehouse::{Checksum, Warehouse};
use backfill_core::{
    Bounds, Brief, CheckSpec, Column, ColumnType, Dependencies, Dependency, Error, Grain, Ident,
    Operations, Plan, Planner, Predicate, RiskClass, RollbackPlan, RunId, Scope, Source,
    StrategySpec, TableRef, TableSchema, ValidationPlan, Value,
};
use futures::future::BoxFuture;
use jiff::civil::{date, Date};

use crate::faults::{FaultPoint, Faulty};

pub mod blast;
pub mod catalog;
pub mod cleanup;
pub mod end_to_end;
pub mod exactness;
pub mod groups;
pub mod inspect;
pub mod ledger;
pub mod validation;
pub mod writes;
use crate::fixtures::Seed;

pub use ledger::{ledger_clock, ledger_mirrors_memory, ledger_record, ledger_script, ledger_t0};

/// Makes a bounded query source over `table` on `column`, binding
/// `{start}` and `{end}`; with `leaky_end` the query wrongly includes the
/// end bound (`<=`), so it yields rows outside the batch.
pub type BoundedSourceFn = Arc<dyn Fn(&TableRef, &Ident, bool) -> Source + Send + Sync>;

/// Makes a ledger on a clock the case moves by hand, in the same place as
/// the env's [`ledger`](Env::ledger) (see [`Env::ledger_with_clock`]).
pub type ClockedLedgerFn =
    Arc<dyn Fn(Arc<dyn Clock>) -> BoxFuture<'static, Arc<dyn Ledger>> + Send + Sync>;

/// What an engine can do where engines differ: the flags that select the
/// cases, and the engine-specific parts of cases, it runs.
///
/// Everything else in the suite is required of every engine. A flag is
/// `false` by default (the engine lacks it, and the cases say so); an
/// adapter sets the ones its engine has:
///
/// ```
/// use backfill_testkit::conformance::Capabilities;
/// let engine = Capabilities {
///     ledger_in_data_tx: true,
///     ..Capabilities::default()
/// };
/// assert!(!engine.runs_sql);
/// ```
///
/// | engine | `ledger_in_data_tx` | `views_bind_by_name` | `runs_sql` | `keeps_not_null` |
/// | --- | --- | --- | --- | --- |
/// | the fake ([`fake_env`]) | no: its ledger is in memory | yes | no: it answers registered queries only | yes |
/// | DuckDB | yes | yes | yes | yes |
/// | PostgreSQL | yes | no: views bind by identity | yes | yes |
/// | Spark: Sail, Delta tables (read cases) | no: its ledger is elsewhere | yes | yes | yes |
/// | Spark: Apache Spark, parquet tables (read cases) | no | yes | yes | no |
///
/// A case checks a flag where it can (an engine that says it has no
/// in-transaction ledger must hand out no marks), so a wrong flag fails
/// rather than hides a case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The ledger lives in the engine, and a batch's write marks its batch
    /// `written` in the same transaction as the data
    /// ([`Ledger::tx_mark`]): a crash after the write leaves the batch
    /// written, and a worker whose lease was taken over has its write
    /// rolled back with its mark. An in-memory ledger (the fake's) cannot
    /// share a transaction with the data: the runner marks the batch
    /// after the write.
    pub ledger_in_data_tx: bool,
    /// Views bind the tables they read by name, when they are queried:
    /// after [`Warehouse::swap`], a view over the target reads the new
    /// table (DuckDB, and the fake, whose views name what they read).
    /// Without it, views bind by identity (PostgreSQL): the view keeps
    /// reading the old table under its new name.
    pub views_bind_by_name: bool,
    /// The engine runs SQL text: query sources of any shape (a
    /// [`Source::Query`] reading the table being written, say), statements
    /// given to [`Warehouse::execute`], and errors that name the missing
    /// relation. An engine without it (the fake) answers only the queries
    /// registered with it and runs no statements; it has no SQL dialect.
    pub runs_sql: bool,
    /// A view may be pointed at another view: the engine refuses a view
    /// that would read itself. Sail does not (it overflows its stack
    /// reading one), so on Spark a view is only pointed at a table.
    pub views_of_views: bool,
    /// The engine's catalog says which views read a table, for the blast
    /// radius. Spark's catalog does not.
    pub finds_dependents: bool,
    /// Tables keep `NOT NULL` on their columns. Parquet tables on Apache
    /// Spark do not: a file source's columns are all nullable.
    pub keeps_not_null: bool,
}

/// One fresh, isolated place to run a conformance case.
#[derive(Clone)]
pub struct Env {
    /// The engine under test.
    pub warehouse: Arc<dyn Warehouse>,
    /// The ledger the engine uses (in the engine, or in memory).
    pub ledger: Arc<dyn Ledger>,
    /// Loads test data into the engine.
    pub seed: Arc<dyn Seed>,
    /// The schema tables live in, if the engine isolates cases by schema.
    pub schema: Option<Ident>,
    /// Makes bounded query sources for this engine.
    pub bounded_source: BoundedSourceFn,
    /// Makes a ledger on a clock the case moves by hand (see
    /// [`Env::ledger_with_clock`]).
    pub clocked_ledger: ClockedLedgerFn,
    /// What the engine can do where engines differ.
    pub capabilities: Capabilities,
    /// The ledger's table of batches, where the ledger is SQL tables in
    /// the engine, for cases that edit the ledger by hand as a careless
    /// operator might (None for a ledger in memory).
    pub ledger_batches: Option<TableRef>,
}

impl Env {
    /// A ledger on `clock`, in the same place as [`Env::ledger`] (for a SQL
    /// engine, on the same tables, so its marks commit with the data), for
    /// cases that move time by hand. A case uses it instead of
    /// [`Env::ledger`], never beside it.
    pub async fn ledger_with_clock(&self, clock: Arc<dyn Clock>) -> Arc<dyn Ledger> {
        (self.clocked_ledger)(clock).await
    }

    /// Whether the engine writes `pattern`. When it refuses it
    /// ([`Warehouse::refuses`], which
    /// preflight enforces), this says so on stderr with the engine's
    /// reason, and the case is not run.
    pub fn writes(&self, pattern: Pattern) -> bool {
        match self.warehouse.refuses(&pattern.spec(self)) {
            None => true,
            Some(why) => {
                eprintln!(
                    "conformance: {} refuses the {pattern:?} pattern, so this is not run: {why}",
                    self.warehouse.engine()
                );
                false
            }
        }
    }

    /// `has`, the [`Capabilities`] flag named `flag` that `part` of a case
    /// needs. When the engine lacks it, this says so on stderr (the engine,
    /// the flag and the part not run), so nothing is skipped silently; the
    /// flag's documentation says why an engine may lack it.
    pub fn gate(&self, has: bool, flag: &str, part: &str) -> bool {
        if !has {
            eprintln!(
                "conformance: {} lacks `{flag}`, so this is not run: {part}",
                self.warehouse.engine()
            );
        }
        has
    }
}

/// A fresh env on the [`FakeWarehouse`](crate::FakeWarehouse) with an
/// in-memory ledger. Its capabilities: views bind by name (a fake view
/// names what it reads); no SQL (it answers the queries registered with
/// it, which its bounded sources are); no ledger in the data's
/// transaction (the ledger is a [`MemoryLedger`](backfill_core::MemoryLedger)).
pub fn fake_env() -> Env {
    fake_env_on(crate::FakeWarehouse::new())
}

/// An env on the given fake, with an in-memory ledger.
pub fn fake_env_on(fake: crate::FakeWarehouse) -> Env {
    let reader = fake.clone();
    let registry = fake.clone();
    let bounded: BoundedSourceFn =
        Arc::new(move |table: &TableRef, column: &Ident, leaky_end: bool| {
            let source = sql_bounded_source(table, column, leaky_end);
            let Source::Query(sql) = &source else {
                return source;
            };
            let (reader, table, column) = (reader.clone(), table.clone(), column.clone());
            let schema = facts_schema();
            let position = schema
                .columns
                .iter()
                .position(|c| c.name == column)
                .unwrap_or(0);
            registry.register_query(sql, schema, move |start, end| {
                let within = |v: &Value| {
                    let lower = start.is_none_or(|s| v.compare(s).is_some_and(|o| o.is_ge()));
                    let upper = end.is_none_or(|e| {
                        v.compare(e)
                            .is_some_and(|o| if leaky_end { o.is_le() } else { o.is_lt() })
                    });
                    lower && upper
                };
                reader
                    .rows(&table)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| within(&r[position]))
                    .collect()
            });
            source
        });
    Env {
        warehouse: Arc::new(fake.clone()),
        ledger: Arc::new(backfill_core::MemoryLedger::new()),
        seed: Arc::new(fake),
        schema: None,
        bounded_source: bounded,
        clocked_ledger: Arc::new(|clock| {
            let ledger: Arc<dyn Ledger> = Arc::new(backfill_core::MemoryLedger::with_clock(clock));
            Box::pin(async move { ledger })
        }),
        capabilities: Capabilities {
            views_bind_by_name: true,
            views_of_views: true,
            finds_dependents: true,
            keeps_not_null: true,
            ..Capabilities::default()
        },
        ledger_batches: None,
    }
}

/// `env` with its ledger moved out of the engine, into memory: the same
/// engine, with every batch marked after its write rather than in its
/// transaction. Adapters run the suite this way too, so that both
/// placements of the ledger meet the contract.
pub fn with_separate_ledger(env: Env) -> Env {
    Env {
        ledger: Arc::new(backfill_core::MemoryLedger::new()),
        clocked_ledger: Arc::new(|clock| {
            let ledger: Arc<dyn Ledger> = Arc::new(backfill_core::MemoryLedger::with_clock(clock));
            Box::pin(async move { ledger })
        }),
        capabilities: Capabilities {
            ledger_in_data_tx: false,
            ..env.capabilities
        },
        ledger_batches: None,
        ..env
    }
}

/// An env on a SQL engine built on [`SqlWarehouse`]: `warehouse` is the
/// adapter as its users hold it, `sql` the SQL warehouse inside it, which
/// seeds the case's tables and makes its ledgers in `ledger_schema` of the
/// same database (so batch marks commit with the data); the case's tables
/// live in `schema`, if given. Sources are [`sql_bounded_source`]s.
pub async fn sql_env<E: Executor>(
    warehouse: Arc<dyn Warehouse>,
    sql: &SqlWarehouse<E>,
    schema: Option<Ident>,
    ledger_schema: &str,
    capabilities: Capabilities,
) -> Env {
    let ledger = sql.ledger(ledger_schema).await.expect("ledger");
    let batches = ledger.table("batches").expect("the ledger's batches");
    let (maker, home) = (sql.clone(), ledger_schema.to_string());
    Env {
        ledger_batches: Some(batches),
        warehouse,
        ledger: Arc::new(ledger),
        seed: Arc::new(sql.clone()),
        schema,
        bounded_source: Arc::new(sql_bounded_source),
        clocked_ledger: Arc::new(move |clock| {
            let (sql, home) = (maker.clone(), home.clone());
            Box::pin(async move {
                let ledger = sql.ledger_with_clock(&home, clock).await.expect("ledger");
                Arc::new(ledger) as Arc<dyn Ledger>
            })
        }),
        capabilities,
    }
}

/// A SQL warehouse seeds through its own DDL and bound inserts.
#[async_trait::async_trait]
impl<E: Executor> Seed for SqlWarehouse<E> {
    async fn create_table(
        &self,
        table: &TableRef,
        schema: &TableSchema,
    ) -> backfill_core::Result<()> {
        SqlWarehouse::create_table(self, table, schema).await
    }

    async fn insert_rows(
        &self,
        table: &TableRef,
        rows: &[Vec<Value>],
    ) -> backfill_core::Result<()> {
        SqlWarehouse::insert_rows(self, table, rows).await
    }

    async fn create_view(&self, view: &TableRef, table: &TableRef) -> backfill_core::Result<()> {
        SqlWarehouse::create_view(self, view, table).await
    }
}

/// A table's name quoted for SQL written by hand (double quotes, as
/// DuckDB and PostgreSQL quote).
pub fn quoted(table: &TableRef) -> String {
    match &table.schema {
        Some(s) => format!("\"{s}\".\"{}\"", table.name),
        None => format!("\"{}\"", table.name),
    }
}

/// A bounded SQL query for SQL engines.
pub fn sql_bounded_source(table: &TableRef, column: &Ident, leaky_end: bool) -> Source {
    let t = quoted(table);
    let op = if leaky_end { "<=" } else { "<" };
    Source::query(format!(
        "SELECT * FROM {t} WHERE \"{column}\" >= {{start}} AND \"{column}\" {op} {{end}}"
    ))
}

/// The write patterns, as conformance cases name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Partition overwrite.
    Overwrite,
    /// Staging then swap.
    Staging,
    /// Merge by key.
    Merge,
    /// Parallel version behind a view.
    Parallel,
}

impl Pattern {
    fn spec(self, env: &Env) -> StrategySpec {
        match self {
            Pattern::Overwrite => StrategySpec::PartitionOverwrite,
            Pattern::Staging => StrategySpec::StagingSwap,
            Pattern::Merge => StrategySpec::Merge {
                keys: vec![ident("id")],
            },
            Pattern::Parallel => StrategySpec::ParallelVersion {
                view: env.table("facts_view"),
            },
        }
    }
}

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("valid identifier")
}

impl Env {
    /// `table` quoted as the engine's SQL quotes it (double quotes where
    /// the engine has no dialect).
    pub fn quote_table(&self, table: &TableRef) -> String {
        match self.warehouse.dialect() {
            Some(d) => {
                let mut b = backfill_core::sql::SqlBuilder::new(d);
                b.table(table);
                b.text().to_string()
            }
            None => quoted(table),
        }
    }

    /// A column name quoted as the engine's SQL quotes it.
    pub fn quote_ident(&self, name: &str) -> String {
        let id = ident(name);
        match self.warehouse.dialect() {
            Some(d) => {
                let mut b = backfill_core::sql::SqlBuilder::new(d);
                b.ident(&id);
                b.text().to_string()
            }
            None => format!("\"{id}\""),
        }
    }

    /// A table in this env's schema.
    pub fn table(&self, name: &str) -> TableRef {
        TableRef {
            schema: self.schema.clone(),
            name: ident(name),
        }
    }
}

const FIRST_DAY: (i16, i8, i8) = (2026, 3, 1);
const DAYS: i8 = 10;
const ROWS_PER_DAY: i64 = 4;

/// Day `n` of the cases' history: 2026-03-01 plus `n` days (`n` from 0
/// to 9).
pub fn day(n: i8) -> Date {
    date(FIRST_DAY.0, FIRST_DAY.1, FIRST_DAY.2 + n)
}

/// The `facts` table of the conformance cases: `id` (not null), `day`,
/// `amount`, `note`.
pub fn facts_schema() -> TableSchema {
    TableSchema {
        columns: vec![
            Column::new(ident("id"), ColumnType::Int).not_null(),
            Column::new(ident("day"), ColumnType::Date),
            Column::new(ident("amount"), ColumnType::Int),
            Column::new(ident("note"), ColumnType::Text),
        ],
    }
}

/// A `facts` row: `id`, `day`, `amount`, `note`.
pub fn row(id: i64, d: Date, amount: i64, note: &str) -> Vec<Value> {
    vec![
        Value::Int(id),
        Value::Date(d),
        Value::Int(amount),
        Value::Text(note.into()),
    ]
}

/// The original history: 4 rows a day for 10 days.
pub fn original_rows() -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for d in 0..DAYS {
        for k in 0..ROWS_PER_DAY {
            let id = i64::from(d) * ROWS_PER_DAY + k + 1;
            rows.push(row(id, day(d), id * 10, "original"));
        }
    }
    rows
}

/// The scope: days 2..7 (five days), half-open.
fn scope_days() -> (Date, Date) {
    (day(2), day(7))
}

fn in_scope(d: &Date) -> bool {
    let (s, e) = scope_days();
    *d >= s && *d < e
}

/// The corrected source: amounts fixed on every day (in and out of scope),
/// one row dropped and one row added inside the scope.
pub fn source_rows() -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = original_rows()
        .into_iter()
        .filter(|r| r[0] != Value::Int(13))
        .map(|mut r| {
            let id = r[0].as_i64().unwrap_or(0);
            r[2] = Value::Int(id * 10 + 1);
            r[3] = Value::Text("fixed".into());
            r
        })
        .collect();
    rows.push(row(1000, day(4), 5, "added"));
    rows
}

fn day_of(r: &[Value]) -> Date {
    match &r[1] {
        Value::Date(d) => *d,
        _ => day(0),
    }
}

/// What partition overwrite, staging and parallel version must produce.
pub fn expected_replace() -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = original_rows()
        .into_iter()
        .filter(|r| !in_scope(&day_of(r)))
        .collect();
    rows.extend(source_rows().into_iter().filter(|r| in_scope(&day_of(r))));
    rows
}

/// What merge must produce: keys in the source slice updated or inserted,
/// other rows untouched (a merge never deletes).
pub fn expected_merge() -> Vec<Vec<Value>> {
    let src: Vec<Vec<Value>> = source_rows()
        .into_iter()
        .filter(|r| in_scope(&day_of(r)))
        .collect();
    let mut rows: Vec<Vec<Value>> = original_rows()
        .into_iter()
        .map(|r| src.iter().find(|s| s[0] == r[0]).cloned().unwrap_or(r))
        .collect();
    for s in &src {
        if !rows.iter().any(|r| r[0] == s[0]) {
            rows.push(s.clone());
        }
    }
    rows
}

/// A complete brief for `scope` and `strategy`.
pub fn brief(scope: Scope, strategy: StrategySpec) -> Brief {
    Brief {
        title: "Fix amounts".into(),
        reason: "Amounts were computed without the correction.".into(),
        operator: "ada".into(),
        reviewer: "grace".into(),
        risk: RiskClass::MetricChangingRepair,
        scope,
        dependencies: Dependencies {
            direct: vec![Dependency::new("facts dashboard", "bi-team")],
            indirect: vec![],
            human: vec![Dependency::new("finance", "cfo-office")],
        },
        strategy,
        idempotency: "Each batch replaces its own slice in one transaction.".into(),
        validation: ValidationPlan {
            emptiness: Default::default(),
            drift: Default::default(),
            checks: vec![CheckSpec::Unique {
                keys: vec![ident("id")],
                blocking: true,
            }],
            description: "Keys stay unique.".into(),
        },
        rollback: RollbackPlan {
            description: "Restore pre-images with Runner::rollback.".into(),
            keep_pre_image: true,
            retention_days: 7,
            restore_point: None,
        },
        expected_impact: "Amounts in five days change by a few units.".into(),
        operations: Operations {
            rerun: "Rerun with the same run id; done batches are skipped.".into(),
            pause: "Pause at a batch boundary with the control handle.".into(),
            recovery: "Resume continues the stored plan; rollback restores.".into(),
        },
    }
}

/// A seeded case: tables, job and runner settings.
pub struct Case {
    /// The environment.
    pub env: Env,
    /// The target table.
    pub target: TableRef,
    /// The job.
    pub job: Backfill,
    /// The pattern.
    pub pattern: Pattern,
}

/// Creates table `name` with the `facts` schema in `env` and inserts
/// `rows`.
pub async fn seed_table(env: &Env, name: &str, rows: &[Vec<Value>]) -> TableRef {
    seed_table_as(env, name, &facts_schema(), rows).await
}

async fn seed_table_as(
    env: &Env,
    name: &str,
    schema: &TableSchema,
    rows: &[Vec<Value>],
) -> TableRef {
    let t = env.table(name);
    env.seed
        .create_table(&t, schema)
        .await
        .expect("create table");
    if !rows.is_empty() {
        env.seed.insert_rows(&t, rows).await.expect("insert rows");
    }
    t
}

/// Seeds `facts`, `facts_fix` and the parallel-version view, and builds
/// the job.
pub async fn setup(env: Env, pattern: Pattern, run: &str) -> Case {
    let target = seed_table(&env, "facts", &original_rows()).await;
    let fix = seed_table(&env, "facts_fix", &source_rows()).await;
    if pattern == Pattern::Parallel {
        env.seed
            .create_view(&env.table("facts_view"), &target)
            .await
            .expect("create view");
    }
    let job = job_on(&env, pattern, run, Source::Table(fix));
    Case {
        env,
        target,
        job,
        pattern,
    }
}

/// The case's job (daily windows over the five days in scope, a complete
/// brief for `pattern`) with run id `run`, reading `source`.
pub fn job_on(env: &Env, pattern: Pattern, run: &str, source: Source) -> Backfill {
    let plan = daily_plan(env.table("facts"));
    Backfill::new(
        RunId::new(run).expect("run id"),
        brief(plan.scope.clone(), pattern.spec(env)),
        plan,
        source,
    )
}

/// The cases' plan on `target`: daily windows (UTC) over the five days in
/// scope, 2026-03-03 to 2026-03-08, on column `day`.
pub fn daily_plan(target: TableRef) -> Plan {
    let (s, e) = scope_days();
    let scope = Scope::new(target, "day", Bounds::dates(s, e), "UTC").expect("scope");
    Plan::build(scope, Planner::Windows { grain: Grain::Day }).expect("plan")
}

/// The order-independent checksum of every row of `t`.
pub async fn checksum(env: &Env, t: &TableRef) -> Checksum {
    env.warehouse
        .checksum(t, &Predicate::All)
        .await
        .expect("checksum")
}

/// Runner options with millisecond backoff and throttle waits, for tests.
pub fn fast_options() -> RunOptions {
    RunOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
        },
        throttle_wait: Duration::from_millis(1),
        // The drift baseline is checked before every batch.
        drift_interval: Duration::ZERO,
        ..RunOptions::default()
    }
}

impl Case {
    /// A runner on the case's warehouse and ledger.
    pub fn runner(&self) -> Runner {
        Runner::new(self.env.warehouse.clone(), self.env.ledger.clone())
            .with_options(fast_options())
    }

    /// A runner on a fault-injecting wrapper of the warehouse.
    pub fn faulty_runner(&self) -> (Runner, Arc<Faulty<Arc<dyn Warehouse>>>) {
        let f = Arc::new(Faulty::new(self.env.warehouse.clone()));
        let r = Runner::new(f.clone(), self.env.ledger.clone()).with_options(fast_options());
        (r, f)
    }

    /// The table readers see (the view for parallel version).
    pub fn visible(&self) -> TableRef {
        match self.pattern {
            Pattern::Parallel => self.env.table("facts_view"),
            _ => self.target.clone(),
        }
    }

    /// Checksum of a table.
    pub async fn checksum(&self, t: &TableRef) -> Checksum {
        checksum(&self.env, t).await
    }

    /// Seeds a table with `rows` and returns its checksum.
    pub async fn checksum_of(&self, name: &str, rows: &[Vec<Value>]) -> Checksum {
        let t = seed_table(&self.env, name, rows).await;
        self.checksum(&t).await
    }

    /// The checksum the case must end with.
    pub async fn expected(&self) -> Checksum {
        let rows = if self.pattern == Pattern::Merge {
            expected_merge()
        } else {
            expected_replace()
        };
        self.checksum_of("facts_expected", &rows).await
    }

    /// Runs to completion and cuts over where the pattern needs it.
    pub async fn run_and_cut_over(&self, runner: &Runner) -> backfill_core::Result<()> {
        runner.run(&self.job).await?;
        approve_and_cut_over(runner, &self.job).await
    }

    async fn states(&self) -> Vec<BatchState> {
        self.env
            .ledger
            .batches(&self.job.run_id)
            .await
            .expect("batches")
            .iter()
            .map(|b| b.state)
            .collect()
    }
}

/// The reviewer approves (where the pattern needs an approval), then the
/// run is cut over.
pub async fn approve_and_cut_over(runner: &Runner, job: &Backfill) -> backfill_core::Result<()> {
    if job.brief.strategy.needs_cutover() {
        runner
            .approve(job, &job.brief.reviewer, "validation report read")
            .await?;
    }
    runner.cutover(job).await
}

/// A run gives the expected table.
pub async fn run_gives_expected_table(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "expected").await;
    let original = case.checksum(&case.target).await;
    let runner = case.runner();
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.batches_done, 5, "{report}");
    assert!(report.gaps.is_empty());
    if pattern.needs_cutover() {
        // Nothing is visible before cut-over.
        assert_eq!(
            case.checksum(&case.visible()).await,
            original,
            "visible before cut-over"
        );
    }
    approve_and_cut_over(&runner, &case.job)
        .await
        .expect("cutover");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
    if pattern == Pattern::Parallel {
        assert_eq!(
            case.checksum(&case.target).await,
            original,
            "old table untouched"
        );
    }
    if pattern == Pattern::Staging {
        let old = case.target.sibling("__bf_old_expected").expect("name");
        assert_eq!(case.checksum(&old).await, original, "old table kept");
    }
}

impl Pattern {
    fn needs_cutover(self) -> bool {
        matches!(self, Pattern::Staging | Pattern::Parallel)
    }
}

/// Re-running the same plan changes nothing and says so.
pub async fn rerun_changes_nothing(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "rerun").await;
    let runner = case.runner();
    case.run_and_cut_over(&runner).await.expect("first run");
    let after_first = case.checksum(&case.visible()).await;
    let again = runner.run(&case.job).await.expect("second run");
    assert!(again.nothing_to_do(), "second run did work: {again}");
    runner
        .cutover(&case.job)
        .await
        .expect("cut-over again is a no-op");
    assert_eq!(case.checksum(&case.visible()).await, after_first);
    if !pattern.needs_cutover() {
        // A new run over the same scope gives the same table (idempotent).
        let job2 = job_on(&case.env, pattern, "rerun_two", case.job.source.clone());
        runner.run(&job2).await.expect("new run");
        assert_eq!(case.checksum(&case.visible()).await, after_first);
    }
}

/// A crash at `point` on the third batch, then resume, gives the same
/// table as a clean run: no duplicates, no lost slice.
pub async fn crash_then_resume(env: Env, pattern: Pattern, point: FaultPoint) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "crash").await;
    let original = case.checksum(&case.visible()).await;
    let (runner, faults) = case.faulty_runner();
    match point {
        FaultPoint::BeforeWrite | FaultPoint::AfterWriteBeforeLedger => {
            faults.fail_nth(point, 3);
            let err = runner.run(&case.job).await.expect_err("crash");
            assert!(matches!(err, Error::InjectedFault(_)), "{err:?}");
            // With the ledger in the engine, the third batch's mark commits
            // with its data, so a crash after the write leaves it written.
            let third = &case.job.plan.batches[2].id;
            let in_tx = case.env.capabilities.ledger_in_data_tx;
            let mark = case.env.ledger.tx_mark(&case.job.run_id, third, 0);
            assert_eq!(mark.is_some(), in_tx, "ledger_in_data_tx: {mark:?}");
            let landed = usize::from(in_tx && point == FaultPoint::AfterWriteBeforeLedger);
            let states = case.states().await;
            assert_eq!(
                states.iter().filter(|s| s.is_done()).count(),
                2 + landed,
                "{states:?}"
            );
            assert!(
                !states.contains(&BatchState::Running),
                "no batch left running: {states:?}"
            );
            // A fresh process resumes from the ledger.
            let resumed = case.runner();
            let report = resumed.run(&case.job).await.expect("resume");
            assert_eq!(report.batches_this_run, 3 - landed, "{report}");
            approve_and_cut_over(&resumed, &case.job)
                .await
                .expect("cutover");
        }
        FaultPoint::DuringSwap | FaultPoint::DuringCutover => {
            faults.fail_once(point);
            runner.run(&case.job).await.expect("run");
            let err = approve_and_cut_over(&runner, &case.job).await;
            let fires = matches!(
                (pattern, point),
                (Pattern::Staging, FaultPoint::DuringSwap)
                    | (Pattern::Parallel, FaultPoint::DuringCutover)
            );
            if fires {
                assert!(matches!(err, Err(Error::InjectedFault(_))), "{err:?}");
                assert_eq!(
                    case.checksum(&case.visible()).await,
                    original,
                    "failed cut-over exposed nothing"
                );
                approve_and_cut_over(&case.runner(), &case.job)
                    .await
                    .expect("cut-over retried");
            } else {
                err.expect("cut-over");
            }
        }
        FaultPoint::AfterCutoverBeforeLedger => {
            // The cut-over lands but its record does not: a second
            // cut-over finds it done and records it.
            faults.fail_once(point);
            runner.run(&case.job).await.expect("run");
            let err = approve_and_cut_over(&runner, &case.job).await;
            if pattern.needs_cutover() {
                assert!(matches!(err, Err(Error::InjectedFault(_))), "{err:?}");
                approve_and_cut_over(&case.runner(), &case.job)
                    .await
                    .expect("cut-over retried");
            } else {
                err.expect("cut-over");
            }
        }
        FaultPoint::DuringInspect => {
            faults.fail_once(point);
            // A check that cannot run loses nothing: the run finishes, or
            // stops with the batch not done and a resume completes it.
            if runner.run(&case.job).await.is_err() {
                case.runner().run(&case.job).await.expect("resume");
            }
            approve_and_cut_over(&case.runner(), &case.job)
                .await
                .expect("cut-over");
        }
    }
    let rows = case
        .env
        .warehouse
        .count(&case.visible(), &Predicate::All)
        .await
        .expect("count");
    let expected_rows = if pattern == Pattern::Merge {
        expected_merge().len()
    } else {
        expected_replace().len()
    };
    assert_eq!(rows as usize, expected_rows, "no duplicates, no lost slice");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
}

/// Rollback restores the exact prior state, after a full run and after a
/// run that crashed half-way (with data written but not recorded).
pub async fn rollback_restores(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "rollback").await;
    let original = case.checksum(&case.visible()).await;
    let runner = case.runner();
    case.run_and_cut_over(&runner).await.expect("run");
    assert_ne!(
        case.checksum(&case.visible()).await,
        original,
        "the run changed something"
    );
    runner.rollback(&case.job).await.expect("rollback");
    assert_eq!(
        case.checksum(&case.visible()).await,
        original,
        "exact prior state"
    );
    assert_eq!(
        case.env
            .ledger
            .run(&case.job.run_id)
            .await
            .expect("run")
            .status,
        RunStatus::RolledBack
    );
    // Rolling back twice is harmless.
    runner.rollback(&case.job).await.expect("second rollback");
    assert_eq!(case.checksum(&case.visible()).await, original);

    // A crashed run (write landed, ledger not updated) rolls back exactly.
    let job = job_on(
        &case.env,
        pattern,
        "rollback_crash",
        case.job.source.clone(),
    );
    let (frunner, faults) = case.faulty_runner();
    faults.fail_nth(FaultPoint::AfterWriteBeforeLedger, 2);
    let _ = frunner.run(&job).await.expect_err("crash");
    runner.rollback(&job).await.expect("rollback after crash");
    assert_eq!(
        case.checksum(&case.visible()).await,
        original,
        "exact prior state after crash"
    );
}

/// An in-place run whose brief names an outside restore point instead of
/// keeping pre-images writes the expected table without any pre-image;
/// rollback is then refused with the restore point named, and changes
/// nothing.
pub async fn restore_point_instead_of_pre_image(env: Env) {
    let mut case = setup(env, Pattern::Overwrite, "restore_point").await;
    let point = "PITR to 2026-03-08T00:00Z";
    case.job.brief.rollback.keep_pre_image = false;
    case.job.brief.rollback.restore_point = Some(point.into());
    let runner = case.runner();
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.batches_this_run, 5);
    assert!(
        report.assets.iter().all(|a| a.kind != AssetKind::PreImage),
        "{:?}",
        report.assets
    );
    let done = case.checksum(&case.target).await;
    assert_eq!(done, case.expected().await);
    let err = runner.rollback(&case.job).await.expect_err("no pre-image");
    assert!(
        matches!(&err, Error::NotAllowed(m) if m.contains(point)),
        "{err:?}"
    );
    assert_eq!(case.checksum(&case.target).await, done, "nothing restored");
}

/// A partition overwrite from the run's staged snapshot: every batch
/// moves its slice straight from the snapshot, writes the corrected rows,
/// keeps its pre-image, and rolls back to the original.
pub async fn overwrite_from_staged_source(env: Env) {
    let case = setup(env, Pattern::Overwrite, "staged_overwrite").await;
    let original = case.checksum(&case.target).await;
    let runner =
        Runner::new(case.env.warehouse.clone(), case.env.ledger.clone()).with_options(RunOptions {
            stage_source: true,
            ..fast_options()
        });
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.batches_this_run, 5);
    assert!(report
        .assets
        .iter()
        .any(|a| a.kind == AssetKind::StagedSource));
    assert_eq!(case.checksum(&case.target).await, case.expected().await);
    runner.rollback(&case.job).await.expect("rollback");
    assert_eq!(case.checksum(&case.target).await, original);
}

/// The guard rejects a source that yields rows outside the batch, with
/// nothing written.
pub async fn guard_rejects_out_of_bounds(env: Env) {
    let case = setup(env, Pattern::Overwrite, "guard").await;
    let original = case.checksum(&case.target).await;
    let fix = case.env.table("facts_fix");
    let leaky = (case.env.bounded_source)(&fix, &ident("day"), true);
    // Staged once (the default for a query), the source is refused before
    // any batch is claimed.
    let staged = job_on(&case.env, Pattern::Overwrite, "guard_staged", leaky.clone());
    let err = case.runner().run(&staged).await.expect_err("guard");
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err:?}");
    let states: Vec<BatchState> = case
        .env
        .ledger
        .batches(&staged.run_id)
        .await
        .expect("batches")
        .iter()
        .map(|b| b.state)
        .collect();
    assert!(
        states.iter().all(|s| *s == BatchState::Pending),
        "{states:?}"
    );
    // Read by each batch, the first batch fails with nothing written.
    let job = job_on(&case.env, Pattern::Overwrite, "guard", leaky);
    let per_batch =
        Runner::new(case.env.warehouse.clone(), case.env.ledger.clone()).with_options(RunOptions {
            stage_queries: false,
            ..fast_options()
        });
    let err = per_batch.run(&job).await.expect_err("guard");
    assert!(
        matches!(err, Error::OutOfBounds { rows, .. } if rows > 0),
        "{err:?}"
    );
    assert_eq!(
        case.checksum(&case.target).await,
        original,
        "nothing written"
    );
    let states = case.states().await;
    assert_eq!(states.first(), Some(&BatchState::Failed));

    // The failed run still holds the target; rolling it back releases it
    // and restores nothing, because nothing was written.
    case.runner()
        .rollback(&job)
        .await
        .expect("release the failed run");
    assert_eq!(
        case.checksum(&case.target).await,
        original,
        "nothing to restore"
    );

    // The same query with correct bounds passes the guard.
    let sound = (case.env.bounded_source)(&fix, &ident("day"), false);
    let job = job_on(&case.env, Pattern::Overwrite, "guard_ok", sound);
    case.runner().run(&job).await.expect("sound bounded query");
    assert_eq!(case.checksum(&case.target).await, case.expected().await);
}

/// Merge refuses null and duplicate source keys, with nothing written.
pub async fn merge_refuses_bad_keys(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
    let case = setup(env, Pattern::Merge, "nullkey").await;
    let original = case.checksum(&case.target).await;
    let mut with_null = source_rows();
    with_null.push(vec![
        Value::Null,
        Value::Date(day(2)),
        Value::Int(1),
        Value::Text("null key".into()),
    ]);
    let mut nullable = facts_schema();
    nullable.columns[0].nullable = true;
    let nulls = seed_table_as(&case.env, "facts_nulls", &nullable, &with_null).await;
    let job = job_on(&case.env, Pattern::Merge, "nullkey", Source::Table(nulls));
    let err = case.runner().run(&job).await.expect_err("null keys");
    assert!(matches!(err, Error::NullKeys { rows: 1, .. }), "{err:?}");
    assert_eq!(
        case.checksum(&case.target).await,
        original,
        "nothing written"
    );
    case.runner().rollback(&job).await.expect("release");

    let mut dup = source_rows();
    dup.push(row(9, day(2), 1, "duplicate of 9"));
    let dups = seed_table(&case.env, "facts_dups", &dup).await;
    let job = job_on(&case.env, Pattern::Merge, "dupkey", Source::Table(dups));
    let err = case.runner().run(&job).await.expect_err("duplicate keys");
    // Refused before the first write, over the whole scope of a table
    // source (a query source is refused batch by batch).
    assert!(
        matches!(
            err,
            Error::DuplicateKeys { groups: 1, .. }
                | Error::SourceKeysNotUnique { duplicates: 1, .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        case.checksum(&case.target).await,
        original,
        "nothing written"
    );
}

/// A second run on the same target is refused while the first holds it.
pub async fn second_run_refused(env: Env) {
    let case = setup(env, Pattern::Overwrite, "first").await;
    let runner = case.runner();
    let first = case.job.plan.batches[0].id.clone();
    runner
        .test_slice(&case.job, &[first])
        .await
        .expect("test slice");
    let held = case.checksum(&case.target).await;
    let other = job_on(
        &case.env,
        Pattern::Overwrite,
        "second",
        case.job.source.clone(),
    );
    let err = runner.run(&other).await.expect_err("refused");
    assert!(
        matches!(err, Error::TargetLocked { ref holder, .. } if holder == "first"),
        "{err:?}"
    );
    assert_eq!(
        case.checksum(&case.target).await,
        held,
        "the refused run wrote nothing"
    );
    // Once the first run completes, the target is free again.
    runner.run(&case.job).await.expect("finish first");
    runner
        .run(&other)
        .await
        .expect("second run after the first completed");
}

/// Pause at a batch boundary leaves the ledger consistent; resume
/// finishes the plan.
pub async fn pause_and_resume(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "pause").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let finished = Arc::new(Mutex::new(0usize));
    let runner = case.runner();
    let control = runner.control();
    let ctl = control.clone();
    let count = finished.clone();
    let runner = runner.on_event(move |e| {
        if let Event::BatchFinished { .. } = e {
            let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            if *n == 2 {
                ctl.pause();
            }
        }
        let _ = tx.send(e.clone());
    });
    let job = case.job.clone();
    let r2 = runner.clone();
    let mut handle = tokio::spawn(async move { r2.run(&job).await });
    // The test keeps the runner, and with it the events' sender: a run
    // that ends without pausing is seen by its task ending.
    loop {
        tokio::select! {
            e = rx.recv() => match e {
                Some(Event::Paused { .. }) => break,
                Some(_) => continue,
                None => panic!("the events ended without a pause"),
            },
            r = &mut handle => panic!("the run ended without pausing: {r:?}"),
        }
    }
    // The pause takes effect at the next commit-group boundary: the
    // batches done are exactly those reported finished, at least the two
    // before the pause and not all five.
    let states = case.states().await;
    let done = states.iter().filter(|s| s.is_done()).count();
    let reported = *finished.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(done, reported, "{states:?}");
    assert!((2..5).contains(&done), "{states:?}");
    assert!(!states.contains(&BatchState::Running), "{states:?}");
    assert_eq!(
        case.env
            .ledger
            .run(&case.job.run_id)
            .await
            .expect("run")
            .status,
        RunStatus::Paused
    );
    control.resume();
    let report = handle.await.expect("join").expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    approve_and_cut_over(&runner, &case.job)
        .await
        .expect("cutover");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
}

/// Cancel stops at a batch boundary with the ledger consistent; a later
/// run finishes the plan.
pub async fn cancel_then_resume(env: Env) {
    let case = setup(env, Pattern::Overwrite, "cancel").await;
    let runner = case.runner();
    let ctl = runner.control();
    let count = Arc::new(Mutex::new(0usize));
    let c2 = count.clone();
    let runner = runner.on_event(move |e| {
        if let Event::BatchFinished { .. } = e {
            let mut n = c2.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            if *n == 2 {
                ctl.cancel();
            }
        }
    });
    let report = runner.run(&case.job).await.expect("cancelled run");
    assert_eq!(report.status, RunStatus::Cancelled, "{report}");
    // The cancel takes effect at the next commit-group boundary: what is
    // done is what was reported finished.
    let done = *count.lock().unwrap_or_else(|p| p.into_inner());
    assert!((2..5).contains(&done), "{report}");
    assert_eq!(report.gaps.len(), 5 - done);
    let states = case.states().await;
    assert_eq!(
        states.iter().filter(|s| s.is_done()).count(),
        done,
        "{states:?}"
    );
    assert!(!states.contains(&BatchState::Running), "{states:?}");
    let report = case.runner().run(&case.job).await.expect("resume");
    assert_eq!(report.batches_this_run, 5 - done);
    assert_eq!(case.checksum(&case.target).await, case.expected().await);
}

/// A transient error is retried and the run completes.
pub async fn transient_error_is_retried(env: Env) {
    let case = setup(env, Pattern::Overwrite, "transient").await;
    let (runner, faults) = case.faulty_runner();
    faults.transient_once(FaultPoint::BeforeWrite);
    let report = runner.run(&case.job).await.expect("retried");
    assert_eq!(report.batches_done, 5);
    let attempts: Vec<u32> = case
        .env
        .ledger
        .batches(&case.job.run_id)
        .await
        .expect("batches")
        .iter()
        .map(|b| b.attempts)
        .collect();
    assert_eq!(
        attempts,
        vec![1; 5],
        "a retry within a claim is not a new claim"
    );
    assert!(
        faults.hits(FaultPoint::BeforeWrite) >= 6,
        "the failed write was tried again"
    );
    assert_eq!(case.checksum(&case.target).await, case.expected().await);
}

/// Unknown tables and columns, and identifier injection, are typed errors
/// before any write.
pub async fn bad_input_refused_before_write(env: Env) {
    let case = setup(env, Pattern::Overwrite, "bad").await;
    let original = case.checksum(&case.target).await;
    let runner = case.runner();

    let mut job = case.job.clone();
    job.brief.scope.target = case.env.table("no_such_table");
    job.plan = Plan::build(
        job.brief.scope.clone(),
        Planner::Windows { grain: Grain::Day },
    )
    .expect("plan");
    let err = runner.run(&job).await.expect_err("unknown table");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    let mut job = case.job.clone();
    job.brief.scope.columns = vec![ident("id"), ident("no_such_column")];
    job.plan = Plan::build(
        job.brief.scope.clone(),
        Planner::Windows { grain: Grain::Day },
    )
    .expect("plan");
    let err = runner.run(&job).await.expect_err("unknown column");
    assert!(matches!(err, Error::UnknownColumn { .. }), "{err:?}");

    let mut job = case.job.clone();
    job.source = Source::Table(case.env.table("no_such_source"));
    let err = runner.run(&job).await.expect_err("unknown source");
    assert!(matches!(err, Error::UnknownTable(_)), "{err:?}");

    assert!(matches!(
        Ident::new("facts\"; DROP TABLE facts; --"),
        Err(Error::InvalidIdentifier { .. })
    ));
    assert_eq!(
        case.checksum(&case.target).await,
        original,
        "nothing written"
    );
}

/// One conformance case as a `#[tokio::test]` on the `env` function in
/// scope: the body the two case macros share.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(e) = env(stringify!($name)).await else {
                return;
            };
            let f = $body;
            f(e).await;
        }
    };
}

/// Generates one `#[tokio::test]` per read case of the conformance suite
/// (describing relations and sources, counts, checksums, samples, key
/// boundaries and reports, and inspections), in a module
/// `conformance_reads`. [`conformance_tests!`](crate::conformance_tests)
/// includes them; an engine whose writes are not built yet (Spark) runs
/// these alone. `$make` is as for `conformance_tests!`.
#[macro_export]
macro_rules! conformance_read_tests {
    ($make:expr) => {
        mod conformance_reads {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance as c;

            async fn env(name: &str) -> Option<c::Env> {
                let f = $make;
                f(name).await
            }

            use $crate::__conformance_case as case;

            case!(inspect_profile, c::inspect::profile_counts_groups);
            case!(inspect_spine, c::inspect::spine_shows_missing_day);
            case!(inspect_orphans, c::inspect::orphans_found);
            case!(inspect_metric, c::inspect::metric_by_period_and_dim);
            case!(inspect_diff, c::inspect::diff_classifies_rows);
            case!(inspect_attribution, c::inspect::diff_attributes_metric);
            case!(
                inspect_bad_names_and_size,
                c::inspect::unknown_names_and_size
            );
            case!(
                describe_relations,
                c::catalog::describe_tables_views_and_sources
            );
            case!(
                counts_checksums_samples,
                c::catalog::counts_checksums_samples_and_boundaries
            );
            case!(
                key_reports,
                c::catalog::key_reports_find_nulls_and_duplicates
            );
        }
    };
}

/// Generates one `#[tokio::test]` per conformance case for an adapter.
///
/// `$make` is a closure taking the case name (`&str`) and returning a
/// future of `Option<Env>`: a fresh, isolated [`Env`] for the case, or
/// `None` to skip it (for example when the engine's server is not
/// configured; say why on stderr).
///
/// ```ignore
/// backfill_testkit::conformance_tests!(|name: &str| {
///     let name = name.to_string();
///     async move { Some(my_env(&name).await) }
/// });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_read_tests!($make);

        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::conformance::{self as c, Pattern};
            use $crate::faults::FaultPoint;

            async fn env(name: &str) -> Option<c::Env> {
                let f = $make;
                f(name).await
            }

            use $crate::__conformance_case as case;

            case!(overwrite_partial_columns, |e| {
                c::exactness::partial_columns_refused(e, Pattern::Overwrite)
            });
            case!(staging_partial_columns, |e| {
                c::exactness::partial_columns_refused(e, Pattern::Staging)
            });
            case!(overwrite_cleanup_keeps_failed, |e| {
                c::exactness::cleanup_keeps_unfinished_runs(e, Pattern::Overwrite)
            });
            case!(staging_cleanup_keeps_failed, |e| {
                c::exactness::cleanup_keeps_unfinished_runs(e, Pattern::Staging)
            });
            case!(merge_cleanup_keeps_failed, |e| {
                c::exactness::cleanup_keeps_unfinished_runs(e, Pattern::Merge)
            });
            case!(parallel_cleanup_keeps_failed, |e| {
                c::exactness::cleanup_keeps_unfinished_runs(e, Pattern::Parallel)
            });
            case!(staging_cleanup_keeps_awaiting, |e| {
                c::exactness::cleanup_keeps_runs_awaiting_cutover(e, Pattern::Staging)
            });
            case!(parallel_cleanup_keeps_awaiting, |e| {
                c::exactness::cleanup_keeps_runs_awaiting_cutover(e, Pattern::Parallel)
            });
            case!(
                failed_validation_is_an_error,
                c::exactness::failed_validation_is_an_error
            );
            case!(
                failed_run_frees_target,
                c::exactness::failed_run_that_wrote_nothing_frees_target
            );
            case!(
                lock_follows_resolved_table,
                c::exactness::lock_follows_resolved_table
            );
            case!(
                rollback_under_later_run,
                c::exactness::rollback_refused_under_a_later_run
            );
            case!(
                separate_ledger_is_warned,
                c::exactness::separate_ledger_is_warned
            );
            case!(
                merge_duplicate_target_keys,
                c::exactness::merge_refuses_duplicate_target_keys
            );
            case!(non_finite_refused, c::exactness::non_finite_values_refused);
            case!(source_types_compared, c::exactness::source_types_compared);
            case!(
                blocking_check_before_commit,
                c::exactness::blocking_batch_check_before_commit
            );
            case!(emptied_day_refused, c::exactness::emptied_day_is_refused);
            case!(groups_of_one, |e| {
                c::groups::groups_write_every_batch(e, c::groups::Grouping::Fixed(1))
            });
            case!(groups_of_seven, |e| {
                c::groups::groups_write_every_batch(e, c::groups::Grouping::Fixed(7))
            });
            case!(groups_adaptive, |e| {
                c::groups::groups_write_every_batch(e, c::groups::Grouping::Adaptive)
            });
            case!(group_guard_of_one, |e| {
                c::groups::group_stops_at_a_failed_guard(e, c::groups::Grouping::Fixed(1))
            });
            case!(group_guard_of_seven, |e| {
                c::groups::group_stops_at_a_failed_guard(e, c::groups::Grouping::Fixed(7))
            });
            case!(group_guard_adaptive, |e| {
                c::groups::group_stops_at_a_failed_guard(e, c::groups::Grouping::Adaptive)
            });
            case!(freeze_refuses_cutover, c::exactness::freeze_refuses_cutover);
            case!(
                rule_periods_split_batches,
                c::end_to_end::rule_periods_split_batches
            );
            case!(
                drift_pauses_until_accepted,
                c::end_to_end::drift_pauses_until_accepted
            );
            case!(
                existing_table_not_adopted,
                c::exactness::existing_table_is_not_adopted
            );
            case!(
                edited_ledger_refused,
                c::exactness::edited_ledger_is_refused
            );
            case!(
                merge_rerun_logs_keys,
                c::exactness::merge_rerun_logs_every_key
            );
            case!(
                merge_keys_outside_scope,
                c::exactness::merge_refuses_keys_outside_the_scope
            );
            case!(
                merge_keys_across_batches,
                c::exactness::merge_refuses_keys_repeated_across_batches
            );
            case!(staging_concurrent_writes, |e| {
                c::exactness::concurrent_writes_refuse_cutover(e, Pattern::Staging)
            });
            case!(parallel_concurrent_writes, |e| {
                c::exactness::concurrent_writes_refuse_cutover(e, Pattern::Parallel)
            });
            case!(staging_unrecorded_cutover, |e| {
                c::exactness::unrecorded_cutover_is_rolled_back(e, Pattern::Staging)
            });
            case!(parallel_unrecorded_cutover, |e| {
                c::exactness::unrecorded_cutover_is_rolled_back(e, Pattern::Parallel)
            });
            case!(
                instant_column_bounds,
                c::exactness::instant_column_needs_instant_bounds
            );
            case!(plan_size_bounded, |e| {
                c::end_to_end::plan_size_is_bounded_and_recorded_whole(e)
            });
            case!(bounded_source_without_bounds, |e| {
                c::end_to_end::bounded_source_without_bounds_is_refused(e)
            });
            case!(overwrite_expected, |e| c::run_gives_expected_table(
                e,
                Pattern::Overwrite
            ));
            case!(staging_expected, |e| c::run_gives_expected_table(
                e,
                Pattern::Staging
            ));
            case!(merge_expected, |e| c::run_gives_expected_table(
                e,
                Pattern::Merge
            ));
            case!(parallel_expected, |e| c::run_gives_expected_table(
                e,
                Pattern::Parallel
            ));
            case!(overwrite_rerun, |e| c::rerun_changes_nothing(
                e,
                Pattern::Overwrite
            ));
            case!(staging_rerun, |e| c::rerun_changes_nothing(
                e,
                Pattern::Staging
            ));
            case!(merge_rerun, |e| c::rerun_changes_nothing(e, Pattern::Merge));
            case!(parallel_rerun, |e| c::rerun_changes_nothing(
                e,
                Pattern::Parallel
            ));
            case!(overwrite_crash_before_write, |e| c::crash_then_resume(
                e,
                Pattern::Overwrite,
                FaultPoint::BeforeWrite
            ));
            case!(overwrite_crash_after_write, |e| c::crash_then_resume(
                e,
                Pattern::Overwrite,
                FaultPoint::AfterWriteBeforeLedger
            ));
            case!(staging_crash_before_write, |e| c::crash_then_resume(
                e,
                Pattern::Staging,
                FaultPoint::BeforeWrite
            ));
            case!(staging_crash_after_write, |e| c::crash_then_resume(
                e,
                Pattern::Staging,
                FaultPoint::AfterWriteBeforeLedger
            ));
            case!(staging_crash_during_swap, |e| c::crash_then_resume(
                e,
                Pattern::Staging,
                FaultPoint::DuringSwap
            ));
            case!(merge_crash_before_write, |e| c::crash_then_resume(
                e,
                Pattern::Merge,
                FaultPoint::BeforeWrite
            ));
            case!(merge_crash_after_write, |e| c::crash_then_resume(
                e,
                Pattern::Merge,
                FaultPoint::AfterWriteBeforeLedger
            ));
            case!(parallel_crash_before_write, |e| c::crash_then_resume(
                e,
                Pattern::Parallel,
                FaultPoint::BeforeWrite
            ));
            case!(parallel_crash_after_write, |e| c::crash_then_resume(
                e,
                Pattern::Parallel,
                FaultPoint::AfterWriteBeforeLedger
            ));
            case!(parallel_crash_during_cutover, |e| c::crash_then_resume(
                e,
                Pattern::Parallel,
                FaultPoint::DuringCutover
            ));
            case!(overwrite_rollback, |e| c::rollback_restores(
                e,
                Pattern::Overwrite
            ));
            case!(staging_rollback, |e| c::rollback_restores(
                e,
                Pattern::Staging
            ));
            case!(merge_rollback, |e| c::rollback_restores(e, Pattern::Merge));
            case!(parallel_rollback, |e| c::rollback_restores(
                e,
                Pattern::Parallel
            ));
            case!(guard_out_of_bounds, c::guard_rejects_out_of_bounds);
            case!(
                restore_point_instead_of_pre_image,
                c::restore_point_instead_of_pre_image
            );
            case!(staged_overwrite, c::overwrite_from_staged_source);
            case!(merge_bad_keys, c::merge_refuses_bad_keys);
            case!(second_run_on_target, c::second_run_refused);
            case!(overwrite_pause_resume, |e| c::pause_and_resume(
                e,
                Pattern::Overwrite
            ));
            case!(staging_pause_resume, |e| c::pause_and_resume(
                e,
                Pattern::Staging
            ));
            case!(merge_pause_resume, |e| c::pause_and_resume(
                e,
                Pattern::Merge
            ));
            case!(parallel_pause_resume, |e| c::pause_and_resume(
                e,
                Pattern::Parallel
            ));
            case!(cancel_resume, c::cancel_then_resume);
            case!(transient_retry, c::transient_error_is_retried);
            case!(bad_input, c::bad_input_refused_before_write);
            case!(overwrite_defects_found, |e| {
                c::validation::planted_defects_are_found(e, Pattern::Overwrite)
            });
            case!(staging_defects_found, |e| {
                c::validation::planted_defects_are_found(e, Pattern::Staging)
            });
            case!(parallel_defects_found, |e| {
                c::validation::planted_defects_are_found(e, Pattern::Parallel)
            });
            case!(overwrite_clean_validation, |e| {
                c::validation::clean_run_passes(e, Pattern::Overwrite)
            });
            case!(staging_clean_validation, |e| {
                c::validation::clean_run_passes(e, Pattern::Staging)
            });
            case!(merge_clean_validation, |e| c::validation::clean_run_passes(
                e,
                Pattern::Merge
            ));
            case!(parallel_clean_validation, |e| {
                c::validation::clean_run_passes(e, Pattern::Parallel)
            });
            case!(
                failed_inspection_loses_nothing,
                c::validation::failed_inspection_loses_nothing
            );
            case!(
                per_batch_stops_at_bad_batch,
                c::validation::per_batch_check_stops_at_the_bad_batch
            );
            case!(overwrite_per_batch_reconcile, |e| {
                c::validation::per_batch_reconcile_passes(e, Pattern::Overwrite)
            });
            case!(staging_per_batch_reconcile, |e| {
                c::validation::per_batch_reconcile_passes(e, Pattern::Staging)
            });
            case!(merge_per_batch_reconcile, |e| {
                c::validation::per_batch_reconcile_passes(e, Pattern::Merge)
            });
            case!(overwrite_cleanup, |e| {
                c::cleanup::cleanup_drops_only_expired_assets(e, Pattern::Overwrite)
            });
            case!(staging_cleanup, |e| {
                c::cleanup::cleanup_drops_only_expired_assets(e, Pattern::Staging)
            });
            case!(merge_cleanup, |e| {
                c::cleanup::cleanup_drops_only_expired_assets(e, Pattern::Merge)
            });
            case!(parallel_cleanup, |e| {
                c::cleanup::cleanup_drops_only_expired_assets(e, Pattern::Parallel)
            });
            case!(
                staging_approval,
                |e| c::validation::approval_gates_cut_over(e, Pattern::Staging)
            );
            case!(parallel_approval, |e| {
                c::validation::approval_gates_cut_over(e, Pattern::Parallel)
            });
            case!(blast_radius, c::blast::blast_radius_finds_undeclared_views);
            case!(engine_estimates, c::blast::engine_estimates_batches);
            case!(inspect_pre_image_diff, c::inspect::pre_image_diff_after_run);
            case!(
                overwrite_guards_and_restores,
                c::writes::overwrite_guards_snapshots_and_restores
            );
            case!(
                overwrite_reads_source_first,
                c::writes::overwrite_reads_the_source_before_deleting
            );
            case!(
                merge_keys_upsert_restore,
                c::writes::merge_refuses_bad_keys_then_upserts_and_restores
            );
            case!(
                copies_swaps_views_stages,
                c::writes::copies_swaps_views_drops_and_stages
            );
            case!(
                writes_mark_ledger_in_tx,
                c::writes::writes_mark_the_ledger_in_the_same_transaction
            );
            case!(execute_user_sql, c::writes::execute_runs_user_sql);
            case!(ledger_mirrors_memory, c::ledger::mirrors_memory_ledger);
            case!(
                ledger_refuses_and_fences,
                c::ledger::ledger_refuses_and_fences
            );
            case!(
                runner_end_to_end,
                c::end_to_end::runner_overwrites_daily_partitions_end_to_end
            );
            case!(
                runner_staged_merge,
                c::end_to_end::runner_stages_the_source_once_and_merges
            );
        }
    };
}
