//! # backfill-duckdb
//!
//! The DuckDB adapter for [`backfill_core`]: a [`Warehouse`] whose writes,
//! guards, snapshots and checks run as SQL inside DuckDB, and a [`Ledger`]
//! kept in tables of the same database, so each batch's data and its
//! ledger mark commit in one transaction.
//!
//! - [`DuckDbWarehouse`]: open a file or an in-memory database, or wrap a
//!   connection;
//! - [`DuckDbLedger`]: made with [`DuckDbWarehouse::ledger`](backfill_core::engine::SqlWarehouse::ledger), in a schema
//!   of your choice ([`DEFAULT_SCHEMA`] by default).
//!
//! The adapter is small: [`DuckDb`] is an executor (a connection, a
//! transaction, the meaning of an error); the ledger
//! ([`backfill_core::engine::SqlLedger`]) and the batch-write protocol
//! ([`backfill_core::engine::SqlWarehouse`]) are written once in the core
//! and shared with every SQL engine. All SQL is rendered by the shared
//! renderer in [`backfill_core::sql::stmt`] with the [`DuckDbDialect`];
//! identifiers are validated and quoted, values are always bound
//! parameters.
//!
//! ```no_run
//! # async fn demo(brief: backfill_core::Brief) -> backfill_core::Result<()> {
//! use std::sync::Arc;
//! use backfill_core::{Backfill, Grain, Plan, Planner, RunId, Runner, Source};
//! use backfill_duckdb::DuckDbWarehouse;
//!
//! let warehouse = DuckDbWarehouse::open("analytics.duckdb")?;
//! let ledger = warehouse.ledger("backfill").await?;
//! let plan = Plan::build(brief.scope.clone(), Planner::Windows { grain: Grain::Day })?;
//! let job = Backfill::new(RunId::new("refunds_fix")?, brief, plan,
//!     Source::query("SELECT * FROM corrected_revenue"));
//! let report = Runner::new(Arc::new(warehouse), Arc::new(ledger)).run(&job).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! [`Warehouse`]: backfill_core::Warehouse
//! [`Ledger`]: backfill_core::Ledger
//! [`DuckDbDialect`]: backfill_core::sql::DuckDbDialect
#![warn(missing_docs)]

mod db;
mod warehouse;

pub use backfill_core::ledger::DEFAULT_SCHEMA;
pub use db::DuckDb;
pub use duckdb;
pub use warehouse::{DuckDbLedger, DuckDbWarehouse};
