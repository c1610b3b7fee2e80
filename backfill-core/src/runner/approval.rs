//! Reviewer approval before cut-over.
//!
//! Staging-then-swap and parallel-version runs expose nothing until a
//! reviewer other than the operator approves the run's latest validation
//! report. The approval is kept in the ledger, so another process (the
//! reviewer's) can give it; a newer validation report needs a new one.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{validation, Backfill, Runner};
use crate::brief::same_person;
use crate::error::{Error, Result};
use crate::ledger::RunStatus;

/// A reviewer's approval of a run's cut-over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub reviewer: String,
    /// When.
    pub at: Timestamp,
    /// The validation report approved (its time), if the plan has
    /// end-of-run checks.
    pub validation_at: Option<Timestamp>,
    /// What the reviewer said.
    pub note: String,
}

impl Approval {
    /// The ledger document an approval is kept under.
    pub const DOCUMENT: &'static str = "approval";
}

impl Runner {
    /// Records `reviewer`'s approval to cut the run over. Refused (a typed
    /// [`Error::Approval`]) when the reviewer is the operator, when
    /// batches are missing, or while a blocking check of the latest
    /// validation report fails.
    pub async fn approve(&self, job: &Backfill, reviewer: &str, note: &str) -> Result<Approval> {
        let reviewer = reviewer.trim();
        if reviewer.is_empty() {
            return Err(Error::Approval("a reviewer must be named".into()));
        }
        let run = self.retried.run(&job.run_id).await?;
        // The operator as the ledger recorded the run, and as the caller's
        // job names it, compared as identities (case and spacing aside).
        for operator in [run.operator.as_str(), job.brief.operator.as_str()] {
            if same_person(reviewer, operator) {
                return Err(Error::Approval(format!(
                    "{reviewer} operates this run ({}) and cannot also approve it",
                    operator.trim()
                )));
            }
        }
        if !matches!(run.status, RunStatus::Completed | RunStatus::CutOver) {
            return Err(Error::Approval(format!(
                "run {} is {}: approve once every batch is written",
                job.run_id,
                run.status.as_str()
            )));
        }
        let validation_at = if validation::scope_checks(job).is_empty() {
            None
        } else {
            let report = self
                .validation_report(job)
                .await?
                .ok_or_else(|| Error::Approval("the end-of-run checks have not run yet".into()))?;
            if let Some(f) = report.blocking_failures().next() {
                return Err(Error::Approval(format!(
                    "blocking check {} fails: {}",
                    f.outcome.check, f.outcome.detail
                )));
            }
            Some(report.at)
        };
        let approval = Approval {
            reviewer: reviewer.to_string(),
            at: self.retried.now(),
            validation_at,
            note: note.to_string(),
        };
        let doc = serde_json::to_value(&approval).map_err(|e| Error::Serde(e.to_string()))?;
        self.retried
            .put_document(&job.run_id, Approval::DOCUMENT, &doc)
            .await?;
        Ok(approval)
    }

    /// The run's approval, if one was given.
    pub async fn approval(&self, job: &Backfill) -> Result<Option<Approval>> {
        match self
            .retried
            .document(&job.run_id, Approval::DOCUMENT)
            .await?
        {
            Some(doc) => serde_json::from_value(doc)
                .map(Some)
                .map_err(|e| Error::Serde(e.to_string())),
            None => Ok(None),
        }
    }

    /// Refuses cut-over of a staged or versioned run without an approval
    /// of its latest validation report.
    pub(super) async fn require_approval(&self, job: &Backfill) -> Result<()> {
        if !job.brief.strategy.needs_cutover() {
            return Ok(());
        }
        let approval = self.approval(job).await?.ok_or_else(|| {
            Error::Approval(format!(
                "cut-over of run {} needs a reviewer's approval (Runner::approve)",
                job.run_id
            ))
        })?;
        let latest = self.validation_report(job).await?.map(|r| r.at);
        if approval.validation_at != latest {
            return Err(Error::Approval(
                "the approval was given on an older validation report; approve again".into(),
            ));
        }
        Ok(())
    }
}
