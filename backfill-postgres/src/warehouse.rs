//! [`PgWarehouse`]: the shared [`SqlWarehouse`] on the [`PgExecutor`],
//! with a pool, session limits and load signals.

use std::str::FromStr;
use std::time::Duration;

use backfill_core::engine::{Limits, SqlLedger, SqlWarehouse, WriteSettings};
use backfill_core::{Error, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::db::PgExecutor;
use crate::signal::{ActivitySignal, ProbeSignal, ReplicationLagSignal, Thresholds};

/// Connections a pool made by [`PgWarehouse::connect`] holds at most.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// The [`backfill_core::Ledger`] in tables of a PostgreSQL database, made
/// with [`PgWarehouse::ledger`](backfill_core::engine::SqlWarehouse::ledger) and shared by every worker process that
/// points at the same database and schema.
pub type PgLedger = SqlLedger<PgExecutor>;

backfill_core::sql_warehouse! {
    /// A PostgreSQL database as a backfill [`backfill_core::Warehouse`].
    ///
    /// Writes, checks and snapshots run as SQL inside PostgreSQL; only plans,
    /// bounds, counts and bounded samples cross into Rust. Connections come
    /// from a `deadpool-postgres` pool (clones of the warehouse share it), and
    /// every value is a bound parameter. A [`PgLedger`] made with
    /// [`PgWarehouse::ledger`](backfill_core::engine::SqlWarehouse::ledger) lives in the same database, so each batch's
    /// write marks its ledger row in the same transaction as the data, fenced
    /// by the claim's token: a worker whose lease was taken over cannot
    /// commit. Several processes, each with its own warehouse and ledger on
    /// the same database and schema, share one run. The batch-write protocol
    /// and the ledger are [`SqlWarehouse`]'s and [`SqlLedger`]'s, shared with
    /// every SQL engine; their methods (`ledger`, `execute_batch`,
    /// `create_table`, `insert_rows`, `create_view`) are reached through
    /// `Deref`.
    ///
    /// How the contract maps onto PostgreSQL:
    ///
    /// - each batch write is one transaction with `SET LOCAL
    ///   statement_timeout` and `SET LOCAL lock_timeout` (see
    ///   [`PgWarehouse::with_statement_timeout`],
    ///   [`PgWarehouse::with_lock_timeout`]); a timeout is a transient error
    ///   the runner retries;
    /// - the write first takes a transaction-scoped advisory lock on (table,
    ///   batch), so two workers never interleave the same batch, then
    ///   materializes the batch's source slice once into a temporary table
    ///   (`pg_temp.__bf_slice`; a bounded query with the batch's bounds, then
    ///   the out-of-bounds guard; any other source with the batch predicate),
    ///   so guard, pre-image, delete and insert all see the same rows, even
    ///   when the source reads the table being written;
    /// - merge is `UPDATE … FROM` plus `INSERT … WHERE NOT EXISTS`, which
    ///   needs no unique constraint on the target (the slice is analyzed
    ///   first so the join is planned on real numbers);
    /// - `swap` renames both tables in one transaction under a short
    ///   `lock_timeout`, retried a few times ([`PgWarehouse::with_swap_lock`]);
    ///   PostgreSQL views bind tables by identity, not name, so a view over
    ///   the target keeps reading the old table after a swap;
    /// - `create_copy` uses `CREATE TABLE … (LIKE … INCLUDING DEFAULTS
    ///   INCLUDING CONSTRAINTS INCLUDING INDEXES …)`, so a staged table keeps
    ///   `NOT NULL`, checks, primary keys and indexes (not foreign keys,
    ///   triggers, grants or identity);
    /// - `point_view` replaces the view, or drops and recreates it in one
    ///   transaction when its columns change;
    /// - DDL the runner may reach from several workers at once (pre-image,
    ///   stage and staged-source tables) is serialized with advisory locks;
    /// - temporal values are bound as ISO text and cast by the placeholders;
    ///   `numeric` values are read back as text (or floats for float columns);
    /// - tables and views are looked up in `information_schema` (materialized
    ///   views are not found there), unqualified names in `current_schema()`.
    ///
    /// ```no_run
    /// # async fn demo() -> backfill_core::Result<()> {
    /// use backfill_postgres::PgWarehouse;
    /// let warehouse = PgWarehouse::connect("host=localhost user=postgres dbname=analytics").await?;
    /// let ledger = warehouse.ledger("backfill").await?;
    /// # let _ = ledger; Ok(()) }
    /// ```
    pub struct PgWarehouse(PgExecutor);
}

impl PgWarehouse {
    /// Connects with a libpq-style connection string (`host=… user=…
    /// dbname=…` or a `postgresql://` URL), with a pool of
    /// [`DEFAULT_POOL_SIZE`] connections, without TLS. Fails if no
    /// connection can be made.
    pub async fn connect(config: &str) -> Result<Self> {
        Self::connect_with_pool_size(config, DEFAULT_POOL_SIZE).await
    }

    /// [`PgWarehouse::connect`] with a pool of at most `size` connections
    /// (a runner needs one per batch in flight, plus one for its ledger).
    pub async fn connect_with_pool_size(config: &str, size: usize) -> Result<Self> {
        let cfg = tokio_postgres::Config::from_str(config)
            .map_err(|e| Error::engine(format!("invalid PostgreSQL connection string: {e}")))?;
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size.max(1))
            .build()
            .map_err(|e| Error::engine(format!("cannot build the connection pool: {e}")))?;
        let w = Self::from_pool(pool);
        // Fail early on a bad address or credentials.
        let _ = w.executor().client().await?;
        Ok(w)
    }

    /// Wraps an existing pool (configure TLS, sizes and timeouts there).
    pub fn from_pool(pool: Pool) -> Self {
        let settings = WriteSettings {
            limits: Some(Limits {
                statement_timeout: Duration::from_secs(600),
                lock_timeout: Duration::from_secs(10),
            }),
            swap_lock_timeout: Some(Duration::from_secs(2)),
            swap_attempts: 5,
        };
        SqlWarehouse::new(PgExecutor::new(pool))
            .with_settings(settings)
            .into()
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        self.executor().pool()
    }

    /// Waits until the worker process `instance` (a ledger's instance, as
    /// its leases record it) is gone. A worker holds its session lock for
    /// its lifetime and the server frees it when the worker's connection
    /// ends, killed or not: this returns at once for a worker already
    /// gone, and when a live one ends.
    pub async fn await_instance_end(&self, instance: &str) -> Result<()> {
        use backfill_core::engine::Executor;
        let key =
            backfill_core::Value::Text(format!("{}{instance}", backfill_core::sql::INSTANCE_KEY));
        let mut b = backfill_core::sql::SqlBuilder::new(self.executor().dialect());
        b.push("SELECT pg_advisory_lock(hashtextextended(")
            .param(key.clone())
            .push(", 0)), pg_advisory_unlock(hashtextextended(")
            .param(key)
            .push(", 0))");
        let mut c = self.executor().connect().await?;
        c.query(&b.finish()).await.map(|_| ())
    }

    /// A pooled connection: an escape hatch for what this API does not
    /// cover.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.executor().client().await
    }

    fn limits(&self) -> Limits {
        self.inner.settings().limits.unwrap_or(Limits {
            statement_timeout: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(10),
        })
    }

    fn with_limits(mut self, limits: Limits) -> Self {
        let settings = WriteSettings {
            limits: Some(limits),
            ..self.inner.settings()
        };
        self.inner = self.inner.with_settings(settings);
        self
    }

    /// How long one statement of a write may run (`SET LOCAL
    /// statement_timeout`; 10 minutes by default). Past it the statement
    /// is cancelled, the batch rolled back, and the error is transient.
    pub fn with_statement_timeout(self, timeout: Duration) -> Self {
        let limits = Limits {
            statement_timeout: timeout,
            ..self.limits()
        };
        self.with_limits(limits)
    }

    /// How long a write waits for a lock another session holds (`SET
    /// LOCAL lock_timeout`; 10 seconds by default). Past it the batch is
    /// rolled back and the error is transient.
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        let limits = Limits {
            lock_timeout: timeout,
            ..self.limits()
        };
        self.with_limits(limits)
    }

    /// The lock timeout of each swap attempt (2 seconds by default) and
    /// how many attempts are made (5 by default, at least 1) before
    /// `swap` gives up with a transient error naming the table.
    pub fn with_swap_lock(mut self, timeout: Duration, attempts: u32) -> Self {
        let settings = WriteSettings {
            swap_lock_timeout: Some(timeout),
            swap_attempts: attempts.max(1),
            ..self.inner.settings()
        };
        self.inner = self.inner.with_settings(settings);
        self
    }

    /// The statement and lock timeouts of writes.
    pub fn timeouts(&self) -> (Duration, Duration) {
        let l = self.limits();
        (l.statement_timeout, l.lock_timeout)
    }

    /// A load signal on `pg_stat_activity` of this database (see
    /// [`ActivitySignal`]).
    pub fn activity_signal(&self, active: Thresholds, lock_waiters: Thresholds) -> ActivitySignal {
        ActivitySignal::new(self.pool().clone(), active, lock_waiters)
    }

    /// A load signal on replica lag from `pg_stat_replication` (see
    /// [`ReplicationLagSignal`]).
    pub fn replication_lag_signal(
        &self,
        throttle: Duration,
        critical: Duration,
    ) -> ReplicationLagSignal {
        ReplicationLagSignal::new(self.pool().clone(), throttle, critical)
    }

    /// A load signal from a scalar query of yours (see [`ProbeSignal`]).
    pub fn probe_signal(
        &self,
        name: impl Into<String>,
        sql: impl Into<String>,
        thresholds: Thresholds,
    ) -> ProbeSignal {
        ProbeSignal::new(self.pool().clone(), name, sql, thresholds)
    }
}
