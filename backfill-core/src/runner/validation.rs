//! End-of-run validation: the baseline captured before the first write,
//! the scope checks after the last, and the report kept in the ledger.

use serde_json::{Map, Value as Json};

use super::{Backfill, Runner};
use crate::error::{Error, Result};
use crate::inspect::Rows;
use crate::ledger::RunStatus;
use crate::strategy::validation_sides;
use crate::validate::{Finding, Outcome, ScopeCheck, ScopeContext, Status, ValidationReport};
use crate::Ident;

/// The ledger document the baseline is kept under.
pub const BASELINE_DOCUMENT: &str = "baseline";

/// The scope checks of a job's validation plan, each with the key its
/// baseline is stored under.
pub(crate) fn scope_checks(job: &Backfill) -> Vec<(String, Box<dyn ScopeCheck>)> {
    job.brief
        .validation
        .checks
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| spec.scope_check().map(|c| (format!("{i}:{}", c.name()), c)))
        .collect()
}

impl Runner {
    /// Measures the old side of every scope check over the scope and
    /// keeps it in the ledger, once per run, before the first write. A
    /// run that already wrote without one keeps none: its comparing
    /// checks report an error rather than compare against data that has
    /// already changed.
    pub(super) async fn capture_baseline(&self, job: &Backfill, done: usize) -> Result<()> {
        let checks = scope_checks(job);
        if checks.is_empty() || done > 0 {
            return Ok(());
        }
        let run_id = &job.run_id;
        if self
            .retried
            .document(run_id, BASELINE_DOCUMENT)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let before = Rows::slice(job.target().clone(), job.plan.scope.predicate()?);
        let mut doc = Map::new();
        for (key, check) in &checks {
            if let Some(v) = check.baseline(self.warehouse.as_ref(), &before).await? {
                doc.insert(key.clone(), v);
            }
        }
        // Workers racing to capture it: the first to store wins, and it
        // measured before its own first write, so before any write.
        self.retried
            .put_document_if_absent(run_id, BASELINE_DOCUMENT, &Json::Object(doc))
            .await
            .map(|_| ())
    }

    /// Runs the plan's end-of-run checks on the whole scope now, keeps the
    /// report in the ledger (a later cut-over reads it) and returns it.
    /// A check that cannot run is an `error` finding, not an error.
    pub async fn validate(&self, job: &Backfill) -> Result<ValidationReport> {
        let run_id = &job.run_id;
        let run = self.retried.run(run_id).await?;
        let columns: Vec<Ident> = Vec::new();
        let ctx = self.context(job, &columns);
        let scope = job.plan.scope.predicate()?;
        let (new, diff) = validation_sides(
            &job.brief.strategy,
            &ctx,
            &scope,
            run.status == RunStatus::CutOver,
        )?;
        let baseline = self.retried.document(run_id, BASELINE_DOCUMENT).await?;
        let sctx = ScopeContext {
            warehouse: self.warehouse.as_ref(),
            ledger: self.retried.as_ref(),
            run_id,
            plan: &job.plan,
            new: &new,
            diff: diff.as_ref().map(|(o, n)| (o, n)),
        };
        let mut findings = Vec::new();
        for (key, check) in scope_checks(job) {
            let stored = baseline.as_ref().and_then(|b| b.get(&key));
            let finding = match check.check(&sctx, stored).await {
                Ok(f) => f,
                Err(e) => Finding::from(Outcome {
                    check: check.name(),
                    batch: None,
                    status: Status::Error,
                    blocking: check.blocking(),
                    observed: 0.0,
                    expected: None,
                    threshold: None,
                    detail: e.to_string(),
                    sample: Vec::new(),
                    query: String::new(),
                }),
            };
            findings.push(finding);
        }
        let report = ValidationReport {
            run_id: run_id.clone(),
            table: new.table.to_string(),
            at: self.retried.now(),
            findings,
        };
        let doc = serde_json::to_value(&report).map_err(|e| Error::Serde(e.to_string()))?;
        self.retried
            .put_document(run_id, ValidationReport::DOCUMENT, &doc)
            .await?;
        Ok(report)
    }

    /// The run's latest validation report, if it has one.
    pub async fn validation_report(&self, job: &Backfill) -> Result<Option<ValidationReport>> {
        match self
            .retried
            .document(&job.run_id, ValidationReport::DOCUMENT)
            .await?
        {
            Some(doc) => serde_json::from_value(doc)
                .map(Some)
                .map_err(|e| Error::Serde(e.to_string())),
            None => Ok(None),
        }
    }

    /// Refuses cut-over while the plan has end-of-run checks and the
    /// latest report is missing or has a blocking failure.
    pub(super) async fn require_validation(&self, job: &Backfill) -> Result<()> {
        if scope_checks(job).is_empty() {
            return Ok(());
        }
        let report = self
            .validation_report(job)
            .await?
            .ok_or_else(|| Error::NotAllowed("cut-over before the end-of-run checks ran".into()))?;
        let failed = report
            .blocking_failures()
            .next()
            .map(|f| Error::ValidationFailed {
                check: f.outcome.check.clone(),
                detail: f.outcome.detail.clone(),
            });
        failed.map_or(Ok(()), Err)
    }
}
