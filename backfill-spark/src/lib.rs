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
mod script;
mod session;

pub use exec::{SparkExec, TableFormat};
pub use session::{CatalogColumn, Relation, RelationKind, Spark, DIALECT};

backfill_core::sql_warehouse! {
    /// A Spark Connect session as a backfill
    /// [`Warehouse`](backfill_core::Warehouse), on the shared SQL engine.
    ///
    /// Reads are pushed down as Spark SQL: describing tables, views and
    /// sources, counts, checksums, key boundaries and key reports, typed
    /// samples, and inspections (profiles, spines, orphans, metrics, row
    /// diffs and reconciliation).
    ///
    /// On Delta tables (the default), a partition overwrite and a
    /// parallel version write each batch as one `INSERT INTO … REPLACE
    /// WHERE` after its guards, keep its pre-image in one statement, and
    /// restore it in one; the ledger lives in PostgreSQL or DuckDB, and a
    /// batch repeated after a crash replaces its slice with the same
    /// rows. A staging swap and a merge are refused at preflight, as is
    /// any write on tables of [`TableFormat::Other`]; a ledger kept in
    /// Spark is refused with
    /// [`Error::Unsupported`](backfill_core::Error::Unsupported).
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

    /// The warehouse on an open session, writing Delta tables.
    pub fn on(spark: Spark) -> SparkWarehouse {
        Self::with_format(spark, TableFormat::Delta)
    }

    /// The warehouse on an open session, writing tables of `format`.
    pub fn with_format(spark: Spark, format: TableFormat) -> SparkWarehouse {
        backfill_core::engine::SqlWarehouse::new(SparkExec::with_format(spark, format)).into()
    }
}
