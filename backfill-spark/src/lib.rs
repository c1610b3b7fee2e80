//! # backfill-spark
//!
//! The Spark side of backfill, over Spark Connect: the protocol of Apache
//! Spark's Connect server, of Sail, and of Databricks Connect.
//!
//! [`Spark`] is one session. It sends Spark SQL rendered by the shared
//! renderer in [`SparkDialect`](backfill_core::sql::SparkDialect), reads
//! back only numbers and bounded rows as Arrow, and reads relations from
//! the server's catalog (kind, columns, nullability, partitioning) or a
//! query's columns from the server's analysis, without running anything.
//! Data stays in the engine.
//!
//! **Values never reach Spark as text.** Servers do not all bind
//! parameters, so the dialect writes each value as a literal made only of
//! digits, hexadecimal digits and fixed keywords: text as the hexadecimal
//! of its bytes (`CAST(X'…' AS STRING)`). No quote, backslash or comment
//! marker of a value can end its literal. Identifiers are validated
//! ([`Ident`](backfill_core::Ident): ASCII letters, digits and
//! underscores) and backquoted.
//!
//! The tests run against a real Sail server that `scripts/with-spark.sh`
//! starts from PyPI.

#![warn(missing_docs)]

mod decode;
mod exec;
mod session;

pub use exec::SparkExec;
pub use session::{CatalogColumn, Relation, RelationKind, Spark, DIALECT};

backfill_core::sql_warehouse! {
    /// A Spark Connect session as a backfill
    /// [`Warehouse`](backfill_core::Warehouse), on the shared SQL engine.
    ///
    /// What runs today is the read side, pushed down as Spark SQL:
    /// describing tables, views and sources, counts, checksums, key
    /// boundaries and key reports, typed samples, and inspections
    /// (profiles, spines, orphans, metrics, row diffs and
    /// reconciliation). Anything that needs a transaction (a batch's
    /// write, a ledger kept in Spark) is refused with
    /// [`Error::Unsupported`](backfill_core::Error::Unsupported) before it
    /// writes anything.
    ///
    /// ```no_run
    /// # async fn demo() -> backfill_core::Result<()> {
    /// use backfill_core::{Predicate, TableRef, Warehouse};
    /// use backfill_spark::SparkWarehouse;
    ///
    /// let w = SparkWarehouse::connect("sc://127.0.0.1:15002").await?;
    /// let n = w.count(&TableRef::parse("analytics.revenue")?, &Predicate::All).await?;
    /// # let _ = n; Ok(()) }
    /// ```
    pub struct SparkWarehouse(SparkExec);
}

impl SparkWarehouse {
    /// Opens a session on the Spark Connect server at `url` (see
    /// [`Spark::connect`]).
    pub async fn connect(url: &str) -> backfill_core::Result<SparkWarehouse> {
        Ok(Self::on(Spark::connect(url).await?))
    }

    /// The warehouse on an open session.
    pub fn on(spark: Spark) -> SparkWarehouse {
        backfill_core::engine::SqlWarehouse::new(SparkExec::new(spark)).into()
    }
}
