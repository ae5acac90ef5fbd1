//! The statistics the bench prints: latency percentiles, the median of
//! repeated runs and the spread of lost records over the repeats of a
//! burst. Pure functions over the samples.

use serde::Serialize;

/// Latency percentiles, in microseconds (rounded down from nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    /// The median.
    pub(crate) p50: u64,
    /// The 99th percentile.
    pub(crate) p99: u64,
    /// The slowest.
    pub(crate) max: u64,
}

/// The p50, p99 and max of latencies in nanoseconds, in µs (nearest rank
/// on `len - 1`); `None` for no samples. Sorts `samples`.
pub(crate) fn percentiles(samples: &mut [u64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] / 1000;
    Some(Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max: at(1.0),
    })
}

/// The median (the upper one of an even count) rounded to a tenth; `None`
/// for no values.
pub(crate) fn median_tenth(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(tenth(values[values.len() / 2]))
}

/// `value` rounded to a tenth.
pub(crate) fn tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Lost records over the repeats of one burst: min, median, max, and the
/// runs that lost any.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LostSpread {
    /// Fewest lost (`None` for no runs).
    pub(crate) min: Option<u64>,
    /// The median (the upper one of an even count).
    pub(crate) median: Option<u64>,
    /// Most lost.
    pub(crate) max: Option<u64>,
    /// Runs that lost any.
    pub(crate) runs_with_loss: usize,
}

/// The spread of `lost` (one count per run).
pub(crate) fn lost_spread(mut lost: Vec<u64>) -> LostSpread {
    lost.sort_unstable();
    LostSpread {
        min: lost.first().copied(),
        median: lost.get(lost.len() / 2).copied(),
        max: lost.last().copied(),
        runs_with_loss: lost.iter().filter(|&&l| l > 0).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank_in_microseconds() {
        // 1..=100 ms, shuffled: p50 at index round(99 * 0.5) = 50 (51 ms).
        let mut samples: Vec<u64> = (1..=100).rev().map(|ms| ms * 1_000_000).collect();
        assert_eq!(
            percentiles(&mut samples),
            Some(Percentiles {
                p50: 51_000,
                p99: 99_000,
                max: 100_000
            })
        );
        assert_eq!(
            percentiles(&mut [1_999]),
            Some(Percentiles {
                p50: 1,
                p99: 1,
                max: 1
            })
        );
        assert_eq!(percentiles(&mut []), None);
    }

    #[test]
    fn median_of_runs_to_a_tenth() {
        assert_eq!(median_tenth(vec![40.74, 84.7, 29.51]), Some(40.7));
        // Even count: the upper middle value.
        assert_eq!(median_tenth(vec![1.0, 4.0, 2.0, 3.0]), Some(3.0));
        assert_eq!(median_tenth(Vec::new()), None);
    }

    #[test]
    fn lost_spread_over_runs() {
        assert_eq!(
            lost_spread(vec![5, 0, 12, 0, 3]),
            LostSpread {
                min: Some(0),
                median: Some(3),
                max: Some(12),
                runs_with_loss: 3
            }
        );
        assert_eq!(
            lost_spread(Vec::new()),
            LostSpread {
                min: None,
                median: None,
                max: None,
                runs_with_loss: 0
            }
        );
    }
}
