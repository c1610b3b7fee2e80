//! # backfill-postgres
//!
//! The PostgreSQL adapter for [`backfill_core`]: a [`Warehouse`] whose
//! writes, guards, snapshots and checks run as SQL inside PostgreSQL, a
//! [`Ledger`] in tables of the same database that several worker
//! processes share, and load signals read from the server.
//!
//! - [`PgWarehouse`]: connect with a connection string (a
//!   `deadpool-postgres` pool inside) or wrap a pool;
//! - [`PgLedger`]: made with [`PgWarehouse::ledger`](backfill_core::engine::SqlWarehouse::ledger), in a schema of your
//!   choice ([`DEFAULT_SCHEMA`] by default); each batch's write commits its
//!   ledger mark in the same transaction, fenced by the claim's token;
//! - [`ActivitySignal`], [`ReplicationLagSignal`], [`ProbeSignal`]: load
//!   signals with [`Thresholds`].
//!
//! The adapter is small: [`PgExecutor`] is an executor (a pooled
//! connection, a transaction with session limits, the meaning of a
//! SQLSTATE) plus the native partition swap; the ledger
//! ([`backfill_core::engine::SqlLedger`]) and the batch-write protocol
//! ([`backfill_core::engine::SqlWarehouse`]) are written once in the core
//! and shared with every SQL engine. All SQL is rendered by the shared
//! renderer in [`backfill_core::sql::stmt`] with the [`PostgresDialect`];
//! identifiers are validated and quoted, values are always bound
//! parameters.
//!
//! ## Several workers, one run
//!
//! Every worker (a process, on any machine) connects to the same database,
//! opens the ledger in the same schema and runs the same job under its own
//! worker name; batches are claimed with `FOR UPDATE SKIP LOCKED`, each
//! once. Each worker process holds a session lock for its lifetime, so a
//! batch whose worker died is taken back at once (its lock went with its
//! connections), not when its lease expires; live workers renew their
//! leases while they write.
//!
//! ```no_run
//! # async fn demo(job: backfill_core::Backfill) -> backfill_core::Result<()> {
//! use std::sync::Arc;
//! use backfill_core::{RunOptions, Runner};
//! use backfill_postgres::PgWarehouse;
//!
//! let warehouse = PgWarehouse::connect("host=db user=backfill dbname=analytics").await?;
//! let ledger = warehouse.ledger("backfill").await?;
//! let options = RunOptions { worker: "worker-a".into(), ..RunOptions::default() };
//! let report = Runner::new(Arc::new(warehouse), Arc::new(ledger))
//!     .with_options(options)
//!     .run(&job)
//!     .await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! [`Warehouse`]: backfill_core::Warehouse
//! [`Ledger`]: backfill_core::Ledger
//! [`PostgresDialect`]: backfill_core::sql::PostgresDialect
#![warn(missing_docs)]

mod db;
mod partition;
mod signal;
mod warehouse;

pub use backfill_core::ledger::DEFAULT_SCHEMA;
pub use db::PgExecutor;
pub use deadpool_postgres;
pub use signal::{
    Activity, ActivitySignal, ProbeSignal, Replication, ReplicationLagSignal, Thresholds,
};
pub use tokio_postgres;
pub use warehouse::{PgLedger, PgWarehouse, DEFAULT_POOL_SIZE};
