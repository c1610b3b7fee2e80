//! Load signals read from PostgreSQL: sessions and lock waits, replica
//! lag, and a probe query of your own. Each is a
//! [`LoadSignal`](backfill_core::LoadSignal) for
//! [`Runner::with_signal`](backfill_core::Runner::with_signal); the runner
//! reads them between batches and fails closed (an error, a timeout or a
//! stale reading throttles).

use std::time::Duration;

use async_trait::async_trait;
use backfill_core::runner::{Load, LoadSignal, Reading};
use backfill_core::sql::stmt;
use backfill_core::{Error, Result};
use deadpool_postgres::Pool;

use crate::db::{get_f64, get_u64, pool_error, query, DIALECT};

/// When a number means throttle and when critical: a reading at or above
/// `throttle` throttles, at or above `critical` pauses the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Throttle at or above this.
    pub throttle: f64,
    /// Critical at or above this.
    pub critical: f64,
}

impl Thresholds {
    /// Throttle at `throttle`, critical at `critical`.
    pub fn new(throttle: f64, critical: f64) -> Self {
        Thresholds { throttle, critical }
    }

    /// Never throttles nor stops (to watch only one of a signal's
    /// numbers).
    pub fn never() -> Self {
        Thresholds::new(f64::INFINITY, f64::INFINITY)
    }

    /// The load for a reading `value` of the quantity `what` (in `unit`).
    pub fn judge(&self, what: &str, value: f64, unit: &str) -> Load {
        if value.is_nan() {
            Load::Throttle(format!("{what} is not a number"))
        } else if value >= self.critical {
            Load::Critical(format!(
                "{what} is {value}{unit}, at or above the critical {}{unit}",
                self.critical
            ))
        } else if value >= self.throttle {
            Load::Throttle(format!(
                "{what} is {value}{unit}, at or above {}{unit}",
                self.throttle
            ))
        } else {
            Load::Ok
        }
    }
}

/// The worse of two loads (critical over throttle over ok).
fn worse(a: Load, b: Load) -> Load {
    match (&a, &b) {
        (Load::Critical(_), _) => a,
        (_, Load::Critical(_)) => b,
        (Load::Throttle(_), _) => a,
        (_, Load::Throttle(_)) => b,
        _ => Load::Ok,
    }
}

/// What [`ActivitySignal`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    /// Other client sessions of this database running a statement.
    pub active: u64,
    /// Other client sessions of this database waiting for a lock.
    pub waiting_on_locks: u64,
}

/// Active sessions and sessions waiting on locks in this database, from
/// `pg_stat_activity` (this session excluded): a backfill should back off
/// when the database is busy or its writes make others wait.
#[derive(Clone, Debug)]
pub struct ActivitySignal {
    pool: Pool,
    active: Thresholds,
    lock_waiters: Thresholds,
}

impl ActivitySignal {
    /// A signal on `pool`'s database with thresholds on active sessions
    /// and on sessions waiting for a lock.
    pub fn new(pool: Pool, active: Thresholds, lock_waiters: Thresholds) -> Self {
        ActivitySignal {
            pool,
            active,
            lock_waiters,
        }
    }

    /// Reads the numbers.
    pub async fn activity(&self) -> Result<Activity> {
        let c = self.pool.get().await.map_err(pool_error)?;
        let rows = query(&**c, &stmt::pg_activity(&DIALECT)).await?;
        let r = rows
            .first()
            .ok_or_else(|| Error::engine("pg_stat_activity returned no row"))?;
        Ok(Activity {
            active: get_u64(r, 0)?,
            waiting_on_locks: get_u64(r, 1)?,
        })
    }
}

#[async_trait]
impl LoadSignal for ActivitySignal {
    fn name(&self) -> String {
        "postgres activity".into()
    }

    async fn read(&self) -> Result<Reading> {
        let a = self.activity().await?;
        let load = worse(
            self.active.judge("active sessions", a.active as f64, ""),
            self.lock_waiters
                .judge("sessions waiting on locks", a.waiting_on_locks as f64, ""),
        );
        Ok(Reading::now(load))
    }
}

/// What [`ReplicationLagSignal`] saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Replication {
    /// Streaming replicas connected to this server.
    pub replicas: u64,
    /// The largest replay lag among them (zero without replicas).
    pub max_lag: Duration,
}

/// Replay lag of the streaming replicas of this server, from
/// `pg_stat_replication`: a backfill should not outrun its replicas.
///
/// A server with no replica reads as [`Load::Ok`]; [`Self::replication`]
/// says how many replicas there were, and the reading is logged at debug
/// level with "no replica".
#[derive(Clone, Debug)]
pub struct ReplicationLagSignal {
    pool: Pool,
    thresholds: Thresholds,
}

impl ReplicationLagSignal {
    /// A signal throttling at `throttle` of lag and pausing at `critical`.
    pub fn new(pool: Pool, throttle: Duration, critical: Duration) -> Self {
        ReplicationLagSignal {
            pool,
            thresholds: Thresholds::new(throttle.as_secs_f64(), critical.as_secs_f64()),
        }
    }

    /// Reads the numbers.
    pub async fn replication(&self) -> Result<Replication> {
        let c = self.pool.get().await.map_err(pool_error)?;
        let rows = query(&**c, &stmt::pg_replication_lag(&DIALECT)).await?;
        let r = rows
            .first()
            .ok_or_else(|| Error::engine("pg_stat_replication returned no row"))?;
        let secs = get_f64(r, 1)?.unwrap_or(0.0).max(0.0);
        Ok(Replication {
            replicas: get_u64(r, 0)?,
            max_lag: Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX),
        })
    }
}

#[async_trait]
impl LoadSignal for ReplicationLagSignal {
    fn name(&self) -> String {
        "postgres replication lag".into()
    }

    async fn read(&self) -> Result<Reading> {
        let r = self.replication().await?;
        if r.replicas == 0 {
            tracing::debug!("replication lag: no replica is connected; nothing to wait for");
            return Ok(Reading::now(Load::Ok));
        }
        Ok(Reading::now(self.thresholds.judge(
            &format!("replay lag (max of {} replica(s))", r.replicas),
            r.max_lag.as_secs_f64(),
            "s",
        )))
    }
}

/// A number from a query of yours, compared with thresholds: queue depth,
/// a business-hours flag, the lag of a downstream consumer.
///
/// The query is trusted SQL written by you (like a [`backfill_core::Source`]
/// query), run as `SELECT CAST((query) AS DOUBLE PRECISION)`, so it must
/// return one row with one numeric column; no row, or NULL, is an error
/// (and the runner, failing closed, throttles).
#[derive(Clone, Debug)]
pub struct ProbeSignal {
    pool: Pool,
    name: String,
    sql: String,
    thresholds: Thresholds,
}

impl ProbeSignal {
    /// A probe called `name` running `sql`.
    pub fn new(
        pool: Pool,
        name: impl Into<String>,
        sql: impl Into<String>,
        thresholds: Thresholds,
    ) -> Self {
        ProbeSignal {
            pool,
            name: name.into(),
            sql: sql.into(),
            thresholds,
        }
    }

    /// Runs the probe.
    pub async fn value(&self) -> Result<f64> {
        let c = self.pool.get().await.map_err(pool_error)?;
        let rows = query(&**c, &stmt::scalar_probe(&DIALECT, &self.sql)).await?;
        rows.first()
            .map(|r| get_f64(r, 0))
            .transpose()?
            .flatten()
            .ok_or_else(|| Error::engine(format!("probe {} returned no number", self.name)))
    }
}

#[async_trait]
impl LoadSignal for ProbeSignal {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn read(&self) -> Result<Reading> {
        let v = self.value().await?;
        Ok(Reading::now(self.thresholds.judge("the probe", v, "")))
    }
}
