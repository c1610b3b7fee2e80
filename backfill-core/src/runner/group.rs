//! Commit groups: how many consecutive batches one transaction writes.
//!
//! A batch is what people observe, validate and roll back; a commit is
//! what the engine pays for. The runner writes several batches in one
//! transaction ([`crate::Warehouse::write_group`]) and sizes the group
//! to a target time per transaction, as a dynamic chunker sizes its
//! chunks: it starts from one batch, and after every group it moves
//! towards the size the measured time per batch says would take the
//! target time, at most doubling at a step, and halving at once on a
//! group that failed or ran far over.

use std::time::Duration;

/// The most a group grows in one step.
const GROWTH: usize = 2;

/// A group that takes this many times its target is cut back at once.
const PANIC: u32 = 4;

/// The group size of one worker, adapted to the time its groups take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizer {
    size: usize,
    max: usize,
    target: Duration,
}

impl Sizer {
    /// A sizer starting at one batch, never beyond `max` (1: no
    /// grouping), aiming at `target` a transaction.
    /// A zero target fixes every group at `max`.
    pub(crate) fn new(max: usize, target: Duration) -> Self {
        let max = max.max(1);
        Sizer {
            size: if target.is_zero() { max } else { 1 },
            max,
            target,
        }
    }

    /// The size of the next group.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Learns from a group of `n` batches that took `took`.
    pub(crate) fn observe(&mut self, n: usize, took: Duration) {
        let n = n.max(1);
        if self.target.is_zero() {
            self.size = self.max;
            return;
        }
        if took > self.target * PANIC {
            self.size = (n / 2).max(1);
            return;
        }
        let per_batch = took.as_secs_f64() / n as f64;
        let ideal = if per_batch <= 0.0 {
            self.max
        } else {
            (self.target.as_secs_f64() / per_batch).floor() as usize
        };
        // Grow from what was measured, not from a size the claim could
        // not fill (the last batches of a plan).
        self.size = ideal.clamp(1, n.saturating_mul(GROWTH)).min(self.max);
    }

    /// Cuts the size back after a group that failed.
    pub(crate) fn shrink(&mut self) {
        self.size = (self.size / 2).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_at_one_and_doubles_towards_the_target() {
        let mut s = Sizer::new(64, 500 * MS);
        assert_eq!(s.size(), 1);
        s.observe(1, 5 * MS);
        assert_eq!(s.size(), 2);
        s.observe(2, 10 * MS);
        assert_eq!(s.size(), 4);
        for _ in 0..10 {
            let n = s.size();
            s.observe(n, 5 * MS * n as u32);
        }
        assert_eq!(s.size(), 64, "capped at the maximum");
    }

    #[test]
    fn settles_at_the_size_that_takes_the_target() {
        let mut s = Sizer::new(1000, 500 * MS);
        for _ in 0..20 {
            let n = s.size();
            s.observe(n, 40 * MS * n as u32);
        }
        assert_eq!(s.size(), 12, "500 ms / 40 ms a batch");
    }

    #[test]
    fn slow_groups_shrink_and_failures_halve() {
        let mut s = Sizer::new(64, 500 * MS);
        for _ in 0..10 {
            let n = s.size();
            s.observe(n, MS * n as u32);
        }
        assert_eq!(s.size(), 64);
        s.observe(64, 3000 * MS);
        assert_eq!(s.size(), 32, "over four times the target: halved at once");
        s.observe(32, 1000 * MS);
        assert_eq!(s.size(), 16, "twice the target: the size that fits");
        s.shrink();
        assert_eq!(s.size(), 8);
    }

    #[test]
    fn a_zero_target_fixes_the_size() {
        let mut s = Sizer::new(7, Duration::ZERO);
        assert_eq!(s.size(), 7);
        s.observe(7, 10_000 * MS);
        assert_eq!(s.size(), 7);
        s.shrink();
        assert_eq!(s.size(), 3);
        s.observe(3, MS);
        assert_eq!(s.size(), 7);
    }

    #[test]
    fn a_maximum_of_one_never_groups() {
        let mut s = Sizer::new(1, 500 * MS);
        s.observe(1, MS);
        assert_eq!(s.size(), 1);
        let mut zero = Sizer::new(0, 500 * MS);
        zero.observe(1, MS);
        assert_eq!(zero.size(), 1);
    }

    #[test]
    fn a_short_group_does_not_inflate_the_next() {
        let mut s = Sizer::new(64, 500 * MS);
        s.observe(1, MS);
        s.observe(2, 2 * MS);
        assert_eq!(s.size(), 4);
        // The plan's last batch: a group of one that was asked for four.
        s.observe(1, MS);
        assert_eq!(s.size(), 2);
    }
}
