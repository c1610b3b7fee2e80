//! Drift and freeze in the run: the baseline when the run starts, the
//! checks before each batch, and the operator's acceptance.

use std::sync::atomic::Ordering;

use super::{Runner, Shared};
use crate::drift::{self, Acceptance, Act, Drift, Fingerprint};
use crate::error::{Error, Result};
use crate::job::Backfill;
use crate::ledger::Steering;

/// Who the ledger records as steering a run that drifted.
pub(super) const DRIFT_CHECK: &str = "drift check";

impl Runner {
    /// The run's baseline, taken and kept in the ledger on its first
    /// call; on a later call, the drift since then (row counts included).
    pub(super) async fn drift_at_start(
        &self,
        job: &Backfill,
        staged: bool,
    ) -> Result<(Fingerprint, Vec<Drift>)> {
        let now = drift::fingerprint(self.warehouse.as_ref(), job, true, staged).await?;
        let stored = self.retried.document(&job.run_id, drift::BASELINE).await?;
        let Some(stored) = stored else {
            let doc = serde_json::to_value(&now)?;
            self.retried
                .put_document_if_absent(&job.run_id, drift::BASELINE, &doc)
                .await?;
            return Ok((now, Vec::new()));
        };
        let base: Fingerprint =
            serde_json::from_value(stored).map_err(|e| Error::Serde(e.to_string()))?;
        let found = self.compare(job, &base, &now);
        self.pause_on(job, &found).await?;
        Ok((base, found))
    }

    /// The catalog part of the baseline checked again before a batch;
    /// false when the worker must stop (the run drifted, and its policy
    /// pauses on it).
    pub(super) async fn drift_ok(&self, shared: &Shared<'_>) -> bool {
        let Some(base) = &shared.drift_base else {
            return true;
        };
        let job = shared.job;
        let now = drift::fingerprint(
            self.warehouse.as_ref(),
            job,
            false,
            shared.ctx.staged_source,
        );
        let found = match now.await {
            Ok(now) => self.compare(job, base, &now),
            Err(e) => {
                self.fail(shared, e);
                return false;
            }
        };
        let pause = found.iter().any(|d| d.act == Act::Pause);
        {
            let mut seen = shared.drifted.lock().unwrap_or_else(|e| e.into_inner());
            for d in found.iter() {
                if !seen.contains(d) {
                    seen.push(d.clone());
                }
            }
        }
        if !pause {
            return true;
        }
        if let Err(e) = self.pause_on(job, &found).await {
            self.fail(shared, e);
            return false;
        }
        if let Some(d) = found.iter().find(|d| d.act == Act::Pause) {
            self.emit(crate::runner::Event::Paused {
                reason: format!("drift: {d}"),
            });
        }
        *shared.steered.lock().unwrap_or_else(|e| e.into_inner()) = Some(Steering::Pause);
        shared.stop.store(true, Ordering::SeqCst);
        false
    }

    fn compare(&self, job: &Backfill, base: &Fingerprint, now: &Fingerprint) -> Vec<Drift> {
        let v = &job.brief.validation;
        drift::compare(base, now, &v.drift, job.brief.risk)
    }

    /// Steers the run to a pause when any of `found` pauses.
    async fn pause_on(&self, job: &Backfill, found: &[Drift]) -> Result<()> {
        if found.iter().any(|d| d.act == Act::Pause) {
            self.retried
                .steer(&job.run_id, Steering::Pause, DRIFT_CHECK)
                .await?;
        }
        Ok(())
    }

    /// Accepts the drift since the run's baseline: records the changes
    /// with `by` and `why` (the change note lists them), makes what the
    /// run depends on now its baseline, and lifts the pause, so the next
    /// `run` goes on. `why` must say something.
    pub async fn accept_drift(&self, job: &Backfill, by: &str, why: &str) -> Result<Vec<Drift>> {
        if by.trim().is_empty() || why.trim().is_empty() {
            return Err(Error::NotAllowed(
                "accepting drift needs who accepts it and why".into(),
            ));
        }
        let run_id = &job.run_id;
        let stored = self
            .retried
            .document(run_id, drift::BASELINE)
            .await?
            .ok_or_else(|| Error::NotAllowed(format!("run {run_id} has no drift baseline yet")))?;
        let base: Fingerprint =
            serde_json::from_value(stored).map_err(|e| Error::Serde(e.to_string()))?;
        let staged = self.stages_source(job);
        let now = drift::fingerprint(self.warehouse.as_ref(), job, true, staged).await?;
        let found = self.compare(job, &base, &now);
        let mut accepted: Vec<Acceptance> =
            match self.retried.document(run_id, drift::ACCEPTED).await? {
                Some(v) => serde_json::from_value(v).map_err(|e| Error::Serde(e.to_string()))?,
                None => Vec::new(),
            };
        accepted.push(Acceptance {
            by: by.to_string(),
            why: why.to_string(),
            at: self.retried.now(),
            drift: found.clone(),
        });
        self.retried
            .put_document(run_id, drift::ACCEPTED, &serde_json::to_value(&accepted)?)
            .await?;
        let rebased = drift::rebaseline(&base, now);
        self.retried
            .put_document(run_id, drift::BASELINE, &serde_json::to_value(&rebased)?)
            .await?;
        if self.retried.steering(run_id).await? == Steering::Pause {
            self.retried.steer(run_id, Steering::Run, by).await?;
        }
        Ok(found)
    }
}
