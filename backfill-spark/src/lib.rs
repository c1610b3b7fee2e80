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
mod session;

pub use session::{CatalogColumn, Relation, RelationKind, Spark, DIALECT};
