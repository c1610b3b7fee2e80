//! Retention and cleanup of the temporary tables runs leave behind.
//!
//! Every table this library creates (pre-images, key logs, stages, kept
//! old tables, versions, staged sources) is recorded in the ledger as an
//! [`Asset`] with an owner and an expiry. [`cleanup`] drops only those,
//! only once expired, and never one that still holds live data (the
//! version a view points at after cut-over) or belongs to a run that is
//! not finished: running, paused, failed or cancelled (its pre-images are
//! what a rollback needs), or written and awaiting its cut-over (its stage
//! or version is the work). Such a run is finished by resuming it, or by
//! rolling it back; then its tables expire as any other. A table whose
//! drop fails is reported, and the others are still tried. A dry run
//! reports the same decisions without dropping anything.
//!
//! ```no_run
//! # async fn tidy(
//! #     w: &dyn backfill_core::Warehouse,
//! #     ledger: &dyn backfill_core::Ledger,
//! # ) -> backfill_core::Result<()> {
//! use backfill_core::cleanup::{cleanup, CleanupOptions};
//! let plan = cleanup(w, ledger, &CleanupOptions::dry_run()).await?;
//! println!("{plan}"); // what would go, and what stays and why
//! let done = cleanup(w, ledger, &CleanupOptions::default()).await?;
//! assert_eq!(done.dropped.len() + done.missing.len(), plan.dropped.len() + plan.missing.len());
//! # Ok(())
//! # }
//! ```

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ledger::{Asset, AssetKind, Ledger, RunId, RunStatus};
use crate::warehouse::Warehouse;

/// What to clean up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupOptions {
    /// Report what would be dropped, and drop nothing.
    pub dry_run: bool,
    /// Only this run's assets (all runs by default).
    pub run: Option<RunId>,
    /// The time expiry is judged at; the ledger's clock by default.
    pub now: Option<Timestamp>,
}

impl CleanupOptions {
    /// A dry run over every run's assets, now.
    pub fn dry_run() -> CleanupOptions {
        CleanupOptions {
            dry_run: true,
            ..CleanupOptions::default()
        }
    }
}

/// Why an asset was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kept {
    /// Its expiry has not come.
    NotExpired,
    /// It holds the live data (a version behind a cut-over view).
    Live,
    /// Its run is not finished (running, paused, failed, cancelled, or
    /// awaiting its cut-over): resume it or roll it back first.
    RunUnfinished,
    /// It was dropped before.
    AlreadyDropped,
    /// Its name is not one this library gives, so it is not touched.
    NotOurs,
}

/// What a cleanup did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Whether nothing was dropped on purpose.
    pub dry_run: bool,
    /// The time expiry was judged at.
    pub at: Option<Timestamp>,
    /// Assets dropped (or to drop, in a dry run).
    pub dropped: Vec<Asset>,
    /// Expired assets whose table was already gone; marked dropped.
    pub missing: Vec<Asset>,
    /// Assets kept, with why.
    pub kept: Vec<(Asset, Kept)>,
    /// Assets whose drop failed, with the engine's error; they stay
    /// recorded, and a later cleanup tries them again.
    pub failed: Vec<(Asset, String)>,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would drop"
        } else {
            "dropped"
        };
        writeln!(
            f,
            "cleanup: {verb} {} table(s), {} already gone, {} kept, {} failed",
            self.dropped.len(),
            self.missing.len(),
            self.kept.len(),
            self.failed.len()
        )?;
        for (a, e) in &self.failed {
            writeln!(f, "  could not drop {} ({}): {e}", a.table, a.kind.as_str())?;
        }
        for a in &self.dropped {
            writeln!(
                f,
                "  {verb} {} ({} of run {}, owner {}, expired {})",
                a.table,
                a.kind.as_str(),
                a.run_id,
                a.owner,
                a.expires_at
            )?;
        }
        for (a, why) in &self.kept {
            if *why != Kept::AlreadyDropped {
                writeln!(f, "  kept {} ({:?})", a.table, why)?;
            }
        }
        Ok(())
    }
}

/// Whether `asset` names a table this library made (its names carry the
/// `__bf_` mark).
fn ours(asset: &Asset) -> bool {
    asset.table.name.as_str().contains("__bf_")
}

/// Drops expired assets this library created, and records each drop in
/// the ledger; see the [module](self) for what is never dropped.
pub async fn cleanup(
    w: &dyn Warehouse,
    ledger: &dyn Ledger,
    options: &CleanupOptions,
) -> Result<CleanupReport> {
    let now = options.now.unwrap_or_else(|| ledger.now());
    let mut report = CleanupReport {
        dry_run: options.dry_run,
        at: Some(now),
        ..CleanupReport::default()
    };
    let assets = ledger.assets(options.run.as_ref()).await?;
    // A completed run that still has a stage or a version awaits its
    // cut-over: that table is its work.
    let awaiting: std::collections::HashSet<RunId> = assets
        .iter()
        .filter(|a| matches!(a.kind, AssetKind::Stage | AssetKind::Version))
        .map(|a| a.run_id.clone())
        .collect();
    for asset in assets {
        let status = ledger.run(&asset.run_id).await?.status;
        let finished = match status {
            RunStatus::CutOver | RunStatus::RolledBack => true,
            RunStatus::Completed => !awaiting.contains(&asset.run_id),
            RunStatus::Running | RunStatus::Paused | RunStatus::Failed | RunStatus::Cancelled => {
                false
            }
        };
        let kept = if asset.dropped_at.is_some() {
            Some(Kept::AlreadyDropped)
        } else if !ours(&asset) {
            Some(Kept::NotOurs)
        } else if asset.kind == AssetKind::Version && status == RunStatus::CutOver {
            Some(Kept::Live)
        } else if !finished {
            Some(Kept::RunUnfinished)
        } else if asset.expires_at > now {
            Some(Kept::NotExpired)
        } else {
            None
        };
        if let Some(why) = kept {
            report.kept.push((asset, why));
            continue;
        }
        if options.dry_run {
            if w.describe(&asset.table).await?.is_some() {
                report.dropped.push(asset);
            } else {
                report.missing.push(asset);
            }
            continue;
        }
        let existed = match w.drop_table(&asset.table).await {
            Ok(existed) => existed,
            Err(e) => {
                tracing::warn!(table = %asset.table, error = %e, "could not drop a run's table");
                report.failed.push((asset, e.to_string()));
                continue;
            }
        };
        ledger
            .asset_dropped(&asset.run_id, &asset.table, ledger.now())
            .await?;
        if existed {
            report.dropped.push(asset);
        } else {
            report.missing.push(asset);
        }
    }
    Ok(report)
}
