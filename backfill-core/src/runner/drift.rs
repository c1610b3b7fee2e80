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
        {
            let mut last = shared
                .drift_checked
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < self.options.drift_interval {
                return true;
            }
            *last = std::time::Instant::now();
        }
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

    /// Keeps the drift the policy only warns about in the ledger (the
    /// change note lists it), once each.
    pub(super) async fn note_drift(&self, job: &Backfill, found: &[Drift]) -> Result<()> {
        let warned: Vec<&Drift> = found.iter().filter(|d| d.act == Act::Warn).collect();
        if warned.is_empty() {
            return Ok(());
        }
        let mut noted: Vec<Drift> = match self.retried.document(&job.run_id, drift::NOTED).await? {
            Some(v) => serde_json::from_value(v).map_err(|e| Error::Serde(e.to_string()))?,
            None => Vec::new(),
        };
        let before = noted.len();
        for d in warned {
            if !noted.contains(d) {
                noted.push(d.clone());
            }
        }
        if noted.len() > before {
            self.retried
                .put_document(&job.run_id, drift::NOTED, &serde_json::to_value(&noted)?)
                .await?;
        }
        Ok(())
    }

    /// The freeze at cut-over: drift since the baseline that the policy
    /// pauses on refuses the cut-over (a redefined dependent of a
    /// production-critical rebuild, say); drift it warns about is noted.
    pub(super) async fn freeze_before_cutover(&self, job: &Backfill) -> Result<()> {
        let Some(stored) = self.retried.document(&job.run_id, drift::BASELINE).await? else {
            return Ok(());
        };
        let base: Fingerprint =
            serde_json::from_value(stored).map_err(|e| Error::Serde(e.to_string()))?;
        let staged = self.stages_source(job);
        let now = drift::fingerprint(self.warehouse.as_ref(), job, false, staged).await?;
        let found = self.compare(job, &base, &now);
        let blocking: Vec<String> = found
            .iter()
            .filter(|d| d.act == Act::Pause)
            .map(|d| d.to_string())
            .collect();
        if !blocking.is_empty() {
            return Err(Error::NotAllowed(format!(
                "cut-over of run {}: what it depends on changed since its baseline: {}. Accept \
                 the change (Runner::accept_drift, `backfill accept-drift`) or roll the run back",
                job.run_id,
                blocking.join("; ")
            )));
        }
        self.note_drift(job, &found).await
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
