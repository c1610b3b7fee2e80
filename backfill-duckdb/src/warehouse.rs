//! [`DuckDbWarehouse`]: the shared [`SqlWarehouse`] on the [`DuckDb`]
//! executor, with the constructors and escape hatches of an embedded
//! database.

use std::path::Path;

use backfill_core::engine::{SqlLedger, SqlWarehouse};
use backfill_core::Result;
use duckdb::Connection;

use crate::db::{engine_error, DuckDb};

/// The [`backfill_core::Ledger`] in tables of a DuckDB database, made with
/// [`DuckDbWarehouse::ledger`](backfill_core::engine::SqlWarehouse::ledger): each batch's data and its ledger mark
/// commit in one transaction.
pub type DuckDbLedger = SqlLedger<DuckDb>;

backfill_core::sql_warehouse! {
    /// A DuckDB database as a backfill [`backfill_core::Warehouse`].
    ///
    /// Writes, checks and snapshots run as SQL inside DuckDB; only plans,
    /// bounds, counts and bounded samples cross into Rust. The warehouse owns
    /// one connection (clones share it); each operation holds it for its whole
    /// duration, so one operation's transaction never interleaves with
    /// another's. The batch-write protocol is [`SqlWarehouse`]'s; its
    /// methods (`ledger`, `execute_batch`, `create_table`, `insert_rows`,
    /// `create_view`) are reached through `Deref`.
    ///
    /// How the contract maps onto DuckDB:
    ///
    /// - `swap` renames both tables in one transaction; DuckDB binds views by
    ///   name when they are queried, so a view reading the target reads the
    ///   new table after the swap;
    /// - `create_copy` keeps column types and `NOT NULL`, not primary keys,
    ///   unique or check constraints or defaults;
    /// - temporal values are bound as ISO text and cast by the placeholders,
    ///   at DuckDB's microsecond precision;
    /// - relations are looked up in `duckdb_tables()` and `duckdb_columns()`
    ///   by their names as written.
    ///
    /// ```no_run
    /// # async fn demo() -> backfill_core::Result<()> {
    /// use backfill_duckdb::DuckDbWarehouse;
    /// let warehouse = DuckDbWarehouse::open("analytics.duckdb")?;
    /// let ledger = warehouse.ledger("backfill").await?;
    /// # let _ = ledger; Ok(()) }
    /// ```
    pub struct DuckDbWarehouse(DuckDb);
}

impl DuckDbWarehouse {
    /// Opens a database file, creating it when there is none. To refuse a
    /// mistyped path instead of starting an empty database, use
    /// [`open_existing`](Self::open_existing).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Connection::open(path)
            .map(Self::from_connection)
            .map_err(engine_error)
    }

    /// Opens a database file that must exist:
    /// [`Error::DatabaseMissing`](backfill_core::Error::DatabaseMissing)
    /// otherwise, before anything is created.
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(backfill_core::Error::DatabaseMissing(
                path.display().to_string(),
            ));
        }
        Self::open(path)
    }

    /// A new in-memory database.
    pub fn in_memory() -> Result<Self> {
        Connection::open_in_memory()
            .map(Self::from_connection)
            .map_err(engine_error)
    }

    /// Wraps an open connection.
    pub fn from_connection(conn: Connection) -> Self {
        SqlWarehouse::new(DuckDb::new(conn)).into()
    }

    /// Runs `f` with the shared connection on a blocking thread: an escape
    /// hatch for what this API does not cover.
    pub async fn with_connection<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> duckdb::Result<T> + Send + 'static,
    {
        self.executor()
            .run(move |c| f(c).map_err(engine_error))
            .await
    }
}
