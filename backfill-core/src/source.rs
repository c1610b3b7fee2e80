//! Where corrected rows come from.

use serde::{Deserialize, Serialize};

use crate::TableRef;

/// The token a bounded query uses for the batch's inclusive start.
pub const START_TOKEN: &str = "{start}";
/// The token a bounded query uses for the batch's exclusive end.
pub const END_TOKEN: &str = "{end}";

/// The source of a backfill's rows: the corrected logic.
///
/// A [`Source::Query`] whose text contains `{start}` / `{end}` is a
/// *bounded* query: each batch binds its bounds there as parameters, and
/// the out-of-bounds guard checks that the query kept to them. Any other
/// source is read with the batch predicate applied on top.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Source {
    /// An existing table or view.
    Table(TableRef),
    /// A SELECT statement (the corrected logic).
    Query(String),
}

impl Source {
    /// A SQL query source.
    pub fn query(sql: impl Into<String>) -> Source {
        Source::Query(sql.into())
    }

    /// Whether the query binds the batch bounds itself.
    pub fn is_bounded(&self) -> bool {
        match self {
            Source::Query(q) => q.contains(START_TOKEN) || q.contains(END_TOKEN),
            Source::Table(_) => false,
        }
    }

    /// A short description for reports.
    pub fn describe(&self) -> String {
        match self {
            Source::Table(t) => format!("table {t}"),
            Source::Query(q) => {
                let one_line: String = q.split_whitespace().collect::<Vec<_>>().join(" ");
                if one_line.len() > 80 {
                    format!(
                        "query {}…",
                        &one_line[..one_line
                            .char_indices()
                            .nth(79)
                            .map(|(i, _)| i)
                            .unwrap_or(one_line.len())]
                    )
                } else {
                    format!("query {one_line}")
                }
            }
        }
    }
}
