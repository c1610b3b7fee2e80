//! Conformance cases for end-of-run validation: a run whose source has
//! planted defects (a missing day, a removed row, an orphan key, a
//! metric shift) must be caught by exactly the checks meant to catch
//! them, and a clean run must pass and cut over.

use backfill_core::inspect::{Aggregate, Dim, Metric};
use backfill_core::validate::{Detail, Finding, ValidationReport};
use backfill_core::{CheckSpec, Error, Expectation, Source, Status, Value};

use super::{day, ident, job_on, original_rows, seed_table, source_rows, Case, Env, Pattern};

fn checks(env: &Env, completeness: Expectation, metric_change: f64) -> Vec<CheckSpec> {
    vec![
        CheckSpec::Unique {
            keys: vec![ident("id")],
            blocking: true,
        },
        CheckSpec::Coverage {
            empty_allowed: 0,
            blocking: true,
        },
        CheckSpec::Completeness {
            by: vec![Dim::column(ident("day"))],
            keys: vec![ident("id")],
            expect: completeness,
            blocking: false,
        },
        CheckSpec::NullRate {
            columns: vec![ident("note"), ident("amount")],
            max_increase: 0.0,
            blocking: true,
        },
        CheckSpec::References {
            columns: vec![ident("id")],
            parent: env.table("facts_parent"),
            parent_columns: vec![ident("id")],
            max: 0,
            blocking: true,
        },
        CheckSpec::Reconcile {
            metric: Metric {
                name: "amount".into(),
                aggregate: Aggregate::Sum(ident("amount")),
                by: vec![Dim::column(ident("day"))],
            },
            keys: vec![ident("id")],
            expect: Expectation::MaxChangePercent(metric_change),
            tolerance: None,
            blocking: true,
        },
        CheckSpec::RowDiff {
            keys: vec![ident("id")],
            columns: vec![],
            sample: 3,
            max_changed: None,
            partition: Some(Dim::column(ident("day"))),
            blocking: true,
        },
        CheckSpec::Schema { blocking: true },
        CheckSpec::EdgeCases {
            column: ident("id"),
            values: vec![Value::Int(13), Value::Int(14), Value::Int(1000)],
        },
        CheckSpec::Size,
    ]
}

async fn case_with(env: Env, pattern: Pattern, run: &str, source: &[Vec<Value>]) -> Case {
    let target = seed_table(&env, "facts", &original_rows()).await;
    let fix = seed_table(&env, "facts_fix", source).await;
    seed_table(&env, "facts_parent", &original_rows()).await;
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

fn finding<'a>(r: &'a ValidationReport, prefix: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.outcome.check.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} finding in\n{r}"))
}

fn status(r: &ValidationReport, prefix: &str) -> Status {
    finding(r, prefix).outcome.status
}

/// The source loses day 5 entirely and drops row 13; it adds row 1000,
/// which has no parent. Coverage finds the empty day, completeness the
/// three days whose counts moved, reconciliation the two days whose
/// amount moved more than 5% (explained exactly by the diff), and the
/// reference check the one orphan; the other checks pass. Cut-over is
/// refused.
pub async fn planted_defects_are_found(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let source: Vec<Vec<Value>> = source_rows()
        .into_iter()
        .filter(|r| r[1] != Value::Date(day(5)))
        .collect();
    let mut case = case_with(env, pattern, "defects", &source).await;
    case.job.brief.validation.checks = checks(&case.env, Expectation::Unchanged, 5.0);
    // The emptiness guard would stop the run at the lost day, before its
    // commit (`emptied_day_is_refused`); here the end-of-run checks must
    // find what got through.
    case.job.brief.validation.emptiness.off = true;
    let runner = case.runner();
    // The run fails with the first blocking check that failed; the full
    // report is in the ledger.
    let err = runner.run(&case.job).await.expect_err("validation fails");
    assert!(matches!(err, Error::ValidationFailed { .. }), "{err:?}");
    let v = runner
        .validation_report(&case.job)
        .await
        .expect("read")
        .expect("validation report");
    assert!(!v.passed(), "{v}");

    let coverage = &finding(&v, "coverage").outcome;
    assert_eq!(coverage.status, Status::Fail, "{v}");
    assert_eq!(coverage.sample, vec!["day(day) = 2026-03-06 has no rows"]);

    let completeness = &finding(&v, "completeness").outcome;
    assert_eq!(completeness.status, Status::Warn, "non-blocking: {v}");
    let days: Vec<&str> = completeness
        .sample
        .iter()
        .map(|s| s.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(days, vec!["2026-03-04", "2026-03-05", "2026-03-06"]);

    let recon = finding(&v, "reconcile");
    assert_eq!(recon.outcome.status, Status::Fail, "{v}");
    let Some(Detail::Reconciliation { rows, .. }) = &recon.detail else {
        panic!("no reconciliation table")
    };
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter()
            .all(|r| r.unexplained().expect("in range").is_zero()),
        "{v}"
    );
    let outside: Vec<String> = rows
        .iter()
        .filter(|r| !r.within)
        .map(|r| r.key[0].to_string())
        .collect();
    assert_eq!(outside, vec!["2026-03-04", "2026-03-06"]);
    // Day 3 lost row 13 (-130) and gained 1 on each of its other rows.
    let d3 = rows
        .iter()
        .find(|r| r.key[0] == Value::Date(day(3)))
        .expect("day 3");
    assert_eq!(
        (d3.before.to_string(), d3.after.to_string()),
        ("580".to_string(), "453".to_string())
    );
    assert_eq!(
        (
            d3.added.to_string(),
            d3.removed.to_string(),
            d3.changed.to_string()
        ),
        ("0".to_string(), "-130".to_string(), "3".to_string())
    );

    let diff = finding(&v, "row_diff");
    assert_eq!(diff.outcome.status, Status::Pass, "{v}");
    let Some(Detail::Diff(d)) = &diff.detail else {
        panic!("no diff")
    };
    assert_eq!(
        (
            d.old_rows,
            d.new_rows,
            d.added,
            d.removed,
            d.changed,
            d.unchanged
        ),
        (20, 16, 1, 5, 15, 0)
    );

    let refs = &finding(&v, "references").outcome;
    assert_eq!((refs.status, refs.observed), (Status::Fail, 1.0), "{v}");
    assert_eq!(refs.sample, vec!["1000"]);

    assert_eq!(status(&v, "null_rate"), Status::Pass, "{v}");
    assert_eq!(status(&v, "schema"), Status::Pass, "{v}");
    assert_eq!(status(&v, "size"), Status::Pass, "{v}");
    let edges = finding(&v, "edge_cases");
    assert_eq!(edges.outcome.observed, 3.0, "{v}");

    // The report is in the ledger, and it blocks cut-over.
    assert_eq!(
        runner.validation_report(&case.job).await.expect("read"),
        Some(v.clone())
    );
    if pattern.needs_cutover() {
        let err = runner.cutover(&case.job).await.expect_err("refused");
        assert!(matches!(err, Error::ValidationFailed { .. }), "{err}");
    }
}

/// A case on the corrected source with every end-of-run check, whose
/// expectations the correction meets (row 1000, which it adds, gets a
/// parent).
async fn clean_case(env: Env, pattern: Pattern, run: &str) -> Case {
    let mut case = case_with(env, pattern, run, &source_rows()).await;
    case.job.brief.validation.checks = checks(&case.env, Expectation::MaxChangeAbsolute(1), 25.0);
    let parent = case.env.table("facts_parent");
    let row = vec![
        Value::Int(1000),
        Value::Date(day(4)),
        Value::Int(0),
        Value::Text("parent".into()),
    ];
    case.env
        .seed
        .insert_rows(&parent, &[row])
        .await
        .expect("insert parent");
    case
}

/// A clean run passes every check, explains the metric's change exactly,
/// and cuts over; rerunning reads the stored report instead of checking
/// again.
pub async fn clean_run_passes(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let case = clean_case(env, pattern, "clean").await;
    let runner = case.runner();
    let report = runner.run(&case.job).await.expect("run");
    let v = report.validation.clone().expect("validation report");
    assert!(v.passed(), "{v}");
    assert!(
        v.outcomes().all(|o| o.status == Status::Pass),
        "every check passes: {v}"
    );
    let (_, _, rows) = v.reconciliations().next().expect("reconciliation");
    use backfill_core::Amount;
    let delta = Amount::try_sum(rows.iter().map(|r| r.delta().expect("in range"))).expect("sum");
    let parts =
        Amount::try_sum(rows.iter().flat_map(|r| [r.added, r.removed, r.changed])).expect("sum");
    assert_eq!(delta, parts);
    assert!(!delta.is_zero());
    super::approve_and_cut_over(&runner, &case.job)
        .await
        .expect("cut-over");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
    let again = runner.run(&case.job).await.expect("rerun");
    assert_eq!(again.validation.map(|r| r.at), Some(v.at));
}

/// An inspection that fails loses nothing: while capturing the baseline
/// it stops the run before any write, and a resume completes; at the end
/// it is an `error` finding that blocks cut-over until the checks are run
/// again.
pub async fn failed_inspection_loses_nothing(env: Env) {
    if !env.writes(Pattern::Staging) {
        return;
    }
    let pattern = Pattern::Staging;
    let case = clean_case(env, pattern, "inspectfault").await;
    let (runner, faults) = case.faulty_runner();
    // The first inspection is the preflight's blast radius; the second
    // captures the first check's baseline.
    faults.fail_nth(crate::faults::FaultPoint::DuringInspect, 2);
    let before = case.checksum(&case.target).await;
    runner
        .run(&case.job)
        .await
        .expect_err("baseline capture fails");
    let done = case
        .env
        .ledger
        .batches(&case.job.run_id)
        .await
        .expect("batches")
        .iter()
        .filter(|b| b.state.is_done())
        .count();
    assert_eq!(done, 0, "nothing was written without a baseline");
    assert_eq!(case.checksum(&case.target).await, before);

    let report = runner.run(&case.job).await.expect("resume");
    assert!(report.validation.expect("validated").passed());

    faults.fail_once(crate::faults::FaultPoint::DuringInspect);
    let v = runner.validate(&case.job).await.expect("validate");
    assert_eq!(
        v.outcomes().filter(|o| o.status == Status::Error).count(),
        1,
        "{v}"
    );
    let err = runner
        .approve(&case.job, "grace", "looks fine")
        .await
        .expect_err("no approval while a blocking check fails");
    assert!(matches!(err, Error::Approval(_)), "{err}");
    let err = runner.cutover(&case.job).await.expect_err("blocked");
    assert!(matches!(err, Error::ValidationFailed { .. }), "{err}");
    assert!(runner.validate(&case.job).await.expect("again").passed());
    super::approve_and_cut_over(&runner, &case.job)
        .await
        .expect("cut-over");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
}

fn per_batch(check: CheckSpec) -> CheckSpec {
    CheckSpec::PerBatch {
        of: Box::new(check),
    }
}

/// A whole-scope check declared per batch runs on each batch's slice
/// right after its write: with row 13 dropped from the source, the
/// completeness check fails on that day's batch and the run stops there.
pub async fn per_batch_check_stops_at_the_bad_batch(env: Env) {
    let mut case = case_with(env, Pattern::Overwrite, "perbatch", &source_rows()).await;
    case.job.brief.validation.checks = vec![per_batch(CheckSpec::Completeness {
        by: vec![],
        keys: vec![ident("id")],
        expect: Expectation::Unchanged,
        blocking: true,
    })];
    let runner = case.runner();
    let err = runner.run(&case.job).await.expect_err("stops");
    assert!(matches!(err, Error::ValidationFailed { .. }), "{err}");
    let states: Vec<(String, backfill_core::BatchState)> = case
        .env
        .ledger
        .batches(&case.job.run_id)
        .await
        .expect("batches")
        .into_iter()
        .map(|b| (b.batch.id.to_string(), b.state))
        .collect();
    assert!(states[0].1.is_done(), "{states:?}");
    assert_eq!(states[1].0, "2026-03-04");
    assert!(!states[1].1.is_done(), "{states:?}");
    assert!(states[2..].iter().all(|(_, s)| !s.is_done()), "{states:?}");
}

/// Reconciliation and a row diff per batch pass on a clean run, for
/// every pattern that keeps old rows: each batch's change is explained by
/// that batch's rows (a merge's by the keys it touched).
pub async fn per_batch_reconcile_passes(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let mut case = case_with(env, pattern, "perbatchok", &source_rows()).await;
    case.job.brief.validation.checks = vec![
        per_batch(CheckSpec::Reconcile {
            metric: Metric {
                name: "amount".into(),
                aggregate: Aggregate::Sum(ident("amount")),
                by: vec![],
            },
            keys: vec![ident("id")],
            expect: Expectation::MaxChangePercent(25.0),
            tolerance: None,
            blocking: true,
        }),
        per_batch(CheckSpec::RowDiff {
            keys: vec![ident("id")],
            columns: vec![],
            sample: 3,
            max_changed: Some(backfill_core::validate::Threshold::Absolute(5.0)),
            partition: None,
            blocking: true,
        }),
    ];
    let report = case.runner().run(&case.job).await.expect("run");
    assert_eq!(report.outcomes.len(), 10, "{report}");
    assert!(
        report.outcomes.iter().all(|o| o.status == Status::Pass),
        "{report}"
    );
    let diffs: Vec<f64> = report
        .outcomes
        .iter()
        .filter(|o| o.check.starts_with("row_diff"))
        .map(|o| o.observed)
        .collect();
    // Each day changes its 4 rows; day 3 loses row 13 (a merge keeps it)
    // and day 4 gains row 1000.
    let expected = if pattern == Pattern::Merge {
        vec![4.0, 3.0, 5.0, 4.0, 4.0]
    } else {
        vec![4.0, 4.0, 5.0, 4.0, 4.0]
    };
    assert_eq!(diffs, expected, "{report}");
}

/// Staged and versioned runs expose nothing until a reviewer other than
/// the operator approves the latest validation report; the approval is in
/// the ledger (another process sees it), and a newer report needs a new
/// approval.
pub async fn approval_gates_cut_over(env: Env, pattern: Pattern) {
    if !env.writes(pattern) {
        return;
    }
    let mut case = case_with(env, pattern, "approval", &source_rows()).await;
    case.job.brief.validation.checks.push(CheckSpec::Size);
    let runner = case.runner();
    runner.run(&case.job).await.expect("run");
    let original = case.checksum_of("facts_original", &original_rows()).await;

    let err = runner.cutover(&case.job).await.expect_err("unapproved");
    assert!(matches!(err, Error::Approval(_)), "{err}");
    assert_eq!(case.checksum(&case.visible()).await, original);

    let err = runner
        .approve(&case.job, &case.job.brief.operator, "mine")
        .await
        .expect_err("operator");
    assert!(matches!(err, Error::Approval(_)), "{err}");

    let given = runner
        .approve(&case.job, "grace", "report read")
        .await
        .expect("approve");
    let seen = case.runner().approval(&case.job).await.expect("read");
    assert_eq!(seen.as_ref().map(|a| a.reviewer.as_str()), Some("grace"));
    assert_eq!(seen, Some(given));

    // The checks ran again: the approval was for the older report.
    runner.validate(&case.job).await.expect("validate");
    let err = runner.cutover(&case.job).await.expect_err("stale");
    assert!(matches!(err, Error::Approval(_)), "{err}");
    assert_eq!(case.checksum(&case.visible()).await, original);

    runner
        .approve(&case.job, "grace", "new report read")
        .await
        .expect("approve again");
    runner.cutover(&case.job).await.expect("cut-over");
    assert_eq!(case.checksum(&case.visible()).await, case.expected().await);
}
