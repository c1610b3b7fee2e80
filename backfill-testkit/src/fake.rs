//! [`FakeWarehouse`]: an in-memory implementation of the adapter trait.
//!
//! The fake keeps tables as rows of [`Value`]s behind one mutex, evaluates
//! [`Predicate`]s in memory ([`Predicate::matches`]) and follows the
//! documented semantics of [`Warehouse`] exactly: every `*_slice` write is
//! validated completely before the first change, so it either fully
//! applies or leaves every table untouched; pre-images and key logs use
//! [`BATCH_COLUMN`] and [`MARKER_COLUMN`] like the SQL engines.
//!
//! SQL queries cannot run here, so a [`Source::Query`] must be registered
//! first with [`FakeWarehouse::register_query`], as a schema plus a closure
//! that yields the query's rows for a batch's bounds.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use backfill_core::warehouse::Warehouse;
//! use backfill_core::{Column, ColumnType, Ident, Predicate, TableRef, TableSchema, Value};
//! use backfill_testkit::fake::FakeWarehouse;
//!
//! let fake = FakeWarehouse::new();
//! let t = TableRef::parse("facts").unwrap();
//! let schema = TableSchema {
//!     columns: vec![Column::new(Ident::new("id").unwrap(), ColumnType::Int)],
//! };
//! fake.create_table(&t, schema).unwrap();
//! fake.insert_rows(&t, vec![vec![Value::Int(1)], vec![Value::Int(2)]]).unwrap();
//! assert_eq!(fake.count(&t, &Predicate::All).await.unwrap(), 2);
//! # });
//! ```

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use backfill_core::inspect::{Answer, Inspect};
use backfill_core::plan::Batch;
use backfill_core::sql::Dialect;
use backfill_core::validate::SAMPLE_LIMIT;
use backfill_core::warehouse::{
    BatchWrite, Checksum, Footprint, GroupFailure, KeyReport, MergeWrite, Restore, SliceWrite,
    Warehouse, WriteOutcome, BATCH_COLUMN, MARKER_COLUMN,
};
use backfill_core::{
    Column, ColumnType, Error, Ident, Predicate, Result, Source, TableRef, TableSchema, Value,
};
use sha2::{Digest, Sha256};

use crate::faults::Faulty;

mod inspect;

/// Views may point at views; resolution gives up after this many hops.
const MAX_VIEW_DEPTH: usize = 32;

/// The closure behind a registered query: gets the batch's inclusive start
/// and exclusive end (both `None` for an unbounded query) and returns rows
/// in the registered schema's column order.
type QueryFn = dyn Fn(Option<&Value>, Option<&Value>) -> Vec<Vec<Value>> + Send + Sync;

#[derive(Clone)]
struct Table {
    schema: TableSchema,
    rows: Vec<Vec<Value>>,
}

struct Query {
    schema: TableSchema,
    f: Arc<QueryFn>,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<TableRef, Table>,
    views: BTreeMap<TableRef, TableRef>,
    queries: HashMap<String, Query>,
    writes: u64,
    executed: Vec<String>,
}

impl State {
    fn exists(&self, t: &TableRef) -> bool {
        self.tables.contains_key(t) || self.views.contains_key(t)
    }

    /// Follows views to the table they read.
    fn resolve(&self, t: &TableRef) -> Option<TableRef> {
        let mut cur = t.clone();
        for _ in 0..MAX_VIEW_DEPTH {
            if self.tables.contains_key(&cur) {
                return Some(cur);
            }
            cur = self.views.get(&cur)?.clone();
        }
        None
    }

    /// A table or view, for reading.
    fn read(&self, t: &TableRef) -> Result<&Table> {
        self.resolve(t)
            .and_then(|r| self.tables.get(&r))
            .ok_or_else(|| unknown_table(t))
    }

    /// A table (not a view), for writing.
    fn table(&self, t: &TableRef) -> Result<&Table> {
        self.tables.get(t).ok_or_else(|| unknown_table(t))
    }

    fn table_mut(&mut self, t: &TableRef) -> Result<&mut Table> {
        self.tables.get_mut(t).ok_or_else(|| unknown_table(t))
    }
}

/// An in-memory warehouse implementing [`Warehouse`] (engine `"fake"`, no
/// SQL dialect).
///
/// Clones share the same state, so a test can keep one handle while a
/// runner owns another. Tables map to a schema plus rows in column order;
/// views map to the table (or view) they read.
///
/// Where the trait leaves room, the fake chooses:
///
/// - reads (`describe`, `count`, `checksum`, sources, ...) see through
///   views; writes, `swap` and `drop_table` act on tables only;
/// - NOT NULL columns are enforced on every insert or update
///   ([`Error::Engine`]), as a real engine would;
/// - `key_boundaries` skips NULL values;
/// - the out-of-bounds guard applies to bounded queries in merges too;
/// - a merge's pre-image holds the target rows it matched; its key log
///   gets a marker row only when there is no pre-image table;
/// - `stage_source` into an existing table returns that table's row
///   count;
/// - checksums hash a canonical encoding under which values that compare
///   equal (`Int(1)`, `Float(1.0)`) hash equally.
#[derive(Clone, Default)]
pub struct FakeWarehouse {
    state: Arc<Mutex<State>>,
    /// Slice writes one at a time, so that a write whose guards fail can
    /// be undone before another write lands (a transaction's rollback).
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl fmt::Debug for FakeWarehouse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("FakeWarehouse")
            .field("tables", &st.tables.keys().collect::<Vec<_>>())
            .field("views", &st.views)
            .field("queries", &st.queries.keys().collect::<Vec<_>>())
            .field("writes", &st.writes)
            .finish()
    }
}

impl FakeWarehouse {
    /// An empty warehouse.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates an empty table. Fails with [`Error::NotAllowed`] when a
    /// table or view of that name exists, and with
    /// [`Error::SchemaMismatch`] when a column name repeats.
    pub fn create_table(&self, table: &TableRef, schema: TableSchema) -> Result<()> {
        let mut seen = HashSet::new();
        for c in &schema.columns {
            if !seen.insert(&c.name) {
                return Err(Error::SchemaMismatch(format!(
                    "column {} appears twice in {table}",
                    c.name
                )));
            }
        }
        let mut st = self.lock();
        if st.exists(table) {
            return Err(Error::NotAllowed(format!("{table} already exists")));
        }
        st.tables.insert(
            table.clone(),
            Table {
                schema,
                rows: Vec::new(),
            },
        );
        Ok(())
    }

    /// Appends rows, each in the table's column order. Fails without
    /// inserting anything when the table is unknown
    /// ([`Error::UnknownTable`]), a row has the wrong width
    /// ([`Error::SchemaMismatch`]) or a NOT NULL column gets a NULL.
    pub fn insert_rows(&self, table: &TableRef, rows: Vec<Vec<Value>>) -> Result<()> {
        let mut st = self.lock();
        let t = st.table_mut(table)?;
        let width = t.schema.columns.len();
        if let Some(bad) = rows.iter().find(|r| r.len() != width) {
            return Err(Error::SchemaMismatch(format!(
                "{table} has {width} column(s), a row has {}",
                bad.len()
            )));
        }
        check_not_null(&t.schema, &rows, table)?;
        t.rows.extend(rows);
        Ok(())
    }

    /// A copy of the rows of a table (or of the table a view reads), in
    /// storage order; `None` when it does not exist.
    pub fn rows(&self, table: &TableRef) -> Option<Vec<Vec<Value>>> {
        let st = self.lock();
        st.read(table).ok().map(|t| t.rows.clone())
    }

    /// The tables (not views), sorted.
    pub fn tables(&self) -> Vec<TableRef> {
        self.lock().tables.keys().cloned().collect()
    }

    /// The views, sorted.
    pub fn views(&self) -> Vec<TableRef> {
        self.lock().views.keys().cloned().collect()
    }

    /// What `view` reads (as given to [`Warehouse::point_view`]), or `None`
    /// when it is not a view.
    pub fn view_target(&self, view: &TableRef) -> Option<TableRef> {
        self.lock().views.get(view).cloned()
    }

    /// Registers the rows a [`Source::Query`] with this exact text yields.
    ///
    /// `f` receives the batch's inclusive start and exclusive end when the
    /// query is bounded ([`Source::is_bounded`]) and `(None, None)`
    /// otherwise, and returns rows in `schema`'s column order. A bounded
    /// query's rows are used as they are (and checked by the out-of-bounds
    /// guard); an unbounded query's rows are filtered by the batch
    /// predicate. `f` runs without the warehouse lock held, so it may read
    /// this warehouse (for example with [`FakeWarehouse::rows`]).
    /// Registering the same text again replaces it.
    pub fn register_query(
        &self,
        sql: &str,
        schema: TableSchema,
        f: impl Fn(Option<&Value>, Option<&Value>) -> Vec<Vec<Value>> + Send + Sync + 'static,
    ) {
        self.lock().queries.insert(
            sql.to_string(),
            Query {
                schema,
                f: Arc::new(f),
            },
        );
    }

    /// The statements [`Warehouse::execute`] was given, in order (the
    /// fake records them rather than running them).
    pub fn executed(&self) -> Vec<String> {
        self.lock().executed.clone()
    }

    /// How many slice writes ([`Warehouse::overwrite_slice`],
    /// [`Warehouse::merge_slice`]) succeeded.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// A fault-injecting wrapper sharing this warehouse's state.
    pub fn faulty(&self) -> Faulty<FakeWarehouse> {
        Faulty::new(self.clone())
    }

    /// Rows of `source` restricted to `predicate`, with the source's
    /// schema. A bounded query's rows are returned unfiltered (the caller
    /// guards them); `bounds` are bound only into a bounded query.
    fn source_rows(
        &self,
        source: &Source,
        predicate: &Predicate,
        bounds: (Option<&Value>, Option<&Value>),
    ) -> Result<(TableSchema, Vec<Vec<Value>>)> {
        match source {
            Source::Table(t) => {
                let st = self.lock();
                let table = st.read(t)?;
                check_predicate(&table.schema, predicate, t)?;
                let rows = table
                    .rows
                    .iter()
                    .filter(|r| row_matches(predicate, &table.schema, r))
                    .cloned()
                    .collect();
                Ok((table.schema.clone(), rows))
            }
            Source::Query(sql) => {
                let (schema, f) = {
                    let st = self.lock();
                    let q = st
                        .queries
                        .get(sql)
                        .ok_or_else(|| Error::UnknownTable(source.describe()))?;
                    (q.schema.clone(), q.f.clone())
                };
                let bounded = source.is_bounded();
                let rows = if bounded {
                    f(bounds.0, bounds.1)
                } else {
                    f(None, None)
                };
                let width = schema.columns.len();
                if let Some(bad) = rows.iter().find(|r| r.len() != width) {
                    return Err(Error::SchemaMismatch(format!(
                        "{} is registered with {width} column(s) but yielded a row of {}",
                        source.describe(),
                        bad.len()
                    )));
                }
                if bounded {
                    Ok((schema, rows))
                } else {
                    let name = query_name(source);
                    check_predicate(&schema, predicate, &name)?;
                    let rows = rows
                        .into_iter()
                        .filter(|r| row_matches(predicate, &schema, r))
                        .collect();
                    Ok((schema, rows))
                }
            }
        }
    }

    /// A batch's source slice, after the out-of-bounds guard.
    fn source_slice(
        &self,
        source: &Source,
        batch: &Batch,
    ) -> Result<(TableSchema, Vec<Vec<Value>>)> {
        let (schema, rows) = self.source_rows(
            source,
            &batch.predicate,
            (batch.start.as_ref(), batch.end.as_ref()),
        )?;
        if source.is_bounded() {
            guard(
                &schema,
                &rows,
                &batch.predicate,
                source,
                &batch.id.to_string(),
            )?;
        }
        Ok((schema, rows))
    }

    /// Refuses NaN and infinity in the source rows of the target's float
    /// columns being written, before the write.
    fn finite_guard(
        &self,
        w: &SliceWrite<'_>,
        src_idx: &[usize],
        src_rows: &[Vec<Value>],
    ) -> Result<()> {
        let schema = self.lock().read(w.table)?.schema.clone();
        for (col, s) in w.columns.iter().zip(src_idx) {
            if schema.column(col).is_none_or(|c| c.ty != ColumnType::Float) {
                continue;
            }
            let rows = src_rows
                .iter()
                .filter(|r| matches!(r[*s], Value::Float(f) if !f.is_finite()))
                .count() as u64;
            if rows > 0 {
                return Err(Error::NonFinite {
                    batch: w.batch.id.to_string(),
                    column: col.to_string(),
                    rows,
                });
            }
        }
        Ok(())
    }

    /// The tables a slice write changes, as they are before it.
    fn saved(
        &self,
        w: &SliceWrite<'_>,
        key_log: Option<&TableRef>,
    ) -> Vec<(TableRef, Option<Table>)> {
        let st = self.lock();
        let mut names = vec![w.table.clone()];
        names.extend(w.snapshot.cloned());
        names.extend(key_log.cloned());
        names
            .into_iter()
            .map(|t| {
                let table = st.tables.get(&t).cloned();
                (t, table)
            })
            .collect()
    }

    /// Runs a write's guards on what it wrote; when one fails, puts the
    /// tables back as they were (the write's transaction rolls back).
    async fn guarded(
        &self,
        w: &SliceWrite<'_>,
        out: WriteOutcome,
        saved: Vec<(TableRef, Option<Table>)>,
    ) -> Result<WriteOutcome> {
        match backfill_core::validate::guard::check_guards(
            self,
            w,
            (out.rows_before, out.rows_written),
        )
        .await
        {
            Ok(()) => Ok(out),
            Err(e) => {
                self.put_back(saved);
                Err(e)
            }
        }
    }

    /// Puts tables back as they were (a write's transaction rolls back).
    fn put_back(&self, saved: Vec<(TableRef, Option<Table>)>) {
        let mut st = self.lock();
        for (name, table) in saved {
            match table {
                Some(t) => {
                    st.tables.insert(name, t);
                }
                None => {
                    st.tables.remove(&name);
                }
            }
        }
    }

    /// One write of a group and its guards, the tables left as written.
    async fn write_one(&self, w: &BatchWrite<'_>) -> Result<WriteOutcome> {
        let out = match w {
            BatchWrite::Overwrite(s) => self.overwrite(s)?,
            BatchWrite::Merge(m) => self.merge(m)?,
        };
        let rows = (out.rows_before, out.rows_written);
        backfill_core::validate::guard::check_guards(self, w.slice(), rows).await?;
        Ok(out)
    }

    fn overwrite(&self, w: &SliceWrite<'_>) -> Result<WriteOutcome> {
        let batch = w.batch;
        let id = batch.id.to_string();
        let (src_schema, src_rows) = self.source_slice(w.source, batch)?;
        let src_idx = source_indexes(&src_schema, w.columns, w.source)?;
        self.finite_guard(w, &src_idx, &src_rows)?;

        let mut st = self.lock();
        let table = st.table(w.table)?;
        let tgt_idx = indexes(&table.schema, w.columns, w.table)?;
        check_predicate(&table.schema, &batch.predicate, w.table)?;
        let width = table.schema.columns.len();
        let new_rows: Vec<Vec<Value>> = src_rows
            .iter()
            .map(|r| {
                let mut row = vec![Value::Null; width];
                for (t, s) in tgt_idx.iter().zip(&src_idx) {
                    row[*t] = r[*s].clone();
                }
                row
            })
            .collect();
        check_not_null(&table.schema, &new_rows, w.table)?;
        let hit: Vec<bool> = table
            .rows
            .iter()
            .map(|r| row_matches(&batch.predicate, &table.schema, r))
            .collect();
        let snapshot = match w.snapshot {
            Some(snap) => {
                let s = st.table(snap)?;
                let layout = Layout::of(&s.schema, snap)?;
                if layout.has_marker(&s.rows, &id) {
                    None
                } else {
                    let from = layout.project_from(&table.schema, w.table)?;
                    let rows = table
                        .rows
                        .iter()
                        .zip(&hit)
                        .filter(|(_, h)| **h)
                        .map(|(r, _)| layout.data_row(&id, r, &from))
                        .collect::<Vec<_>>();
                    Some((snap, layout.marker_row(&id), rows))
                }
            }
            None => None,
        };

        // Everything is checked: apply.
        let mut snapshotted = 0;
        if let Some((snap, marker, rows)) = snapshot {
            snapshotted = rows.len() as u64;
            let s = st.table_mut(snap)?;
            s.rows.extend(rows);
            s.rows.push(marker);
        }
        let table = st.table_mut(w.table)?;
        let before = retain_unmarked(&mut table.rows, &hit);
        let written = new_rows.len() as u64;
        table.rows.extend(new_rows);
        st.writes += 1;
        Ok(WriteOutcome {
            rows_before: before,
            rows_written: written,
            rows_snapshotted: snapshotted,
            ledger_marked: false,
        })
    }

    fn merge(&self, m: &MergeWrite<'_>) -> Result<WriteOutcome> {
        let w = &m.slice;
        let batch = w.batch;
        let id = batch.id.to_string();
        let (src_schema, src_rows) = self.source_slice(w.source, batch)?;
        let src_idx = source_indexes(&src_schema, w.columns, w.source)?;
        let src_key_idx = source_indexes(&src_schema, m.keys, w.source)?;
        self.finite_guard(w, &src_idx, &src_rows)?;

        // Refuse null and duplicate source keys.
        let mut null_rows = 0u64;
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut dups: HashMap<String, usize> = HashMap::new();
        for (i, r) in src_rows.iter().enumerate() {
            match key_of(r, &src_key_idx) {
                None => null_rows += 1,
                Some(k) => match by_key.entry(k) {
                    Entry::Occupied(e) => {
                        dups.entry(e.key().clone()).or_insert(i);
                    }
                    Entry::Vacant(e) => {
                        e.insert(i);
                    }
                },
            }
        }
        if null_rows > 0 {
            return Err(Error::NullKeys {
                batch: id,
                rows: null_rows,
            });
        }
        if !dups.is_empty() {
            let tuples: Vec<Vec<Value>> = dups
                .values()
                .map(|i| {
                    src_key_idx
                        .iter()
                        .map(|k| src_rows[*i][*k].clone())
                        .collect()
                })
                .collect();
            return Err(Error::DuplicateKeys {
                batch: id,
                groups: dups.len() as u64,
                sample: render_keys(tuples, SAMPLE_LIMIT),
            });
        }

        let mut st = self.lock();
        let table = st.table(w.table)?;
        let tgt_idx = indexes(&table.schema, w.columns, w.table)?;
        let tgt_key_idx = indexes(&table.schema, m.keys, w.table)?;
        let mut matched_src = vec![false; src_rows.len()];
        // (target row index, updated row)
        let mut updates: Vec<(usize, Vec<Value>)> = Vec::new();
        for (i, r) in table.rows.iter().enumerate() {
            let Some(s) = key_of(r, &tgt_key_idx).and_then(|k| by_key.get(&k).copied()) else {
                continue;
            };
            matched_src[s] = true;
            let mut row = r.clone();
            for (t, c) in tgt_idx.iter().zip(&src_idx) {
                row[*t] = src_rows[s][*c].clone();
            }
            updates.push((i, row));
        }
        let width = table.schema.columns.len();
        let inserts: Vec<Vec<Value>> = src_rows
            .iter()
            .zip(&matched_src)
            .filter(|(_, m)| !**m)
            .map(|(r, _)| {
                let mut row = vec![Value::Null; width];
                for (t, c) in tgt_idx.iter().zip(&src_idx) {
                    row[*t] = r[*c].clone();
                }
                row
            })
            .collect();
        let updated_rows: Vec<Vec<Value>> = updates.iter().map(|(_, r)| r.clone()).collect();
        check_not_null(&table.schema, &updated_rows, w.table)?;
        check_not_null(&table.schema, &inserts, w.table)?;

        if let Some(scope) = m.scope {
            check_predicate(&table.schema, scope, w.table)?;
            let outside: Vec<Vec<Value>> = updates
                .iter()
                .map(|(i, _)| &table.rows[*i])
                .filter(|r| !row_matches(scope, &table.schema, r))
                .map(|r| tgt_key_idx.iter().map(|k| r[*k].clone()).collect())
                .collect();
            if !outside.is_empty() {
                return Err(Error::KeysOutsideScope {
                    batch: id,
                    rows: outside.len() as u64,
                    sample: render_keys(outside, SAMPLE_LIMIT),
                });
            }
        }
        // The keys the log holds for this batch, and for the run's others.
        let mut logged: HashSet<String> = HashSet::new();
        let mut elsewhere: HashSet<String> = HashSet::new();
        if let Some(log) = m.key_log {
            let l = st.table(log)?;
            let layout = Layout::of(&l.schema, log)?;
            let idx = indexes(&l.schema, m.keys, log)?;
            for r in l
                .rows
                .iter()
                .filter(|r| r[layout.marker] != Value::Bool(true))
            {
                if let Some(k) = key_of(r, &idx) {
                    match layout.is_batch(r, &id) {
                        true => logged.insert(k),
                        false => elsewhere.insert(k),
                    };
                }
            }
        }
        // A key an earlier batch of the run wrote is not upserted again.
        let again: Vec<Vec<Value>> = src_rows
            .iter()
            .filter(|r| key_of(r, &src_key_idx).is_some_and(|k| elsewhere.contains(&k)))
            .map(|r| src_key_idx.iter().map(|k| r[*k].clone()).collect())
            .collect();
        if !again.is_empty() {
            return Err(Error::SourceKeysNotUnique {
                keys: m.keys.iter().map(|k| k.to_string()).collect(),
                duplicates: again.len() as u64,
                sample: render_keys(again, SAMPLE_LIMIT),
            });
        }
        // Pre-image and key log: every key this write touches that the
        // batch has not logged yet; with no key log, once.
        let first_time = match (w.snapshot, m.key_log) {
            (Some(snap), _) => {
                let s = st.table(snap)?;
                !Layout::of(&s.schema, snap)?.has_marker(&s.rows, &id)
            }
            (None, Some(log)) => {
                let l = st.table(log)?;
                !Layout::of(&l.schema, log)?.has_marker(&l.rows, &id)
            }
            (None, None) => false,
        };
        let unlogged = |k: Option<String>| k.is_some_and(|k| !logged.contains(&k));
        let mut pre: Option<(&TableRef, Vec<Vec<Value>>)> = None;
        let mut logged_rows: Option<(&TableRef, Vec<Vec<Value>>)> = None;
        if let Some(snap) = w.snapshot.filter(|_| first_time || m.key_log.is_some()) {
            let layout = Layout::of(&st.table(snap)?.schema, snap)?;
            let from = layout.project_from(&table.schema, w.table)?;
            let mut rows: Vec<Vec<Value>> = updates
                .iter()
                .filter(|(i, _)| unlogged(key_of(&table.rows[*i], &tgt_key_idx)))
                .map(|(i, _)| layout.data_row(&id, &table.rows[*i], &from))
                .collect();
            if first_time {
                rows.push(layout.marker_row(&id));
            }
            pre = Some((snap, rows));
        }
        if let Some(log) = m.key_log {
            let layout = Layout::of(&st.table(log)?.schema, log)?;
            let from = layout.project_from(&src_schema, &query_name(w.source))?;
            let mut rows: Vec<Vec<Value>> = src_rows
                .iter()
                .filter(|r| unlogged(key_of(r, &src_key_idx)))
                .map(|r| layout.data_row(&id, r, &from))
                .collect();
            if w.snapshot.is_none() && first_time {
                rows.push(layout.marker_row(&id));
            }
            logged_rows = Some((log, rows));
        }

        // Everything is checked: apply.
        let mut snapshotted = 0;
        if let Some((snap, rows)) = pre {
            snapshotted = rows.len() as u64 - u64::from(first_time);
            st.table_mut(snap)?.rows.extend(rows);
        }
        if let Some((log, rows)) = logged_rows {
            st.table_mut(log)?.rows.extend(rows);
        }
        let table = st.table_mut(w.table)?;
        let before = updates.len() as u64;
        let written = before + inserts.len() as u64;
        for (i, row) in updates {
            table.rows[i] = row;
        }
        table.rows.extend(inserts);
        st.writes += 1;
        Ok(WriteOutcome {
            rows_before: before,
            rows_written: written,
            rows_snapshotted: snapshotted,
            ledger_marked: false,
        })
    }

    fn restore(&self, r: &Restore<'_>) -> Result<Option<u64>> {
        let id = r.batch.id.to_string();
        let mut st = self.lock();
        let table = st.table(r.table)?;
        let snap = st.table(r.snapshot)?;
        let layout = Layout::of(&snap.schema, r.snapshot)?;
        if !layout.has_marker(&snap.rows, &id) {
            return Ok(None);
        }
        let tgt_idx = indexes(&table.schema, r.columns, r.table)?;
        let snap_idx = indexes(&snap.schema, r.columns, r.snapshot)?;
        let remove: Vec<bool> = match r.footprint {
            Footprint::Slice(pred) => {
                check_predicate(&table.schema, pred, r.table)?;
                table
                    .rows
                    .iter()
                    .map(|row| row_matches(pred, &table.schema, row))
                    .collect()
            }
            Footprint::Keys { keys, key_log } => {
                let log = st.table(key_log)?;
                let log_layout = Layout::of(&log.schema, key_log)?;
                let log_idx = indexes(&log.schema, keys, key_log)?;
                let tgt_key_idx = indexes(&table.schema, keys, r.table)?;
                let logged: HashSet<String> = log
                    .rows
                    .iter()
                    .filter(|row| log_layout.is_data_of(row, &id))
                    .filter_map(|row| key_of(row, &log_idx))
                    .collect();
                table
                    .rows
                    .iter()
                    .map(|row| key_of(row, &tgt_key_idx).is_some_and(|k| logged.contains(&k)))
                    .collect()
            }
        };
        let width = table.schema.columns.len();
        let restored: Vec<Vec<Value>> = snap
            .rows
            .iter()
            .filter(|row| layout.is_data_of(row, &id))
            .map(|row| {
                let mut out = vec![Value::Null; width];
                for (t, s) in tgt_idx.iter().zip(&snap_idx) {
                    out[*t] = row[*s].clone();
                }
                out
            })
            .collect();
        check_not_null(&table.schema, &restored, r.table)?;

        let table = st.table_mut(r.table)?;
        let keep: Vec<bool> = remove.iter().map(|x| !x).collect();
        let mut i = 0;
        table.rows.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        let n = restored.len() as u64;
        table.rows.extend(restored);
        Ok(Some(n))
    }
}

/// Where the batch id, the marker and the data columns sit in a pre-image
/// or key-log table.
struct Layout {
    batch: usize,
    marker: usize,
    width: usize,
    /// (index in the snapshot table, column name) of each data column.
    data: Vec<(usize, Ident)>,
}

impl Layout {
    fn of(schema: &TableSchema, table: &TableRef) -> Result<Layout> {
        let find = |name: &str| {
            schema
                .columns
                .iter()
                .position(|c| c.name.as_str() == name)
                .ok_or_else(|| Error::UnknownColumn {
                    table: table.to_string(),
                    column: name.to_string(),
                })
        };
        let batch = find(BATCH_COLUMN)?;
        let marker = find(MARKER_COLUMN)?;
        let data = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != batch && *i != marker)
            .map(|(i, c)| (i, c.name.clone()))
            .collect();
        Ok(Layout {
            batch,
            marker,
            width: schema.columns.len(),
            data,
        })
    }

    fn is_batch(&self, row: &[Value], id: &str) -> bool {
        matches!(&row[self.batch], Value::Text(b) if b == id)
    }

    fn has_marker(&self, rows: &[Vec<Value>], id: &str) -> bool {
        rows.iter()
            .any(|r| self.is_batch(r, id) && r[self.marker] == Value::Bool(true))
    }

    fn is_data_of(&self, row: &[Value], id: &str) -> bool {
        self.is_batch(row, id) && row[self.marker] != Value::Bool(true)
    }

    /// For each data column, its index in `from` (looked up by name).
    fn project_from(&self, from: &TableSchema, from_name: &TableRef) -> Result<Vec<usize>> {
        self.data
            .iter()
            .map(|(_, name)| index(from, name, from_name))
            .collect()
    }

    fn data_row(&self, id: &str, row: &[Value], from: &[usize]) -> Vec<Value> {
        let mut out = vec![Value::Null; self.width];
        out[self.batch] = Value::Text(id.to_string());
        out[self.marker] = Value::Bool(false);
        for ((i, _), f) in self.data.iter().zip(from) {
            out[*i] = row[*f].clone();
        }
        out
    }

    fn marker_row(&self, id: &str) -> Vec<Value> {
        let mut out = vec![Value::Null; self.width];
        out[self.batch] = Value::Text(id.to_string());
        out[self.marker] = Value::Bool(true);
        out
    }
}

fn unknown_table(t: &TableRef) -> Error {
    Error::UnknownTable(t.to_string())
}

/// A name for a source in errors: the table, or a stand-in for a query.
fn query_name(source: &Source) -> TableRef {
    match source {
        Source::Table(t) => t.clone(),
        Source::Query(_) => TableRef::new(Ident::new("__query").expect("a valid identifier")),
    }
}

fn index(schema: &TableSchema, name: &Ident, table: &TableRef) -> Result<usize> {
    schema
        .columns
        .iter()
        .position(|c| &c.name == name)
        .ok_or_else(|| Error::UnknownColumn {
            table: table.to_string(),
            column: name.to_string(),
        })
}

fn indexes(schema: &TableSchema, names: &[Ident], table: &TableRef) -> Result<Vec<usize>> {
    names.iter().map(|n| index(schema, n, table)).collect()
}

/// Column positions in a source; a missing column is a schema mismatch.
fn source_indexes(schema: &TableSchema, names: &[Ident], source: &Source) -> Result<Vec<usize>> {
    names
        .iter()
        .map(|n| {
            schema
                .columns
                .iter()
                .position(|c| &c.name == n)
                .ok_or_else(|| {
                    Error::SchemaMismatch(format!(
                        "source ({}) has no column {n}",
                        source.describe()
                    ))
                })
        })
        .collect()
}

fn check_predicate(schema: &TableSchema, predicate: &Predicate, table: &TableRef) -> Result<()> {
    for c in predicate.columns() {
        index(schema, c, table)?;
    }
    Ok(())
}

fn row_matches(predicate: &Predicate, schema: &TableSchema, row: &[Value]) -> bool {
    if matches!(predicate, Predicate::All) {
        return true;
    }
    let lookup = |c: &Ident| {
        schema
            .columns
            .iter()
            .position(|col| &col.name == c)
            .map(|i| row[i].clone())
            .unwrap_or(Value::Null)
    };
    predicate.matches(&lookup)
}

/// The out-of-bounds guard: every row of a bounded source must match the
/// batch predicate.
fn guard(
    schema: &TableSchema,
    rows: &[Vec<Value>],
    predicate: &Predicate,
    source: &Source,
    batch: &str,
) -> Result<()> {
    check_predicate(schema, predicate, &query_name(source))?;
    let outside = rows
        .iter()
        .filter(|r| !row_matches(predicate, schema, r))
        .count() as u64;
    if outside > 0 {
        return Err(Error::OutOfBounds {
            batch: batch.to_string(),
            rows: outside,
        });
    }
    Ok(())
}

fn check_not_null(schema: &TableSchema, rows: &[Vec<Value>], table: &TableRef) -> Result<()> {
    for (i, c) in schema.columns.iter().enumerate() {
        if !c.nullable && rows.iter().any(|r| r[i].is_null()) {
            return Err(Error::engine(format!(
                "null value in column {} of {table} violates a not-null constraint",
                c.name
            )));
        }
    }
    Ok(())
}

/// Removes the rows flagged in `remove`; returns how many were removed.
fn retain_unmarked(rows: &mut Vec<Vec<Value>>, remove: &[bool]) -> u64 {
    let before = rows.len();
    let mut i = 0;
    rows.retain(|_| {
        let keep = !remove[i];
        i += 1;
        keep
    });
    (before - rows.len()) as u64
}

/// Appends a canonical, hashable encoding of `v`: values that compare
/// equal ([`Value::compare`]) encode equally.
fn canon(v: &Value, out: &mut String) {
    let _ = match v {
        Value::Null => write!(out, "N"),
        Value::Bool(b) => write!(out, "b{b}"),
        Value::Int(i) => write!(out, "n{i}"),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => write!(out, "n{}", *f as i64),
        Value::Float(f) => write!(out, "f{f:?}"),
        Value::Text(s) => write!(out, "t{}:{s}", s.len()),
        Value::Date(d) => write!(out, "d{}", d.to_datetime(jiff::civil::Time::midnight())),
        Value::DateTime(d) => write!(out, "d{d}"),
        Value::Timestamp(t) => write!(out, "z{t}"),
    };
    out.push('\u{1f}');
}

/// The canonical key of a row's key columns, or `None` when any is NULL.
fn key_of(row: &[Value], idx: &[usize]) -> Option<String> {
    let mut out = String::new();
    for i in idx {
        if row[*i].is_null() {
            return None;
        }
        canon(&row[*i], &mut out);
    }
    Some(out)
}

fn cmp_rows(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// Key tuples sorted and rendered as `"v1, v2"`, at most `limit`.
fn render_keys(mut tuples: Vec<Vec<Value>>, limit: usize) -> Vec<String> {
    tuples.sort_by(|a, b| cmp_rows(a, b));
    tuples
        .iter()
        .take(limit)
        .map(|t| {
            t.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn matching<'a>(
    table: &'a Table,
    predicate: &'a Predicate,
) -> impl Iterator<Item = &'a Vec<Value>> {
    table
        .rows
        .iter()
        .filter(move |r| row_matches(predicate, &table.schema, r))
}

#[async_trait]
impl Warehouse for FakeWarehouse {
    fn engine(&self) -> &str {
        "fake"
    }

    fn dialect(&self) -> Option<&dyn Dialect> {
        None
    }

    fn marks_in_tx(&self, _mark: &backfill_core::ledger::TxMark) -> bool {
        false
    }

    async fn describe(&self, table: &TableRef) -> Result<Option<TableSchema>> {
        Ok(self.lock().read(table).ok().map(|t| t.schema.clone()))
    }

    async fn resolve(&self, table: &TableRef) -> Result<TableRef> {
        // The fake has no schemas: a name is the table.
        Ok(table.clone())
    }

    async fn describe_source(&self, source: &Source) -> Result<TableSchema> {
        let st = self.lock();
        match source {
            Source::Table(t) => Ok(st.read(t)?.schema.clone()),
            Source::Query(sql) => st
                .queries
                .get(sql)
                .map(|q| q.schema.clone())
                .ok_or_else(|| Error::UnknownTable(source.describe())),
        }
    }

    async fn count(&self, table: &TableRef, predicate: &Predicate) -> Result<u64> {
        let st = self.lock();
        let t = st.read(table)?;
        check_predicate(&t.schema, predicate, table)?;
        Ok(matching(t, predicate).count() as u64)
    }

    async fn key_boundaries(
        &self,
        table: &TableRef,
        column: &Ident,
        predicate: &Predicate,
        every: u64,
    ) -> Result<Vec<Value>> {
        if every == 0 {
            return Err(Error::InvalidPlan("key boundaries every 0 rows".into()));
        }
        let st = self.lock();
        let t = st.read(table)?;
        check_predicate(&t.schema, predicate, table)?;
        let i = index(&t.schema, column, table)?;
        let mut values: Vec<Value> = matching(t, predicate)
            .map(|r| r[i].clone())
            .filter(|v| !v.is_null())
            .collect();
        values.sort_by(Value::total_cmp);
        let step = usize::try_from(every).unwrap_or(usize::MAX);
        Ok(values.into_iter().step_by(step).collect())
    }

    async fn key_report(
        &self,
        table: &TableRef,
        keys: &[Ident],
        predicate: &Predicate,
        sample: usize,
    ) -> Result<KeyReport> {
        let st = self.lock();
        let t = st.read(table)?;
        check_predicate(&t.schema, predicate, table)?;
        let idx = indexes(&t.schema, keys, table)?;
        let mut rows = 0u64;
        let mut null_keys = 0u64;
        // key -> (count, first row)
        let mut groups: HashMap<String, (u64, &Vec<Value>)> = HashMap::new();
        for r in matching(t, predicate) {
            rows += 1;
            match key_of(r, &idx) {
                None => null_keys += 1,
                Some(k) => groups.entry(k).or_insert((0, r)).0 += 1,
            }
        }
        let dups: Vec<Vec<Value>> = groups
            .values()
            .filter(|(n, _)| *n > 1)
            .map(|(_, r)| idx.iter().map(|i| r[*i].clone()).collect())
            .collect();
        Ok(KeyReport {
            rows,
            null_keys,
            duplicate_keys: dups.len() as u64,
            sample: render_keys(dups, sample),
        })
    }

    async fn checksum(&self, table: &TableRef, predicate: &Predicate) -> Result<Checksum> {
        let mut encoded: Vec<String> = {
            let st = self.lock();
            let t = st.read(table)?;
            check_predicate(&t.schema, predicate, table)?;
            matching(t, predicate)
                .map(|r| {
                    let mut s = String::new();
                    r.iter().for_each(|v| canon(v, &mut s));
                    s
                })
                .collect()
        };
        encoded.sort_unstable();
        let mut h = Sha256::new();
        for row in &encoded {
            h.update(row.as_bytes());
            h.update([0x1e]);
        }
        Ok(Checksum {
            rows: encoded.len() as u64,
            hash: hex(&h.finalize()),
        })
    }

    async fn sample_rows(
        &self,
        table: &TableRef,
        predicate: &Predicate,
        order_by: &[Ident],
        limit: usize,
    ) -> Result<Vec<Vec<Value>>> {
        let st = self.lock();
        let t = st.read(table)?;
        check_predicate(&t.schema, predicate, table)?;
        let idx = indexes(&t.schema, order_by, table)?;
        let mut rows: Vec<&Vec<Value>> = matching(t, predicate).collect();
        rows.sort_by(|a, b| {
            idx.iter()
                .map(|i| a[*i].total_cmp(&b[*i]))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        Ok(rows.into_iter().take(limit).cloned().collect())
    }

    async fn overwrite_slice(&self, write: &SliceWrite<'_>) -> Result<WriteOutcome> {
        let _one = self.writing.lock().await;
        let before = self.saved(write, None);
        let out = self.overwrite(write)?;
        self.guarded(write, out, before).await
    }

    async fn merge_slice(&self, write: &MergeWrite<'_>) -> Result<WriteOutcome> {
        let _one = self.writing.lock().await;
        let before = self.saved(&write.slice, write.key_log);
        let out = self.merge(write)?;
        self.guarded(&write.slice, out, before).await
    }

    fn max_group(&self) -> usize {
        usize::MAX
    }

    async fn write_group(
        &self,
        writes: &[BatchWrite<'_>],
    ) -> std::result::Result<Vec<WriteOutcome>, GroupFailure> {
        let _one = self.writing.lock().await;
        let mut saved: Vec<(TableRef, Option<Table>)> = Vec::new();
        for w in writes {
            let key_log = match w {
                BatchWrite::Merge(m) => m.key_log,
                BatchWrite::Overwrite(_) => None,
            };
            for (name, table) in self.saved(w.slice(), key_log) {
                if !saved.iter().any(|(n, _)| *n == name) {
                    saved.push((name, table));
                }
            }
        }
        let writes_before = self.lock().writes;
        let mut outs = Vec::with_capacity(writes.len());
        for (i, w) in writes.iter().enumerate() {
            match self.write_one(w).await {
                Ok(out) => outs.push(out),
                Err(e) => {
                    self.put_back(saved);
                    self.lock().writes = writes_before;
                    return Err(GroupFailure::at(i, e));
                }
            }
        }
        Ok(outs)
    }

    async fn restore_slice(&self, restore: &Restore<'_>) -> Result<Option<u64>> {
        self.restore(restore)
    }

    async fn create_copy(&self, from: &TableRef, to: &TableRef, with_rows: bool) -> Result<()> {
        let mut st = self.lock();
        if st.exists(to) {
            return Ok(());
        }
        let src = st.read(from)?;
        let copy = Table {
            schema: src.schema.clone(),
            rows: if with_rows {
                src.rows.clone()
            } else {
                Vec::new()
            },
        };
        st.tables.insert(to.clone(), copy);
        Ok(())
    }

    async fn create_snapshot_table(
        &self,
        like: &TableRef,
        columns: &[Ident],
        snapshot: &TableRef,
    ) -> Result<()> {
        let mut st = self.lock();
        if st.exists(snapshot) {
            return Ok(());
        }
        let src = st.read(like)?;
        let mut cols = vec![
            Column::new(Ident::new(BATCH_COLUMN)?, ColumnType::Text),
            Column::new(Ident::new(MARKER_COLUMN)?, ColumnType::Bool),
        ];
        for c in columns {
            let i = index(&src.schema, c, like)?;
            cols.push(Column::new(c.clone(), src.schema.columns[i].ty));
        }
        st.tables.insert(
            snapshot.clone(),
            Table {
                schema: TableSchema { columns: cols },
                rows: Vec::new(),
            },
        );
        Ok(())
    }

    async fn swap(
        &self,
        target: &TableRef,
        replacement: &TableRef,
        keep_as: &TableRef,
    ) -> Result<()> {
        let mut st = self.lock();
        st.table(target)?;
        st.table(replacement)?;
        if target == replacement {
            return Err(Error::NotAllowed(format!(
                "cannot swap {target} with itself"
            )));
        }
        if st.exists(keep_as) {
            return Err(Error::NotAllowed(format!(
                "cannot keep {target} as {keep_as}: it already exists"
            )));
        }
        let old = st
            .tables
            .remove(target)
            .ok_or_else(|| unknown_table(target))?;
        let new = st
            .tables
            .remove(replacement)
            .ok_or_else(|| unknown_table(replacement))?;
        st.tables.insert(keep_as.clone(), old);
        st.tables.insert(target.clone(), new);
        Ok(())
    }

    async fn point_view(&self, view: &TableRef, table: &TableRef) -> Result<()> {
        let mut st = self.lock();
        if st.tables.contains_key(view) {
            return Err(Error::NotAllowed(format!("{view} is a table, not a view")));
        }
        if !st.exists(table) {
            return Err(unknown_table(table));
        }
        // Refuse a cycle: `table` must not read through `view`.
        let mut cur = table.clone();
        for _ in 0..MAX_VIEW_DEPTH {
            if &cur == view {
                return Err(Error::NotAllowed(format!("view {view} would read itself")));
            }
            match st.views.get(&cur) {
                Some(next) => cur = next.clone(),
                None => break,
            }
        }
        st.views.insert(view.clone(), table.clone());
        Ok(())
    }

    async fn drop_table(&self, table: &TableRef) -> Result<bool> {
        Ok(self.lock().tables.remove(table).is_some())
    }

    async fn stage_source(
        &self,
        source: &Source,
        predicate: &Predicate,
        bounds: (Option<&Value>, Option<&Value>),
        order_by: &Ident,
        into: &TableRef,
    ) -> Result<u64> {
        {
            let st = self.lock();
            if st.exists(into) {
                return Ok(st.read(into).map(|t| t.rows.len() as u64).unwrap_or(0));
            }
        }
        let (schema, mut rows) = self.source_rows(source, predicate, bounds)?;
        if source.is_bounded() {
            guard(&schema, &rows, predicate, source, &format!("stage {into}"))?;
        }
        let i = source_indexes(&schema, std::slice::from_ref(order_by), source)?[0];
        rows.sort_by(|a, b| a[i].total_cmp(&b[i]));
        let mut st = self.lock();
        if st.exists(into) {
            return Ok(st.read(into).map(|t| t.rows.len() as u64).unwrap_or(0));
        }
        let n = rows.len() as u64;
        st.tables.insert(into.clone(), Table { schema, rows });
        Ok(n)
    }

    async fn inspect(&self, question: &Inspect) -> Result<Answer> {
        inspect::answer(&self.lock(), question)
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        // The fake runs no SQL; it records it, in order, for tests.
        self.lock().executed.push(sql.to_string());
        Ok(())
    }
}
