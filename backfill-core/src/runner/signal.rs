//! Load signals: the engine tells the runner to slow down or stop.

use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How loaded the system is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "level", content = "reason")]
pub enum Load {
    /// Go ahead.
    Ok,
    /// Wait before the next batch, for this reason.
    Throttle(String),
    /// Stop claiming batches (the run pauses) for this reason.
    Critical(String),
}

/// One reading of a signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    /// The load.
    pub load: Load,
    /// When it was observed (a stale reading counts as throttle).
    pub observed_at: Timestamp,
}

impl Reading {
    /// A reading taken now.
    pub fn now(load: Load) -> Self {
        Reading {
            load,
            observed_at: Timestamp::now(),
        }
    }
}

/// A source of load readings (replica lag, lock waits, a custom probe).
#[async_trait]
pub trait LoadSignal: Send + Sync {
    /// The signal's name, used in throttle reasons.
    fn name(&self) -> String;

    /// Reads the signal.
    async fn read(&self) -> Result<Reading>;
}

/// Reads a signal and fails closed: an error, a timeout or a reading
/// older than `max_age` counts as [`Load::Throttle`] with the reason.
pub async fn read_fail_closed(
    signal: &dyn LoadSignal,
    timeout: Duration,
    max_age: Duration,
    now: Timestamp,
) -> Load {
    let name = signal.name();
    match tokio::time::timeout(timeout, signal.read()).await {
        Err(_) => Load::Throttle(format!("{name}: no reading within {timeout:?}")),
        Ok(Err(e)) => Load::Throttle(format!("{name}: signal failed: {e}")),
        Ok(Ok(r)) => {
            let age = now.duration_since(r.observed_at);
            let max = jiff::SignedDuration::try_from(max_age).unwrap_or(jiff::SignedDuration::MAX);
            if age > max {
                Load::Throttle(format!("{name}: reading is stale ({}s old)", age.as_secs()))
            } else {
                match r.load {
                    Load::Ok => Load::Ok,
                    Load::Throttle(why) => Load::Throttle(format!("{name}: {why}")),
                    Load::Critical(why) => Load::Critical(format!("{name}: {why}")),
                }
            }
        }
    }
}
