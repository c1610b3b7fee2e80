//! Read-only questions that validators ask an engine.
//!
//! An [`Inspect`] names rows and what to measure about them; the engine
//! answers with numbers and bounded samples ([`Answer`]). SQL engines
//! answer through one shared renderer ([`crate::sql::inspect`]); the
//! testkit's fake answers in memory with the same semantics, so a
//! validation plan can be tested without a database.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::{Ident, Predicate, TableRef, Value};

/// A set of rows: a table's rows matching a filter, or the data rows of a
/// pre-image table (its marker rows left out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rows {
    /// The table.
    pub table: TableRef,
    /// Which rows.
    pub filter: Predicate,
    /// Whether `table` is a pre-image (marker rows are skipped).
    #[serde(default)]
    pub pre_image: bool,
    /// Only rows whose key appears in this key set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_in: Option<KeySet>,
}

/// The keys listed in a table (such as a merge's key log): rows are kept
/// when a row of `table` has the same values in `keys`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeySet {
    /// The table listing keys.
    pub table: TableRef,
    /// The key columns, named alike in both tables.
    pub keys: Vec<Ident>,
}

impl Rows {
    /// Every row of `table`.
    pub fn all(table: TableRef) -> Rows {
        Rows::slice(table, Predicate::All)
    }

    /// Rows of `table` matching `filter`.
    pub fn slice(table: TableRef, filter: Predicate) -> Rows {
        Rows {
            table,
            filter,
            pre_image: false,
            keys_in: None,
        }
    }

    /// Data rows of the pre-image `table` matching `filter`.
    pub fn pre_image(table: TableRef, filter: Predicate) -> Rows {
        Rows {
            table,
            filter,
            pre_image: true,
            keys_in: None,
        }
    }

    /// Only the rows whose key is listed in `set`.
    pub fn with_keys_in(mut self, set: KeySet) -> Rows {
        self.keys_in = Some(set);
        self
    }
}

/// A calendar period a date or time column is truncated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// The calendar day.
    Day,
    /// The first day of the month.
    Month,
    /// The first day of the year.
    Year,
}

impl Period {
    /// The SQL `date_trunc` unit.
    pub fn unit(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }
}

/// A grouping dimension: a column, or a date/time column truncated to a
/// period (which yields a date; instants are taken in UTC).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dim {
    /// The column.
    pub column: Ident,
    /// Truncate to this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
}

impl Dim {
    /// The column as it is.
    pub fn column(column: Ident) -> Dim {
        Dim {
            column,
            period: None,
        }
    }

    /// The column truncated to `period`.
    pub fn period(column: Ident, period: Period) -> Dim {
        Dim {
            column,
            period: Some(period),
        }
    }

    /// A short label, such as `month(order_date)`.
    pub fn label(&self) -> String {
        match self.period {
            Some(p) => format!("{}({})", p.unit(), self.column),
            None => self.column.to_string(),
        }
    }
}

/// What a metric adds up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "column")]
pub enum Aggregate {
    /// Rows.
    Count,
    /// The sum of a numeric column (NULLs count as zero).
    Sum(Ident),
}

/// A stakeholder metric: an aggregate grouped by dimensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// The metric's name, as stakeholders say it ("net revenue").
    pub name: String,
    /// What it adds up.
    pub aggregate: Aggregate,
    /// Grouped by these (a period first, usually).
    #[serde(default)]
    pub by: Vec<Dim>,
}

impl Metric {
    /// The columns the metric reads.
    pub fn columns(&self) -> Vec<Ident> {
        let mut out: Vec<Ident> = self.by.iter().map(|d| d.column.clone()).collect();
        if let Aggregate::Sum(c) = &self.aggregate {
            out.push(c.clone());
        }
        out
    }
}

/// How much two values of a compared column may differ and still count as
/// the same.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Tolerance {
    /// Numbers within this absolute difference are equal.
    Absolute(f64),
    /// Timestamps within this many seconds are equal.
    Seconds(f64),
}

/// A column a diff compares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compared {
    /// The column.
    pub column: Ident,
    /// Precision noise to ignore; `None` compares exactly (null-safe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Tolerance>,
}

impl Compared {
    /// Compared exactly.
    pub fn exact(column: Ident) -> Compared {
        Compared {
            column,
            tolerance: None,
        }
    }
}

/// A row-level diff between old and new rows, joined on a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    /// The rows before (a pre-image or a kept old table).
    pub old: Rows,
    /// The rows after.
    pub new: Rows,
    /// The key (any types, composite allowed). Keys must be unique and not
    /// null on both sides; check that first.
    pub keys: Vec<Ident>,
    /// The columns compared.
    pub columns: Vec<Compared>,
    /// Up to this many keys sampled per kind (added, removed, changed).
    pub sample: usize,
    /// Attribute this metric's change to added, removed and changed rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<Metric>,
    /// The fast path: compare row counts and hash sums per value of this
    /// dimension first, and join only the partitions that differ. The
    /// answer is the same; it is faster when changes are concentrated in
    /// a few partitions, and slower when every partition changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Dim>,
}

/// One read-only question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inspect {
    /// Row counts, distinct key tuples and null counts, grouped by
    /// dimensions, in one pass.
    Profile {
        /// The rows.
        rows: Rows,
        /// Grouped by these (none: one group).
        by: Vec<Dim>,
        /// Count distinct tuples of these columns per group (empty: skip).
        distinct: Vec<Ident>,
        /// Count NULLs in each of these columns.
        nulls: Vec<Ident>,
    },
    /// Row counts for each expected value of a dimension: an expected
    /// spine left-joined to the rows, so a value with no rows answers 0.
    Spine {
        /// The rows.
        rows: Rows,
        /// The dimension.
        dim: Dim,
        /// The values expected.
        expected: Vec<Value>,
    },
    /// Rows whose foreign key is not null and has no match in the parent.
    Orphans {
        /// The rows.
        rows: Rows,
        /// The foreign key columns.
        columns: Vec<Ident>,
        /// The parent (dimension) table.
        parent: TableRef,
        /// The parent's key columns, in the same order.
        parent_columns: Vec<Ident>,
        /// Up to this many orphan keys sampled.
        sample: usize,
    },
    /// A metric's values.
    Metric {
        /// The rows.
        rows: Rows,
        /// The metric.
        metric: Metric,
    },
    /// A row-level diff.
    Diff(Box<Diff>),
    /// A table's size from the engine's catalog.
    Size {
        /// The table.
        table: TableRef,
    },
    /// How many rows match, from the engine's statistics where it plans
    /// with them (`EXPLAIN` on Postgres), or counted where counting is as
    /// cheap (DuckDB's zone maps, the fake).
    Estimate {
        /// The rows.
        rows: Rows,
    },
    /// The engine's own dependents of a table: views and materialized
    /// views that read it directly.
    Dependents {
        /// The table.
        table: TableRef,
    },
}

/// What kind of relation a dependent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    /// A view.
    View,
    /// A materialized view.
    MaterializedView,
}

impl RelationKind {
    /// As the engines' catalogs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            RelationKind::View => "view",
            RelationKind::MaterializedView => "materialized view",
        }
    }
}

/// A relation the engine knows reads a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependent {
    /// What it is.
    pub kind: RelationKind,
    /// The relation.
    pub relation: TableRef,
    /// Its definition as the engine keeps it (a view's SQL), where the
    /// engine gives it: what a freeze compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
}

/// One group of a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileGroup {
    /// The group's dimension values.
    pub key: Vec<Value>,
    /// Rows in the group.
    pub rows: u64,
    /// Distinct tuples of the profile's `distinct` columns, if asked.
    pub distinct: Option<u64>,
    /// NULLs per column of the profile's `nulls`, in order.
    pub nulls: Vec<u64>,
}

/// One value of a metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// The group's dimension values.
    pub key: Vec<Value>,
    /// The metric's value.
    pub value: Amount,
}

/// How a diff classifies a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the new rows.
    Added,
    /// Only in the old rows.
    Removed,
    /// In both, with at least one compared column different.
    Changed,
}

impl Change {
    /// All three, in report order.
    pub const ALL: [Change; 3] = [Change::Added, Change::Removed, Change::Changed];

    /// The code the SQL renderer stores for this kind.
    pub fn code(self) -> i64 {
        match self {
            Change::Added => 1,
            Change::Removed => 2,
            Change::Changed => 3,
        }
    }

    /// The kind a code stands for.
    pub fn of_code(code: i64) -> Option<Change> {
        Change::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// A metric's change in one group, split by kind of row change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The group's dimension values.
    pub key: Vec<Value>,
    /// Added by new rows.
    pub added: Amount,
    /// Taken away by removed rows (negative when they carried a positive
    /// amount).
    pub removed: Amount,
    /// Net change from changed rows.
    pub changed: Amount,
}

impl Contribution {
    /// The three parts together, or [`crate::Error::AmountOutOfRange`].
    pub fn total(&self) -> crate::Result<Amount> {
        Amount::try_sum([self.added, self.removed, self.changed])
    }
}

/// What a diff found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DiffReport {
    /// Old rows.
    pub old_rows: u64,
    /// New rows.
    pub new_rows: u64,
    /// Keys only in the new rows.
    pub added: u64,
    /// Keys only in the old rows.
    pub removed: u64,
    /// Keys in both with a difference.
    pub changed: u64,
    /// Keys in both and equal.
    pub unchanged: u64,
    /// Changed rows per compared column, in order.
    pub column_changes: Vec<(Ident, u64)>,
    /// Up to `sample` keys per kind, sorted, rendered as text.
    pub samples: Vec<(Change, Vec<String>)>,
    /// The attributed metric's change per group, if asked.
    pub contributions: Vec<Contribution>,
}

/// A table's size.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableSize {
    /// Rows, as the engine's catalog estimates them.
    pub rows: u64,
    /// Bytes on disk, where the engine reports them.
    pub bytes: Option<u64>,
}

/// An engine's answer to an [`Inspect`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// To [`Inspect::Profile`].
    Profile(Vec<ProfileGroup>),
    /// To [`Inspect::Spine`]: each expected value with its row count.
    Spine(Vec<(Value, u64)>),
    /// To [`Inspect::Orphans`].
    Orphans {
        /// Orphan rows.
        rows: u64,
        /// Sampled orphan keys, rendered as text.
        sample: Vec<String>,
    },
    /// To [`Inspect::Metric`].
    Metric(Vec<MetricValue>),
    /// To [`Inspect::Diff`].
    Diff(DiffReport),
    /// To [`Inspect::Size`].
    Size(TableSize),
    /// To [`Inspect::Dependents`], sorted.
    Dependents(Vec<Dependent>),
    /// To [`Inspect::Estimate`].
    Estimate(u64),
}
