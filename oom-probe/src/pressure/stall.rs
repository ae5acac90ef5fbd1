//! The PSI check that honours the trigger: has the `some` stall total grown
//! by the trigger's share (`stall / window`) over a span of at least the
//! trigger's window? A short history of `(time, total)` readings gives the
//! span; a span shorter than the window is never compared (over 150 ms, a
//! 20 ms stall is 13 % of the time, yet far below 100 ms in any 1 s window).
//!
//! The span compared is the shortest the history allows that is at least
//! the window: from the newest reading at least a window old to now. Pure:
//! fed readings and the clock.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Readings closer together than a sixteenth of the window (and at least
/// this) are not kept: the history stays at about 17 readings.
const MIN_SPACING: Duration = Duration::from_millis(10);

/// The `some` stall totals read lately, oldest first.
#[derive(Clone, Debug, Default)]
pub struct StallHistory {
    readings: VecDeque<(Instant, u64)>,
}

impl StallHistory {
    /// Records the `some` total `total_us` (µs) read at `now`, and says
    /// whether it grew by at least the share `stall_us / window_us` of the
    /// time since the newest earlier reading at least `window_us` old.
    /// False until the history spans a window, and for a zero window.
    pub fn record(
        &mut self,
        now: Instant,
        total_us: u64,
        (stall_us, window_us): (u64, u64),
    ) -> bool {
        let window = Duration::from_micros(window_us);
        let base = self
            .readings
            .iter()
            .rev()
            .find(|(at, _)| now.saturating_duration_since(*at) >= window)
            .copied();
        let stalled = window_us > 0
            && base.is_some_and(|(at, before)| {
                let span = now.duration_since(at).as_micros() as u64;
                let grown = total_us.saturating_sub(before);
                grown.saturating_mul(window_us) >= span.saturating_mul(stall_us)
            });
        let spacing = (window / 16).max(MIN_SPACING);
        let spaced = self
            .readings
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= spacing);
        if spaced {
            self.readings.push_back((now, total_us));
        }
        // Only the newest reading at least a window old is ever a base.
        while self
            .readings
            .get(1)
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= window)
        {
            self.readings.pop_front();
        }
        stalled
    }

    /// How many readings are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.readings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIGGER: (u64, u64) = (100_000, 1_000_000);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_span_shorter_than_the_window_is_never_compared() {
        let t0 = Instant::now();
        let mut history = StallHistory::default();
        assert!(!history.record(t0, 0, TRIGGER), "the first reading");
        // 20 ms stalled in the next 150 ms: 13 % of 150 ms, but 20 ms of
        // the 100 ms a 1 s window needs. The check of old compared it.
        assert!(!history.record(at(t0, 150), 20_000, TRIGGER));
        // Nothing else in the second: 20 ms in 1 s.
        assert!(!history.record(at(t0, 1_000), 20_000, TRIGGER));
        assert!(!history.record(at(t0, 1_150), 20_000, TRIGGER));
    }

    #[test]
    fn a_stall_below_the_triggers_share_of_its_window_never_counts_one_at_it_does() {
        for (stalled_us, counts) in [(99_999, false), (100_000, true), (400_000, true)] {
            let t0 = Instant::now();
            let mut history = StallHistory::default();
            history.record(t0, 7, TRIGGER);
            // Readings in between (a trigger's wake-ups) change nothing.
            history.record(at(t0, 300), 7 + stalled_us / 2, TRIGGER);
            let seen = history.record(at(t0, 1_000), 7 + stalled_us, TRIGGER);
            assert_eq!(seen, counts, "{stalled_us} us in 1 s");
        }
        // A longer span needs the same share of it: 110 ms in 1.2 s is 9 %.
        let t0 = Instant::now();
        let mut history = StallHistory::default();
        history.record(t0, 0, TRIGGER);
        assert!(!history.record(at(t0, 1_200), 110_000, TRIGGER));
        let mut history = StallHistory::default();
        history.record(t0, 0, TRIGGER);
        assert!(history.record(at(t0, 1_200), 120_000, TRIGGER));
    }

    #[test]
    fn the_span_is_the_shortest_of_at_least_the_window() {
        let t0 = Instant::now();
        let mut history = StallHistory::default();
        // An old stall of 500 ms, then checks every second with none.
        history.record(t0, 0, TRIGGER);
        assert!(history.record(at(t0, 1_000), 500_000, TRIGGER));
        assert!(
            !history.record(at(t0, 2_000), 500_000, TRIGGER),
            "compared with the reading of 1 s ago, not with the first"
        );
        // A 2 s window (an unprivileged trigger, 200 ms in 2 s): readings
        // every 500 ms; 150 ms in the last 2 s is below it, 200 ms is not.
        let trigger = (200_000, 2_000_000);
        let mut history = StallHistory::default();
        for (ms, total) in [(0, 0), (500, 0), (1_000, 50_000), (1_500, 100_000)] {
            assert!(!history.record(at(t0, ms), total, trigger), "{ms} ms");
        }
        assert!(!history.record(at(t0, 2_000), 150_000, trigger));
        assert!(
            history.record(at(t0, 2_500), 200_000, trigger),
            "200 ms since the reading at 500 ms"
        );
    }

    #[test]
    fn the_history_stays_short() {
        let t0 = Instant::now();
        let mut history = StallHistory::default();
        // A reading every millisecond for 10 s (a flood of wake-ups).
        for ms in 0..10_000 {
            history.record(at(t0, ms), ms * 100, TRIGGER);
        }
        assert!(history.len() <= 18, "{} readings", history.len());
        // 10 % of every millisecond: exactly the share.
        assert!(history.record(at(t0, 10_000), 1_000_000, TRIGGER));
        // A zero window is never compared.
        assert!(!StallHistory::default().record(t0, 0, (0, 0)));
    }
}
