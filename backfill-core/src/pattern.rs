//! Which write pattern a backfill uses, as its brief declares it. The
//! patterns themselves (what a batch does, how it rolls back) are in
//! [`crate::strategy`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{Ident, TableRef};

/// Which write pattern a backfill uses, with its settings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "snake_case",
    tag = "kind",
    deny_unknown_fields
)]
pub enum StrategySpec {
    /// Delete each batch's slice and insert the corrected slice, in one
    /// transaction per batch, with an out-of-bounds guard.
    PartitionOverwrite,
    /// Build a full copy beside the target, overwrite slices there,
    /// validate, then swap it in atomically and keep the old table.
    StagingSwap,
    /// Update or insert by key; refuses null and duplicate source keys.
    Merge {
        /// The key columns.
        keys: Vec<Ident>,
    },
    /// Build a new version beside the old table and move a view at
    /// cut-over; the old table is never touched.
    ParallelVersion {
        /// The view readers use.
        view: TableRef,
    },
}

crate::strict::strict_tagged!(
    StrategySpec,
    "kind",
    ["partition_overwrite", "staging_swap"]
);

impl StrategySpec {
    /// Whether the strategy changes the target table in place (and so
    /// needs a pre-image to roll back).
    pub fn overwrites_in_place(&self) -> bool {
        matches!(
            self,
            StrategySpec::PartitionOverwrite | StrategySpec::Merge { .. }
        )
    }

    /// Whether new data is exposed only at cut-over.
    pub fn needs_cutover(&self) -> bool {
        matches!(
            self,
            StrategySpec::StagingSwap | StrategySpec::ParallelVersion { .. }
        )
    }

    /// Whether each batch replaces the whole rows of its slice (deletes
    /// and re-inserts them), rather than updating listed columns by key.
    /// Such a pattern must write every column of the target.
    pub fn replaces_rows(&self) -> bool {
        !matches!(self, StrategySpec::Merge { .. })
    }

    /// Checks the settings.
    pub fn check(&self) -> Result<()> {
        if let StrategySpec::Merge { keys } = self {
            if keys.is_empty() {
                return Err(Error::InvalidPlan(
                    "merge needs at least one key column".into(),
                ));
            }
        }
        Ok(())
    }

    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            StrategySpec::PartitionOverwrite => "partition overwrite",
            StrategySpec::StagingSwap => "staging then swap",
            StrategySpec::Merge { .. } => "merge by key",
            StrategySpec::ParallelVersion { .. } => "parallel version",
        }
    }
}
