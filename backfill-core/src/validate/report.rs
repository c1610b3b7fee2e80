//! The validation report: every end-of-run finding with its detail,
//! serializable for tools and readable at a glance.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Outcome, Status};
use crate::amount::Amount;
use crate::inspect::{DiffReport, TableSize};
use crate::ledger::RunId;
use crate::{ColumnType, Ident, Value};

/// One row of a metric reconciliation: a group's metric before and
/// after, and the change split by kind of row change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconRow {
    /// The group's dimension values.
    pub key: Vec<Value>,
    /// The metric in the baseline, captured before the write.
    pub before: Amount,
    /// The metric after.
    pub after: Amount,
    /// From added rows.
    pub added: Amount,
    /// From removed rows.
    pub removed: Amount,
    /// From changed rows.
    pub changed: Amount,
    /// Whether the group's change is within the expectation.
    pub within: bool,
}

impl ReconRow {
    /// After minus before, or [`crate::Error::AmountOutOfRange`].
    pub fn delta(&self) -> crate::Result<Amount> {
        self.after.checked_sub(self.before)
    }

    /// The part of the delta that no row change explains, or
    /// [`crate::Error::AmountOutOfRange`].
    pub fn unexplained(&self) -> crate::Result<Amount> {
        self.delta()?
            .checked_sub(self.added)?
            .checked_sub(self.removed)?
            .checked_sub(self.changed)
    }
}

/// Columns that differ between the old and the new table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SchemaChanges {
    /// Only in the new table.
    pub added: Vec<Ident>,
    /// Only in the old table.
    pub removed: Vec<Ident>,
    /// In both, with a different type: (column, old, new).
    pub retyped: Vec<(Ident, ColumnType, ColumnType)>,
}

impl SchemaChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.retyped.is_empty()
    }
}

/// A named key's row before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeCase {
    /// The key.
    pub key: Value,
    /// Its rows before (several if the key is not unique).
    pub before: Vec<Vec<Value>>,
    /// Its rows after.
    pub after: Vec<Vec<Value>>,
}

/// The detail a finding carries beyond its outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Detail {
    /// A metric reconciliation table.
    Reconciliation {
        /// The metric's name.
        metric: String,
        /// Its dimensions, as labels.
        by: Vec<String>,
        /// One row per group.
        rows: Vec<ReconRow>,
    },
    /// A row diff.
    Diff(DiffReport),
    /// A schema diff.
    Schema(SchemaChanges),
    /// Named keys before and after.
    EdgeCases {
        /// The table's columns, in row order.
        columns: Vec<Ident>,
        /// One entry per key.
        cases: Vec<EdgeCase>,
    },
    /// Table size before and after.
    Size {
        /// Before the write.
        before: TableSize,
        /// After.
        after: TableSize,
    },
}

/// One end-of-run check's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The verdict, numbers, sample and query.
    pub outcome: Outcome,
    /// The table or diff behind it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

impl From<Outcome> for Finding {
    fn from(outcome: Outcome) -> Finding {
        Finding {
            outcome,
            detail: None,
        }
    }
}

/// Every end-of-run check of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The run.
    pub run_id: RunId,
    /// The table validated (where the new data is).
    pub table: String,
    /// When the checks ran.
    pub at: Timestamp,
    /// The findings, in plan order.
    pub findings: Vec<Finding>,
}

impl ValidationReport {
    /// The ledger document a run's latest report is kept under.
    pub const DOCUMENT: &'static str = "validation";

    /// The outcomes.
    pub fn outcomes(&self) -> impl Iterator<Item = &Outcome> {
        self.findings.iter().map(|f| &f.outcome)
    }

    /// Findings that stop cut-over.
    pub fn blocking_failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.outcome.is_blocking_failure())
    }

    /// Whether no blocking check failed.
    pub fn passed(&self) -> bool {
        self.blocking_failures().next().is_none()
    }

    /// The worst status, `Pass` when there are no findings.
    pub fn status(&self) -> Status {
        self.outcomes()
            .map(|o| o.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// The reconciliation tables.
    pub fn reconciliations(&self) -> impl Iterator<Item = (&str, &[String], &[ReconRow])> {
        self.findings.iter().filter_map(|f| match &f.detail {
            Some(Detail::Reconciliation { metric, by, rows }) => {
                Some((metric.as_str(), by.as_slice(), rows.as_slice()))
            }
            _ => None,
        })
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "ok",
        Status::Warn => "WARN",
        Status::Fail => "FAIL",
        Status::Error => "ERROR",
    }
}

/// A value as a reconciliation key cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `+1,234.5` style: signed, with thousands separators.
pub fn signed(a: Amount) -> String {
    let s = grouped(a);
    if a > Amount::default() {
        format!("+{s}")
    } else {
        s
    }
}

/// [`signed`], or `out of range` for an amount that could not be
/// computed.
pub fn signed_or(a: crate::Result<Amount>) -> String {
    match a {
        Ok(a) => signed(a),
        Err(_) => "out of range".into(),
    }
}

/// `1,234.5` style: thousands separators on the integer part.
pub fn grouped(a: Amount) -> String {
    let text = a.to_string();
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |s: Status| self.outcomes().filter(|o| o.status == s).count();
        writeln!(
            f,
            "validation of run {} on {}: {} ({} passed, {} warned, {} failed, {} errors)",
            self.run_id,
            self.table,
            if self.passed() { "PASSED" } else { "FAILED" },
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Error),
        )?;
        let width = self
            .outcomes()
            .map(|o| o.check.len())
            .max()
            .unwrap_or(0)
            .min(40);
        for finding in &self.findings {
            let o = &finding.outcome;
            writeln!(
                f,
                "  {:<5} {:<width$}  {}",
                status_word(o.status),
                o.check,
                o.detail
            )?;
            if o.status != Status::Pass {
                for s in o.sample.iter().take(5) {
                    writeln!(f, "          {s}")?;
                }
            }
            if let Some(Detail::Reconciliation { metric, by, rows }) = &finding.detail {
                write_reconciliation(f, metric, by, rows)?;
            }
        }
        Ok(())
    }
}

fn write_reconciliation(
    f: &mut fmt::Formatter<'_>,
    metric: &str,
    by: &[String],
    rows: &[ReconRow],
) -> fmt::Result {
    let head = [
        if by.is_empty() {
            "group".to_string()
        } else {
            by.join(" × ")
        },
        "before".into(),
        "after".into(),
        "delta".into(),
        "added".into(),
        "removed".into(),
        "changed".into(),
        "unexplained".into(),
    ];
    let mut table: Vec<[String; 8]> = vec![head];
    for r in rows {
        let key = if r.key.is_empty() {
            "all".to_string()
        } else {
            r.key.iter().map(cell).collect::<Vec<_>>().join(" / ")
        };
        table.push([
            key,
            grouped(r.before),
            grouped(r.after),
            signed_or(r.delta()),
            signed(r.added),
            signed(r.removed),
            signed(r.changed),
            signed_or(r.unexplained()),
        ]);
    }
    let total = |g: fn(&ReconRow) -> Amount| Amount::try_sum(rows.iter().map(g));
    let total_r = |g: fn(&ReconRow) -> crate::Result<Amount>| {
        rows.iter()
            .map(g)
            .collect::<crate::Result<Vec<Amount>>>()
            .and_then(Amount::try_sum)
    };
    let total_g = |g: fn(&ReconRow) -> Amount| match total(g) {
        Ok(a) => grouped(a),
        Err(_) => "out of range".to_string(),
    };
    if rows.len() > 1 {
        table.push([
            "total".into(),
            total_g(|r| r.before),
            total_g(|r| r.after),
            signed_or(total_r(ReconRow::delta)),
            signed_or(total(|r| r.added)),
            signed_or(total(|r| r.removed)),
            signed_or(total(|r| r.changed)),
            signed_or(total_r(ReconRow::unexplained)),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    writeln!(f, "          {metric}:")?;
    for row in &table {
        let mut line = String::from("          ");
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            if i == 0 {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_like_money() {
        let a = |s: &str| s.parse::<Amount>().unwrap();
        assert_eq!(grouped(a("1234567.5")), "1,234,567.5");
        assert_eq!(grouped(a("-1234")), "-1,234");
        assert_eq!(grouped(a("999")), "999");
        assert_eq!(signed(a("1000")), "+1,000");
        assert_eq!(signed(a("-0.25")), "-0.25");
        assert_eq!(signed(a("0")), "0");
    }
}
