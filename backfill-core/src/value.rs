//! Typed values: bounds, partition keys and parameters.

use std::cmp::Ordering;
use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A typed SQL value. Values are always bound as parameters, never spliced
/// into SQL text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// Text.
    Text(String),
    /// A calendar date.
    Date(Date),
    /// A wall-clock date and time with no zone (SQL `TIMESTAMP`).
    DateTime(DateTime),
    /// An instant (SQL `TIMESTAMPTZ`).
    Timestamp(Timestamp),
}

impl Value {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Compares two values of compatible types; `None` for NULLs or
    /// mismatched types (SQL's "unknown").
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Float(a), Float(b)) => a.partial_cmp(b),
            (Int(a), Float(b)) => (*a as f64).partial_cmp(b),
            (Float(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Text(a), Text(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (DateTime(a), DateTime(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (Date(a), DateTime(b)) => Some(a.to_datetime(jiff::civil::Time::midnight()).cmp(b)),
            (DateTime(a), Date(b)) => Some(a.cmp(&b.to_datetime(jiff::civil::Time::midnight()))),
            _ => None,
        }
    }

    /// A total order for sorting (NULLs first, then by type, then value).
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Int(_) | Value::Float(_) => 2,
                Value::Text(_) => 3,
                Value::Date(_) | Value::DateTime(_) => 4,
                Value::Timestamp(_) => 5,
            }
        }
        rank(self)
            .cmp(&rank(other))
            .then_with(|| match (self, other) {
                (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
                _ => self.compare(other).unwrap_or(Ordering::Equal),
            })
    }

    /// The value as an `i64`, if it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as an `f64`, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s}"),
            Value::Date(d) => write!(f, "{d}"),
            Value::DateTime(d) => write!(f, "{d}"),
            Value::Timestamp(t) => write!(f, "{t}"),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Date> for Value {
    fn from(v: Date) -> Self {
        Value::Date(v)
    }
}
impl From<DateTime> for Value {
    fn from(v: DateTime) -> Self {
        Value::DateTime(v)
    }
}
impl From<Timestamp> for Value {
    fn from(v: Timestamp) -> Self {
        Value::Timestamp(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// The logical type of a column, as far as backfill needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Boolean.
    Bool,
    /// Any integer width.
    Int,
    /// Floating point.
    Float,
    /// Exact decimal (compared with tolerance 0).
    Decimal,
    /// Text of any length.
    Text,
    /// Calendar date.
    Date,
    /// Timestamp without time zone.
    DateTime,
    /// Timestamp with time zone (an instant).
    Timestamp,
    /// Anything else the engine has; carried but not interpreted.
    Other,
}

impl ColumnType {
    /// The type's name in messages: `int`, `decimal`, `text`, ….
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Bool => "bool",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Decimal => "decimal",
            ColumnType::Text => "text",
            ColumnType::Date => "date",
            ColumnType::DateTime => "timestamp (no zone)",
            ColumnType::Timestamp => "timestamptz (an instant)",
            ColumnType::Other => "another engine type",
        }
    }

    /// Whether a source value of this type can be written into a target
    /// column of type `target` without a silent change of meaning: the
    /// same type, or one of the safe widenings
    ///
    /// | source  | target            |
    /// |---------|-------------------|
    /// | int     | decimal, float    |
    /// | decimal | float             |
    /// | date    | timestamp (no zone), at midnight |
    ///
    /// Two types backfill does not interpret ([`ColumnType::Other`]) are
    /// left to the engine. Everything else (text into a number, float into
    /// decimal, a date into an instant, whose zone would be the server's)
    /// needs an explicit cast in the source.
    ///
    /// ```
    /// use backfill_core::ColumnType;
    /// assert!(ColumnType::Int.widens_to(ColumnType::Decimal));
    /// assert!(!ColumnType::Text.widens_to(ColumnType::Int));
    /// assert!(!ColumnType::Date.widens_to(ColumnType::Timestamp));
    /// ```
    pub fn widens_to(self, target: ColumnType) -> bool {
        use ColumnType::*;
        self == target
            || matches!(
                (self, target),
                (Int, Decimal) | (Int, Float) | (Decimal, Float) | (Date, DateTime)
            )
    }
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One column of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: crate::Ident,
    /// Logical type.
    pub ty: ColumnType,
    /// Whether NULLs are allowed.
    pub nullable: bool,
}

impl Column {
    /// A nullable column.
    pub fn new(name: crate::Ident, ty: ColumnType) -> Self {
        Column {
            name,
            ty,
            nullable: true,
        }
    }

    /// The same column, NOT NULL.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// The shape of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Columns in table order.
    pub columns: Vec<Column>,
}

impl TableSchema {
    /// The column called `name`.
    pub fn column(&self, name: &crate::Ident) -> Option<&Column> {
        self.columns.iter().find(|c| &c.name == name)
    }

    /// Column names in order.
    pub fn names(&self) -> Vec<crate::Ident> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}
