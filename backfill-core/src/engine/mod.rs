//! The shared SQL engine: everything the SQL adapters have in common,
//! written once over a small executor seam.
//!
//! An engine supplies an [`Executor`] (a connection, a transaction, the
//! meaning of its errors, native paths where it has better ones) and a
//! [`crate::sql::Dialect`]. On that, [`SqlWarehouse`] is the
//! [`crate::Warehouse`] with the batch-write protocol (guard, pre-image,
//! delete and insert or merge, the ledger mark, in one transaction), and
//! [`SqlLedger`] is the [`crate::Ledger`] (state machine, claims, fencing,
//! leases, documents) in tables beside the data.

pub mod exec;
mod ledger;
mod read;
mod warehouse;

pub use exec::{Conn, Executor, Failure, Limits, NativePartitions, Partition};
pub use ledger::{mark_written, LedgerHome, SqlLedger};
pub use read::{answer, SqlRead};
pub use warehouse::{SqlWarehouse, WriteSettings};
