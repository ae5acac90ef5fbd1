//! Durations as every flag of the command line takes them: humantime's
//! syntax (`500ms`, `30s`, `2m`, `6h`, `30d`, `1h 30m`), and a bare number
//! as seconds (`30`, `0.5`), the form three flags took before they moved to
//! humantime.

use std::time::Duration;

/// Parses `text` as a duration: a bare non-negative number is seconds,
/// anything else goes to [`humantime::parse_duration`]. The error says what
/// is expected (clap prints it after the flag's name, exit code 2).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("{text:?} is not a duration in seconds (0 or more)"));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("{err} (a duration such as 500ms, 30s, 2m, 6h or 30d; a bare number is seconds)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_and_bare_seconds() {
        for (text, expected) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("6h", Duration::from_secs(6 * 3600)),
            ("30d", Duration::from_secs(30 * 86400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("30", Duration::from_secs(30)),
            ("0.5", Duration::from_millis(500)),
            ("21600.0", Duration::from_secs(21600)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn what_is_not_a_duration_says_what_is() {
        for text in ["-1", "NaN", "inf", "30 parsecs", "", "s"] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains("duration"),
                "{text:?} gave {err:?}, which does not say what a duration is"
            );
        }
    }
}
