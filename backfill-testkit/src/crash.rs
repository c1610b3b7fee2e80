//! Real crashes: a run in a child process kills itself with `SIGKILL` at
//! a named point, and a fresh process resumes it.
//!
//! An adapter's integration-test binary runs itself as the child: one
//! ignored test calls [`child_main`] (it does nothing unless
//! [`CRASH_AT`] is set), and the crash cases spawn the binary with that
//! test's name and the point. The child's engine runs behind
//! [`Crashing`], an executor that kills the process when the point's
//! statement runs, so the kill lands where the point says and nowhere
//! else. The parent then opens the database afresh and asserts: the
//! target equals a clean run's table, no key is duplicated, every batch
//! is done, and the dead holder's batch was taken back at once, not after
//! its lease.
//!
//! ```ignore
//! #[tokio::test]
//! #[ignore = "run as a child process by the crash cases"]
//! async fn crash_child() {
//!     backfill_testkit::crash::child_main(&MyRig::from_env()).await;
//! }
//! ```

use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backfill_core::engine::{
    CatalogAnswer, Conn, Executor, Failure, Limits, LivenessModel, NativePartitions,
};
use backfill_core::ledger::{Ledger, RunStatus};
use backfill_core::runner::{RunOptions, Runner};
use backfill_core::sql::{Dialect, Sql};
use backfill_core::warehouse::Warehouse;
use backfill_core::{ColumnType, Error, Ident, Predicate, Result, TableRef, Value};

use backfill_core::{Backfill, CheckSpec, StrategySpec};

use crate::conformance::end_to_end::revived_job;
use crate::conformance::{
    expected_merge, expected_replace, facts_schema, fast_options, original_rows, source_rows,
    Pattern,
};
use crate::fixtures::Seed;

/// The environment variable that names the crash point in a child.
pub const CRASH_AT: &str = "BACKFILL_CRASH_AT";

/// The environment variable that names the child's write pattern
/// (`overwrite`, `merge`, `staging`, `parallel`; overwrite when unset).
pub const CRASH_PATTERN: &str = "BACKFILL_CRASH_PATTERN";

/// The write patterns the crash cases run, by name.
pub const PATTERNS: [(&str, Pattern); 4] = [
    ("overwrite", Pattern::Overwrite),
    ("merge", Pattern::Merge),
    ("staging", Pattern::Staging),
    ("parallel", Pattern::Parallel),
];

fn pattern_name(p: Pattern) -> &'static str {
    PATTERNS
        .iter()
        .find(|(_, q)| *q == p)
        .map_or("overwrite", |(n, _)| n)
}

/// The crash cases' job: the five days of `facts` from `facts_fix`, in
/// `pattern`, under run id `revived`, with an end-of-run coverage check.
pub fn crash_job(pattern: Pattern) -> Backfill {
    let mut job = revived_job("revived");
    job.brief.validation.checks.push(CheckSpec::Coverage {
        empty_allowed: 0,
        blocking: true,
    });
    job.brief.strategy = match pattern {
        Pattern::Overwrite => StrategySpec::PartitionOverwrite,
        Pattern::Staging => StrategySpec::StagingSwap,
        Pattern::Merge => StrategySpec::Merge {
            keys: vec![ident("id")],
        },
        Pattern::Parallel => StrategySpec::ParallelVersion {
            view: TableRef::new(ident("facts_view")),
        },
    };
    job
}

/// Where the child process kills itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// As the third batch's write begins, before it changes anything.
    BeforeWrite,
    /// Inside the third batch's write transaction, its new rows written,
    /// just before it commits.
    InsideWriteTx,
    /// While the run stages its source once (`stage_source`).
    DuringStaging,
    /// Inside the third batch's write, with the run's source staged: the
    /// path the benchmarks measure.
    InsideStagedWrite,
    /// With the ledger in another database: right after the third batch's
    /// data committed, before its ledger mark (which cannot share the
    /// data's transaction).
    AfterCommitBeforeMark,
    /// During the end-of-run checks, every batch written.
    DuringValidation,
    /// Inside the cut-over's swap transaction (staging then swap).
    DuringCutover,
}

impl CrashPoint {
    /// Every point.
    pub const ALL: [CrashPoint; 7] = [
        CrashPoint::BeforeWrite,
        CrashPoint::InsideWriteTx,
        CrashPoint::AfterCommitBeforeMark,
        CrashPoint::DuringStaging,
        CrashPoint::InsideStagedWrite,
        CrashPoint::DuringValidation,
        CrashPoint::DuringCutover,
    ];

    /// Whether the point lands while a batch is claimed, so that resume
    /// takes a dead holder's batch back.
    pub fn holds_a_batch(self) -> bool {
        matches!(
            self,
            CrashPoint::BeforeWrite
                | CrashPoint::InsideWriteTx
                | CrashPoint::AfterCommitBeforeMark
                | CrashPoint::InsideStagedWrite
        )
    }

    /// Whether the point needs the ledger in another database than the
    /// data.
    pub fn ledger_apart(self) -> bool {
        self == CrashPoint::AfterCommitBeforeMark
    }

    /// The write pattern the point needs, if it needs one.
    pub fn pattern(self) -> Option<Pattern> {
        (self == CrashPoint::DuringCutover).then_some(Pattern::Staging)
    }

    /// The point's name, as [`CRASH_AT`] carries it.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::BeforeWrite => "before_write",
            CrashPoint::InsideWriteTx => "inside_write_tx",
            CrashPoint::AfterCommitBeforeMark => "after_commit_before_mark",
            CrashPoint::DuringStaging => "during_staging",
            CrashPoint::InsideStagedWrite => "inside_staged_write",
            CrashPoint::DuringValidation => "during_validation",
            CrashPoint::DuringCutover => "during_cutover",
        }
    }

    /// The point named `name`.
    pub fn parse(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether the run stages its source.
    pub fn stages_source(self) -> bool {
        matches!(
            self,
            CrashPoint::DuringStaging | CrashPoint::InsideStagedWrite
        )
    }
}

/// Kills this process with `SIGKILL`, at once: no destructor, no flush,
/// no rollback runs, as when the machine or an operator kills it.
pub fn die() -> ! {
    let pid = std::process::id().to_string();
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -9 {pid}")])
        .status();
    // The signal is on its way; nothing else may run meanwhile.
    loop {
        std::thread::park();
    }
}

/// What the crash cases need of an engine.
#[async_trait]
pub trait CrashRig: Send + Sync {
    /// Creates the tables afresh: `facts` and `facts_original` (the
    /// original rows), `facts_fix` (the corrected source),
    /// `facts_expected` and `facts_expected_merge` (a clean overwrite's and
    /// merge's results) and the view `facts_view` over `facts`, with no
    /// ledger.
    async fn seed(&self) -> Result<()>;

    /// The child's warehouse and ledger, its engine behind `crashing`.
    async fn child(&self, crashing: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>);

    /// A fresh process's warehouse and ledger.
    async fn parent(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>);

    /// The child's warehouse, its engine behind `crashing`, and a ledger in
    /// another database, so that a batch's ledger mark commits apart from
    /// its data.
    async fn child_apart(&self, crashing: CrashingPlan) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>);

    /// A fresh process's warehouse and its ledger in the other database.
    async fn parent_apart(&self) -> (Arc<dyn Warehouse>, Arc<dyn Ledger>);

    /// Spawns this test binary as the child with [`CRASH_AT`] set to
    /// `point` and [`CRASH_PATTERN`] to `pattern`; returns how it ended.
    fn spawn_child(&self, point: CrashPoint, pattern: &str) -> ExitStatus;
}

/// Runs the child's backfill; it must not return, since the point kills
/// the process. Exits with code 3 if the point was never reached.
pub async fn child_main(rig: &dyn CrashRig) {
    let Some(point) = std::env::var(CRASH_AT)
        .ok()
        .and_then(|p| CrashPoint::parse(&p))
    else {
        return;
    };
    let pattern = std::env::var(CRASH_PATTERN)
        .ok()
        .and_then(|n| PATTERNS.iter().find(|(m, _)| *m == n).map(|(_, p)| *p))
        .unwrap_or(Pattern::Overwrite);
    let (w, l) = if point.ledger_apart() {
        rig.child_apart(CrashingPlan::at(point).in_pattern(pattern))
            .await
    } else {
        rig.child(CrashingPlan::at(point).in_pattern(pattern)).await
    };
    let runner = Runner::new(w, l).with_options(options(point));
    let job = crash_job(pattern);
    let mut r = runner.run(&job).await.map(|_| ());
    if r.is_ok() && point == CrashPoint::DuringCutover {
        r = match runner.approve(&job, "grace", "crash case").await {
            Ok(_) => runner.cutover(&job).await,
            Err(e) => Err(e),
        };
    }
    eprintln!(
        "crash child: the point {} was never reached: {r:?}",
        point.name()
    );
    std::process::exit(3);
}

fn options(point: CrashPoint) -> RunOptions {
    RunOptions {
        stage_source: point.stages_source(),
        worker: format!("crash-{}", point.name()),
        ..fast_options()
    }
}

/// When a [`CrashingPlan`] fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    /// As the `nth` matching statement is about to run.
    Statement,
    /// Right after the `nth` matching statement ran (on an engine without
    /// transactions, where each statement is its own commit).
    AfterStatement,
    /// As the `nth` transaction that ran a matching statement is about to
    /// commit.
    BeforeCommit,
    /// Right after that transaction committed.
    AfterCommit,
}

/// Where a [`Crashing`] executor kills the process: at the `nth`
/// statement whose text contains every one of `contains`, or around the
/// commit of the `nth` transaction that ran such a statement.
#[derive(Clone, Debug)]
pub struct CrashingPlan {
    contains: &'static [&'static str],
    nth: usize,
    when: When,
    /// Where the point lands on an engine without transactions, where it
    /// differs: each batch's step is one statement there, so the point is
    /// before or after the statement that replaces the third batch's
    /// slice.
    alone: Option<(&'static [&'static str], usize, When)>,
    point: CrashPoint,
    statements: Arc<AtomicUsize>,
    transactions: Arc<AtomicUsize>,
}

impl CrashingPlan {
    /// The plan of `point`.
    pub fn at(point: CrashPoint) -> Self {
        use When::*;
        let (contains, nth, when): (&'static [&'static str], usize, When) = match point {
            // Every batch write drops the temporary slice (a table, or a
            // view) first and last: the fifth drop starts the third batch.
            CrashPoint::BeforeWrite => (&["IF EXISTS", "__bf_slice"], 5, Statement),
            // The third transaction that stages a batch's source slice:
            // every pattern's batch write does.
            CrashPoint::InsideWriteTx => (&["__bf_slice"], 3, BeforeCommit),
            // The third batch's data committed; its ledger, elsewhere, not
            // yet marked.
            CrashPoint::AfterCommitBeforeMark => (&["__bf_slice"], 3, AfterCommit),
            // From the staged source the write deletes and inserts
            // directly: the third transaction that deletes a slice.
            CrashPoint::InsideStagedWrite => (&["DELETE FROM", "\"facts\""], 3, BeforeCommit),
            // The transaction that materializes the staged source.
            CrashPoint::DuringStaging => (&["__bf_src_"], 1, BeforeCommit),
            // The coverage check's spine query.
            CrashPoint::DuringValidation => (&["WITH __e(v) AS (VALUES"], 1, Statement),
            // The swap's transaction, both renames done.
            CrashPoint::DuringCutover => (&["RENAME TO"], 1, BeforeCommit),
        };
        // The statement that replaces a batch's slice of the written table
        // (the target, or a parallel version): its predicate is the
        // batch's, in parentheses; a pre-image's is `__bf_batch IN (…)`.
        const WRITE: &[&str] = &["` REPLACE WHERE ("];
        let alone = match point {
            // The third batch's pre-image kept, its slice not replaced.
            CrashPoint::InsideWriteTx | CrashPoint::InsideStagedWrite => {
                Some((WRITE, 3, Statement))
            }
            // Its slice replaced; its ledger mark not made.
            CrashPoint::AfterCommitBeforeMark => Some((WRITE, 3, AfterStatement)),
            // Making the staged source's table.
            CrashPoint::DuringStaging => Some((&["__bf_src_"] as &[&str], 1, Statement)),
            _ => None,
        };
        CrashingPlan {
            contains,
            nth,
            when,
            alone,
            point,
            statements: Arc::default(),
            transactions: Arc::default(),
        }
    }

    /// This plan for a run in `pattern`. A merge without transactions
    /// keeps its pre-image, logs its keys and merges in one statement
    /// each: inside its write the point lands before the third batch's
    /// merge, or with the source staged, right after its pre-image and
    /// before its key log; after its commit, right after its merge.
    pub fn in_pattern(mut self, pattern: Pattern) -> Self {
        const MERGE: &[&str] = &["MERGE INTO "];
        // Only the pre-image of a merge's touched keys checks the
        // pre-image itself for each key (`__k`); its count does too.
        const PRE_IMAGE: &[&str] = &["INSERT INTO ", " AS __k WHERE "];
        if pattern == Pattern::Merge && self.alone.is_some() {
            self.alone = match self.point {
                CrashPoint::InsideWriteTx => Some((MERGE, 3, When::Statement)),
                CrashPoint::InsideStagedWrite => Some((PRE_IMAGE, 3, When::AfterStatement)),
                CrashPoint::AfterCommitBeforeMark => Some((MERGE, 3, When::AfterStatement)),
                _ => self.alone,
            };
        }
        self
    }

    fn matches(&self, sql: &Sql) -> bool {
        self.contains.iter().all(|c| sql.text.contains(c))
    }

    /// This plan on an engine without transactions.
    fn without_transactions(mut self) -> Self {
        if let Some((contains, nth, when)) = self.alone.take() {
            (self.contains, self.nth, self.when) = (contains, nth, when);
        }
        self
    }
}

/// An executor that kills the process at its plan's point, and otherwise
/// is `E`.
#[derive(Debug)]
pub struct Crashing<E> {
    inner: E,
    plan: CrashingPlan,
}

impl<E: Executor> Crashing<E> {
    /// `inner`, killed at `plan`'s point.
    pub fn new(inner: E, plan: CrashingPlan) -> Self {
        let plan = match inner.transactions() {
            true => plan,
            false => plan.without_transactions(),
        };
        Crashing { inner, plan }
    }
}

struct CrashConn {
    inner: Box<dyn Conn>,
    plan: CrashingPlan,
    /// Whether a matching statement ran in this transaction.
    matched: bool,
}

impl CrashConn {
    /// Before a statement: dies at a `Statement` point; says whether to
    /// die after it (an `AfterStatement` point).
    fn check(&mut self, sql: &Sql) -> bool {
        if !self.plan.matches(sql) {
            return false;
        }
        self.matched = true;
        let n = self.plan.statements.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.plan.nth {
            return false;
        }
        match self.plan.when {
            When::Statement => die(),
            When::AfterStatement => true,
            When::BeforeCommit | When::AfterCommit => false,
        }
    }
}

#[async_trait]
impl Conn for CrashConn {
    async fn execute(&mut self, sql: &Sql) -> Result<u64> {
        let after = self.check(sql);
        let r = self.inner.execute(sql).await;
        if after && r.is_ok() {
            die();
        }
        r
    }

    async fn query(&mut self, sql: &Sql) -> Result<Vec<Vec<Value>>> {
        let after = self.check(sql);
        let r = self.inner.query(sql).await;
        if after && r.is_ok() {
            die();
        }
        r
    }

    async fn columns(&mut self, sql: &Sql) -> Result<Vec<(String, ColumnType)>> {
        self.inner.columns(sql).await
    }

    async fn script(&mut self, text: &str) -> Result<()> {
        self.inner.script(text).await
    }

    async fn append(
        &mut self,
        table: &TableRef,
        columns: &[&str],
        rows: &[Vec<Value>],
    ) -> Result<bool> {
        self.inner.append(table, columns, rows).await
    }

    async fn relation(&mut self, table: &TableRef) -> Result<CatalogAnswer> {
        self.inner.relation(table).await
    }

    async fn commit(&mut self) -> Result<()> {
        let fire = matches!(self.plan.when, When::BeforeCommit | When::AfterCommit)
            && self.matched
            && self.plan.transactions.fetch_add(1, Ordering::SeqCst) + 1 == self.plan.nth;
        if fire && self.plan.when == When::BeforeCommit {
            die();
        }
        self.inner.commit().await?;
        if fire {
            die();
        }
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        self.inner.rollback().await
    }
}

#[async_trait]
impl<E: Executor> Executor for Crashing<E> {
    fn dialect(&self) -> &'static dyn Dialect {
        self.inner.dialect()
    }

    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    fn id(&self) -> &str {
        self.inner.id()
    }

    async fn connect(&self) -> Result<Box<dyn Conn>> {
        Ok(Box::new(CrashConn {
            inner: self.inner.connect().await?,
            plan: self.plan.clone(),
            matched: false,
        }))
    }

    async fn begin(&self, limits: Option<Limits>) -> Result<Box<dyn Conn>> {
        Ok(Box::new(CrashConn {
            inner: self.inner.begin(limits).await?,
            plan: self.plan.clone(),
            matched: false,
        }))
    }

    fn transactions(&self) -> bool {
        self.inner.transactions()
    }

    fn replaces_slices(&self) -> bool {
        self.inner.replaces_slices()
    }

    fn classify(&self, error: &Error) -> Failure {
        self.inner.classify(error)
    }

    fn partitions(&self) -> Option<&dyn NativePartitions> {
        self.inner.partitions()
    }

    fn liveness(&self) -> LivenessModel {
        self.inner.liveness()
    }

    async fn instance(&self) -> Result<String> {
        self.inner.instance().await
    }
}

/// Seeds the crash cases' tables (see [`CrashRig::seed`]) through
/// `seed`.
pub async fn seed_tables(seed: &dyn Seed) -> Result<()> {
    let tables = [
        ("facts", original_rows()),
        ("facts_original", original_rows()),
        ("facts_fix", source_rows()),
        ("facts_expected", expected_replace()),
        ("facts_expected_merge", expected_merge()),
    ];
    for (name, rows) in tables {
        let t = TableRef::new(ident(name));
        seed.create_table(&t, &facts_schema()).await?;
        seed.insert_rows(&t, &rows).await?;
    }
    let view = TableRef::new(ident("facts_view"));
    seed.create_view(&view, &TableRef::new(ident("facts")))
        .await
}

/// What one crash case found.
#[derive(Clone, Debug)]
pub struct CrashOutcome {
    /// The point.
    pub point: CrashPoint,
    /// How long the resumed run took.
    pub resume: Duration,
    /// Whether the dead holder's batch was taken back as dead (not after
    /// its lease).
    pub taken_back_as_dead: bool,
}

/// One crash case of a partition overwrite: see [`crash_and_resume_as`].
pub async fn crash_and_resume(rig: &dyn CrashRig, point: CrashPoint) -> CrashOutcome {
    crash_and_resume_as(rig, point, Pattern::Overwrite).await
}

/// One crash case: seed, run the child in `pattern` until it kills itself
/// at `point`, resume in this process (and, for the staged and versioned
/// patterns, approve and cut over), and check the table readers see, the
/// keys and the ledger.
pub async fn crash_and_resume_as(
    rig: &dyn CrashRig,
    point: CrashPoint,
    pattern: Pattern,
) -> CrashOutcome {
    use std::os::unix::process::ExitStatusExt;
    rig.seed().await.expect("seed");
    if pattern == Pattern::Staging {
        // Preflight refuses a swap under a view that binds the target by
        // identity (PostgreSQL): the staged case runs without the view.
        let (w, _) = rig.parent().await;
        w.execute("DROP VIEW facts_view")
            .await
            .expect("drop the view");
    }
    let status = rig.spawn_child(point, pattern_name(pattern));
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL at {}: {status:?}",
        point.name()
    );
    let (w, l) = if point.ledger_apart() {
        rig.parent_apart().await
    } else {
        rig.parent().await
    };
    let job = crash_job(pattern);
    let runner = Runner::new(w.clone(), l.clone()).with_options(options(point));
    let t0 = Instant::now();
    let report = runner.run(&job).await.expect("resume");
    let resume = t0.elapsed();
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert!(report.gaps.is_empty() && report.held.is_empty(), "{report}");
    assert!(
        report.validation.as_ref().is_some_and(|v| v.passed()),
        "the end-of-run checks ran and passed: {report}"
    );
    if job.brief.strategy.needs_cutover() {
        runner
            .approve(&job, "grace", "crash case")
            .await
            .expect("approve");
        runner.cutover(&job).await.expect("cut over");
    }
    let (seen, expected) = match pattern {
        Pattern::Merge => ("facts", "facts_expected_merge"),
        Pattern::Parallel => ("facts_view", "facts_expected"),
        Pattern::Overwrite | Pattern::Staging => ("facts", "facts_expected"),
    };
    let sum = |t: &'static str| {
        let w = w.clone();
        async move {
            w.checksum(&TableRef::new(ident(t)), &Predicate::All)
                .await
                .expect("checksum")
        }
    };
    assert_eq!(
        sum(seen).await,
        sum(expected).await,
        "what readers see after {} in {} and a resume is a clean run's",
        point.name(),
        pattern_name(pattern)
    );
    let keys = w
        .key_report(
            &TableRef::new(ident(seen)),
            &[ident("id")],
            &Predicate::All,
            5,
        )
        .await
        .expect("keys");
    assert_eq!(keys.duplicate_keys, 0, "{keys:?}");
    let batches = l.batches(&job.run_id).await.expect("batches");
    assert!(batches.iter().all(|b| b.state.is_done()), "{batches:#?}");
    let log = l.transitions(&job.run_id).await.expect("log");
    let taken_back_as_dead = log.iter().any(|t| t.reason.contains("is dead"));
    let waited = log.iter().any(|t| t.reason.contains("(expired)"));
    assert!(!waited, "resume waited for a lease: {log:#?}");
    CrashOutcome {
        point,
        resume,
        taken_back_as_dead,
    }
}

/// [`crash_and_resume_as`] at every point, each on a fresh rig: the dead
/// holder's batch is taken back as dead at every point that lands while a
/// batch is claimed (staging comes before any claim, validation and
/// cut-over after the last write).
pub async fn every_point_resumes_at_once<R: CrashRig>(rig_for: impl Fn(&str) -> R) {
    for point in CrashPoint::ALL {
        let rig = rig_for(point.name());
        let pattern = point.pattern().unwrap_or(Pattern::Overwrite);
        let o = crash_and_resume_as(&rig, point, pattern).await;
        assert_eq!(o.taken_back_as_dead, point.holds_a_batch(), "{o:?}");
    }
    // Every other write pattern, killed inside a write's transaction.
    for (name, pattern) in &PATTERNS[1..] {
        let rig = rig_for(name);
        let o = crash_and_resume_as(&rig, CrashPoint::InsideWriteTx, *pattern).await;
        assert!(o.taken_back_as_dead, "{name}: {o:?}");
    }
}

/// Crash at `point`, resume, then roll back: the table ends exactly as it
/// was before the run.
pub async fn crash_resume_and_roll_back(rig: &dyn CrashRig, point: CrashPoint) {
    crash_resume_and_roll_back_as(rig, point, Pattern::Overwrite).await
}

/// [`crash_resume_and_roll_back`] of a run in `pattern`.
pub async fn crash_resume_and_roll_back_as(
    rig: &dyn CrashRig,
    point: CrashPoint,
    pattern: Pattern,
) {
    crash_and_resume_as(rig, point, pattern).await;
    let (w, l) = if point.ledger_apart() {
        rig.parent_apart().await
    } else {
        rig.parent().await
    };
    let runner = Runner::new(w.clone(), l).with_options(options(point));
    runner
        .rollback(&crash_job(pattern))
        .await
        .expect("rollback");
    let facts = TableRef::new(ident("facts"));
    let (rows, _) = original_checksum(w.as_ref()).await;
    assert_eq!(
        w.checksum(&facts, &Predicate::All).await.expect("checksum"),
        rows,
        "rollback after a crash restores the original table"
    );
}

/// The checksum of the original rows, seeded beside the target.
async fn original_checksum(w: &dyn Warehouse) -> (backfill_core::warehouse::Checksum, TableRef) {
    let original = TableRef::new(ident("facts_original"));
    let sum = w
        .checksum(&original, &Predicate::All)
        .await
        .expect("the rig seeds facts_original");
    (sum, original)
}

fn ident(s: &str) -> Ident {
    Ident::new(s).expect("a valid identifier")
}
