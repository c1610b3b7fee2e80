//! Pause, resume and cancel, taking effect at batch boundaries.

use tokio::sync::watch;

/// What the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlState {
    /// Keep going.
    Running,
    /// Finish in-flight batches, then wait.
    Paused,
    /// Finish in-flight batches, then stop.
    Cancelled,
}

/// A handle to steer a run from another task. Clones steer the same run.
#[derive(Clone, Debug)]
pub struct RunControl {
    tx: watch::Sender<ControlState>,
}

impl Default for RunControl {
    fn default() -> Self {
        Self::new()
    }
}

impl RunControl {
    /// A handle in the running state.
    pub fn new() -> Self {
        RunControl {
            tx: watch::Sender::new(ControlState::Running),
        }
    }

    /// Pauses at the next batch boundary.
    pub fn pause(&self) {
        self.set(ControlState::Paused);
    }

    /// Resumes a paused run.
    pub fn resume(&self) {
        self.tx.send_if_modified(|s| {
            if *s == ControlState::Paused {
                *s = ControlState::Running;
                true
            } else {
                false
            }
        });
    }

    /// Cancels at the next batch boundary (final).
    pub fn cancel(&self) {
        self.set(ControlState::Cancelled);
    }

    /// The current request.
    pub fn state(&self) -> ControlState {
        *self.tx.borrow()
    }

    /// Resets to running (a new invocation of a cancelled runner).
    pub fn reset(&self) {
        self.tx.send_replace(ControlState::Running);
    }

    fn set(&self, to: ControlState) {
        self.tx.send_if_modified(|s| {
            if *s == ControlState::Cancelled || *s == to {
                false
            } else {
                *s = to;
                true
            }
        });
    }

    /// Waits while paused; returns the state that ended the wait
    /// (`Running` or `Cancelled`).
    pub async fn wait_while_paused(&self) -> ControlState {
        let mut rx = self.tx.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s != ControlState::Paused {
                return s;
            }
            if rx.changed().await.is_err() {
                return ControlState::Cancelled;
            }
        }
    }
}
