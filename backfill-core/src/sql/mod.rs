//! The one place SQL text is made.
//!
//! Engines share this renderer; a small [`Dialect`] covers where they
//! differ (quoting, placeholders, hashing, catalogs). Identifiers arrive
//! validated ([`crate::Ident`]) and are quoted again here; values are
//! bound as parameters, except on Spark, whose dialect writes them as
//! literals that hold none of the value's characters ([`spark`]).

mod dialect;
pub mod inspect;
pub mod spark;
pub mod stmt;

pub use dialect::{DeferredCheckpoints, Dialect, DuckDbDialect, PostgresDialect, INSTANCE_KEY};
pub use spark::SparkDialect;

use crate::plan::Batch;
use crate::source::{END_TOKEN, START_TOKEN};
use crate::{Ident, Predicate, Source, TableRef, Value};

/// Name of the batch-id column in pre-image and key-log tables.
pub const BATCH_COLUMN: &str = "__bf_batch";

/// Name of the marker column in pre-image and key-log tables.
///
/// When a batch's pre-image is taken (in the same transaction as its
/// write), one marker row (`__bf_marker = TRUE`, data columns NULL) is
/// added beside the pre-image rows (`__bf_marker = FALSE`). Pre-image rows
/// are only ever added while no marker exists for the batch, so a repeated
/// batch never replaces its pre-image with its own output, and rollback
/// knows exactly which batches were written: it restores a batch only if
/// its marker exists.
pub const MARKER_COLUMN: &str = "__bf_marker";

/// A statement with its bound parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Sql {
    /// The SQL text, with numbered placeholders.
    pub text: String,
    /// Parameters, in placeholder order.
    pub params: Vec<Value>,
}

impl Sql {
    /// The statement with its parameters written after it, for reports.
    pub fn display(&self) -> String {
        if self.params.is_empty() {
            self.text.clone()
        } else {
            let ps: Vec<String> = self.params.iter().map(|p| format!("{p:?}")).collect();
            format!("{} -- params: [{}]", self.text, ps.join(", "))
        }
    }
}

/// Builds one statement: text plus parameters.
#[derive(Debug)]
pub struct SqlBuilder<'d> {
    dialect: &'d dyn Dialect,
    text: String,
    params: Vec<Value>,
}

impl<'d> SqlBuilder<'d> {
    /// An empty statement in `dialect`.
    pub fn new(dialect: &'d dyn Dialect) -> Self {
        SqlBuilder {
            dialect,
            text: String::new(),
            params: Vec::new(),
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> &'d dyn Dialect {
        self.dialect
    }

    /// Appends raw SQL text written by this crate (never user input).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a quoted identifier.
    pub fn ident(&mut self, ident: &Ident) -> &mut Self {
        let q = self.dialect.quote_ident(ident);
        self.text.push_str(&q);
        self
    }

    /// Appends `alias.column`, both quoted.
    pub fn qualified(&mut self, alias: &str, ident: &Ident) -> &mut Self {
        self.text.push_str(alias);
        self.text.push('.');
        self.ident(ident)
    }

    /// Appends a quoted, possibly schema-qualified table name.
    pub fn table(&mut self, table: &TableRef) -> &mut Self {
        if let Some(s) = &table.schema {
            self.ident(s);
            self.text.push('.');
        }
        self.ident(&table.name)
    }

    /// Appends a comma-separated list of quoted identifiers, each prefixed
    /// by `alias.` when an alias is given.
    pub fn idents(&mut self, idents: &[Ident], alias: Option<&str>) -> &mut Self {
        for (i, id) in idents.iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            match alias {
                Some(a) => self.qualified(a, id),
                None => self.ident(id),
            };
        }
        self
    }

    /// Binds a value and appends its placeholder.
    pub fn param(&mut self, v: Value) -> &mut Self {
        let n = self.bind(v);
        let p = self.dialect.placeholder(n, &self.params[n - 1]);
        self.text.push_str(&p);
        self
    }

    /// Binds a value and returns its 1-based placeholder number.
    pub fn bind(&mut self, v: Value) -> usize {
        self.params.push(v);
        self.params.len()
    }

    /// Appends the predicate, with its values bound. `alias` qualifies
    /// column names.
    pub fn predicate(&mut self, p: &Predicate, alias: Option<&str>) -> &mut Self {
        let col = |b: &mut Self, c: &Ident| {
            match alias {
                Some(a) => b.qualified(a, c),
                None => b.ident(c),
            };
        };
        match p {
            Predicate::All => {
                self.push("TRUE");
            }
            Predicate::Range { column, start, end } => {
                self.push("(");
                let mut first = true;
                if let Some(s) = start {
                    col(self, column);
                    self.push(" >= ").param(s.clone());
                    first = false;
                }
                if let Some(e) = end {
                    if !first {
                        self.push(" AND ");
                    }
                    col(self, column);
                    self.push(" < ").param(e.clone());
                    first = false;
                }
                if first {
                    col(self, column);
                    self.push(" IS NOT NULL");
                }
                self.push(")");
            }
            Predicate::In { column, values } => {
                if values.is_empty() {
                    self.push("FALSE");
                } else {
                    col(self, column);
                    self.push(" IN (");
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            self.push(", ");
                        }
                        self.param(v.clone());
                    }
                    self.push(")");
                }
            }
            Predicate::HashBucket {
                column,
                buckets,
                bucket,
            } => {
                let mut inner = SqlBuilder::new(self.dialect);
                col(&mut inner, column);
                let expr = self.dialect.hash_bucket(&inner.text, *buckets);
                self.push("(")
                    .push(&expr)
                    .push(" = ")
                    .param(Value::Int(i64::from(*bucket)))
                    .push(")");
            }
            Predicate::And(ps) | Predicate::Or(ps) => {
                let (op, empty) = if matches!(p, Predicate::And(_)) {
                    (" AND ", "TRUE")
                } else {
                    (" OR ", "FALSE")
                };
                if ps.is_empty() {
                    self.push(empty);
                } else {
                    self.push("(");
                    for (i, q) in ps.iter().enumerate() {
                        if i > 0 {
                            self.push(op);
                        }
                        self.predicate(q, alias);
                    }
                    self.push(")");
                }
            }
            Predicate::Not(q) => {
                self.push("(NOT ");
                self.predicate(q, alias);
                self.push(")");
            }
        }
        self
    }

    /// Appends a source as a derived table `(...) AS alias`. A bounded
    /// query gets the batch's start and end bound where it says
    /// `{start}` / `{end}`.
    pub fn source(
        &mut self,
        source: &Source,
        bounds: (Option<&Value>, Option<&Value>),
        alias: &str,
    ) -> &mut Self {
        match source {
            Source::Table(t) => {
                self.push("(SELECT * FROM ").table(t).push(")");
            }
            Source::Query(_) => {
                // The body stops before a trailing `;` or comment, and
                // the newline closes any comment a quoted name hides.
                let mut rest = source.body();
                let mut start_n = None;
                let mut end_n = None;
                self.push("(");
                while !rest.is_empty() {
                    let next_s = rest.find(START_TOKEN);
                    let next_e = rest.find(END_TOKEN);
                    let (pos, is_start) = match (next_s, next_e) {
                        (Some(s), Some(e)) if s < e => (s, true),
                        (Some(_), Some(e)) => (e, false),
                        (Some(s), None) => (s, true),
                        (None, Some(e)) => (e, false),
                        (None, None) => {
                            self.push(rest);
                            break;
                        }
                    };
                    self.push(&rest[..pos]);
                    let (slot, v, tok) = if is_start {
                        (&mut start_n, bounds.0, START_TOKEN)
                    } else {
                        (&mut end_n, bounds.1, END_TOKEN)
                    };
                    let v = v.cloned().unwrap_or(Value::Null);
                    let n = match *slot {
                        Some(n) => n,
                        None => {
                            let n = self.bind(v);
                            *slot = Some(n);
                            n
                        }
                    };
                    let p = self.dialect.placeholder(n, &self.params[n - 1]);
                    self.push(&p);
                    rest = &rest[pos + tok.len()..];
                }
                self.push("\n)");
            }
        }
        self.push(" AS ").push(alias);
        self
    }

    /// Appends a batch's source slice: a derived table of the source rows
    /// for the batch. An unbounded source gets the batch predicate applied
    /// on top; a bounded query is trusted to apply its bounds (and checked
    /// by the guard).
    pub fn source_slice(
        &mut self,
        source: &Source,
        batch: &Batch,
        columns: &[Ident],
        alias: &str,
    ) -> &mut Self {
        self.push("(SELECT ")
            .idents(columns, Some("__s"))
            .push(" FROM ");
        self.source(source, (batch.start.as_ref(), batch.end.as_ref()), "__s");
        if !source.is_bounded() {
            self.push(" WHERE ")
                .predicate(&batch.predicate, Some("__s"));
        }
        self.push(") AS ").push(alias);
        self
    }

    /// The finished statement.
    pub fn finish(self) -> Sql {
        Sql {
            text: self.text,
            params: self.params,
        }
    }

    /// Drops the last `n` bytes of the text (a trailing separator).
    pub fn text_truncate(&mut self, n: usize) -> &mut Self {
        let len = self.text.len().saturating_sub(n);
        self.text.truncate(len);
        self
    }

    /// The text so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}
