//! The native path of partition overwrite on a declaratively partitioned
//! table: when a batch's range is exactly one partition's bounds, the new
//! rows are built in a table beside it, and the two are swapped with
//! `DETACH PARTITION` / `ATTACH PARTITION` in the batch's transaction. No
//! row is deleted, so the old partition leaves no dead tuples behind.
//!
//! `DETACH PARTITION` takes an exclusive lock on the parent for the
//! moment of the swap, under the batch's `lock_timeout`.

use async_trait::async_trait;
use backfill_core::engine::exec::{query_count, string};
use backfill_core::engine::{Conn, NativePartitions, Partition};
use backfill_core::sql::{stmt, Sql, SqlBuilder};
use backfill_core::{Ident, Predicate, Result, TableRef, Value};

use crate::db::DIALECT;

/// The native partition path of PostgreSQL.
pub(crate) struct PgPartitions;

fn sql(text: String) -> Sql {
    Sql {
        text,
        params: Vec::new(),
    }
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

#[async_trait]
impl NativePartitions for PgPartitions {
    /// The partition of `table` whose bounds are exactly `predicate`'s range,
    /// if `table` is range-partitioned on that column alone and nothing
    /// (a view) depends on the partition itself.
    async fn exact_partition(
        &self,
        tx: &mut dyn Conn,
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
        let rows = tx.query(&b.finish()).await?;
        let Some(r) = rows.first() else {
            return Ok(None);
        };
        let (schema, name, bound) = (string(r, 0)?, string(r, 1)?, string(r, 2)?);
        let (Ok(schema), Ok(name)) = (Ident::new(schema), Ident::new(name)) else {
            return Ok(None);
        };
        // The new partition is built beside the old one; a name that leaves
        // no room for the prefix falls back to delete and insert.
        let Ok(fresh) = Ident::new(format!("__bf_n_{name}")) else {
            return Ok(None);
        };
        Ok(Some(Partition {
            table: TableRef::qualified(schema.clone(), name),
            bound,
            fresh: TableRef::qualified(schema, fresh),
        }))
    }

    /// Replaces the partition's rows with `slice`'s: builds the new partition
    /// beside the old, swaps them, drops the old and gives the new one its
    /// name. Returns `(rows before, rows written)`.
    async fn swap_partition(
        &self,
        tx: &mut dyn Conn,
        parent: &TableRef,
        part: &Partition,
        slice: &TableRef,
        columns: &[Ident],
    ) -> Result<(u64, u64)> {
        let fresh = &part.fresh;
        let d = &DIALECT;
        let q = |t: &TableRef| {
            let mut b = SqlBuilder::new(d);
            b.table(t);
            b.text().to_string()
        };
        let (parent_q, part_q, fresh_q) = (q(parent), q(&part.table), q(fresh));
        let before = query_count(tx, &stmt::count(d, &part.table, &Predicate::All)).await?;
        tx.execute(&stmt::drop_table(d, fresh)).await?;
        tx.execute(&sql(format!(
            "CREATE TABLE {fresh_q} (LIKE {part_q} INCLUDING ALL)"
        )))
        .await?;
        let mut cols = SqlBuilder::new(d);
        cols.idents(columns, None);
        let cols = cols.text().to_string();
        let written = tx
            .execute(&sql(format!(
                "INSERT INTO {fresh_q} ({cols}) SELECT {cols} FROM {}",
                q(slice)
            )))
            .await?;
        tx.execute(&sql(format!(
            "ALTER TABLE {parent_q} DETACH PARTITION {part_q}"
        )))
        .await?;
        tx.execute(&sql(format!(
            "ALTER TABLE {parent_q} ATTACH PARTITION {fresh_q} {}",
            part.bound
        )))
        .await?;
        tx.execute(&sql(format!("DROP TABLE {part_q}"))).await?;
        let mut rename = SqlBuilder::new(d);
        rename
            .push(&format!("ALTER TABLE {fresh_q} RENAME TO "))
            .ident(&part.table.name);
        tx.execute(&rename.finish()).await?;
        Ok((before, written))
    }
}
