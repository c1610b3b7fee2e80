//! Conformance cases for exactness: configurations in which a backfill
//! could lose data, or touch more than its scope, are refused before any
//! write, and nothing of an unfinished run is thrown away.

use backfill_core::cleanup::{CleanupOptions, Kept};
use backfill_core::inspect::{Aggregate, Dim, Metric};
use backfill_core::jiff::SignedDuration;
use backfill_core::ledger::{AssetKind, RunStatus};
use backfill_core::runner::Backfill;
use backfill_core::warehouse::Warehouse;
use backfill_core::{CheckSpec, Error, Expectation, Plan, RunId, Source, StrategySpec, TableRef};

use super::{approve_and_cut_over, brief, checksum, ident, setup, Env, Pattern};
use crate::faults::FaultPoint;

/// A scope that lists only some of the target's columns, under a pattern
/// that replaces whole rows of a slice (overwrite, staging, parallel
/// version), would write the other columns as NULL and keep no copy of
/// them: it is refused before any write, naming the columns left out, and
/// the table is unchanged.
pub async fn partial_columns_refused(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "partial").await;
    let before = checksum(&case.env, &case.target).await;
    let mut scope = case.job.plan.scope.clone();
    scope.columns = vec![ident("id"), ident("day"), ident("amount")];
    let plan = Plan::build(scope.clone(), case.job.plan.planner.clone()).expect("plan");
    let job = Backfill::new(
        RunId::new("partial").expect("run id"),
        brief(scope, case.job.brief.strategy.clone()),
        plan,
        case.job.source.clone(),
    );
    let runner = case.runner();
    let err = runner.run(&job).await.expect_err("refused");
    assert!(err.to_string().contains("note"), "names the column: {err}");
    assert_eq!(checksum(&case.env, &case.target).await, before);
    assert!(
        case.env.ledger.run(&job.run_id).await.is_err(),
        "nothing recorded for a refused run"
    );
}

/// The working tables of a run that is not finished (failed here, or
/// written and awaiting its cut-over) are kept by cleanup however old they
/// are; and a run whose working table went missing is refused on resume
/// with a typed error, rather than recreating an empty one and going on.
pub async fn cleanup_keeps_unfinished_runs(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "unfinished").await;
    let (runner, faults) = case.faulty_runner();
    faults.fail_nth(FaultPoint::BeforeWrite, 3);
    runner
        .run(&case.job)
        .await
        .expect_err("the third batch fails");
    let ledger = case.env.ledger.clone();
    let run = ledger.run(&case.job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    assert_kept_unfinished(&runner, ledger.as_ref(), "a failed run").await;
    let w: &dyn Warehouse = case.env.warehouse.as_ref();
    let assets = ledger.assets(Some(&case.job.run_id)).await.expect("assets");
    let working = assets
        .iter()
        .find(|a| a.kind != AssetKind::StagedSource)
        .expect("a working table")
        .clone();
    assert!(w
        .describe(&working.table)
        .await
        .expect("describe")
        .is_some());

    // A working table that disappears (dropped by hand) is not recreated
    // silently on resume.
    w.drop_table(&working.table).await.expect("drop");
    let err = case
        .runner()
        .run(&case.job)
        .await
        .expect_err("refused on resume");
    assert!(
        matches!(&err, Error::AssetMissing { table, .. } if table.contains(working.table.name.as_str())),
        "names the missing table: {err}"
    );
    assert!(w
        .describe(&working.table)
        .await
        .expect("describe")
        .is_none());
}

/// A run written in full and awaiting its cut-over keeps its stage or
/// version through a cleanup however late.
pub async fn cleanup_keeps_runs_awaiting_cutover(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "awaiting").await;
    let runner = case.runner();
    let report = runner.run(&case.job).await.expect("run");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_kept_unfinished(&runner, case.env.ledger.as_ref(), "a run awaiting cut-over").await;
    approve_and_cut_over(&runner, &case.job)
        .await
        .expect("cut-over still works");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
}

/// A cleanup long after every expiry drops nothing, keeping the tables
/// as those of an unfinished run.
async fn assert_kept_unfinished(
    runner: &backfill_core::runner::Runner,
    ledger: &dyn backfill_core::ledger::Ledger,
    what: &str,
) {
    let later = ledger
        .now()
        .checked_add(SignedDuration::from_hours(24 * 400))
        .expect("time");
    let swept = runner
        .cleanup(&CleanupOptions {
            now: Some(later),
            ..CleanupOptions::default()
        })
        .await
        .expect("cleanup");
    assert!(
        swept.dropped.is_empty() && swept.missing.is_empty(),
        "{what} keeps its tables: {swept}"
    );
    assert!(
        swept
            .kept
            .iter()
            .any(|(_, why)| *why == Kept::RunUnfinished),
        "{swept}"
    );
}

/// A run whose end-of-run blocking check fails is an error that the
/// caller cannot mistake for success: the run is recorded as failed, the
/// error names the check, and the full report stays in the ledger.
pub async fn failed_validation_is_an_error(env: Env) {
    let case = setup(env, Pattern::Overwrite, "unvalidated").await;
    let mut job = case.job.clone();
    job.brief.validation.checks.push(CheckSpec::Reconcile {
        metric: Metric {
            name: "amount".into(),
            aggregate: Aggregate::Sum(ident("amount")),
            by: vec![Dim::column(ident("day"))],
        },
        keys: vec![ident("id")],
        expect: Expectation::Unchanged,
        tolerance: None,
        blocking: true,
    });
    let runner = case.runner();
    let err = runner
        .run(&job)
        .await
        .expect_err("a failed check is an error");
    assert!(
        matches!(&err, Error::ValidationFailed { check, .. } if check.starts_with("reconcile")),
        "{err:?}"
    );
    let run = case.env.ledger.run(&job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    let report = runner
        .validation_report(&job)
        .await
        .expect("report")
        .expect("kept in the ledger");
    assert!(!report.passed(), "{report}");
}

/// A run whose first batch fails before anything is written does not
/// hold its target: a new run (with the source fixed) may go ahead. The
/// failed run, resumed with another definition, is refused with what
/// changed, not only two hashes.
pub async fn failed_run_that_wrote_nothing_frees_target(env: Env) {
    let case = setup(env, Pattern::Overwrite, "leaky").await;
    let original = checksum(&case.env, &case.target).await;
    let fix = case.env.table("facts_fix");
    let leaky = (case.env.bounded_source)(&fix, &ident("day"), true);
    let job = super::job_on(&case.env, Pattern::Overwrite, "leaky", leaky);
    let runner = case.runner();
    let err = runner.run(&job).await.expect_err("guard");
    assert!(matches!(err, Error::OutOfBounds { .. }), "{err:?}");
    assert_eq!(checksum(&case.env, &case.target).await, original);

    let mut resumed = job.clone();
    resumed.source = (case.env.bounded_source)(&fix, &ident("day"), false);
    let err = runner.run(&resumed).await.expect_err("another definition");
    assert!(
        matches!(&err, Error::FingerprintMismatch { changed, .. } if changed == &["source"]),
        "{err:?}"
    );

    let fixed = super::job_on(
        &case.env,
        Pattern::Overwrite,
        "fixed",
        resumed.source.clone(),
    );
    let report = runner.run(&fixed).await.expect("the target is free");
    assert_eq!(report.status, RunStatus::Completed, "{report}");
    assert_eq!(
        checksum(&case.env, &case.target).await,
        case.expected().await
    );
}

/// The target lock is keyed by the table the engine resolves a name to,
/// not by its spelling: a run on `facts` holds `<schema>.facts` too.
pub async fn lock_follows_resolved_table(env: Env) {
    if !env.gate(
        env.capabilities.runs_sql,
        "runs_sql",
        "two spellings of one table",
    ) {
        return;
    }
    let case = setup(env, Pattern::Overwrite, "spelled").await;
    let (runner, faults) = case.faulty_runner();
    faults.fail_nth(FaultPoint::BeforeWrite, 3);
    runner
        .run(&case.job)
        .await
        .expect_err("stops after two batches");
    let other_spelling = match &case.env.schema {
        Some(_) => TableRef {
            schema: None,
            name: ident("facts"),
        },
        None => TableRef {
            schema: Some(ident("main")),
            name: ident("facts"),
        },
    };
    let mut scope = case.job.plan.scope.clone();
    scope.target = other_spelling;
    let plan = Plan::build(scope.clone(), case.job.plan.planner.clone()).expect("plan");
    let other = Backfill::new(
        RunId::new("spelled_other").expect("run id"),
        brief(scope, StrategySpec::PartitionOverwrite),
        plan,
        case.job.source.clone(),
    );
    let held = checksum(&case.env, &case.target).await;
    let err = case
        .runner()
        .run(&other)
        .await
        .expect_err("the same table is held");
    assert!(
        matches!(&err, Error::TargetLocked { holder, .. } if holder == "spelled"),
        "{err:?}"
    );
    assert_eq!(checksum(&case.env, &case.target).await, held);
}

/// Rolling back a run after a later run wrote the same slices would put
/// the first run's pre-images over the later run's data: it is refused,
/// naming the later run, until that run is rolled back first; then both
/// roll back to the original table.
pub async fn rollback_refused_under_a_later_run(env: Env) {
    let case = setup(env, Pattern::Overwrite, "earlier").await;
    let original = checksum(&case.env, &case.target).await;
    let runner = case.runner();
    runner.run(&case.job).await.expect("first run");
    let later = super::job_on(
        &case.env,
        Pattern::Overwrite,
        "later",
        Source::Table(case.env.table("facts")),
    );
    runner.run(&later).await.expect("later run");
    let now = checksum(&case.env, &case.target).await;
    let err = runner.rollback(&case.job).await.expect_err("refused");
    assert!(
        matches!(&err, Error::NotAllowed(m) if m.contains("later")),
        "{err:?}"
    );
    assert_eq!(checksum(&case.env, &case.target).await, now);
    runner.rollback(&later).await.expect("later first");
    assert_eq!(
        case.env
            .ledger
            .steering(&later.run_id)
            .await
            .expect("steering"),
        backfill_core::ledger::Steering::Cancel,
        "every worker of a rolled-back run stops at its next batch"
    );
    runner.rollback(&case.job).await.expect("then the earlier");
    assert_eq!(checksum(&case.env, &case.target).await, original);
}

/// A ledger outside the engine's database cannot mark a batch in the
/// data's transaction: preflight says so, with the consequence, exactly
/// when the env's ledger is not in the engine.
pub async fn separate_ledger_is_warned(env: Env) {
    let in_tx = env.capabilities.ledger_in_data_tx;
    let case = setup(env, Pattern::Overwrite, "warned").await;
    let report = case.runner().run(&case.job).await.expect("run");
    let warned = report
        .warnings
        .iter()
        .any(|w| w == backfill_core::runner::SEPARATE_LEDGER_WARNING);
    assert_eq!(warned, !in_tx, "{:?}", report.warnings);
}

/// A merge updates every target row with a source key. Keys unique in the
/// source but not in the target (key 12 inside the scope, and again on a
/// day outside it) would rewrite rows outside the scope: the run is
/// refused before the first write, naming the key, and the table is
/// unchanged.
pub async fn merge_refuses_duplicate_target_keys(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
    let mut rows = super::original_rows();
    rows.push(super::row(12, super::day(8), 999, "outside the scope"));
    let target = super::seed_table(&env, "facts", &rows).await;
    let fix = super::seed_table(&env, "facts_fix", &super::source_rows()).await;
    let before = checksum(&env, &target).await;
    let job = super::job_on(&env, Pattern::Merge, "dupes", Source::Table(fix));
    let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner.run(&job).await.expect_err("refused");
    assert!(
        matches!(&err, Error::TargetKeysNotUnique { duplicates: 1, sample, .. } if sample.iter().any(|s| s.contains("12"))),
        "names the key and the target: {err:?}"
    );
    assert_eq!(checksum(&env, &target).await, before);
}

/// A float metric whose corrected source holds NaN or infinity would be
/// written to the live table and break every sum over it: the batch is
/// refused before its write with a typed error naming the column, and
/// the table is unchanged.
pub async fn non_finite_values_refused(env: Env) {
    use backfill_core::{Column, ColumnType, TableSchema, Value};
    let schema = TableSchema {
        columns: vec![
            Column::new(ident("id"), ColumnType::Int).not_null(),
            Column::new(ident("day"), ColumnType::Date),
            Column::new(ident("amount"), ColumnType::Float),
            Column::new(ident("note"), ColumnType::Text),
        ],
    };
    let floats = |rows: Vec<Vec<Value>>| -> Vec<Vec<Value>> {
        rows.into_iter()
            .map(|mut r| {
                r[2] = Value::Float(r[2].as_i64().unwrap_or(0) as f64);
                r
            })
            .collect()
    };
    for (n, bad) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY]
        .into_iter()
        .enumerate()
    {
        let target = super::seed_table_as(
            &env,
            &format!("floats{n}"),
            &schema,
            &floats(super::original_rows()),
        )
        .await;
        let mut fixed = floats(super::source_rows());
        // Row 9, on the first day of the scope: nothing is written before it.
        fixed[8][2] = Value::Float(bad);
        let fix = super::seed_table_as(&env, &format!("floats{n}_fix"), &schema, &fixed).await;
        let before = checksum(&env, &target).await;
        let (s, e) = (super::day(2), super::day(7));
        let scope = backfill_core::Scope::new(
            target.clone(),
            "day",
            backfill_core::Bounds::dates(s, e),
            "UTC",
        )
        .expect("scope");
        let plan = Plan::build(
            scope.clone(),
            backfill_core::Planner::Windows {
                grain: backfill_core::Grain::Day,
            },
        )
        .expect("plan");
        let job = Backfill::new(
            RunId::new(format!("nonfinite{n}")).expect("run id"),
            brief(scope, StrategySpec::PartitionOverwrite),
            plan,
            Source::Table(fix),
        );
        let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
        let err = runner.run(&job).await.expect_err("refused");
        assert!(
            matches!(&err, Error::NonFinite { column, rows: 1, .. } if column == "amount"),
            "{bad}: {err:?}"
        );
        assert_eq!(checksum(&env, &target).await, before, "{bad}");
        runner.rollback(&job).await.expect("release");
    }
}

/// A source column whose type the target's column does not hold (text
/// into an integer amount) is refused before any write, naming the column
/// and both types, where an engine would otherwise cast it silently or
/// fail inside the first batch; a safe widening (integer into float) runs;
/// and a source column the target does not have is named in a warning
/// rather than dropped without a word.
pub async fn source_types_compared(env: Env) {
    use backfill_core::{Column, ColumnType, Value};
    let facts = super::facts_schema();
    let target = super::seed_table(&env, "facts", &super::original_rows()).await;
    let before = checksum(&env, &target).await;
    let mut text_schema = facts.clone();
    text_schema.columns[2] = Column::new(ident("amount"), ColumnType::Text);
    let texts: Vec<Vec<Value>> = super::source_rows()
        .into_iter()
        .map(|mut r| {
            r[2] = Value::Text(r[2].as_i64().unwrap_or(0).to_string());
            r
        })
        .collect();
    let fix = super::seed_table_as(&env, "facts_text", &text_schema, &texts).await;
    let job = super::job_on(&env, Pattern::Overwrite, "texts", Source::Table(fix));
    let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner.run(&job).await.expect_err("refused");
    assert!(
        matches!(&err, Error::ColumnTypeMismatch { column, source_type, target_type, .. }
            if column == "amount" && source_type == "text" && target_type == "int"),
        "names the column and both types: {err:?}"
    );
    assert_eq!(checksum(&env, &target).await, before);
    assert!(
        env.ledger.run(&job.run_id).await.is_err(),
        "nothing recorded for a refused run"
    );

    // Integer into float is a safe widening; an extra source column is
    // named in a warning.
    let mut float_schema = facts.clone();
    float_schema.columns[2] = Column::new(ident("amount"), ColumnType::Float);
    let floats: Vec<Vec<Value>> = super::original_rows()
        .into_iter()
        .map(|mut r| {
            r[2] = Value::Float(r[2].as_i64().unwrap_or(0) as f64);
            r
        })
        .collect();
    let target = super::seed_table_as(&env, "floats", &float_schema, &floats).await;
    let mut wide = facts.clone();
    wide.columns
        .push(Column::new(ident("extra"), ColumnType::Text));
    let rows: Vec<Vec<Value>> = super::source_rows()
        .into_iter()
        .map(|mut r| {
            r.push(Value::Text("dropped".into()));
            r
        })
        .collect();
    let fix = super::seed_table_as(&env, "wide_fix", &wide, &rows).await;
    let plan = super::daily_plan(target.clone());
    let job = Backfill::new(
        RunId::new("widened").expect("run id"),
        brief(plan.scope.clone(), StrategySpec::PartitionOverwrite),
        plan,
        Source::Table(fix),
    );
    let report = runner.run(&job).await.expect("a widening runs");
    assert!(
        report.warnings.iter().any(|w| w.contains("extra")),
        "the extra column is named: {:?}",
        report.warnings
    );
}

/// A scope in calendar dates on a column that holds instants
/// (`timestamptz`) would compare its bounds in the server's zone, not the
/// scope's: rows inside the scope left uncorrected and rows outside it
/// rewritten. It is refused before any write, naming the column, its type
/// and the bounds to use; with instant bounds in `America/New_York`, the
/// rows written are exactly those whose local day is in scope.
pub async fn instant_column_needs_instant_bounds(env: Env) {
    use backfill_core::jiff::civil::date;
    use backfill_core::jiff::Timestamp;
    use backfill_core::{Bounds, Column, ColumnType, Grain, Planner, Scope, TableSchema, Value};
    let schema = TableSchema {
        columns: vec![
            Column::new(ident("id"), ColumnType::Int).not_null(),
            Column::new(ident("at"), ColumnType::Timestamp),
            Column::new(ident("amount"), ColumnType::Int),
        ],
    };
    let at = |s: &str| Value::Timestamp(s.parse::<Timestamp>().expect("instant"));
    // New York is UTC-5 in early March 2026.
    let rows = |amount: i64| {
        vec![
            // 2026-03-02 22:00 in New York: outside a scope from 03-03.
            vec![
                Value::Int(1),
                at("2026-03-03T03:00:00Z"),
                Value::Int(amount),
            ],
            // 2026-03-03 01:00 in New York: inside.
            vec![
                Value::Int(2),
                at("2026-03-03T06:00:00Z"),
                Value::Int(amount),
            ],
            // 2026-03-04 23:00 in New York: inside.
            vec![
                Value::Int(3),
                at("2026-03-05T04:00:00Z"),
                Value::Int(amount),
            ],
            // 2026-03-05 00:30 in New York: outside a scope to 03-05.
            vec![
                Value::Int(4),
                at("2026-03-05T05:30:00Z"),
                Value::Int(amount),
            ],
        ]
    };
    let target = super::seed_table_as(&env, "events", &schema, &rows(1)).await;
    let fix = super::seed_table_as(&env, "events_fix", &schema, &rows(2)).await;
    let before = checksum(&env, &target).await;
    let job_for = |run: &str, bounds: Bounds| {
        let scope = Scope::new(target.clone(), "at", bounds, "America/New_York").expect("scope");
        let plan =
            Plan::build(scope.clone(), Planner::Windows { grain: Grain::Day }).expect("plan");
        Backfill::new(
            RunId::new(run).expect("run id"),
            brief(scope, StrategySpec::PartitionOverwrite),
            plan,
            Source::Table(fix.clone()),
        )
    };
    let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
    let dates = job_for("dates", Bounds::dates(date(2026, 3, 3), date(2026, 3, 5)));
    let err = runner.run(&dates).await.expect_err("refused");
    assert!(
        matches!(&err, Error::ScopeColumnMismatch { column, column_type, hint, .. }
            if column == "at" && column_type.starts_with("timestamptz") && hint.contains("Bounds::instants")),
        "names the column, what it holds and the bounds to use: {err:?}"
    );
    assert_eq!(checksum(&env, &target).await, before);
    assert!(env.ledger.run(&dates.run_id).await.is_err());

    let instants = job_for(
        "instants",
        Bounds::instants(
            date(2026, 3, 3).at(0, 0, 0, 0),
            date(2026, 3, 5).at(0, 0, 0, 0),
        ),
    );
    runner.run(&instants).await.expect("instant bounds run");
    let mut expected = rows(1);
    expected[1][2] = Value::Int(2);
    expected[2][2] = Value::Int(2);
    let want = super::seed_table_as(&env, "events_expected", &schema, &expected).await;
    assert_eq!(
        checksum(&env, &target).await,
        checksum(&env, &want).await,
        "exactly the rows whose New York day is in scope"
    );
}

/// A cut-over that happened in the engine but was never recorded (the
/// process lost its connection, or died, between the swap or view move and
/// the ledger's record) is still undone by rollback: rollback decides from
/// the engine's state, not only the ledger's, and the table readers see is
/// the original again. A second cut-over finishes the first one's record.
pub async fn unrecorded_cutover_is_rolled_back(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "unrecorded").await;
    let original = checksum(&case.env, &case.visible()).await;
    let (runner, faults) = case.faulty_runner();
    runner.run(&case.job).await.expect("run");
    runner
        .approve(&case.job, &case.job.brief.reviewer, "report read")
        .await
        .expect("approve");
    faults.fail_nth(FaultPoint::AfterCutoverBeforeLedger, 1);
    runner
        .cutover(&case.job)
        .await
        .expect_err("the record is lost");
    assert_ne!(
        checksum(&case.env, &case.visible()).await,
        original,
        "the new data is live"
    );
    case.runner().rollback(&case.job).await.expect("rollback");
    assert_eq!(
        checksum(&case.env, &case.visible()).await,
        original,
        "rollback undid the unrecorded cut-over"
    );
    let run = case.env.ledger.run(&case.job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::RolledBack);

    // The same loss, then a second cut-over: it completes and records.
    let case = setup_again(&case, "recorded").await;
    let (runner, faults) = case.faulty_runner();
    runner.run(&case.job).await.expect("run");
    runner
        .approve(&case.job, &case.job.brief.reviewer, "report read")
        .await
        .expect("approve");
    faults.fail_nth(FaultPoint::AfterCutoverBeforeLedger, 1);
    runner.cutover(&case.job).await.expect_err("lost");
    let live = checksum(&case.env, &case.visible()).await;
    case.runner()
        .cutover(&case.job)
        .await
        .expect("cut over again");
    let run = case.env.ledger.run(&case.job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::CutOver);
    assert_eq!(checksum(&case.env, &case.visible()).await, live);
    case.runner().rollback(&case.job).await.expect("rollback");
    assert_eq!(checksum(&case.env, &case.visible()).await, original);
}

/// The same case's tables and pattern under a new run id (after the
/// first run was rolled back, the target is as seeded).
async fn setup_again(case: &super::Case, run: &str) -> super::Case {
    super::Case {
        env: case.env.clone(),
        target: case.target.clone(),
        job: super::job_on(&case.env, case.pattern, run, case.job.source.clone()),
        pattern: case.pattern,
    }
}

/// Rows written to the target by someone else after its copy was taken
/// (a late-arriving fact, on a day outside the scope) would vanish into
/// the kept old table at a swap, or be hidden behind a moved view: the
/// cut-over is refused with the numbers, and the row stays readable.
pub async fn concurrent_writes_refuse_cutover(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = setup(env, pattern, "concurrent").await;
    let runner = case.runner();
    runner.run(&case.job).await.expect("run");
    runner
        .approve(&case.job, &case.job.brief.reviewer, "report read")
        .await
        .expect("approve");
    let late = super::row(5000, super::day(9), 7, "late");
    case.env
        .seed
        .insert_rows(&case.target, std::slice::from_ref(&late))
        .await
        .expect("a concurrent write");
    let visible = checksum(&case.env, &case.visible()).await;
    let err = runner.cutover(&case.job).await.expect_err("refused");
    assert!(
        matches!(
            &err,
            Error::TargetChangedSinceCopy {
                rows_then: 40,
                rows_now: 41,
                ..
            }
        ),
        "says how many rows then and now: {err:?}"
    );
    assert_eq!(
        checksum(&case.env, &case.visible()).await,
        visible,
        "readers still see the late row"
    );
    let run = case.env.ledger.run(&case.job.run_id).await.expect("run");
    assert_eq!(run.status, RunStatus::Completed, "not cut over");
    // Rolled back, the run frees the target; the late row stays.
    runner.rollback(&case.job).await.expect("rollback");
    assert_eq!(checksum(&case.env, &case.visible()).await, visible);
}

/// A blocking per-batch check that fails (a duplicated key in the first
/// day's corrected rows) stops the run before that day is live: the check
/// runs inside the batch's transaction, before its commit, so the table
/// readers see is unchanged and the batch is not written.
pub async fn blocking_batch_check_before_commit(env: Env) {
    let target = super::seed_table(&env, "facts", &super::original_rows()).await;
    let mut rows = super::source_rows();
    // Key 9 twice on the first day of the scope.
    rows.push(super::row(9, super::day(2), 1, "duplicate"));
    let fix = super::seed_table(&env, "facts_fix", &rows).await;
    let before = checksum(&env, &target).await;
    let job = super::job_on(&env, Pattern::Overwrite, "guarded", Source::Table(fix));
    let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner.run(&job).await.expect_err("stopped");
    assert!(
        matches!(&err, Error::ValidationFailed { check, .. } if check.contains("unique")),
        "{err:?}"
    );
    assert_eq!(
        checksum(&env, &target).await,
        before,
        "the failing day never went live"
    );
    let batches = env.ledger.batches(&job.run_id).await.expect("batches");
    assert!(
        batches.iter().all(|b| !b.state.is_done()),
        "no batch counts as written: {:?}",
        batches.iter().map(|b| b.state).collect::<Vec<_>>()
    );
}

/// A table that already exists under the name of a working table a run
/// would create (a user's table that happens to carry the name) is not
/// adopted: the run is refused before any write, naming it, and neither
/// it nor the target changes. Only what the library created is recorded
/// as the run's, so cleanup never drops such a table.
pub async fn existing_table_is_not_adopted(env: Env) {
    if !env.writes(Pattern::Staging) {
        return;
    }
    let case = setup(env, Pattern::Staging, "owned").await;
    let name = format!("{}__bf_stage_owned", case.target.name);
    let theirs = super::seed_table(
        &case.env,
        &name,
        &[super::row(1, super::day(0), 1, "theirs")],
    )
    .await;
    let (mine, before) = (
        checksum(&case.env, &theirs).await,
        checksum(&case.env, &case.target).await,
    );
    let err = case.runner().run(&case.job).await.expect_err("refused");
    assert!(
        matches!(&err, Error::NameTaken { table, .. } if table.ends_with(name.as_str())),
        "names it: {err:?}"
    );
    assert_eq!(checksum(&case.env, &theirs).await, mine, "theirs untouched");
    assert_eq!(checksum(&case.env, &case.target).await, before);
    let assets = case.env.ledger.assets(None).await.expect("assets");
    assert!(
        assets.iter().all(|a| a.table != theirs),
        "never recorded as the run's: {assets:?}"
    );
}

/// A merge batch written again from a source whose slice changed (a key
/// added since) logs the key it adds, so restoring the batch removes it:
/// the table is exactly as before the first write.
pub async fn merge_rerun_logs_every_key(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
    use super::writes::slice_write;
    use backfill_core::warehouse::{Footprint, MergeWrite, Restore};
    let facts = super::seed_table(&env, "facts", &super::original_rows()).await;
    let fix = super::seed_table(&env, "facts_fix", &super::source_rows()).await;
    let mut later = super::source_rows();
    later.push(super::row(2000, super::day(4), 9, "arrived since"));
    let later = super::seed_table(&env, "facts_fix_later", &later).await;
    let w = env.warehouse.as_ref();
    let original = checksum(&env, &facts).await;
    let run = RunId::new("mgrerun").expect("run id");
    let plan = super::daily_plan(facts.clone());
    let b = &plan.batches[2]; // day 4
    let columns = super::facts_schema().names();
    let keys = vec![ident("id")];
    let (pre, log) = (env.table("facts_pre"), env.table("facts_keys"));
    w.create_snapshot_table(&facts, &columns, &pre)
        .await
        .expect("pre-image");
    w.create_snapshot_table(&facts, &keys, &log)
        .await
        .expect("key log");
    for source in [Source::Table(fix), Source::Table(later)] {
        w.merge_slice(&MergeWrite {
            slice: slice_write(&run, b, &facts, &source, &columns, Some(&pre)),
            keys: &keys,
            key_log: Some(&log),
            scope: None,
        })
        .await
        .expect("merge");
    }
    w.restore_slice(&Restore {
        table: &facts,
        snapshot: &pre,
        batch: b,
        footprint: Footprint::Keys {
            keys: &keys,
            key_log: &log,
        },
        columns: &columns,
    })
    .await
    .expect("restore");
    assert_eq!(
        checksum(&env, &facts).await,
        original,
        "the key added by the second write is gone too"
    );
}

/// A merge whose source carries, inside the scope, a key whose target row
/// lies outside it (order 1, from the first day, moved into the scope)
/// would rewrite that row: the batch is refused before its write, naming
/// the key, and the table is unchanged.
pub async fn merge_refuses_keys_outside_the_scope(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
    let mut rows = super::source_rows();
    rows.retain(|r| r[0] != backfill_core::Value::Int(1));
    // On the scope's first day, so nothing is written before it.
    rows.push(super::row(1, super::day(2), 1, "moved into the scope"));
    let err = merge_refused(&env, "outside", &rows).await;
    assert!(
        matches!(&err, Error::KeysOutsideScope { rows: 1, sample, .. } if sample == &vec!["1".to_string()]),
        "names the key: {err:?}"
    );
}

/// A key that occurs on two days of the scope in a merge's source would be
/// upserted twice, the later day silently winning: refused before the
/// first write, naming the key.
pub async fn merge_refuses_keys_repeated_across_batches(env: Env) {
    if !env.writes(Pattern::Merge) {
        return;
    }
    let mut rows = super::source_rows();
    rows.push(super::row(2000, super::day(3), 1, "first"));
    rows.push(super::row(2000, super::day(5), 2, "again"));
    let err = merge_refused(&env, "twice", &rows).await;
    assert!(
        matches!(&err, Error::SourceKeysNotUnique { duplicates: 1, sample, .. } if sample == &vec!["2000".to_string()]),
        "names the key: {err:?}"
    );
}

/// Runs the merge case `run` from a source of `rows` over the original
/// facts, expects it refused, checks the table is unchanged, and returns
/// the error.
async fn merge_refused(env: &Env, run: &str, rows: &[Vec<backfill_core::Value>]) -> Error {
    let target = super::seed_table(env, "facts", &super::original_rows()).await;
    let fix = super::seed_table(env, "facts_fix", rows).await;
    let before = checksum(env, &target).await;
    let job = super::job_on(env, Pattern::Merge, run, Source::Table(fix));
    let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner.run(&job).await.expect_err("refused");
    assert_eq!(checksum(env, &target).await, before, "nothing written");
    err
}

/// A ledger edited by hand (a written batch set back to `pending`, so a
/// rerun would write it again) disagrees with its own history: the run is
/// refused before any write, naming the batch, both states and what to
/// do, and the table is unchanged.
pub async fn edited_ledger_is_refused(env: Env) {
    let Some(batches) = env.ledger_batches.clone() else {
        env.gate(false, "ledger_batches", "a ledger edited by hand");
        return;
    };
    let case = setup(env, Pattern::Overwrite, "edited").await;
    let runner = case.runner();
    runner.run(&case.job).await.expect("run");
    let after = checksum(&case.env, &case.target).await;
    let batch = case.job.plan.batches[2].id.to_string();
    case.env
        .warehouse
        .execute(&format!(
            "UPDATE {} SET \"state\" = 'pending' WHERE \"run_id\" = 'edited' AND \"batch_id\" = '{batch}'",
            super::quoted(&batches)
        ))
        .await
        .expect("an edit by hand");
    let err = runner.run(&case.job).await.expect_err("refused");
    assert!(
        matches!(&err, Error::LedgerInconsistent { batch: b, state, history, .. }
            if b == &batch && state == "pending" && history != "pending"),
        "names the batch, its state and its history: {err:?}"
    );
    assert_eq!(checksum(&case.env, &case.target).await, after);
}

/// A source slice that comes back empty for a day whose target rows exist
/// (a source that lost its history) fails that batch before its commit,
/// naming the batch and both counts: the day keeps its rows and is not
/// done. Declared expected to be empty, the same day is written empty
/// when the run is resumed.
pub async fn emptied_day_is_refused(env: Env) {
    let target = super::seed_table(&env, "facts", &super::original_rows()).await;
    let lost = backfill_core::Value::Date(super::day(4));
    let rows: Vec<_> = super::source_rows()
        .into_iter()
        .filter(|r| r[1] != lost)
        .collect();
    let fix = super::seed_table(&env, "facts_fix", &rows).await;
    let mut job = super::job_on(&env, Pattern::Overwrite, "emptied", Source::Table(fix));
    let day = job
        .plan
        .batches
        .iter()
        .find(|b| b.start.as_ref() == Some(&lost))
        .expect("the day is in scope")
        .clone();
    let held = env
        .warehouse
        .count(&target, &day.predicate)
        .await
        .expect("count");
    assert!(held > 0);
    let runner = backfill_core::runner::Runner::new(env.warehouse.clone(), env.ledger.clone());
    let err = runner
        .run(&job)
        .await
        .expect_err("stopped at the emptied day");
    match &err {
        Error::ValidationFailed { check, detail } => {
            assert_eq!(check, "emptiness", "{err}");
            assert!(detail.contains(&day.id.to_string()), "{detail}");
            assert!(
                detail.contains(&format!("holds 0 row(s) where the target held {held}")),
                "{detail}"
            );
        }
        other => panic!("expected the emptiness guard: {other:?}"),
    }
    assert_eq!(
        env.warehouse
            .count(&target, &day.predicate)
            .await
            .expect("count"),
        held,
        "the day keeps its rows"
    );
    let batches = env.ledger.batches(&job.run_id).await.expect("batches");
    let rec = batches
        .iter()
        .find(|b| b.batch.id == day.id)
        .expect("batch");
    assert!(!rec.state.is_done(), "{:?}", rec.state);

    // Declared empty, the day is written empty on resume.
    job.brief.validation.emptiness.expected_empty = vec![day.id.clone()];
    let report = runner.run(&job).await.expect("resumed");
    assert_eq!(report.status, RunStatus::Completed);
    assert_eq!(
        env.warehouse
            .count(&target, &day.predicate)
            .await
            .expect("count"),
        0
    );
}

/// The freeze at cut-over: a dependent of the target redefined after the
/// run wrote its batches refuses the cut-over, naming it, when the
/// brief's policy pauses on redefinitions; accepted, the cut-over goes
/// ahead.
pub async fn freeze_refuses_cutover(env: Env) {
    if !env.gate(
        env.capabilities.finds_dependents,
        "finds_dependents",
        "a redefined dependent view pausing the run",
    ) {
        return;
    }
    let mut case = setup(env, Pattern::Parallel, "frozen").await;
    let view = case.env.table("facts_report");
    case.env
        .seed
        .create_view(&view, &case.target)
        .await
        .expect("view");
    case.job.brief.validation.drift.definitions = Some(backfill_core::drift::Act::Pause);
    let runner = case.runner();
    runner.run(&case.job).await.expect("run");
    let other = super::seed_table(&case.env, "facts_other", &super::original_rows()).await;
    case.env
        .seed
        .create_view(&view, &other)
        .await
        .expect("redefined");
    let err = approve_and_cut_over(&runner, &case.job)
        .await
        .expect_err("frozen");
    assert!(
        matches!(&err, Error::NotAllowed(m) if m.contains("facts_report")),
        "{err}"
    );
    runner
        .accept_drift(
            &case.job,
            "ada",
            "the report moved to another table on purpose",
        )
        .await
        .expect("accepted");
    runner.cutover(&case.job).await.expect("cut over");
}
