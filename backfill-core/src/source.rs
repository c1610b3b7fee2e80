//! Where corrected rows come from.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
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

    /// Checks a query source as people write it. A placeholder inside a
    /// quoted literal (`DATE '{start}'`) is refused: placeholders are bound
    /// parameters, so the literal would hold the text `{start}` and the
    /// engine would see a parameter count it did not expect. A query that
    /// is empty once its comments and trailing `;` are set aside is
    /// refused too.
    ///
    /// ```
    /// use backfill_core::Source;
    /// assert!(Source::query("SELECT * FROM t WHERE d >= {start};  -- days").check().is_ok());
    /// let e = Source::query("SELECT * FROM t WHERE d >= DATE '{start}'").check().unwrap_err();
    /// assert!(e.to_string().contains("write {start}, not '{start}'"));
    /// ```
    pub fn check(&self) -> Result<()> {
        let Source::Query(q) = self else {
            return Ok(());
        };
        let scan = scan(q);
        if let Some(token) = scan.quoted_token {
            return Err(Error::InvalidSource(format!(
                "placeholders are bound parameters: write {token}, not '{token}' \
                 (a typed comparison works as is: `order_date >= {token}`; cast if the \
                 engine needs it: `CAST({token} AS DATE)`)"
            )));
        }
        if scan.end == 0 {
            return Err(Error::InvalidSource(
                "the query is empty once comments and a trailing `;` are set aside".into(),
            ));
        }
        Ok(())
    }

    /// The query's text as it is wrapped into a statement: up to its last
    /// significant character, without a trailing `;` or trailing
    /// comments, so that a query written as one would run it still works
    /// inside `( … ) AS source`. Empty for a table source.
    pub fn body(&self) -> &str {
        match self {
            Source::Query(q) => &q[..scan(q).end],
            Source::Table(_) => "",
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

/// What a scan of a query's text found.
struct Scan {
    /// Byte offset just past the last significant character (not
    /// whitespace, not a comment, not a trailing `;`).
    end: usize,
    /// A placeholder found inside a quoted literal.
    quoted_token: Option<&'static str>,
}

/// Walks a query's text, telling literals, quoted names and comments from
/// the rest: enough to find where the statement ends and whether a
/// placeholder sits inside quotes.
fn scan(q: &str) -> Scan {
    let bytes = q.as_bytes();
    let mut end = 0;
    let mut quoted_token = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i = (i + 2).min(bytes.len());
                continue;
            }
            quote @ (b'\'' | b'"') => {
                let open = i;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                let literal = &q[open..i];
                if quote == b'\'' && quoted_token.is_none() {
                    quoted_token = [START_TOKEN, END_TOKEN]
                        .into_iter()
                        .find(|t| literal.contains(t));
                }
                end = i;
                continue;
            }
            b';' => {}
            c if c.is_ascii_whitespace() => {}
            _ => end = i + 1,
        }
        i += 1;
    }
    // Multi-byte characters are never significant delimiters, so `end`
    // always falls on a character boundary: it is one past an ASCII byte
    // or past a closing quote.
    let end = (0..=end)
        .rev()
        .find(|&e| q.is_char_boundary(e))
        .unwrap_or(0);
    Scan { end, quoted_token }
}
