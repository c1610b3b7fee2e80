//! Checks that run at the end, on the whole scope.
//!
//! Each is a few [`Inspect`] questions: the engine does the work and
//! answers with numbers and bounded samples. Checks that compare old
//! against new measure the old side in [`ScopeCheck::baseline`], which
//! the runner calls before the first write and keeps in the ledger.

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::report::{Detail, EdgeCase, Finding, ReconRow, SchemaChanges};
use super::{verdict, Expectation, Outcome, Status, Threshold, SAMPLE_LIMIT};
use crate::amount::Amount;
use crate::ask;
use crate::error::{Error, Result};
use crate::inspect::{
    self, Compared, Diff, Dim, Inspect, Metric, MetricValue, Period, ProfileGroup, Rows, TableSize,
};
use crate::ledger::{Ledger, RunId};
use crate::plan::Plan;
use crate::scope::{time_value, Bounds, TimeColumn};
use crate::warehouse::{Warehouse, MARKER_COLUMN};
use crate::{Ident, Predicate, TableRef, TableSchema, Value};

/// What an end-of-run check looks at.
#[derive(Clone, Copy)]
pub struct ScopeContext<'a> {
    /// The engine.
    pub warehouse: &'a dyn Warehouse,
    /// The run's ledger.
    pub ledger: &'a dyn Ledger,
    /// The run.
    pub run_id: &'a RunId,
    /// The run's plan.
    pub plan: &'a Plan,
    /// The new data over the scope.
    pub new: &'a Rows,
    /// What a diff compares, old rows then new rows (a pre-image or the
    /// table the new data replaces), where the pattern keeps the old rows.
    pub diff: Option<(&'a Rows, &'a Rows)>,
}

/// A check on the whole scope, run at the end.
#[async_trait]
pub trait ScopeCheck: Send + Sync {
    /// The check's name.
    fn name(&self) -> String;

    /// Whether a failure blocks cut-over.
    fn blocking(&self) -> bool;

    /// Measures the old side before the first write; `None` if the check
    /// needs no baseline. `before` is the target over the scope.
    async fn baseline(
        &self,
        _w: &dyn Warehouse,
        _before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }

    /// Runs the check; `baseline` is what [`ScopeCheck::baseline`] stored,
    /// if it was captured.
    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding>;
}

fn outcome(name: String, blocking: bool, ok: bool, query: String) -> Outcome {
    Outcome {
        check: name,
        batch: None,
        status: verdict(ok, blocking),
        blocking,
        observed: 0.0,
        expected: None,
        threshold: None,
        detail: String::new(),
        sample: Vec::new(),
        query,
    }
}

/// The statements that answer `qs` on this engine, or a description for
/// the in-memory one.
fn queries(w: &dyn Warehouse, qs: &[Inspect]) -> String {
    match w.dialect() {
        Some(d) => qs
            .iter()
            .flat_map(|q| crate::sql::inspect::render(d, q))
            .map(|s| s.display())
            .collect::<Vec<_>>()
            .join(";\n"),
        None => format!("in-memory: {} question(s)", qs.len()),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Option<serde_json::Value>> {
    serde_json::to_value(v)
        .map(Some)
        .map_err(|e| Error::Serde(e.to_string()))
}

fn from_baseline<T: serde::de::DeserializeOwned>(
    name: &str,
    baseline: Option<&serde_json::Value>,
) -> Result<T> {
    let v = baseline.ok_or_else(|| {
        Error::NotAllowed(format!(
            "{name} has no baseline: it is captured before the first write, and this run wrote \
             before the check was declared"
        ))
    })?;
    serde_json::from_value(v.clone()).map_err(|e| Error::Serde(e.to_string()))
}

fn key_text(key: &[Value]) -> String {
    if key.is_empty() {
        return "all".into();
    }
    key.iter()
        .map(|v| match v {
            Value::Null => "NULL".to_string(),
            Value::Text(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn rate(nulls: u64, rows: u64) -> f64 {
    if rows == 0 {
        0.0
    } else {
        nulls as f64 * 100.0 / rows as f64
    }
}

// ---------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------

/// Every planned batch done, and no expected day or partition empty.
#[derive(Clone, Debug)]
pub struct CoverageCheck {
    /// Days or partitions that may be empty.
    pub empty_allowed: u64,
    /// Whether a failure blocks cut-over.
    pub blocking: bool,
}

/// The spine a scope expects: each day of a time scope (UTC days for
/// instants), or each partition; `None` for key and unbounded scopes.
pub fn expected_spine(plan: &Plan) -> Result<Option<(Dim, Vec<Value>)>> {
    let scope = &plan.scope;
    let col = scope.batch_column.clone();
    Ok(match &scope.bounds {
        Bounds::Time { start, end, column } => {
            let (first, last_excl) = match column {
                TimeColumn::Date | TimeColumn::Local => (start.date(), end_day(end.date(), *end)),
                TimeColumn::Instant => {
                    let tz = scope.zone()?;
                    let utc = |v: Value| match v {
                        Value::Timestamp(t) => Ok(TimeZone::UTC.to_datetime(t)),
                        _ => Err(Error::InvalidScope("instant bound expected".into())),
                    };
                    let s = utc(time_value(&tz, *column, *start)?)?;
                    let e = utc(time_value(&tz, *column, *end)?)?;
                    (s.date(), end_day(e.date(), e))
                }
            };
            let mut days = Vec::new();
            let mut d = first;
            while d < last_excl && days.len() <= crate::sql::inspect::MAX_GROUPS {
                days.push(Value::Date(d));
                d = d
                    .tomorrow()
                    .map_err(|e| Error::InvalidScope(e.to_string()))?;
            }
            Some((Dim::period(col, Period::Day), days))
        }
        Bounds::Partitions { values } => Some((Dim::column(col), values.clone())),
        Bounds::Keys { .. } | Bounds::All => None,
    })
}

/// The first day not in a range ending (exclusive) at `end`.
fn end_day(day: Date, end: jiff::civil::DateTime) -> Date {
    if end.time() == jiff::civil::Time::midnight() {
        day
    } else {
        day.tomorrow().unwrap_or(day)
    }
}

#[async_trait]
impl ScopeCheck for CoverageCheck {
    fn name(&self) -> String {
        "coverage".into()
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        _: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let batches = ctx.ledger.batches(ctx.run_id).await?;
        let undone: Vec<String> = batches
            .iter()
            .filter(|b| !b.state.is_done())
            .map(|b| format!("batch {} is {}", b.batch.id, b.state.as_str()))
            .collect();
        let mut sample = undone.clone();
        let mut qs = Vec::new();
        let mut empty = 0u64;
        let mut spine_len = 0usize;
        if let Some((dim, expected)) = expected_spine(ctx.plan)? {
            let q = Inspect::Spine {
                rows: ctx.new.clone(),
                dim: dim.clone(),
                expected: expected.clone(),
            };
            let got = ask::spine(ctx.warehouse, ctx.new.clone(), dim.clone(), expected).await?;
            spine_len = got.len();
            for (v, n) in &got {
                if *n == 0 {
                    empty += 1;
                    sample.push(format!(
                        "{} = {} has no rows",
                        dim.label(),
                        key_text(std::slice::from_ref(v))
                    ));
                }
            }
            qs.push(q);
        }
        let ok = undone.is_empty() && empty <= self.empty_allowed;
        let mut o = outcome(self.name(), self.blocking, ok, queries(ctx.warehouse, &qs));
        o.observed = (undone.len() as u64 + empty) as f64;
        o.expected = Some(0.0);
        o.threshold = Some(Threshold::Absolute(self.empty_allowed as f64));
        o.detail = format!(
            "{}/{} batches done; {} of {} expected values empty",
            batches.len() - undone.len(),
            batches.len(),
            empty,
            spine_len
        );
        sample.truncate(SAMPLE_LIMIT);
        o.sample = sample;
        Ok(o.into())
    }
}

// ---------------------------------------------------------------------------
// Completeness
// ---------------------------------------------------------------------------

/// Row counts and distinct keys per group, old against new.
#[derive(Clone, Debug)]
pub struct CompletenessCheck {
    /// Grouped by these.
    pub by: Vec<Dim>,
    /// Distinct tuples of these are counted too.
    pub keys: Vec<Ident>,
    /// The allowed change per group.
    pub expect: Expectation,
    /// Whether a failure blocks cut-over.
    pub blocking: bool,
}

impl CompletenessCheck {
    fn question(&self, rows: &Rows) -> Inspect {
        Inspect::Profile {
            rows: rows.clone(),
            by: self.by.clone(),
            distinct: self.keys.clone(),
            nulls: Vec::new(),
        }
    }
}

/// Pairs groups of two answers by key, in order of first appearance.
fn pair<T: Clone>(
    before: &[T],
    after: &[T],
    key: impl Fn(&T) -> &Vec<Value>,
) -> Vec<(Vec<Value>, Option<T>, Option<T>)> {
    let mut order: Vec<Vec<Value>> = Vec::new();
    let mut map: BTreeMap<String, (Option<T>, Option<T>)> = BTreeMap::new();
    for (side, list) in [(0, before), (1, after)] {
        for g in list {
            let k = key(g);
            let id = format!("{k:?}");
            let e = map.entry(id).or_insert_with(|| {
                order.push(k.clone());
                (None, None)
            });
            if side == 0 {
                e.0 = Some(g.clone());
            } else {
                e.1 = Some(g.clone());
            }
        }
    }
    order
        .into_iter()
        .map(|k| {
            let (b, a) = map.remove(&format!("{k:?}")).unwrap_or((None, None));
            (k, b, a)
        })
        .collect()
}

#[async_trait]
impl ScopeCheck for CompletenessCheck {
    fn name(&self) -> String {
        let by: Vec<String> = self.by.iter().map(Dim::label).collect();
        if by.is_empty() {
            "completeness".into()
        } else {
            format!("completeness by {}", by.join(", "))
        }
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn baseline(
        &self,
        w: &dyn Warehouse,
        before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        let groups = profile_of(w, self.question(before)).await?;
        to_json(&groups)
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let before: Vec<ProfileGroup> = from_baseline(&self.name(), baseline)?;
        let q = self.question(ctx.new);
        let after = profile_of(ctx.warehouse, q.clone()).await?;
        let mut off = Vec::new();
        let mut threshold = None;
        let (mut rows_before, mut rows_after) = (0u64, 0u64);
        for (key, b, a) in pair(&before, &after, |g| &g.key) {
            let (rb, ra) = (
                b.as_ref().map_or(0, |g| g.rows),
                a.as_ref().map_or(0, |g| g.rows),
            );
            rows_before += rb;
            rows_after += ra;
            let (ok_rows, t) = self.expect.judge(rb, ra);
            threshold = Some(t);
            let distinct =
                |g: &Option<ProfileGroup>| g.as_ref().and_then(|g| g.distinct).unwrap_or(0);
            let (db, da) = (distinct(&b), distinct(&a));
            let ok_keys = self.keys.is_empty() || self.expect.judge(db, da).0;
            if !(ok_rows && ok_keys) {
                let keys = if self.keys.is_empty() {
                    String::new()
                } else {
                    format!(", distinct keys {db} → {da}")
                };
                off.push(format!("{}: rows {rb} → {ra}{keys}", key_text(&key)));
            }
        }
        let mut o = outcome(
            self.name(),
            self.blocking,
            off.is_empty(),
            queries(ctx.warehouse, &[q]),
        );
        o.observed = off.len() as f64;
        o.expected = Some(0.0);
        o.threshold = threshold;
        o.detail = format!(
            "{rows_before} rows before, {rows_after} after; {} group(s) outside the expected change",
            off.len()
        );
        off.truncate(SAMPLE_LIMIT);
        o.sample = off;
        Ok(o.into())
    }
}

async fn profile_of(w: &dyn Warehouse, q: Inspect) -> Result<Vec<ProfileGroup>> {
    match w.inspect(&q).await? {
        inspect::Answer::Profile(g) => Ok(g),
        other => Err(Error::engine(format!("expected a profile, got {other:?}"))),
    }
}

// ---------------------------------------------------------------------------
// Null rates
// ---------------------------------------------------------------------------

/// Null rates of columns, old against new, in one pass each.
#[derive(Clone, Debug)]
pub struct NullRateCheck {
    /// The columns.
    pub columns: Vec<Ident>,
    /// How many percentage points a rate may rise.
    pub max_increase: f64,
    /// Whether a failure blocks cut-over.
    pub blocking: bool,
}

impl NullRateCheck {
    fn question(&self, rows: &Rows) -> Inspect {
        Inspect::Profile {
            rows: rows.clone(),
            by: Vec::new(),
            distinct: Vec::new(),
            nulls: self.columns.clone(),
        }
    }
}

fn one_group(groups: Vec<ProfileGroup>, n: usize) -> (u64, Vec<u64>) {
    groups
        .into_iter()
        .next()
        .map(|g| (g.rows, g.nulls))
        .unwrap_or((0, vec![0; n]))
}

#[async_trait]
impl ScopeCheck for NullRateCheck {
    fn name(&self) -> String {
        "null_rate".into()
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn baseline(
        &self,
        w: &dyn Warehouse,
        before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        to_json(&profile_of(w, self.question(before)).await?)
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let before: Vec<ProfileGroup> = from_baseline(&self.name(), baseline)?;
        let q = self.question(ctx.new);
        let after = profile_of(ctx.warehouse, q.clone()).await?;
        let n = self.columns.len();
        let ((rb, nb), (ra, na)) = (one_group(before, n), one_group(after, n));
        let mut lines = Vec::new();
        let mut worst = 0.0f64;
        let mut bad = 0;
        for (i, c) in self.columns.iter().enumerate() {
            let (b, a) = (
                rate(nb.get(i).copied().unwrap_or(0), rb),
                rate(na.get(i).copied().unwrap_or(0), ra),
            );
            worst = worst.max(a - b);
            let over = a - b > self.max_increase;
            if over {
                bad += 1;
            }
            lines.push(format!(
                "{c}: {b:.2}% → {a:.2}%{}",
                if over { " (over)" } else { "" }
            ));
        }
        let mut o = outcome(
            self.name(),
            self.blocking,
            bad == 0,
            queries(ctx.warehouse, &[q]),
        );
        o.observed = worst;
        o.threshold = Some(Threshold::Absolute(self.max_increase));
        o.detail = format!(
            "{n} column(s); largest rise {worst:.2} points; {bad} over {} points",
            self.max_increase
        );
        o.sample = lines;
        Ok(o.into())
    }
}

// ---------------------------------------------------------------------------
// Referential integrity
// ---------------------------------------------------------------------------

/// Rows whose foreign key is set and has no parent row.
#[derive(Clone, Debug)]
pub struct OrphanCheck {
    /// The foreign key columns.
    pub columns: Vec<Ident>,
    /// The parent table.
    pub parent: TableRef,
    /// The parent's key columns.
    pub parent_columns: Vec<Ident>,
    /// Orphans allowed.
    pub max: u64,
    /// Whether a failure blocks cut-over.
    pub blocking: bool,
}

#[async_trait]
impl ScopeCheck for OrphanCheck {
    fn name(&self) -> String {
        let c: Vec<&str> = self.columns.iter().map(Ident::as_str).collect();
        format!("references({} → {})", c.join(", "), self.parent)
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        _: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let q = Inspect::Orphans {
            rows: ctx.new.clone(),
            columns: self.columns.clone(),
            parent: self.parent.clone(),
            parent_columns: self.parent_columns.clone(),
            sample: SAMPLE_LIMIT,
        };
        let (rows, sample) = match ctx.warehouse.inspect(&q).await? {
            inspect::Answer::Orphans { rows, sample } => (rows, sample),
            other => return Err(Error::engine(format!("expected orphans, got {other:?}"))),
        };
        let mut o = outcome(
            self.name(),
            self.blocking,
            rows <= self.max,
            queries(ctx.warehouse, &[q]),
        );
        o.observed = rows as f64;
        o.expected = Some(0.0);
        o.threshold = Some(Threshold::Absolute(self.max as f64));
        o.detail = format!("{rows} row(s) with no parent in {}", self.parent);
        o.sample = sample;
        Ok(o.into())
    }
}

// ---------------------------------------------------------------------------
// Metric reconciliation
// ---------------------------------------------------------------------------

/// A stakeholder metric before (baseline) and after, with its change
/// explained by added, removed and changed rows.
#[derive(Clone, Debug)]
pub struct ReconcileCheck {
    /// The metric.
    pub metric: Metric,
    /// The row key.
    pub keys: Vec<Ident>,
    /// The allowed change per group.
    pub expect: Expectation,
    /// Unexplained change tolerated per group.
    pub tolerance: Amount,
    /// Whether a failure blocks cut-over.
    pub blocking: bool,
}

impl ReconcileCheck {
    /// The diff that attributes the metric's change: compares the columns
    /// the metric reads, so a row whose measure or group moved counts as
    /// changed.
    fn attribution(&self, old: &Rows, new: &Rows) -> Diff {
        let mut columns: Vec<Compared> = Vec::new();
        for c in self.metric.columns() {
            if !self.keys.contains(&c) && !columns.iter().any(|x| x.column == c) {
                columns.push(Compared::exact(c));
            }
        }
        Diff {
            old: old.clone(),
            new: new.clone(),
            keys: self.keys.clone(),
            columns,
            sample: 0,
            attribute: Some(self.metric.clone()),
            partition: None,
        }
    }
}

#[async_trait]
impl ScopeCheck for ReconcileCheck {
    fn name(&self) -> String {
        format!("reconcile({})", self.metric.name)
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn baseline(
        &self,
        w: &dyn Warehouse,
        before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        to_json(&ask::metric(w, before.clone(), self.metric.clone()).await?)
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let before: Vec<MetricValue> = from_baseline(&self.name(), baseline)?;
        let mut qs = vec![Inspect::Metric {
            rows: ctx.new.clone(),
            metric: self.metric.clone(),
        }];
        let after = ask::metric(ctx.warehouse, ctx.new.clone(), self.metric.clone()).await?;
        let contributions = match ctx.diff {
            Some((old, new)) => {
                let d = self.attribution(old, new);
                qs.push(Inspect::Diff(Box::new(d.clone())));
                Some(ask::diff(ctx.warehouse, d).await?.contributions)
            }
            None => None,
        };
        let mut parts: BTreeMap<String, (Amount, Amount, Amount)> = BTreeMap::new();
        let mut keys: Vec<Vec<Value>> = Vec::new();
        for c in contributions.iter().flatten() {
            parts.insert(format!("{:?}", c.key), (c.added, c.removed, c.changed));
            keys.push(c.key.clone());
        }
        let mut rows = Vec::new();
        let mut threshold = None;
        for (key, b, a) in pair(&before, &after, |m| &m.key) {
            let before = b.map(|m| m.value).unwrap_or_default();
            let after = a.map(|m| m.value).unwrap_or_default();
            let (added, removed, changed) = parts.remove(&format!("{key:?}")).unwrap_or_default();
            let (within, t) = self.expect.judge_amount(before, after)?;
            threshold = Some(t);
            rows.push(ReconRow {
                key,
                before,
                after,
                added,
                removed,
                changed,
                within,
            });
        }
        // A group whose rows all moved away and back can net to nothing in
        // both answers and still carry contributions.
        for key in keys {
            if let Some((added, removed, changed)) = parts.remove(&format!("{key:?}")) {
                rows.push(ReconRow {
                    key,
                    before: Amount::default(),
                    after: Amount::default(),
                    added,
                    removed,
                    changed,
                    within: true,
                });
            }
        }
        let outside: Vec<&ReconRow> = rows.iter().filter(|r| !r.within).collect();
        let mut unexplained: Vec<&ReconRow> = Vec::new();
        for r in &rows {
            if r.unexplained()?.abs() > self.tolerance {
                unexplained.push(r);
            }
        }
        let ok = outside.is_empty() && unexplained.is_empty();
        let total_before = Amount::try_sum(rows.iter().map(|r| r.before))?;
        let total_after = Amount::try_sum(rows.iter().map(|r| r.after))?;
        let mut o = outcome(self.name(), self.blocking, ok, queries(ctx.warehouse, &qs));
        o.observed = total_after.to_f64();
        o.expected = Some(total_before.to_f64());
        o.threshold = threshold;
        o.detail = format!(
            "{} {} → {} ({}); {} group(s) outside the expected change, {} with unexplained change{}",
            self.metric.name,
            super::report::grouped(total_before),
            super::report::grouped(total_after),
            super::report::signed(total_after.checked_sub(total_before)?),
            outside.len(),
            unexplained.len(),
            if contributions.is_none() {
                " (no old rows kept to explain it: keep a pre-image)"
            } else {
                ""
            }
        );
        o.sample = outside
            .iter()
            .chain(unexplained.iter())
            .take(SAMPLE_LIMIT)
            .map(|r| {
                format!(
                    "{}: {} → {} ({}), unexplained {}",
                    key_text(&r.key),
                    r.before,
                    r.after,
                    super::report::signed_or(r.delta()),
                    super::report::signed_or(r.unexplained())
                )
            })
            .collect();
        Ok(Finding {
            outcome: o,
            detail: Some(Detail::Reconciliation {
                metric: self.metric.name.clone(),
                by: self.metric.by.iter().map(Dim::label).collect(),
                rows,
            }),
        })
    }
}

// ---------------------------------------------------------------------------
// Row diff
// ---------------------------------------------------------------------------

/// A row-level diff of old against new over the scope, after a grain check
/// on both sides (a diff is meaningless on a broken grain).
#[derive(Clone, Debug)]
pub struct RowDiffCheck {
    /// The key.
    pub keys: Vec<Ident>,
    /// The compared columns; empty compares every other column exactly.
    pub columns: Vec<Compared>,
    /// Keys sampled per kind.
    pub sample: usize,
    /// Most rows that may differ, if bounded.
    pub max_changed: Option<Threshold>,
    /// The fast path's partition dimension, if any.
    pub partition: Option<Dim>,
    /// Whether a failure blocks cut-over.
    pub blocking: bool,
}

/// Rows whose key is NULL or repeated, from a one-pass profile.
async fn broken_grain(w: &dyn Warehouse, rows: &Rows, keys: &[Ident]) -> Result<u64> {
    let q = Inspect::Profile {
        rows: rows.clone(),
        by: Vec::new(),
        distinct: keys.to_vec(),
        nulls: keys.to_vec(),
    };
    let g = profile_of(w, q).await?;
    Ok(g.first().map_or(0, |g| {
        let nulls: u64 = g.nulls.iter().sum();
        g.rows.saturating_sub(g.distinct.unwrap_or(0)).max(nulls)
    }))
}

#[async_trait]
impl ScopeCheck for RowDiffCheck {
    fn name(&self) -> String {
        let k: Vec<&str> = self.keys.iter().map(Ident::as_str).collect();
        format!("row_diff({})", k.join(", "))
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        _: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let Some((old, new)) = ctx.diff else {
            let mut o = outcome(self.name(), self.blocking, false, String::new());
            o.status = Status::Error;
            o.detail = "no old rows to diff against: keep a pre-image".into();
            return Ok(o.into());
        };
        let (bo, bn) = (
            broken_grain(ctx.warehouse, old, &self.keys).await?,
            broken_grain(ctx.warehouse, new, &self.keys).await?,
        );
        if bo + bn > 0 {
            let mut o = outcome(self.name(), self.blocking, false, String::new());
            o.observed = (bo + bn) as f64;
            o.detail = format!(
                "the grain is broken ({bo} old, {bn} new rows with a null or repeated key); \
                 the diff did not run"
            );
            return Ok(o.into());
        }
        let columns = if self.columns.is_empty() {
            let schema = ctx
                .warehouse
                .describe(&new.table)
                .await?
                .ok_or_else(|| Error::UnknownTable(new.table.to_string()))?;
            schema
                .names()
                .into_iter()
                .filter(|c| !self.keys.contains(c) && c.as_str() != MARKER_COLUMN)
                .map(Compared::exact)
                .collect()
        } else {
            self.columns.clone()
        };
        let d = Diff {
            old: old.clone(),
            new: new.clone(),
            keys: self.keys.clone(),
            columns,
            sample: self.sample,
            attribute: None,
            partition: self.partition.clone(),
        };
        let q = Inspect::Diff(Box::new(d.clone()));
        let r = ask::diff(ctx.warehouse, d).await?;
        let differing = r.added + r.removed + r.changed;
        let ok = match self.max_changed {
            None => true,
            Some(Threshold::Absolute(n)) => differing as f64 <= n,
            Some(Threshold::Percent(p)) => differing as f64 * 100.0 <= p * r.old_rows.max(1) as f64,
        };
        let mut o = outcome(self.name(), self.blocking, ok, queries(ctx.warehouse, &[q]));
        o.observed = differing as f64;
        o.threshold = self.max_changed;
        let per_column: Vec<String> = r
            .column_changes
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        o.detail = format!(
            "{} added, {} removed, {} changed, {} unchanged{}",
            r.added,
            r.removed,
            r.changed,
            r.unchanged,
            if per_column.is_empty() {
                String::new()
            } else {
                format!(" (changes: {})", per_column.join(", "))
            }
        );
        o.sample = r
            .samples
            .iter()
            .flat_map(|(kind, keys)| keys.iter().map(move |k| format!("{kind:?}: {k}")))
            .take(SAMPLE_LIMIT)
            .collect();
        Ok(Finding {
            outcome: o,
            detail: Some(Detail::Diff(r)),
        })
    }
}

// ---------------------------------------------------------------------------
// Schema, edge cases, size
// ---------------------------------------------------------------------------

/// Columns added, removed or retyped between old and new.
#[derive(Clone, Debug)]
pub struct SchemaCheck {
    /// Whether a difference blocks cut-over.
    pub blocking: bool,
}

async fn describe(w: &dyn Warehouse, t: &TableRef) -> Result<TableSchema> {
    w.describe(t)
        .await?
        .ok_or_else(|| Error::UnknownTable(t.to_string()))
}

/// What differs between two schemas (marker columns left out).
pub fn schema_changes(old: &TableSchema, new: &TableSchema) -> SchemaChanges {
    let skip = |c: &&crate::Column| c.name.as_str() != MARKER_COLUMN;
    let mut out = SchemaChanges::default();
    for c in new.columns.iter().filter(skip) {
        match old.column(&c.name) {
            None => out.added.push(c.name.clone()),
            Some(o) if o.ty != c.ty => out.retyped.push((c.name.clone(), o.ty, c.ty)),
            Some(_) => {}
        }
    }
    for c in old.columns.iter().filter(skip) {
        if new.column(&c.name).is_none() {
            out.removed.push(c.name.clone());
        }
    }
    out
}

#[async_trait]
impl ScopeCheck for SchemaCheck {
    fn name(&self) -> String {
        "schema".into()
    }

    fn blocking(&self) -> bool {
        self.blocking
    }

    async fn baseline(
        &self,
        w: &dyn Warehouse,
        before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        to_json(&describe(w, &before.table).await?)
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let old: TableSchema = from_baseline(&self.name(), baseline)?;
        let new = describe(ctx.warehouse, &ctx.new.table).await?;
        let ch = schema_changes(&old, &new);
        let n = ch.added.len() + ch.removed.len() + ch.retyped.len();
        let mut o = outcome(self.name(), self.blocking, n == 0, "catalog lookup".into());
        o.observed = n as f64;
        o.expected = Some(0.0);
        o.detail = format!(
            "{} column(s) added, {} removed, {} retyped",
            ch.added.len(),
            ch.removed.len(),
            ch.retyped.len()
        );
        o.sample = ch
            .added
            .iter()
            .map(|c| format!("added {c}"))
            .chain(ch.removed.iter().map(|c| format!("removed {c}")))
            .chain(
                ch.retyped
                    .iter()
                    .map(|(c, a, b)| format!("retyped {c}: {a:?} → {b:?}")),
            )
            .collect();
        Ok(Finding {
            outcome: o,
            detail: Some(Detail::Schema(ch)),
        })
    }
}

/// Named keys shown before and after, side by side.
#[derive(Clone, Debug)]
pub struct EdgeCaseCheck {
    /// The key column.
    pub column: Ident,
    /// The keys.
    pub values: Vec<Value>,
}

impl EdgeCaseCheck {
    async fn rows(&self, w: &dyn Warehouse, t: &TableRef) -> Result<(Vec<Ident>, Vec<Vec<Value>>)> {
        let schema = describe(w, t).await?;
        let names = schema.names();
        let pred = Predicate::In {
            column: self.column.clone(),
            values: self.values.clone(),
        };
        let limit = (self.values.len() * 4).clamp(1, 1000);
        let rows = w
            .sample_rows(t, &pred, std::slice::from_ref(&self.column), limit)
            .await?;
        Ok((names, rows))
    }
}

#[async_trait]
impl ScopeCheck for EdgeCaseCheck {
    fn name(&self) -> String {
        format!("edge_cases({})", self.column)
    }

    fn blocking(&self) -> bool {
        false
    }

    async fn baseline(
        &self,
        w: &dyn Warehouse,
        before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        to_json(&self.rows(w, &before.table).await?)
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let (old_names, old_rows): (Vec<Ident>, Vec<Vec<Value>>) =
            from_baseline(&self.name(), baseline)?;
        let (names, rows) = self.rows(ctx.warehouse, &ctx.new.table).await?;
        let pos = |names: &[Ident]| names.iter().position(|n| n == &self.column).unwrap_or(0);
        let (po, pn) = (pos(&old_names), pos(&names));
        let mut cases = Vec::new();
        let mut changed = 0;
        for v in &self.values {
            let same = |r: &&Vec<Value>, p: usize| {
                r.get(p)
                    .is_some_and(|x| x.compare(v) == Some(std::cmp::Ordering::Equal))
            };
            let before: Vec<Vec<Value>> =
                old_rows.iter().filter(|r| same(r, po)).cloned().collect();
            let after: Vec<Vec<Value>> = rows.iter().filter(|r| same(r, pn)).cloned().collect();
            if before != after {
                changed += 1;
            }
            cases.push(EdgeCase {
                key: v.clone(),
                before,
                after,
            });
        }
        let mut o = outcome(self.name(), false, true, "sample rows by key".into());
        o.observed = changed as f64;
        o.detail = format!("{} named key(s), {changed} changed", self.values.len());
        o.sample = cases
            .iter()
            .filter(|c| c.before != c.after)
            .take(SAMPLE_LIMIT)
            .map(|c| {
                format!(
                    "{}: {} row(s) before, {} after",
                    key_text(std::slice::from_ref(&c.key)),
                    c.before.len(),
                    c.after.len()
                )
            })
            .collect();
        Ok(Finding {
            outcome: o,
            detail: Some(Detail::EdgeCases {
                columns: names,
                cases,
            }),
        })
    }
}

/// Table size before and after, from the engine's catalog.
#[derive(Clone, Copy, Debug)]
pub struct SizeCheck;

#[async_trait]
impl ScopeCheck for SizeCheck {
    fn name(&self) -> String {
        "size".into()
    }

    fn blocking(&self) -> bool {
        false
    }

    async fn baseline(
        &self,
        w: &dyn Warehouse,
        before: &Rows,
    ) -> Result<Option<serde_json::Value>> {
        to_json(&ask::size(w, before.table.clone()).await?)
    }

    async fn check(
        &self,
        ctx: &ScopeContext<'_>,
        baseline: Option<&serde_json::Value>,
    ) -> Result<Finding> {
        let before: TableSize = from_baseline(&self.name(), baseline)?;
        let q = Inspect::Size {
            table: ctx.new.table.clone(),
        };
        let after = ask::size(ctx.warehouse, ctx.new.table.clone()).await?;
        let mut o = outcome(self.name(), false, true, queries(ctx.warehouse, &[q]));
        o.observed = after.rows as f64;
        o.expected = Some(before.rows as f64);
        let bytes = |s: &TableSize| {
            s.bytes
                .map_or("? bytes".to_string(), |b| format!("{b} bytes"))
        };
        o.detail = format!(
            "about {} rows, {} before; about {} rows, {} after",
            before.rows,
            bytes(&before),
            after.rows,
            bytes(&after)
        );
        Ok(Finding {
            outcome: o,
            detail: Some(Detail::Size { before, after }),
        })
    }
}
