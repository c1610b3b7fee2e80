//! Statement renderers shared by the SQL engines.
//!
//! Each function returns one [`Sql`] statement; adapters execute them and
//! override only where their engine has a better native path.

use super::{Dialect, Sql, SqlBuilder};
use crate::{Predicate, TableRef};

/// `SELECT count(*) FROM table WHERE predicate`.
pub fn count(d: &dyn Dialect, table: &TableRef, predicate: &Predicate) -> Sql {
    let mut b = SqlBuilder::new(d);
    b.push("SELECT count(*) FROM ").table(table).push(" AS __t WHERE ");
    b.predicate(predicate, Some("__t"));
    b.finish()
}

/// Key quality of a slice: `(stats, sample)`.
///
/// `stats` returns one row `(rows, null_keys, duplicate_keys)`; duplicates
/// are found with GROUP BY … HAVING count(*) > 1, never a self-join.
/// `sample` returns up to `limit` duplicate keys as one text column.
pub fn key_report(
    d: &dyn Dialect,
    table: &TableRef,
    keys: &[crate::Ident],
    predicate: &Predicate,
    limit: usize,
) -> (Sql, Sql) {
    let dup_cte = |b: &mut SqlBuilder<'_>| {
        b.push("WITH __s AS (SELECT ").idents(keys, Some("__t")).push(" FROM ").table(table);
        b.push(" AS __t WHERE ").predicate(predicate, Some("__t")).push("), __g AS (SELECT ");
        b.idents(keys, None).push(" FROM __s WHERE ");
        not_null(b, keys);
        b.push(" GROUP BY ").idents(keys, None).push(" HAVING count(*) > 1) ");
    };
    let mut s = SqlBuilder::new(d);
    dup_cte(&mut s);
    s.push("SELECT (SELECT count(*) FROM __s), (SELECT count(*) FROM __s WHERE NOT (");
    not_null(&mut s, keys);
    s.push(")), (SELECT count(*) FROM __g)");

    let mut m = SqlBuilder::new(d);
    dup_cte(&mut m);
    m.push("SELECT ");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            m.push(" || ', ' || ");
        }
        let q = d.quote_ident(k);
        m.push(&d.text(&q));
    }
    m.push(" FROM __g ORDER BY ").idents(keys, None);
    m.push(&format!(" LIMIT {limit}"));
    (s.finish(), m.finish())
}

fn not_null(b: &mut SqlBuilder<'_>, keys: &[crate::Ident]) {
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            b.push(" AND ");
        }
        b.ident(k).push(" IS NOT NULL");
    }
}
