//! Typed predicates that describe a batch's slice.
//!
//! SQL engines render them through [`crate::sql`], with bound parameters;
//! the testkit's fake warehouse evaluates them in memory with
//! [`Predicate::eval`].

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::{Ident, Value};

/// A typed filter over one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// Every row.
    All,
    /// `start <= column < end` (half-open); a missing side is unbounded.
    Range {
        /// The column.
        column: Ident,
        /// Inclusive lower bound.
        start: Option<Value>,
        /// Exclusive upper bound.
        end: Option<Value>,
    },
    /// `column IN (values)`.
    In {
        /// The column.
        column: Ident,
        /// The values.
        values: Vec<Value>,
    },
    /// Rows whose key hashes into `bucket` of `buckets` (NULL keys land in
    /// bucket 0). The hash is engine-specific but stable within an engine,
    /// so buckets are disjoint and covering on each engine.
    HashBucket {
        /// The key column.
        column: Ident,
        /// Number of buckets.
        buckets: u32,
        /// This bucket, `0..buckets`.
        bucket: u32,
    },
    /// All must hold.
    And(Vec<Predicate>),
    /// Any must hold.
    Or(Vec<Predicate>),
    /// Must not hold (SQL semantics: NOT of unknown is unknown, which
    /// filters the row out).
    Not(Box<Predicate>),
}

impl Predicate {
    /// `self AND other`, flattening `All`.
    pub fn and(self, other: Predicate) -> Predicate {
        match (self, other) {
            (Predicate::All, p) | (p, Predicate::All) => p,
            (Predicate::And(mut a), Predicate::And(b)) => {
                a.extend(b);
                Predicate::And(a)
            }
            (Predicate::And(mut a), p) => {
                a.push(p);
                Predicate::And(a)
            }
            (p, q) => Predicate::And(vec![p, q]),
        }
    }

    /// The rows any of `ps` selects, for predicates that are disjoint
    /// (the batches of one plan): ranges on one column that follow each
    /// other, each with the same other conditions (the scope's filter),
    /// become one range, which an engine can prune by; anything else is
    /// their `Or`.
    ///
    /// ```
    /// use backfill_core::{Ident, Predicate, Value};
    /// let day = |a: i64, b: i64| Predicate::Range {
    ///     column: Ident::new("d").unwrap(),
    ///     start: Some(Value::Int(a)),
    ///     end: Some(Value::Int(b)),
    /// };
    /// assert_eq!(Predicate::union(&[day(1, 2), day(2, 3)]), day(1, 3));
    /// assert!(matches!(Predicate::union(&[day(1, 2), day(3, 4)]), Predicate::Or(_)));
    /// ```
    pub fn union(ps: &[Predicate]) -> Predicate {
        let merged = Predicate::successive(ps).map(|s| {
            let range = Predicate::Range {
                column: s.column.clone(),
                start: s.start.clone(),
                end: s.ends.last().cloned().cloned(),
            };
            match s.rest {
                [] => range,
                rest => {
                    let mut all = vec![range];
                    all.extend(rest.iter().cloned());
                    Predicate::And(all)
                }
            }
        });
        match (merged, ps) {
            (Some(p), _) => p,
            (None, [one]) => one.clone(),
            (None, _) => Predicate::Or(ps.to_vec()),
        }
    }

    /// `ps` as ranges on one column that follow each other (each with
    /// the same other conditions), if they are.
    pub fn successive(ps: &[Predicate]) -> Option<Successive<'_>> {
        fn split(p: &Predicate) -> Option<(&Predicate, &[Predicate])> {
            match p {
                Predicate::Range { .. } => Some((p, &[])),
                Predicate::And(parts) => match parts.split_first() {
                    Some((r @ Predicate::Range { .. }, rest)) => Some((r, rest)),
                    _ => None,
                },
                _ => None,
            }
        }
        let (first, rest) = split(ps.first()?)?;
        let Predicate::Range { column, start, .. } = first else {
            return None;
        };
        let mut ends = Vec::with_capacity(ps.len());
        let mut expect: Option<&Option<Value>> = None;
        for p in ps {
            let (r, others) = split(p)?;
            let Predicate::Range {
                column: c,
                start: s,
                end: e,
            } = r
            else {
                return None;
            };
            if c != column || others != rest || expect.is_some_and(|x| x != s) {
                return None;
            }
            expect = Some(e);
            ends.push(e.as_ref()?);
        }
        Some(Successive {
            column,
            start,
            ends,
            rest,
        })
    }

    /// Columns this predicate reads.
    pub fn columns(&self) -> Vec<&Ident> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out.dedup();
        out
    }

    fn collect_columns<'a>(&'a self, out: &mut Vec<&'a Ident>) {
        match self {
            Predicate::All => {}
            Predicate::Range { column, .. }
            | Predicate::In { column, .. }
            | Predicate::HashBucket { column, .. } => out.push(column),
            Predicate::And(ps) | Predicate::Or(ps) => {
                ps.iter().for_each(|p| p.collect_columns(out))
            }
            Predicate::Not(p) => p.collect_columns(out),
        }
    }

    /// Evaluates the predicate on a row, with SQL three-valued logic;
    /// `lookup` returns a column's value. Returns `Some(true)` only when
    /// the row is selected.
    // A short-circuiting `try_fold` would stop at the first unknown and
    // break three-valued logic (`unknown AND false` is false).
    #[allow(clippy::manual_try_fold)]
    pub fn eval(&self, lookup: &dyn Fn(&Ident) -> Value) -> Option<bool> {
        match self {
            Predicate::All => Some(true),
            Predicate::Range { column, start, end } => {
                let v = lookup(column);
                if v.is_null() {
                    return None;
                }
                let lower = match start {
                    Some(s) => v.compare(s).map(|o| o.is_ge()),
                    None => Some(true),
                };
                let upper = match end {
                    Some(e) => v.compare(e).map(|o| o.is_lt()),
                    None => Some(true),
                };
                and3(lower, upper)
            }
            Predicate::In { column, values } => {
                if values.is_empty() {
                    // Rendered as FALSE in SQL, whatever the value.
                    return Some(false);
                }
                let v = lookup(column);
                if v.is_null() {
                    return None;
                }
                let mut unknown = false;
                for x in values {
                    match v.compare(x) {
                        Some(o) if o.is_eq() => return Some(true),
                        None => unknown = true,
                        _ => {}
                    }
                }
                if unknown {
                    None
                } else {
                    Some(false)
                }
            }
            Predicate::HashBucket {
                column,
                buckets,
                bucket,
            } => Some(memory_bucket(&lookup(column), *buckets) == *bucket),
            Predicate::And(ps) => ps
                .iter()
                .fold(Some(true), |acc, p| and3(acc, p.eval(lookup))),
            Predicate::Or(ps) => ps
                .iter()
                .fold(Some(false), |acc, p| or3(acc, p.eval(lookup))),
            Predicate::Not(p) => p.eval(lookup).map(|b| !b),
        }
    }

    /// Whether the row is selected (unknown counts as not selected).
    pub fn matches(&self, lookup: &dyn Fn(&Ident) -> Value) -> bool {
        self.eval(lookup) == Some(true)
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// The bucket an in-memory evaluator assigns to a value: FNV-1a over the
/// value's canonical text, NULL in bucket 0.
pub fn memory_bucket(v: &Value, buckets: u32) -> u32 {
    if v.is_null() || buckets == 0 {
        return 0;
    }
    let mut h = Fnv(0xcbf29ce484222325);
    v.to_string().hash(&mut h);
    (h.finish() % u64::from(buckets)) as u32
}

struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// Ranges on one column that follow each other: see
/// [`Predicate::successive`].
#[derive(Clone, Debug, PartialEq)]
pub struct Successive<'a> {
    /// The column.
    pub column: &'a Ident,
    /// Where the first range starts.
    pub start: &'a Option<Value>,
    /// Where each range ends (the next one starts there).
    pub ends: Vec<&'a Value>,
    /// The other conditions every range carries.
    pub rest: &'a [Predicate],
}
