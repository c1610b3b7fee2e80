//! Planners: a scope becomes a deterministic, disjoint, covering, ordered
//! list of batches.

use std::fmt;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::ToSpan;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::scope::{boundary_instant, time_value, Bounds, Scope, TimeColumn};
use crate::{Predicate, Value};

/// Width of a time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    /// One hour. On an instant column an hour is 3,600 seconds, so a
    /// 25-hour day has 25 hourly batches; on a wall-clock column it is one
    /// wall-clock hour.
    Hour,
    /// One calendar day in the scope's zone (23, 24 or 25 hours).
    Day,
    /// One ISO week, Monday to Monday.
    Week,
    /// One calendar month.
    Month,
}

/// How a scope is cut into batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "snake_case",
    tag = "kind",
    deny_unknown_fields
)]
pub enum Planner {
    /// Time windows in the scope's zone (needs [`Bounds::Time`]).
    Windows {
        /// Window width.
        grain: Grain,
    },
    /// One batch per listed partition (needs [`Bounds::Partitions`]).
    Partitions,
    /// Fixed-width integer key ranges (needs [`Bounds::Keys`]); right for
    /// dense keys.
    KeyRanges {
        /// Keys per batch.
        width: u64,
    },
    /// Key ranges whose boundaries are probed from the table so that each
    /// batch holds about `rows_per_batch` rows; right for sparse or skewed
    /// keys. Needs a warehouse: see [`Plan::build_probed`].
    Keyset {
        /// Target rows per batch.
        rows_per_batch: u64,
    },
    /// Dense splitting when the keys are dense enough, keyset probing
    /// otherwise. Needs a warehouse: see [`Plan::build_probed`].
    AutoKeys {
        /// Target rows per batch.
        rows_per_batch: u64,
        /// Minimum rows per key value (0..=1) for dense splitting.
        min_density: f64,
    },
    /// Hash buckets of the batch column, for entity groups.
    HashBuckets {
        /// Number of buckets.
        buckets: u32,
    },
}

crate::strict::strict_tagged!(Planner, "kind", ["partitions"]);

/// A stable batch identifier: the same scope and plan give the same ids.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchId(pub String);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for BatchId {
    fn from(s: &str) -> Self {
        BatchId(s.to_string())
    }
}

/// One unit of work: a slice of the scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Stable id.
    pub id: BatchId,
    /// Position in the plan, from 0.
    pub seq: u32,
    /// The slice, including the scope's entity filter.
    pub predicate: Predicate,
    /// Inclusive start of the batch on the batch column, if it is a range.
    pub start: Option<Value>,
    /// Exclusive end of the batch on the batch column, if it is a range.
    pub end: Option<Value>,
}

/// A deterministic list of batches for a scope, with a fingerprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The scope planned.
    pub scope: Scope,
    /// The planner settings.
    pub planner: Planner,
    /// The batches, in order.
    pub batches: Vec<Batch>,
    /// SHA-256 (hex) of scope, planner settings and batch ids.
    pub fingerprint: String,
}

impl Plan {
    /// Plans `scope` with a planner that needs no warehouse.
    ///
    /// ```
    /// use backfill_core::{Bounds, Grain, Plan, Planner, Scope, TableRef};
    /// use jiff::civil::date;
    /// let scope = Scope::new(TableRef::parse("facts").unwrap(), "day",
    ///     Bounds::dates(date(2026, 3, 1), date(2026, 4, 1)), "America/New_York").unwrap();
    /// let plan = Plan::build(scope, Planner::Windows { grain: backfill_core::Grain::Day }).unwrap();
    /// assert_eq!(plan.batches.len(), 31);
    /// assert_eq!(plan.batches[0].id.0, "2026-03-01");
    /// ```
    pub fn build(scope: Scope, planner: Planner) -> Result<Plan> {
        scope.validate()?;
        let batches = match &planner {
            Planner::Windows { grain } => windows(&scope, *grain, &[])?,
            Planner::Partitions => partitions(&scope)?,
            Planner::KeyRanges { width } => key_ranges(&scope, *width)?,
            Planner::HashBuckets { buckets } => hash_buckets(&scope, *buckets)?,
            Planner::Keyset { .. } | Planner::AutoKeys { .. } => {
                return Err(Error::InvalidPlan(
                    "this planner probes the table: use Plan::build_probed".into(),
                ))
            }
        };
        Ok(Plan::assemble(scope, planner, batches))
    }

    pub(crate) fn assemble(scope: Scope, planner: Planner, batches: Vec<Batch>) -> Plan {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&scope).unwrap_or_default());
        h.update(serde_json::to_vec(&planner).unwrap_or_default());
        for b in &batches {
            h.update(b.id.0.as_bytes());
            h.update([0]);
        }
        Plan {
            scope,
            planner,
            batches,
            fingerprint: hex(&h.finalize()),
        }
    }

    /// This plan with every batch that holds one of `cuts` (wall-clock
    /// times in the scope's zone) split there, so that no batch crosses
    /// a cut: the first part keeps the batch's id, the next one is
    /// `{id}@{cut}`. Only time-window plans can be cut; a cut on a
    /// batch boundary changes nothing.
    ///
    /// ```
    /// use backfill_core::{Bounds, Grain, Plan, Planner, Scope};
    /// use jiff::civil::date;
    /// let scope = Scope::on("facts", "day", Bounds::dates(date(2026, 3, 2), date(2026, 3, 16)), "UTC").unwrap();
    /// let plan = Plan::build(scope, Planner::Windows { grain: Grain::Week }).unwrap();
    /// let cut = plan.split_at(&[date(2026, 3, 5).at(0, 0, 0, 0)]).unwrap();
    /// let ids: Vec<_> = cut.batches.iter().map(|b| b.id.0.as_str()).collect();
    /// assert_eq!(ids, ["week-2026-03-02", "week-2026-03-02@2026-03-05", "week-2026-03-09"]);
    /// ```
    pub fn split_at(&self, cuts: &[DateTime]) -> Result<Plan> {
        let Planner::Windows { grain } = self.planner else {
            return Err(Error::InvalidPlan(
                "only a plan of time windows can be cut at rule boundaries".into(),
            ));
        };
        let batches = windows(&self.scope, grain, cuts)?;
        Ok(Plan::assemble(
            self.scope.clone(),
            self.planner.clone(),
            batches,
        ))
    }

    /// The batch with this id.
    pub fn batch(&self, id: &BatchId) -> Option<&Batch> {
        self.batches.iter().find(|b| &b.id == id)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_filter(scope: &Scope, p: Predicate) -> Predicate {
    match &scope.filter {
        Some(f) => p.and(f.clone()),
        None => p,
    }
}

/// A wall-clock time as a bound of the scope's batch column.
pub(crate) fn bound_value(scope: &Scope, dt: DateTime) -> Result<Value> {
    let Bounds::Time { column, .. } = scope.bounds else {
        return Err(Error::InvalidPlan("a time bound needs time bounds".into()));
    };
    time_value(&scope.zone()?, column, dt)
}

fn windows(scope: &Scope, grain: Grain, cuts: &[DateTime]) -> Result<Vec<Batch>> {
    let (start, end, column) = match scope.bounds {
        Bounds::Time { start, end, column } => (start, end, column),
        _ => return Err(Error::InvalidPlan("time windows need time bounds".into())),
    };
    let tz = scope.zone()?;
    if column == TimeColumn::Date && grain == Grain::Hour {
        return Err(Error::InvalidPlan(
            "hourly windows on a DATE column have zero width".into(),
        ));
    }
    if column == TimeColumn::Instant && grain == Grain::Hour {
        if let Some(c) = cuts
            .iter()
            .find(|c| floor(**c, Grain::Hour).ok() != Some(**c))
        {
            return Err(Error::InvalidPlan(format!(
                "{c} is inside an hour: hourly batches are cut at whole hours"
            )));
        }
        return instant_hours(scope, &tz, start, end);
    }
    let mut out = Vec::new();
    let mut cur = floor(start, grain)?;
    while cur < end {
        let next = step(cur, grain)?;
        let lo = cur.max(start);
        let hi = next.min(end);
        // The window's pieces between the cuts inside it.
        let mut edges = vec![lo];
        edges.extend(cuts.iter().copied().filter(|c| lo < *c && *c < hi));
        edges.sort();
        edges.push(hi);
        for pair in edges.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let (s, e) = (time_value(&tz, column, a)?, time_value(&tz, column, b)?);
            if s == e {
                continue;
            }
            let id = if a == lo {
                label(cur, grain)
            } else {
                format!("{}@{}", label(cur, grain), cut_label(a))
            };
            out.push(range_batch(scope, out.len() as u32, id, s, e));
        }
        cur = next;
    }
    Ok(out)
}

fn cut_label(dt: DateTime) -> String {
    if dt.time() == jiff::civil::Time::midnight() {
        dt.strftime("%Y-%m-%d").to_string()
    } else {
        dt.strftime("%Y-%m-%dT%H:%M").to_string()
    }
}

fn instant_hours(
    scope: &Scope,
    tz: &TimeZone,
    start: DateTime,
    end: DateTime,
) -> Result<Vec<Batch>> {
    let s = boundary_instant(tz, start)?;
    let e = boundary_instant(tz, end)?;
    let mut out = Vec::new();
    // First boundary: the top of the local hour at or before the start
    // (zones with half-hour offsets have local hours off UTC hours); then
    // steps of 3,600 seconds, so a 25-hour day has 25 batches.
    let mut cur = boundary_instant(tz, floor(start, Grain::Hour)?)?;
    while cur < e {
        let next = cur
            .checked_add(1.hour())
            .map_err(|err| Error::InvalidPlan(err.to_string()))?;
        let lo = cur.max(s);
        let hi = next.min(e);
        let id = cur
            .to_zoned_datetime(tz.clone())
            .strftime("%Y-%m-%dT%H%z")
            .to_string();
        out.push(range_batch(
            scope,
            out.len() as u32,
            id,
            Value::Timestamp(lo),
            Value::Timestamp(hi),
        ));
        cur = next;
    }
    Ok(out)
}

fn floor(dt: DateTime, grain: Grain) -> Result<DateTime> {
    let d = dt.date();
    let midnight = jiff::civil::Time::midnight();
    Ok(match grain {
        Grain::Hour => dt.date().at(dt.hour(), 0, 0, 0),
        Grain::Day => d.to_datetime(midnight),
        Grain::Week => {
            let back = i64::from(d.weekday().to_monday_zero_offset());
            d.checked_sub(back.days())
                .map_err(|e| Error::InvalidPlan(e.to_string()))?
                .to_datetime(midnight)
        }
        Grain::Month => d.first_of_month().to_datetime(midnight),
    })
}

fn step(dt: DateTime, grain: Grain) -> Result<DateTime> {
    let r = match grain {
        Grain::Hour => dt.checked_add(1.hour()),
        Grain::Day => dt.checked_add(1.day()),
        Grain::Week => dt.checked_add(1.week()),
        Grain::Month => dt.checked_add(1.month()),
    };
    r.map_err(|e| Error::InvalidPlan(e.to_string()))
}

fn label(dt: DateTime, grain: Grain) -> String {
    match grain {
        Grain::Hour => dt.strftime("%Y-%m-%dT%H").to_string(),
        Grain::Day => dt.strftime("%Y-%m-%d").to_string(),
        Grain::Week => format!("week-{}", dt.strftime("%Y-%m-%d")),
        Grain::Month => dt.strftime("%Y-%m").to_string(),
    }
}

fn range_batch(scope: &Scope, seq: u32, id: String, start: Value, end: Value) -> Batch {
    Batch {
        id: BatchId(id),
        seq,
        predicate: with_filter(
            scope,
            Predicate::Range {
                column: scope.batch_column.clone(),
                start: Some(start.clone()),
                end: Some(end.clone()),
            },
        ),
        start: Some(start),
        end: Some(end),
    }
}

fn partitions(scope: &Scope) -> Result<Vec<Batch>> {
    let Bounds::Partitions { values } = &scope.bounds else {
        return Err(Error::InvalidPlan(
            "a partition plan needs a partition list".into(),
        ));
    };
    Ok(values
        .iter()
        .enumerate()
        .map(|(i, v)| Batch {
            id: BatchId(format!("p-{v}")),
            seq: i as u32,
            predicate: with_filter(
                scope,
                Predicate::In {
                    column: scope.batch_column.clone(),
                    values: vec![v.clone()],
                },
            ),
            start: Some(v.clone()),
            end: None,
        })
        .collect())
}

pub(crate) fn key_ranges(scope: &Scope, width: u64) -> Result<Vec<Batch>> {
    let Bounds::Keys { start, end } = scope.bounds else {
        return Err(Error::InvalidPlan("key ranges need key bounds".into()));
    };
    if width == 0 {
        return Err(Error::InvalidPlan(
            "key range width must be at least 1".into(),
        ));
    }
    let mut out = Vec::new();
    let mut cur = start;
    while cur < end {
        let next = cur
            .saturating_add(i64::try_from(width).unwrap_or(i64::MAX))
            .min(end);
        out.push(key_batch(scope, out.len() as u32, cur, next));
        cur = next;
    }
    Ok(out)
}

pub(crate) fn key_batch(scope: &Scope, seq: u32, lo: i64, hi: i64) -> Batch {
    range_batch(
        scope,
        seq,
        format!("k-{lo}-{hi}"),
        Value::Int(lo),
        Value::Int(hi),
    )
}

fn hash_buckets(scope: &Scope, buckets: u32) -> Result<Vec<Batch>> {
    if buckets == 0 {
        return Err(Error::InvalidPlan(
            "hash plan needs at least one bucket".into(),
        ));
    }
    let base = scope.predicate()?;
    Ok((0..buckets)
        .map(|b| Batch {
            id: BatchId(format!("h-{b}-of-{buckets}")),
            seq: b,
            predicate: base.clone().and(Predicate::HashBucket {
                column: scope.batch_column.clone(),
                buckets,
                bucket: b,
            }),
            start: None,
            end: None,
        })
        .collect())
}
