//! [`Faulty`]: wraps any [`Warehouse`] and fails, "crashes" or slows down
//! at named points ([`FaultPoint`]).
//!
//! Every method delegates to the wrapped warehouse; faults are armed per
//! point and fire when the point is reached:
//!
//! | point | reached | when it fires |
//! |---|---|---|
//! | [`FaultPoint::BeforeWrite`] | at the start of `overwrite_slice` / `merge_slice`, and before each batch of a `write_group` | nothing is written (of the whole group) |
//! | [`FaultPoint::AfterWriteBeforeLedger`] | after the wrapped slice write (or group) succeeded, once per batch | the write landed, but the caller sees an error, as if the process died before updating the ledger |
//! | [`FaultPoint::DuringSwap`] | at the start of `swap` | nothing is swapped |
//! | [`FaultPoint::DuringCutover`] | at the start of `point_view` | the view is not moved |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use backfill_core::warehouse::Warehouse;
//! use backfill_core::{Error, TableRef};
//! use backfill_testkit::fake::FakeWarehouse;
//! use backfill_testkit::faults::{FaultPoint, Faulty};
//!
//! let fake = FakeWarehouse::new();
//! let faulty = Faulty::new(fake.clone());
//! faulty.fail_once(FaultPoint::DuringCutover);
//! let v = TableRef::parse("v").unwrap();
//! let err = faulty.point_view(&v, &TableRef::parse("t").unwrap()).await.unwrap_err();
//! assert_eq!(err, Error::InjectedFault("during_cutover".into()));
//! assert_eq!(faulty.hits(FaultPoint::DuringCutover), 1);
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use backfill_core::inspect::{Answer, Inspect};
use backfill_core::sql::Dialect;
use backfill_core::warehouse::{
    BatchWrite, Checksum, GroupFailure, KeyReport, MergeWrite, Restore, SliceWrite, Warehouse,
    WriteOutcome,
};
use backfill_core::{Error, Ident, Predicate, Result, Source, TableRef, TableSchema, Value};

/// A named point where [`Faulty`] can inject a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultPoint {
    /// Before a slice write (`overwrite_slice`, `merge_slice`) is
    /// delegated: nothing is written.
    BeforeWrite,
    /// After the wrapped slice write succeeded, before the caller can
    /// update its ledger: the data landed but the caller sees an error.
    AfterWriteBeforeLedger,
    /// Before `swap` is delegated: nothing is swapped.
    DuringSwap,
    /// Before `point_view` is delegated: the view is not moved.
    DuringCutover,
    /// Before `inspect` is delegated: a validation query fails.
    DuringInspect,
    /// After the wrapped `swap` or `point_view` succeeded, before the
    /// caller can record it: the new data is live but the caller sees an
    /// error (a crash or a lost connection between the cut-over and its
    /// record).
    AfterCutoverBeforeLedger,
}

impl FaultPoint {
    /// Every point.
    pub const ALL: [FaultPoint; 6] = [
        FaultPoint::BeforeWrite,
        FaultPoint::AfterWriteBeforeLedger,
        FaultPoint::DuringSwap,
        FaultPoint::DuringCutover,
        FaultPoint::DuringInspect,
        FaultPoint::AfterCutoverBeforeLedger,
    ];

    /// The point's name, as carried by [`Error::InjectedFault`]
    /// (`"before_write"`, `"after_write_before_ledger"`, `"during_swap"`,
    /// `"during_cutover"`, `"during_inspect"`,
    /// `"after_cutover_before_ledger"`).
    pub fn name(self) -> &'static str {
        match self {
            FaultPoint::BeforeWrite => "before_write",
            FaultPoint::AfterWriteBeforeLedger => "after_write_before_ledger",
            FaultPoint::DuringSwap => "during_swap",
            FaultPoint::DuringCutover => "during_cutover",
            FaultPoint::DuringInspect => "during_inspect",
            FaultPoint::AfterCutoverBeforeLedger => "after_cutover_before_ledger",
        }
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One armed fault: fires on the `at`-th hit of its point (counted over
/// the wrapper's lifetime).
#[derive(Clone, Copy, Debug)]
struct Armed {
    at: u64,
    transient: bool,
}

#[derive(Debug, Default)]
struct PointState {
    hits: u64,
    armed: Vec<Armed>,
}

#[derive(Debug, Default)]
struct FaultState {
    points: HashMap<FaultPoint, PointState>,
    slow: Duration,
}

/// A warehouse decorator that injects faults at [`FaultPoint`]s.
///
/// Works on any warehouse, including `Arc<dyn Warehouse>`
/// (`Faulty<Arc<dyn Warehouse>>`). Arming methods take `&self`, so a test
/// can keep an `Arc<Faulty<_>>` and arm faults while a runner uses it.
/// Clones share the armed faults and the hit counters.
pub struct Faulty<W> {
    inner: W,
    state: Arc<Mutex<FaultState>>,
}

impl<W: Clone> Clone for Faulty<W> {
    fn clone(&self) -> Self {
        Faulty {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<W> fmt::Debug for Faulty<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("faults", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl<W> Faulty<W> {
    /// Wraps `inner` with no faults armed.
    pub fn new(inner: W) -> Self {
        Faulty {
            inner,
            state: Arc::new(Mutex::new(FaultState::default())),
        }
    }

    /// The wrapped warehouse.
    pub fn inner(&self) -> &W {
        &self.inner
    }

    /// Unwraps the wrapped warehouse.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arm(&self, point: FaultPoint, n: u64, transient: bool) -> &Self {
        let mut st = self.lock();
        let p = st.points.entry(point).or_default();
        let at = p.hits + n.max(1);
        p.armed.push(Armed { at, transient });
        self
    }

    /// The next time `point` is reached, fail with
    /// [`Error::InjectedFault`] carrying the point's
    /// [name](FaultPoint::name).
    pub fn fail_once(&self, point: FaultPoint) -> &Self {
        self.arm(point, 1, false)
    }

    /// The `n`-th time (1-based, counted from this call) `point` is
    /// reached, fail with [`Error::InjectedFault`]; `fail_nth(p, 1)` is
    /// `fail_once(p)`, and 0 counts as 1.
    pub fn fail_nth(&self, point: FaultPoint, n: u64) -> &Self {
        self.arm(point, n, false)
    }

    /// The next time `point` is reached, fail with a transient engine
    /// error ([`Error::transient`]), which the runner retries.
    pub fn transient_once(&self, point: FaultPoint) -> &Self {
        self.arm(point, 1, true)
    }

    /// The `n`-th time (1-based, counted from this call) `point` is
    /// reached, fail with a transient engine error.
    pub fn transient_nth(&self, point: FaultPoint, n: u64) -> &Self {
        self.arm(point, n, true)
    }

    /// Sleeps (with `tokio::time::sleep`) for `delay` before every slice
    /// write, to give throttle and pause tests time to act.
    /// [`Duration::ZERO`] turns it off.
    pub fn slow_writes(&self, delay: Duration) -> &Self {
        self.lock().slow = delay;
        self
    }

    /// Disarms every fault that has not fired (hit counters are kept).
    pub fn clear(&self) -> &Self {
        for p in self.lock().points.values_mut() {
            p.armed.clear();
        }
        self
    }

    /// How many times `point` has been reached, whether or not a fault
    /// fired there.
    pub fn hits(&self, point: FaultPoint) -> u64 {
        self.lock().points.get(&point).map_or(0, |p| p.hits)
    }

    /// Records that `point` is reached; fails if a fault is armed for this
    /// hit.
    fn reach(&self, point: FaultPoint) -> Result<()> {
        let mut st = self.lock();
        let p = st.points.entry(point).or_default();
        p.hits += 1;
        let hit = p.hits;
        let fired = p.armed.iter().find(|a| a.at == hit).copied();
        p.armed.retain(|a| a.at > hit);
        match fired {
            None => Ok(()),
            Some(a) if a.transient => Err(Error::transient(format!(
                "injected transient fault at {}",
                point.name()
            ))),
            Some(_) => Err(Error::InjectedFault(point.name().to_string())),
        }
    }

    async fn before_write(&self) -> Result<()> {
        let slow = self.lock().slow;
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        self.reach(FaultPoint::BeforeWrite)
    }
}

#[async_trait]
impl<W: Warehouse> Warehouse for Faulty<W> {
    fn engine(&self) -> &str {
        self.inner.engine()
    }

    fn dialect(&self) -> Option<&dyn Dialect> {
        self.inner.dialect()
    }

    fn marks_in_tx(&self, mark: &backfill_core::ledger::TxMark) -> bool {
        self.inner.marks_in_tx(mark)
    }

    async fn describe(&self, table: &TableRef) -> Result<Option<TableSchema>> {
        self.inner.describe(table).await
    }

    async fn resolve(&self, table: &TableRef) -> Result<TableRef> {
        self.inner.resolve(table).await
    }

    async fn describe_source(&self, source: &Source) -> Result<TableSchema> {
        self.inner.describe_source(source).await
    }

    async fn count(&self, table: &TableRef, predicate: &Predicate) -> Result<u64> {
        self.inner.count(table, predicate).await
    }

    async fn key_boundaries(
        &self,
        table: &TableRef,
        column: &Ident,
        predicate: &Predicate,
        every: u64,
    ) -> Result<Vec<Value>> {
        self.inner
            .key_boundaries(table, column, predicate, every)
            .await
    }

    async fn key_report(
        &self,
        table: &TableRef,
        keys: &[Ident],
        predicate: &Predicate,
        sample: usize,
    ) -> Result<KeyReport> {
        self.inner.key_report(table, keys, predicate, sample).await
    }

    async fn checksum(&self, table: &TableRef, predicate: &Predicate) -> Result<Checksum> {
        self.inner.checksum(table, predicate).await
    }

    async fn sample_rows(
        &self,
        table: &TableRef,
        predicate: &Predicate,
        order_by: &[Ident],
        limit: usize,
    ) -> Result<Vec<Vec<Value>>> {
        self.inner
            .sample_rows(table, predicate, order_by, limit)
            .await
    }

    async fn overwrite_slice(&self, write: &SliceWrite<'_>) -> Result<WriteOutcome> {
        self.before_write().await?;
        let out = self.inner.overwrite_slice(write).await?;
        self.reach(FaultPoint::AfterWriteBeforeLedger)?;
        Ok(out)
    }

    async fn merge_slice(&self, write: &MergeWrite<'_>) -> Result<WriteOutcome> {
        self.before_write().await?;
        let out = self.inner.merge_slice(write).await?;
        self.reach(FaultPoint::AfterWriteBeforeLedger)?;
        Ok(out)
    }

    fn max_group(&self) -> usize {
        self.inner.max_group()
    }

    /// Each batch of the group reaches the write points in turn: a fault
    /// before batch `i`'s write fails the group at `i` with nothing
    /// written; a fault after the group's commit reports batch `i`'s
    /// error with the whole group landed.
    async fn write_group(
        &self,
        writes: &[BatchWrite<'_>],
    ) -> std::result::Result<Vec<WriteOutcome>, GroupFailure> {
        for i in 0..writes.len() {
            self.before_write()
                .await
                .map_err(|e| GroupFailure::at(i, e))?;
        }
        let outs = self.inner.write_group(writes).await?;
        for i in 0..writes.len() {
            self.reach(FaultPoint::AfterWriteBeforeLedger)
                .map_err(|e| GroupFailure::at(i, e))?;
        }
        Ok(outs)
    }

    async fn restore_slice(&self, restore: &Restore<'_>) -> Result<Option<u64>> {
        self.inner.restore_slice(restore).await
    }

    async fn create_copy(&self, from: &TableRef, to: &TableRef, with_rows: bool) -> Result<()> {
        self.inner.create_copy(from, to, with_rows).await
    }

    async fn create_snapshot_table(
        &self,
        like: &TableRef,
        columns: &[Ident],
        snapshot: &TableRef,
    ) -> Result<()> {
        self.inner
            .create_snapshot_table(like, columns, snapshot)
            .await
    }

    async fn swap(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()> {
        self.reach(FaultPoint::DuringSwap)?;
        self.inner.swap(target, replacement, keep_as).await?;
        self.reach(FaultPoint::AfterCutoverBeforeLedger)
    }

    async fn point_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        self.reach(FaultPoint::DuringCutover)?;
        self.inner.point_view(view, table).await?;
        self.reach(FaultPoint::AfterCutoverBeforeLedger)
    }

    async fn defer_maintenance(&self) -> Result<()> {
        self.inner.defer_maintenance().await
    }

    async fn resume_maintenance(&self) -> Result<()> {
        self.inner.resume_maintenance().await
    }

    async fn swap_hazards(&self, table: &TableRef) -> Result<Vec<String>> {
        self.inner.swap_hazards(table).await
    }

    fn refuses(&self, strategy: &backfill_core::StrategySpec) -> Option<String> {
        self.inner.refuses(strategy)
    }

    async fn drop_table(&self, table: &TableRef) -> Result<bool> {
        self.inner.drop_table(table).await
    }

    async fn stage_source(
        &self,
        source: &Source,
        predicate: &Predicate,
        bounds: (Option<&Value>, Option<&Value>),
        order_by: &Ident,
        into: &TableRef,
    ) -> Result<u64> {
        self.inner
            .stage_source(source, predicate, bounds, order_by, into)
            .await
    }

    async fn inspect(&self, question: &Inspect) -> Result<Answer> {
        self.reach(FaultPoint::DuringInspect)?;
        self.inner.inspect(question).await
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        self.inner.execute(sql).await
    }
}
