//! The shared SQL engine's seam on Spark: [`SparkExec`] runs the shared
//! renderer's statements through a [`Spark`] session, reads relations from
//! its catalog calls, and refuses transactions, which Spark does not have.

use async_trait::async_trait;
use backfill_core::engine::{CatalogAnswer, Conn, Executor, Limits};
use backfill_core::sql::{Dialect, Sql};
use backfill_core::{ColumnType, Error, Result, TableRef, Value};

use tokio::sync::OwnedMutexGuard;

use crate::session::{RelationKind, Spark, DIALECT};

/// The format of the tables a [`SparkExec`] writes, which decides what a
/// write can make atomic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// Delta tables: `INSERT INTO … REPLACE WHERE` replaces a slice in one
    /// commit, so a batch's overwrite, its pre-image and its restore are
    /// each one statement.
    Delta,
    /// Any other format (parquet tables without Delta): no statement
    /// replaces a slice atomically, so writes are refused before anything
    /// is written; reads work.
    Other,
}

/// The [`Executor`] on one Spark Connect session.
///
/// Spark has no transaction spanning several statements, so
/// [`Executor::begin`] is refused with [`Error::Unsupported`] (a ledger
/// kept in Spark is refused before it writes anything) and
/// [`Executor::transactions`] is false: the shared engine writes each
/// batch with statements that are each one commit (see
/// [`TableFormat::Delta`]), and reads run on the session as they are.
///
/// A connection holds the session for its whole life, one at a time (the
/// lock is the session's, shared by every executor on it): the statements
/// of one read or write see each other's temporary views (a row diff keeps
/// its differing rows in one, a batch's write its source slice), and two
/// never replace each other's.
#[derive(Clone, Debug)]
pub struct SparkExec {
    spark: Spark,
    id: String,
    format: TableFormat,
}

impl SparkExec {
    /// An executor on `spark`, writing Delta tables.
    pub fn new(spark: Spark) -> SparkExec {
        Self::with_format(spark, TableFormat::Delta)
    }

    /// An executor on `spark`, writing tables of `format`.
    pub fn with_format(spark: Spark, format: TableFormat) -> SparkExec {
        let id = format!("spark:{}", spark.session_id());
        SparkExec { spark, id, format }
    }

    /// The session.
    pub fn session(&self) -> &Spark {
        &self.spark
    }
}

#[async_trait]
impl Executor for SparkExec {
    fn dialect(&self) -> &'static dyn Dialect {
        &DIALECT
    }

    fn engine(&self) -> &'static str {
        "spark"
    }

    fn id(&self) -> &str {
        &self.id
    }

    async fn connect(&self) -> Result<Box<dyn Conn>> {
        Ok(Box::new(SparkConn {
            spark: self.spark.clone(),
            _held: self.spark.hold().await,
        }))
    }

    async fn begin(&self, _limits: Option<Limits>) -> Result<Box<dyn Conn>> {
        Err(Error::Unsupported(
            "Spark has no transaction spanning several statements, so a write that needs one \
             is not run there (keep the ledger in PostgreSQL or DuckDB)"
                .into(),
        ))
    }

    fn transactions(&self) -> bool {
        false
    }

    fn replaces_slices(&self) -> bool {
        self.format == TableFormat::Delta
    }
}

/// The session, as the shared engine's connection, held while it lives.
struct SparkConn {
    spark: Spark,
    _held: OwnedMutexGuard<()>,
}

#[async_trait]
impl Conn for SparkConn {
    /// Runs the statement. Spark does not say how many rows a statement
    /// changed in the same way on every server (see [`Spark::execute`]),
    /// so this returns 0: the shared engine counts rows by query where it
    /// needs a count.
    async fn execute(&mut self, sql: &Sql) -> Result<u64> {
        self.spark.execute(sql).await.map(|()| 0)
    }

    async fn query(&mut self, sql: &Sql) -> Result<Vec<Vec<Value>>> {
        self.spark.query(sql).await
    }

    async fn columns(&mut self, sql: &Sql) -> Result<Vec<(String, ColumnType)>> {
        let cols = self.spark.columns(sql).await?;
        Ok(cols.into_iter().map(|(n, t, _)| (n, t)).collect())
    }

    /// Runs the statements of `text` one after another: Spark takes one
    /// statement a request.
    async fn script(&mut self, text: &str) -> Result<()> {
        for statement in crate::script::statements(text) {
            self.spark
                .execute(&Sql {
                    text: statement.to_string(),
                    params: Vec::new(),
                })
                .await?;
        }
        Ok(())
    }

    async fn relation(&mut self, table: &TableRef) -> Result<CatalogAnswer> {
        Ok(match self.spark.relation(table).await? {
            None => CatalogAnswer::Missing,
            Some(r) => CatalogAnswer::Found {
                view: r.kind == RelationKind::View,
                columns: r
                    .columns
                    .into_iter()
                    .map(|c| (c.name, c.ty, c.nullable))
                    .collect(),
            },
        })
    }

    /// Nothing to commit: statements took effect when they ran.
    async fn commit(&mut self) -> Result<()> {
        Ok(())
    }

    /// Nothing to roll back: this connection never holds a transaction.
    async fn rollback(&mut self) -> Result<()> {
        Ok(())
    }
}
