//! "Under maintenance" marks on the datasets a run affects.
//!
//! While a run is in progress, the brief's direct and indirect
//! dependencies can be marked under maintenance through a hook (a status
//! table your dashboards read, a banner service, a catalog flag). The
//! runner sets the mark when a run starts writing and clears it when the
//! new data is visible (the run completes in place, or is cut over) or
//! the run is rolled back.

use async_trait::async_trait;

use super::{Backfill, Runner};
use crate::error::Result;
use crate::ledger::RunId;

/// Marks datasets under maintenance, and clears the mark.
#[async_trait]
pub trait MaintenanceHook: Send + Sync {
    /// Sets (`under` true) or clears the mark on `datasets` for `run`.
    /// Called again with the same arguments on resume: make it idempotent.
    async fn mark(&self, run: &RunId, datasets: &[String], under: bool) -> Result<()>;
}

/// The datasets a run marks: its declared direct and indirect
/// dependencies.
pub fn maintained(job: &Backfill) -> Vec<String> {
    let d = &job.brief.dependencies;
    d.direct
        .iter()
        .chain(&d.indirect)
        .map(|x| x.name.clone())
        .collect()
}

impl Runner {
    /// Marks (or clears) the run's datasets through the hook, if one is set.
    pub(super) async fn maintenance(&self, job: &Backfill, under: bool) -> Result<()> {
        match &self.maintenance {
            Some(hook) => hook.mark(&job.run_id, &maintained(job), under).await,
            None => Ok(()),
        }
    }
}
