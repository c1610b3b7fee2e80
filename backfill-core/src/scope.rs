//! Exact scope: which table, which rows, in which time zone.

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{ColumnType, Ident, Predicate, TableRef, Value};

/// How the batch column stores time; decides which values bound a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeColumn {
    /// A `DATE` column: windows are bounded by calendar dates.
    Date,
    /// A `TIMESTAMP` (no zone) column holding wall-clock time in the scope's
    /// zone: windows are bounded by wall-clock datetimes.
    Local,
    /// A `TIMESTAMPTZ` column (an instant): windows are bounded by the
    /// instants at which the zone's wall clock crosses each boundary.
    Instant,
}

/// Typed, half-open bounds of a scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "snake_case",
    tag = "kind",
    deny_unknown_fields
)]
pub enum Bounds {
    /// `[start, end)` in wall-clock time of the scope's zone.
    Time {
        /// Inclusive start (wall clock).
        start: DateTime,
        /// Exclusive end (wall clock).
        end: DateTime,
        /// How the batch column stores time.
        column: TimeColumn,
    },
    /// An explicit list of partition values.
    Partitions {
        /// The partition values, in processing order.
        values: Vec<Value>,
    },
    /// Integer keys `[start, end)`.
    Keys {
        /// Inclusive start.
        start: i64,
        /// Exclusive end.
        end: i64,
    },
    /// No bounds on the batch column (for hash-bucket plans over entities).
    All,
}

crate::strict::strict_tagged!(Bounds, "kind", ["all"]);

impl Bounds {
    /// Calendar dates `[start, end)` on a `DATE` column.
    pub fn dates(start: jiff::civil::Date, end: jiff::civil::Date) -> Bounds {
        Bounds::Time {
            start: start.to_datetime(Time::midnight()),
            end: end.to_datetime(Time::midnight()),
            column: TimeColumn::Date,
        }
    }

    /// Wall-clock `[start, end)` in the scope's zone, on a `TIMESTAMPTZ`
    /// column.
    pub fn instants(start: DateTime, end: DateTime) -> Bounds {
        Bounds::Time {
            start,
            end,
            column: TimeColumn::Instant,
        }
    }

    /// Wall-clock `[start, end)` on a `TIMESTAMP` (no zone) column.
    pub fn local(start: DateTime, end: DateTime) -> Bounds {
        Bounds::Time {
            start,
            end,
            column: TimeColumn::Local,
        }
    }
}

/// The exact scope of a backfill.
///
/// ```
/// use backfill_core::{Bounds, Scope, TableRef};
/// use jiff::civil::date;
/// let scope = Scope::new(
///     TableRef::parse("analytics.revenue").unwrap(),
///     "order_date",
///     Bounds::dates(date(2026, 1, 1), date(2026, 7, 1)),
///     "Europe/Berlin",
/// ).unwrap();
/// assert!(scope.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// The table whose history changes.
    pub target: TableRef,
    /// The partition or key column that batches are cut on.
    pub batch_column: Ident,
    /// The bounds on `batch_column`.
    pub bounds: Bounds,
    /// IANA time zone name the bounds are expressed in.
    pub time_zone: String,
    /// Columns written; empty means every column of the target.
    #[serde(default)]
    pub columns: Vec<Ident>,
    /// Extra entity filter applied to every batch (for example a list of
    /// customers).
    #[serde(default)]
    pub filter: Option<Predicate>,
    /// The row count the author expects in scope, if known.
    #[serde(default)]
    pub expected_rows: Option<u64>,
}

impl Scope {
    /// [`Scope::new`] with the target named as text (`schema.table`).
    pub fn on(target: &str, batch_column: &str, bounds: Bounds, time_zone: &str) -> Result<Scope> {
        Scope::new(TableRef::parse(target)?, batch_column, bounds, time_zone)
    }

    /// A scope on `target`, cut on `batch_column`, in `time_zone`.
    pub fn new(
        target: TableRef,
        batch_column: &str,
        bounds: Bounds,
        time_zone: &str,
    ) -> Result<Scope> {
        let scope = Scope {
            target,
            batch_column: Ident::new(batch_column)?,
            bounds,
            time_zone: time_zone.to_string(),
            columns: Vec::new(),
            filter: None,
            expected_rows: None,
        };
        scope.validate()?;
        Ok(scope)
    }

    /// The same scope with an entity filter.
    pub fn with_filter(mut self, filter: Predicate) -> Scope {
        self.filter = Some(filter);
        self
    }

    /// The same scope with an expected row count.
    pub fn with_expected_rows(mut self, rows: u64) -> Scope {
        self.expected_rows = Some(rows);
        self
    }

    /// The scope's time zone.
    pub fn zone(&self) -> Result<TimeZone> {
        TimeZone::get(&self.time_zone).map_err(|e| {
            Error::InvalidScope(format!("unknown time zone {:?}: {e}", self.time_zone))
        })
    }

    /// Checks the scope: known zone, non-empty and non-inverted ranges,
    /// existing local times, no duplicate partitions.
    pub fn validate(&self) -> Result<()> {
        let tz = self.zone()?;
        match &self.bounds {
            Bounds::Time { start, end, column } => {
                if start == end {
                    return Err(Error::InvalidScope(format!(
                        "empty range: start {start} equals end"
                    )));
                }
                if start > end {
                    return Err(Error::InvalidScope(format!(
                        "inverted range: start {start} is after end {end}"
                    )));
                }
                if *column == TimeColumn::Date
                    && (start.time() != Time::midnight() || end.time() != Time::midnight())
                {
                    return Err(Error::InvalidScope(
                        "a DATE column needs bounds at midnight".into(),
                    ));
                }
                if *column == TimeColumn::Instant {
                    to_instant(&tz, *start)?;
                    to_instant(&tz, *end)?;
                }
            }
            Bounds::Partitions { values } => {
                if values.is_empty() {
                    return Err(Error::InvalidScope("empty partition list".into()));
                }
                if values.iter().any(Value::is_null) {
                    return Err(Error::InvalidScope("NULL in partition list".into()));
                }
                if let Some(v) = values
                    .iter()
                    .find(|v| matches!(v, Value::Float(f) if !f.is_finite()))
                {
                    return Err(Error::InvalidScope(format!(
                        "partition value {v} is not finite: engines disagree on which rows \
                         IN ({v}) matches"
                    )));
                }
                let kind = std::mem::discriminant(&values[0]);
                if values.iter().any(|v| std::mem::discriminant(v) != kind) {
                    return Err(Error::InvalidScope(
                        "partition values must all have one type".into(),
                    ));
                }
                // Duplicates as SQL sees them (0.0 equals -0.0): sort, then
                // compare neighbours with SQL equality.
                let mut sorted = values.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                if let Some(w) = sorted
                    .windows(2)
                    .find(|w| w[0].compare(&w[1]).is_some_and(|o| o.is_eq()))
                {
                    return Err(Error::InvalidScope(format!("duplicate partition {}", w[0])));
                }
            }
            Bounds::Keys { start, end } => {
                if start == end {
                    return Err(Error::InvalidScope(format!(
                        "empty key range [{start}, {end})"
                    )));
                }
                if start > end {
                    return Err(Error::InvalidScope(format!(
                        "inverted key range [{start}, {end})"
                    )));
                }
            }
            Bounds::All => {}
        }
        Ok(())
    }

    /// Checks that the bounds are of the kind the batch column holds, of
    /// type `ty` in the target: calendar dates on a `DATE`, wall-clock
    /// times on a `TIMESTAMP`, instants on a `TIMESTAMPTZ` (rendered as
    /// the instants at which the scope's zone crosses each bound, never in
    /// the server's zone), integer keys on an integer or decimal column,
    /// partition values of the column's type. A column of a type backfill
    /// does not interpret ([`ColumnType::Other`]) takes partition values
    /// and nothing else.
    ///
    /// ```
    /// use backfill_core::{Bounds, ColumnType, Scope, TableRef};
    /// use jiff::civil::date;
    /// let scope = Scope::new(
    ///     TableRef::parse("events").unwrap(),
    ///     "at",
    ///     Bounds::dates(date(2026, 3, 1), date(2026, 3, 8)),
    ///     "America/New_York",
    /// ).unwrap();
    /// assert!(scope.check_column(ColumnType::Date).is_ok());
    /// // An instant column needs `Bounds::instants`.
    /// assert!(scope.check_column(ColumnType::Timestamp).is_err());
    /// ```
    pub fn check_column(&self, ty: ColumnType) -> Result<()> {
        let (bounds, fits, hint): (&str, bool, &str) = match &self.bounds {
            Bounds::Time { column, .. } => {
                let fits = matches!(
                    (column, ty),
                    (TimeColumn::Date, ColumnType::Date)
                        | (TimeColumn::Local, ColumnType::DateTime)
                        | (TimeColumn::Instant, ColumnType::Timestamp)
                );
                let bounds = match column {
                    TimeColumn::Date => "calendar dates",
                    TimeColumn::Local => "wall-clock times (no zone)",
                    TimeColumn::Instant => "instants",
                };
                (bounds, fits, time_hint(ty))
            }
            Bounds::Keys { .. } => (
                "integer keys",
                matches!(ty, ColumnType::Int | ColumnType::Decimal),
                "integer key ranges need an integer column; use a partition list or time \
                 bounds for this one",
            ),
            Bounds::Partitions { values } => {
                let fits = ty == ColumnType::Other
                    || values.iter().all(|v| match v {
                        Value::Int(_) => {
                            matches!(
                                ty,
                                ColumnType::Int | ColumnType::Decimal | ColumnType::Float
                            )
                        }
                        Value::Float(_) => matches!(ty, ColumnType::Float | ColumnType::Decimal),
                        Value::Bool(_) => ty == ColumnType::Bool,
                        Value::Text(_) => ty == ColumnType::Text,
                        Value::Date(_) => ty == ColumnType::Date,
                        Value::DateTime(_) => ty == ColumnType::DateTime,
                        Value::Timestamp(_) => ty == ColumnType::Timestamp,
                        Value::Null => false,
                    });
                (
                    "partition values of another type",
                    fits,
                    "list partition values of the column's own type",
                )
            }
            Bounds::All => return Ok(()),
        };
        if fits {
            return Ok(());
        }
        Err(Error::ScopeColumnMismatch {
            column: self.batch_column.to_string(),
            column_type: ty.name().to_string(),
            bounds: bounds.to_string(),
            hint: hint.to_string(),
        })
    }

    /// The predicate selecting the whole scope (the union of every batch).
    pub fn predicate(&self) -> Result<Predicate> {
        let tz = self.zone()?;
        let col = self.batch_column.clone();
        let base = match &self.bounds {
            Bounds::Time { start, end, column } => Predicate::Range {
                column: col,
                start: Some(time_value(&tz, *column, *start)?),
                end: Some(time_value(&tz, *column, *end)?),
            },
            Bounds::Partitions { values } => Predicate::In {
                column: col,
                values: values.clone(),
            },
            Bounds::Keys { start, end } => Predicate::Range {
                column: col,
                start: Some(Value::Int(*start)),
                end: Some(Value::Int(*end)),
            },
            Bounds::All => Predicate::All,
        };
        Ok(match &self.filter {
            Some(f) => base.and(f.clone()),
            None => base,
        })
    }
}

/// The time bounds that fit a column of type `ty`.
fn time_hint(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Date => "use Bounds::dates",
        ColumnType::DateTime => "use Bounds::local (wall-clock times in the scope's zone)",
        ColumnType::Timestamp => {
            "use Bounds::instants, whose bounds are the instants at which the scope's zone \
             crosses them"
        }
        _ => "time bounds need a DATE, TIMESTAMP or TIMESTAMPTZ column",
    }
}

/// The instant at which `dt` occurs in `tz`; a wall-clock time that does
/// not exist or occurs twice is refused.
pub(crate) fn to_instant(tz: &TimeZone, dt: DateTime) -> Result<Timestamp> {
    tz.to_ambiguous_zoned_datetime(dt)
        .unambiguous()
        .map(|z| z.timestamp())
        .map_err(|e| {
            Error::InvalidScope(format!(
                "local time {dt} in {}: {e}",
                tz.iana_name().unwrap_or("zone")
            ))
        })
}

/// The boundary instant of a window starting at wall-clock `dt`: a
/// boundary that falls into a DST gap moves to the first instant after it.
pub(crate) fn boundary_instant(tz: &TimeZone, dt: DateTime) -> Result<Timestamp> {
    tz.to_ambiguous_zoned_datetime(dt)
        .compatible()
        .map(|z| z.timestamp())
        .map_err(|e| Error::InvalidPlan(format!("boundary {dt}: {e}")))
}

/// The column value for wall-clock `dt` on a column of kind `column`.
pub(crate) fn time_value(tz: &TimeZone, column: TimeColumn, dt: DateTime) -> Result<Value> {
    Ok(match column {
        TimeColumn::Date => Value::Date(dt.date()),
        TimeColumn::Local => Value::DateTime(dt),
        TimeColumn::Instant => Value::Timestamp(boundary_instant(tz, dt)?),
    })
}
