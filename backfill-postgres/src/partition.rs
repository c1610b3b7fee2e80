//! The native path of partition overwrite on a declaratively partitioned
//! table: when a batch's range is exactly one partition's bounds, the new
//! rows are built in a table beside it, and the two are swapped with
//! `DETACH PARTITION` / `ATTACH PARTITION` in the batch's transaction. No
//! row is deleted, so the old partition leaves no dead tuples behind.
//!
//! `DETACH PARTITION` takes an exclusive lock on the parent for the
//! moment of the swap, under the batch's `lock_timeout`.

use backfill_core::sql::{stmt, Sql, SqlBuilder};
use backfill_core::{Ident, Predicate, Result, TableRef, Value};
use tokio_postgres::Transaction;

use crate::db::{exec, get_string, query, query_count, DIALECT};

/// A partition and its bound clause (`FOR VALUES FROM (…) TO (…)`).
#[derive(Clone, Debug)]
pub(crate) struct Partition {
    /// The partition.
    pub table: TableRef,
    /// Its bound, as `pg_get_expr` prints it.
    pub bound: String,
}

fn schema_param(b: &mut SqlBuilder<'_>, t: &TableRef) {
    match &t.schema {
        Some(s) => {
            b.param(Value::Text(s.to_string()));
        }
        None => {
            b.push("current_schema()");
        }
    }
}

/// The partition of `table` whose bounds are exactly `predicate`'s range,
/// if `table` is range-partitioned on that column alone and nothing
/// (a view) depends on the partition itself.
pub(crate) async fn exact_partition(
    tx: &Transaction<'_>,
    table: &TableRef,
    predicate: &Predicate,
) -> Result<Option<Partition>> {
    let Predicate::Range {
        column,
        start: Some(start),
        end: Some(end),
    } = predicate
    else {
        return Ok(None);
    };
    let d = &DIALECT;
    let mut b = SqlBuilder::new(d);
    b.push(
        "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid) \
         FROM pg_class p JOIN pg_namespace pn ON pn.oid = p.relnamespace \
         JOIN pg_partitioned_table pt ON pt.partrelid = p.oid \
         JOIN pg_attribute a ON a.attrelid = p.oid AND a.attnum = pt.partattrs[0] \
         JOIN pg_inherits i ON i.inhparent = p.oid \
         JOIN pg_class c ON c.oid = i.inhrelid AND c.relkind = 'r' \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE pn.nspname = ",
    );
    schema_param(&mut b, table);
    b.push(" AND p.relname = ")
        .param(Value::Text(table.name.to_string()))
        .push(" AND pt.partstrat = 'r' AND pt.partnatts = 1 AND a.attname = ")
        .param(Value::Text(column.to_string()));
    // Bounds print quoted ('2026-03-01') or bare (10) by type.
    let bound = |b: &mut SqlBuilder<'_>, spec: &str| {
        b.push(&format!("format('FOR VALUES FROM ({spec}) TO ({spec})', ("));
        b.param(start.clone());
        b.push(")::text, (");
        b.param(end.clone());
        b.push(")::text)");
    };
    b.push(" AND pg_get_expr(c.relpartbound, c.oid) IN (");
    bound(&mut b, "%L");
    b.push(", ");
    bound(&mut b, "%s");
    b.push(
        ") AND NOT EXISTS (SELECT 1 FROM pg_depend dep JOIN pg_rewrite r ON r.oid = dep.objid \
         WHERE dep.refobjid = c.oid AND dep.classid = 'pg_rewrite'::regclass)",
    );
    let rows = query(tx, &b.finish()).await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let (schema, name, bound) = (get_string(r, 0)?, get_string(r, 1)?, get_string(r, 2)?);
    let (Ok(schema), Ok(name)) = (Ident::new(schema), Ident::new(name)) else {
        return Ok(None);
    };
    Ok(Some(Partition {
        table: TableRef::qualified(schema, name),
        bound,
    }))
}

/// The table the new partition is built in, beside the old one; `None`
/// if the partition's name leaves no room for the prefix.
pub(crate) fn new_partition_table(part: &Partition) -> Option<TableRef> {
    let name = Ident::new(format!("__bf_n_{}", part.table.name)).ok()?;
    Some(TableRef {
        schema: part.table.schema.clone(),
        name,
    })
}

fn sql(text: String) -> Sql {
    Sql {
        text,
        params: Vec::new(),
    }
}

/// Replaces the partition's rows with `slice`'s: builds the new partition
/// beside the old, swaps them, drops the old and gives the new one its
/// name. Returns `(rows before, rows written)`.
pub(crate) async fn swap_partition(
    tx: &Transaction<'_>,
    parent: &TableRef,
    part: &Partition,
    fresh: &TableRef,
    slice: &TableRef,
    columns: &[Ident],
) -> Result<(u64, u64)> {
    let d = &DIALECT;
    let q = |t: &TableRef| {
        let mut b = SqlBuilder::new(d);
        b.table(t);
        b.text().to_string()
    };
    let (parent_q, part_q, fresh_q) = (q(parent), q(&part.table), q(fresh));
    let before = query_count(tx, &stmt::count(d, &part.table, &Predicate::All)).await?;
    exec(tx, &stmt::drop_table(d, fresh)).await?;
    exec(
        tx,
        &sql(format!(
            "CREATE TABLE {fresh_q} (LIKE {part_q} INCLUDING ALL)"
        )),
    )
    .await?;
    let mut cols = SqlBuilder::new(d);
    cols.idents(columns, None);
    let cols = cols.text().to_string();
    let written = exec(
        tx,
        &sql(format!(
            "INSERT INTO {fresh_q} ({cols}) SELECT {cols} FROM {}",
            q(slice)
        )),
    )
    .await?;
    exec(
        tx,
        &sql(format!("ALTER TABLE {parent_q} DETACH PARTITION {part_q}")),
    )
    .await?;
    exec(
        tx,
        &sql(format!(
            "ALTER TABLE {parent_q} ATTACH PARTITION {fresh_q} {}",
            part.bound
        )),
    )
    .await?;
    exec(tx, &sql(format!("DROP TABLE {part_q}"))).await?;
    let mut rename = SqlBuilder::new(d);
    rename
        .push(&format!("ALTER TABLE {fresh_q} RENAME TO "))
        .ident(&part.table.name);
    exec(tx, &rename.finish()).await?;
    Ok((before, written))
}
