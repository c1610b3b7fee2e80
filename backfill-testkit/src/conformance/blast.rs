//! Conformance cases for what the announcement says before a run: the
//! blast radius (the engine's own dependents of the target, compared with
//! the brief; undeclared ones warn, or stop a production-critical rebuild
//! before any write) and the engine's row estimates per batch.

use backfill_core::blast::blast_radius;
use backfill_core::brief::Dependency;
use backfill_core::inspect::RelationKind;
use backfill_core::{Error, RiskClass};

use super::{setup, Env, Pattern};

/// Two views read the target; the brief names one. The other is reported
/// as undeclared, warns on a normal run, and refuses a production-critical
/// one with nothing written.
pub async fn blast_radius_finds_undeclared_views(env: Env) {
    if !env.gate(
        env.capabilities.finds_dependents,
        "finds_dependents",
        "the blast radius's views found in the catalog",
    ) {
        return;
    }
    let mut case = setup(env, Pattern::Parallel, "blast").await;
    let report_view = case.env.table("facts_report");
    case.env
        .seed
        .create_view(&report_view, &case.target)
        .await
        .expect("create view");
    let w = case.env.warehouse.as_ref();

    case.job
        .brief
        .dependencies
        .direct
        .push(Dependency::new("facts_view", "bi-team"));
    let blast = blast_radius(w, &case.job.brief)
        .await
        .expect("blast radius");
    let found: Vec<(RelationKind, String)> = blast
        .discovered
        .iter()
        .map(|d| (d.kind, d.relation.name.to_string()))
        .collect();
    assert_eq!(
        found,
        vec![
            (RelationKind::View, "facts_report".to_string()),
            (RelationKind::View, "facts_view".to_string()),
        ],
        "{blast}"
    );
    let undeclared: Vec<String> = blast
        .undeclared
        .iter()
        .map(|d| d.relation.name.to_string())
        .collect();
    assert_eq!(undeclared, vec!["facts_report"], "{blast}");

    // A production-critical rebuild stops before any write.
    let before = case.checksum(&case.target).await;
    case.job.brief.risk = RiskClass::ProductionCriticalRebuild;
    let err = case.runner().run(&case.job).await.expect_err("refused");
    match &err {
        Error::Preflight(f) => assert!(
            f.iter()
                .any(|f| f.blocking && f.message.contains("facts_report")),
            "{f:?}"
        ),
        other => panic!("expected a preflight error, got {other}"),
    }
    assert_eq!(case.checksum(&case.target).await, before);

    // Declared, it runs; any other risk only warns.
    case.job.brief.risk = RiskClass::MetricChangingRepair;
    let report = case.runner().run(&case.job).await.expect("run");
    assert!(
        report.warnings.iter().any(|w| w.contains("facts_report")),
        "{report}"
    );

    let err = blast_radius(w, &{
        let mut b = case.job.brief.clone();
        b.scope.target = case.env.table("no_such_table");
        b
    })
    .await
    .expect_err("unknown");
    assert!(matches!(err, Error::UnknownTable(_)), "{err}");
}

/// Before anything runs, the engine estimates each batch's rows (exactly
/// where it counts, from planner statistics where it explains), and the
/// announcement carries the estimate.
pub async fn engine_estimates_batches(env: Env) {
    let case = setup(env, Pattern::Overwrite, "estimate").await;
    let w = case.env.warehouse.as_ref();
    let per_batch = backfill_core::note::batch_estimates(w, &case.job)
        .await
        .expect("estimates");
    assert_eq!(per_batch.len(), 5);
    let exact = w.dialect().is_none_or(|d| !d.estimates_by_explain());
    for (id, n) in &per_batch {
        if exact {
            assert_eq!(*n, 4, "{id}");
        } else {
            assert!(*n > 0, "{id}");
        }
    }
    let md = backfill_core::note::announcement(&case.job, None)
        .with_engine_estimate(&per_batch)
        .markdown();
    assert!(md.contains("the engine estimates"), "{md}");
    let missing = backfill_core::inspect::Rows::all(case.env.table("no_such_table"));
    let err = backfill_core::ask::estimate(w, missing)
        .await
        .expect_err("unknown");
    assert!(matches!(err, Error::UnknownTable(_)), "{err}");
}
