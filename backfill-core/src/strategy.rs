//! The four write patterns: partition overwrite, staging then swap, merge
//! by key, and parallel version. Each is idempotent under repetition and
//! keeps what it needs to roll back.

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::{Error, Result};
use crate::inspect::{KeySet, Rows};
use crate::ledger::{Asset, AssetKind, RunId, TxMark};
use crate::plan::Batch;
use crate::warehouse::{
    BatchWrite, Footprint, MergeWrite, Restore, SliceWrite, Warehouse, WriteOutcome,
};
use crate::{Ident, Predicate, Source, TableRef};

pub use crate::pattern::StrategySpec;

/// Everything a strategy needs about the run.
#[derive(Clone, Copy)]
pub struct RunContext<'a> {
    /// The engine.
    pub warehouse: &'a dyn Warehouse,
    /// The run.
    pub run_id: &'a RunId,
    /// The target table.
    pub target: &'a TableRef,
    /// The source of new rows.
    pub source: &'a Source,
    /// Whether `source` is the run's staged snapshot (see
    /// [`SliceWrite::staged_source`]).
    pub staged_source: bool,
    /// The columns written, in order.
    pub columns: &'a [Ident],
    /// Whether to keep pre-images of what is overwritten.
    pub keep_pre_image: bool,
    /// Owner recorded on assets.
    pub owner: &'a str,
    /// Creation time recorded on assets.
    pub now: Timestamp,
    /// Expiry recorded on assets.
    pub expires_at: Timestamp,
    /// Blocking per-batch checks each write runs before its commit.
    pub guards: &'a [crate::warehouse::Guard],
    /// The run's whole scope, which a merge stays inside.
    pub scope: Option<&'a crate::Predicate>,
}

impl RunContext<'_> {
    /// The record of working table `table`, of `kind`, as this run's.
    pub fn asset_for(&self, kind: AssetKind, table: TableRef) -> Asset {
        self.asset(kind, table)
    }

    fn asset(&self, kind: AssetKind, table: TableRef) -> Asset {
        Asset {
            run_id: self.run_id.clone(),
            kind,
            table,
            owner: self.owner.to_string(),
            created_at: self.now,
            expires_at: self.expires_at,
            dropped_at: None,
        }
    }

    fn named(&self, what: &str) -> Result<TableRef> {
        self.target.sibling(&format!("__bf_{what}_{}", self.run_id))
    }

    /// The per-run pre-image table.
    pub fn pre_image_table(&self) -> Result<TableRef> {
        self.named("pre")
    }

    /// The per-run key-log table (merge).
    pub fn key_log_table(&self) -> Result<TableRef> {
        self.named("keys")
    }

    /// The staging table (staging then swap).
    pub fn stage_table(&self) -> Result<TableRef> {
        self.named("stage")
    }

    /// Where the old table is kept after a swap.
    pub fn kept_old_table(&self) -> Result<TableRef> {
        self.named("old")
    }

    /// The new version (parallel version).
    pub fn version_table(&self) -> Result<TableRef> {
        self.named("v")
    }

    /// The staged source table, when the source is staged once per run.
    pub fn staged_source_table(&self) -> Result<TableRef> {
        self.named("src")
    }
}

/// A write pattern: prepare, write a batch, cut over, roll back.
#[async_trait]
pub trait WriteStrategy: Send + Sync {
    /// The pattern's settings.
    fn spec(&self) -> &StrategySpec;

    /// The table batches are written to.
    fn write_table(&self, ctx: &RunContext<'_>) -> Result<TableRef>;

    /// Creates what the run needs (idempotent); returns the assets it
    /// created, with owner and expiry.
    async fn prepare(&self, ctx: &RunContext<'_>) -> Result<Vec<Asset>>;

    /// The tables the pattern's batch writes go to: the written table,
    /// and the pre-image and key log when they are kept.
    fn write_tables(&self, ctx: &RunContext<'_>) -> Result<WriteTables>;

    /// Writes one batch atomically (idempotent under repetition).
    async fn write_batch(
        &self,
        ctx: &RunContext<'_>,
        batch: &Batch,
        mark: Option<&TxMark>,
    ) -> Result<WriteOutcome> {
        let tables = self.write_tables(ctx)?;
        tables.write(ctx, batch, mark).apply(ctx.warehouse).await
    }

    /// Exposes the new data to readers (a no-op for in-place patterns).
    async fn cutover(&self, ctx: &RunContext<'_>) -> Result<()>;

    /// Restores the exact prior state. `written` lists the batches whose
    /// data was written, in plan order; `cut_over` says whether cut-over
    /// happened.
    async fn rollback(&self, ctx: &RunContext<'_>, written: &[Batch], cut_over: bool)
        -> Result<()>;
}

/// The working tables that `spec`'s preparation makes for a run, with
/// their kinds: the stage or the version, the pre-image and key log when
/// pre-images are kept.
pub fn working_tables(
    spec: &StrategySpec,
    ctx: &RunContext<'_>,
) -> Result<Vec<(AssetKind, TableRef)>> {
    let mut tables = Vec::new();
    match spec {
        StrategySpec::StagingSwap => tables.push((AssetKind::Stage, ctx.stage_table()?)),
        StrategySpec::ParallelVersion { .. } => {
            tables.push((AssetKind::Version, ctx.version_table()?))
        }
        StrategySpec::PartitionOverwrite | StrategySpec::Merge { .. } => {
            if ctx.keep_pre_image {
                tables.push((AssetKind::PreImage, ctx.pre_image_table()?));
            }
            if ctx.keep_pre_image && matches!(spec, StrategySpec::Merge { .. }) {
                tables.push((AssetKind::KeyLog, ctx.key_log_table()?));
            }
        }
    }
    Ok(tables)
}

/// The strategy implementing `spec`.
pub fn strategy_for(spec: &StrategySpec) -> Box<dyn WriteStrategy> {
    match spec {
        StrategySpec::PartitionOverwrite => Box::new(PartitionOverwrite(spec.clone())),
        StrategySpec::StagingSwap => Box::new(StagingSwap(spec.clone())),
        StrategySpec::Merge { keys } => Box::new(Merge {
            spec: spec.clone(),
            keys: keys.clone(),
        }),
        StrategySpec::ParallelVersion { view } => Box::new(ParallelVersion {
            spec: spec.clone(),
            view: view.clone(),
        }),
    }
}

async fn prepare_pre_image(
    ctx: &RunContext<'_>,
    like: &TableRef,
    assets: &mut Vec<Asset>,
) -> Result<()> {
    if ctx.keep_pre_image {
        let pre = ctx.pre_image_table()?;
        ctx.warehouse
            .create_snapshot_table(like, ctx.columns, &pre)
            .await?;
        assets.push(ctx.asset(AssetKind::PreImage, pre));
    }
    Ok(())
}

fn slice<'a>(
    ctx: &RunContext<'a>,
    batch: &'a Batch,
    table: &'a TableRef,
    pre: Option<&'a TableRef>,
    mark: Option<&'a TxMark>,
) -> SliceWrite<'a> {
    SliceWrite {
        run_id: ctx.run_id,
        batch,
        table,
        source: ctx.source,
        staged_source: ctx.staged_source,
        columns: ctx.columns,
        snapshot: pre,
        mark,
        guards: ctx.guards,
    }
}

/// Where a pattern's batches are written: made once, then lent to each
/// batch's [`BatchWrite`], alone or in a commit group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteTables {
    /// The table written (the target, the stage or the new version).
    pub table: TableRef,
    /// The pre-image, when one is kept.
    pub pre_image: Option<TableRef>,
    /// The merge keys, for a merge.
    pub keys: Option<Vec<Ident>>,
    /// The key log of a merge that keeps pre-images.
    pub key_log: Option<TableRef>,
}

impl WriteTables {
    /// An overwrite of `table`, with `ctx`'s pre-image when kept.
    fn overwrite(ctx: &RunContext<'_>, table: TableRef, pre_image: bool) -> Result<Self> {
        Ok(WriteTables {
            table,
            pre_image: match pre_image && ctx.keep_pre_image {
                true => Some(ctx.pre_image_table()?),
                false => None,
            },
            keys: None,
            key_log: None,
        })
    }

    /// The write of `batch` (reading `ctx`'s source), marking `mark`.
    pub fn write<'a>(
        &'a self,
        ctx: &RunContext<'a>,
        batch: &'a Batch,
        mark: Option<&'a TxMark>,
    ) -> BatchWrite<'a> {
        let s = slice(ctx, batch, &self.table, self.pre_image.as_ref(), mark);
        match &self.keys {
            Some(keys) => BatchWrite::Merge(MergeWrite {
                slice: s,
                keys,
                key_log: self.key_log.as_ref(),
                scope: ctx.scope,
            }),
            None => BatchWrite::Overwrite(s),
        }
    }
}

async fn restore_slices(ctx: &RunContext<'_>, table: &TableRef, written: &[Batch]) -> Result<()> {
    let pre = ctx.pre_image_table()?;
    if ctx.warehouse.describe(&pre).await?.is_none() {
        return Err(Error::NotAllowed(format!(
            "no pre-image {pre} to roll back to (was it kept, or already cleaned up?)"
        )));
    }
    for b in written.iter().rev() {
        ctx.warehouse
            .restore_slice(&Restore {
                table,
                snapshot: &pre,
                batch: b,
                footprint: Footprint::Slice(&b.predicate),
                columns: ctx.columns,
            })
            .await?;
    }
    Ok(())
}

/// Delete the slice, insert the corrected slice, in one transaction.
#[derive(Debug)]
pub struct PartitionOverwrite(StrategySpec);

#[async_trait]
impl WriteStrategy for PartitionOverwrite {
    fn spec(&self) -> &StrategySpec {
        &self.0
    }

    fn write_table(&self, ctx: &RunContext<'_>) -> Result<TableRef> {
        Ok(ctx.target.clone())
    }

    async fn prepare(&self, ctx: &RunContext<'_>) -> Result<Vec<Asset>> {
        let mut assets = Vec::new();
        prepare_pre_image(ctx, ctx.target, &mut assets).await?;
        Ok(assets)
    }

    fn write_tables(&self, ctx: &RunContext<'_>) -> Result<WriteTables> {
        WriteTables::overwrite(ctx, ctx.target.clone(), true)
    }

    async fn cutover(&self, _ctx: &RunContext<'_>) -> Result<()> {
        Ok(())
    }

    async fn rollback(
        &self,
        ctx: &RunContext<'_>,
        written: &[Batch],
        _cut_over: bool,
    ) -> Result<()> {
        restore_slices(ctx, ctx.target, written).await
    }
}

/// A full copy of the target beside it (stage or new version).
async fn copy_beside(ctx: &RunContext<'_>, table: TableRef, kind: AssetKind) -> Result<Vec<Asset>> {
    ctx.warehouse.create_copy(ctx.target, &table, true).await?;
    Ok(vec![ctx.asset(kind, table)])
}

/// Build beside the target, then swap atomically and keep the old table.
#[derive(Debug)]
pub struct StagingSwap(StrategySpec);

#[async_trait]
impl WriteStrategy for StagingSwap {
    fn spec(&self) -> &StrategySpec {
        &self.0
    }

    fn write_table(&self, ctx: &RunContext<'_>) -> Result<TableRef> {
        ctx.stage_table()
    }

    async fn prepare(&self, ctx: &RunContext<'_>) -> Result<Vec<Asset>> {
        copy_beside(ctx, ctx.stage_table()?, AssetKind::Stage).await
    }

    fn write_tables(&self, ctx: &RunContext<'_>) -> Result<WriteTables> {
        // No pre-image: the target is untouched until the cut-over.
        WriteTables::overwrite(ctx, ctx.stage_table()?, false)
    }

    async fn cutover(&self, ctx: &RunContext<'_>) -> Result<()> {
        let stage = ctx.stage_table()?;
        let old = ctx.kept_old_table()?;
        if ctx.warehouse.describe(&stage).await?.is_none()
            && ctx.warehouse.describe(&old).await?.is_some()
        {
            // Already swapped: cut-over is idempotent.
            return Ok(());
        }
        ctx.warehouse.swap(ctx.target, &stage, &old).await
    }

    async fn rollback(
        &self,
        ctx: &RunContext<'_>,
        _written: &[Batch],
        cut_over: bool,
    ) -> Result<()> {
        // The engine says whether the swap happened, whatever the ledger
        // recorded: a cut-over whose record was lost (a crash between the
        // two) left the stage name empty and the old table kept.
        let stage = ctx.stage_table()?;
        let old = ctx.kept_old_table()?;
        let old_kept = ctx.warehouse.describe(&old).await?.is_some();
        let staged = ctx.warehouse.describe(&stage).await?.is_some();
        if old_kept && !staged {
            // The new table goes back to the stage name, the old one back
            // to the target name.
            ctx.warehouse.swap(ctx.target, &old, &stage).await
        } else if cut_over {
            Err(Error::NotAllowed(format!(
                "kept old table {old} is gone; cannot roll back"
            )))
        } else {
            ctx.warehouse.drop_table(&stage).await.map(|_| ())
        }
    }
}

/// Update or insert by key.
#[derive(Debug)]
pub struct Merge {
    spec: StrategySpec,
    keys: Vec<Ident>,
}

#[async_trait]
impl WriteStrategy for Merge {
    fn spec(&self) -> &StrategySpec {
        &self.spec
    }

    fn write_table(&self, ctx: &RunContext<'_>) -> Result<TableRef> {
        Ok(ctx.target.clone())
    }

    async fn prepare(&self, ctx: &RunContext<'_>) -> Result<Vec<Asset>> {
        let mut assets = Vec::new();
        prepare_pre_image(ctx, ctx.target, &mut assets).await?;
        if ctx.keep_pre_image {
            let log = ctx.key_log_table()?;
            ctx.warehouse
                .create_snapshot_table(ctx.target, &self.keys, &log)
                .await?;
            assets.push(ctx.asset(AssetKind::KeyLog, log));
        }
        Ok(assets)
    }

    fn write_tables(&self, ctx: &RunContext<'_>) -> Result<WriteTables> {
        Ok(WriteTables {
            keys: Some(self.keys.clone()),
            key_log: match ctx.keep_pre_image {
                true => Some(ctx.key_log_table()?),
                false => None,
            },
            ..WriteTables::overwrite(ctx, ctx.target.clone(), true)?
        })
    }

    async fn cutover(&self, _ctx: &RunContext<'_>) -> Result<()> {
        Ok(())
    }

    async fn rollback(
        &self,
        ctx: &RunContext<'_>,
        written: &[Batch],
        _cut_over: bool,
    ) -> Result<()> {
        let pre = ctx.pre_image_table()?;
        let log = ctx.key_log_table()?;
        if ctx.warehouse.describe(&pre).await?.is_none()
            || ctx.warehouse.describe(&log).await?.is_none()
        {
            return Err(Error::NotAllowed(format!(
                "no pre-image {pre} to roll back to"
            )));
        }
        for b in written.iter().rev() {
            ctx.warehouse
                .restore_slice(&Restore {
                    table: ctx.target,
                    snapshot: &pre,
                    batch: b,
                    footprint: Footprint::Keys {
                        keys: &self.keys,
                        key_log: &log,
                    },
                    columns: ctx.columns,
                })
                .await?;
        }
        Ok(())
    }
}

/// A new version beside the old table; a view moves at cut-over.
#[derive(Debug)]
pub struct ParallelVersion {
    spec: StrategySpec,
    view: TableRef,
}

#[async_trait]
impl WriteStrategy for ParallelVersion {
    fn spec(&self) -> &StrategySpec {
        &self.spec
    }

    fn write_table(&self, ctx: &RunContext<'_>) -> Result<TableRef> {
        ctx.version_table()
    }

    async fn prepare(&self, ctx: &RunContext<'_>) -> Result<Vec<Asset>> {
        copy_beside(ctx, ctx.version_table()?, AssetKind::Version).await
    }

    fn write_tables(&self, ctx: &RunContext<'_>) -> Result<WriteTables> {
        // No pre-image: the target is untouched.
        WriteTables::overwrite(ctx, ctx.version_table()?, false)
    }

    async fn cutover(&self, ctx: &RunContext<'_>) -> Result<()> {
        let v = ctx.version_table()?;
        ctx.warehouse.point_view(&self.view, &v).await
    }

    async fn rollback(
        &self,
        ctx: &RunContext<'_>,
        _written: &[Batch],
        _cut_over: bool,
    ) -> Result<()> {
        // The view goes back to the target whatever the ledger recorded: a
        // view move whose record was lost (a crash between the two) is
        // undone too, and moving a view that never moved changes nothing.
        ctx.warehouse.point_view(&self.view, ctx.target).await
    }
}

/// Where validation finds the data over `scope`: the new rows, and the
/// pair a diff compares (old rows, new rows) where the pattern keeps the
/// old ones. In-place patterns diff their pre-image (when kept); a merge
/// diffs only the keys it touched, as its key log lists them; staging
/// diffs the stage against the target before the swap (the target
/// against the kept old table after it); a parallel version diffs the
/// version against the target.
pub fn validation_sides(
    spec: &StrategySpec,
    ctx: &RunContext<'_>,
    scope: &Predicate,
    cut_over: bool,
) -> Result<(Rows, Option<(Rows, Rows)>)> {
    let slice = |t: TableRef| Rows::slice(t, scope.clone());
    let target = slice(ctx.target.clone());
    Ok(match spec {
        StrategySpec::PartitionOverwrite => {
            let diff = if ctx.keep_pre_image {
                let old = Rows::pre_image(ctx.pre_image_table()?, scope.clone());
                Some((old, target.clone()))
            } else {
                None
            };
            (target, diff)
        }
        StrategySpec::Merge { keys } => {
            let diff = if ctx.keep_pre_image {
                let set = KeySet {
                    table: ctx.key_log_table()?,
                    keys: keys.clone(),
                };
                let old = Rows::pre_image(ctx.pre_image_table()?, scope.clone());
                Some((old, target.clone().with_keys_in(set)))
            } else {
                None
            };
            (target, diff)
        }
        StrategySpec::StagingSwap if cut_over => {
            (target.clone(), Some((slice(ctx.kept_old_table()?), target)))
        }
        StrategySpec::StagingSwap => {
            let stage = slice(ctx.stage_table()?);
            (stage.clone(), Some((target, stage)))
        }
        StrategySpec::ParallelVersion { .. } => {
            let version = slice(ctx.version_table()?);
            (version.clone(), Some((target, version)))
        }
    })
}
