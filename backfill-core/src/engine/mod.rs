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

pub use exec::{
    CatalogAnswer, Conn, Executor, Failure, Limits, LivenessModel, NativePartitions, Partition,
};
pub use ledger::{mark_written, LedgerHome, SqlLedger};
pub use read::{answer, SqlRead};
pub use warehouse::{SqlWarehouse, WriteSettings};

/// Declares an adapter's warehouse: a newtype over
/// [`SqlWarehouse`]`<Executor>` that is a [`crate::Warehouse`] (every
/// method forwarded), derefs to the [`SqlWarehouse`] (its `ledger`,
/// `execute_batch`, `create_table`, `insert_rows`, `create_view`), and is
/// made from one with `From`. The adapter then adds its constructors.
///
/// ```ignore
/// backfill_core::sql_warehouse! {
///     /// A MyEngine database as a backfill warehouse.
///     pub struct MyWarehouse(MyExecutor);
/// }
/// ```
#[macro_export]
macro_rules! sql_warehouse {
    ($(#[$meta:meta])* $vis:vis struct $name:ident($exec:ty);) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        $vis struct $name {
            inner: $crate::engine::SqlWarehouse<$exec>,
        }

        $crate::forward_warehouse!([] $name, |s| &s.inner);

        impl ::std::ops::Deref for $name {
            type Target = $crate::engine::SqlWarehouse<$exec>;
            fn deref(&self) -> &Self::Target {
                &self.inner
            }
        }

        impl ::std::convert::From<$crate::engine::SqlWarehouse<$exec>> for $name {
            fn from(inner: $crate::engine::SqlWarehouse<$exec>) -> Self {
                $name { inner }
            }
        }
    };
}
