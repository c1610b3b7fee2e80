//! # backfill
//!
//! Safe historical data changes for Postgres and DuckDB. This facade
//! re-exports the workspace's crates:
//!
//! - [`core`]: briefs, scopes, planners, predicates, the SQL renderer, the
//!   write strategies, the ledger, the runner and the validators;
//! - `duckdb` (feature `duckdb`, on by default): the DuckDB adapter;
//! - `postgres` (feature `postgres`): the PostgreSQL adapter;
//! - `spark` (feature `spark`): the Spark client over Spark Connect;
//! - `testkit` (feature `testkit`): the fake warehouse, fault injection,
//!   fixtures and the adapter conformance suite.
#![warn(missing_docs)]

pub use backfill_core as core;
pub use backfill_core::*;

#[cfg(feature = "duckdb")]
pub use backfill_duckdb as duckdb;

#[cfg(feature = "postgres")]
pub use backfill_postgres as postgres;

#[cfg(feature = "spark")]
pub use backfill_spark as spark;

#[cfg(feature = "testkit")]
pub use backfill_testkit as testkit;

/// The README's Rust examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
