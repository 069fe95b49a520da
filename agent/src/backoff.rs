//! Random delays for everything the agent does on a timer: check-ins, reconnects and wake-ups carry jitter so
//! 8,000 endpoints never fire together, and retries back off by doubling up to a cap.
//!
//! Tested by the unit tests below (bounds of every wait, doubling, cap, reset).

use std::time::Duration;

/// Up to `max` of random delay (uniform in `[0, max]`, millisecond steps).
pub fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let span = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(u64::from_le_bytes(b) % span.saturating_add(1))
}

/// A doubling retry delay: `initial`, `2 × initial`, … up to `max`; each wait is a random point in the upper half
/// of the current step, so it never exceeds `max` and retries of many endpoints spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial.min(max),
        }
    }

    /// The wait before the next retry; the step after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step / 2 + jitter(step - step / 2)
    }

    /// The wait before the next retry with full jitter: anywhere in `[0, step]`; the step after it doubles. Many
    /// endpoints failing together (a controller outage) come back spread over the whole step instead of in a wave.
    pub fn next_wait_full_jitter(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter(step)
    }

    /// After a success: the next failure waits the initial step again.
    pub fn reset(&mut self) {
        self.current = self.initial.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..200 {
            assert!(jitter(Duration::from_millis(30)) <= Duration::from_millis(30));
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let steps = [1u64, 2, 4, 8, 16, 32, 60, 60, 60];
        for step in steps {
            let wait = b.next_wait();
            let step = Duration::from_secs(step);
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} not within [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.next_wait() <= Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_each_step_and_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for step in [1u64, 2, 4, 8, 16, 32, 60, 60, 60] {
            assert!(b.next_wait_full_jitter() <= Duration::from_secs(step));
        }
        b.reset();
        assert!(b.next_wait_full_jitter() <= Duration::from_secs(1));
    }
}
