//! Times on the command line: `7d`, `90m`, RFC 3339, a date, epoch seconds. Pure: "now" is passed in.

use std::str::FromStr;

use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time: use an age (30s, 15m, 2h, 7d, 2w), an RFC 3339 time (2026-11-27T10:00:00Z), a date \
     (2026-11-27, UTC) or epoch seconds"
)]
pub struct TimeError(pub String);

/// The epoch second `text` names, `now` being the current epoch second. An age counts back from `now`.
pub fn parse(text: &str, now: u64) -> Result<u64, TimeError> {
    let bad = || TimeError(text.to_owned());
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().map_err(|_| bad());
    }
    if let Some((number, unit)) = text.split_at_checked(text.len() - 1)
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
    {
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        return n.checked_mul(seconds).map(|age| now.saturating_sub(age)).ok_or_else(bad);
    }
    let timestamp = if text.len() == 10 && text.as_bytes().get(4) == Some(&b'-') {
        Timestamp::from_str(&format!("{text}T00:00:00Z"))
    } else {
        Timestamp::from_str(text)
    }
    .map_err(|_| bad())?;
    u64::try_from(timestamp.as_second()).map_err(|_| bad())
}

/// `epoch_seconds` as RFC 3339 UTC (`2026-11-27T10:00:00Z`).
pub fn format_seconds(epoch_seconds: u64) -> String {
    i64::try_from(epoch_seconds)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(|| epoch_seconds.to_string(), |t| t.to_string())
}

/// `epoch_ms` as RFC 3339 UTC, to the second.
pub fn format_ms(epoch_ms: u64) -> String {
    format_seconds(epoch_ms / 1000)
}

/// A duration for people: `42s`, `3m 05s`, `2h 10m`.
pub fn format_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3_600, s % 3_600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_764_237_600; // 2025-11-27T10:00:00Z

    #[test]
    fn ages_count_back_from_now() {
        for (text, age) in [("30s", 30), ("15m", 900), ("2h", 7_200), ("7d", 604_800), ("2w", 1_209_600), ("0d", 0)] {
            assert_eq!(parse(text, NOW), Ok(NOW - age), "{text}");
        }
        assert_eq!(parse("99999999999w", 5), Ok(0), "an age before the epoch is the epoch");
    }

    #[test]
    fn absolute_times() {
        assert_eq!(parse("2025-11-27T10:00:00Z", 0), Ok(NOW));
        assert_eq!(parse("2025-11-27T19:00:00+09:00", 0), Ok(NOW));
        assert_eq!(parse("2025-11-27", 0), Ok(NOW - 10 * 3_600));
        assert_eq!(parse("1764237600", 0), Ok(NOW));
        assert_eq!(parse(" 7d ", NOW), Ok(NOW - 604_800));
    }

    #[test]
    fn malformed_times_are_refused_naming_the_text() {
        for text in ["", "7", "d", "7x", "-7d", "7.5d", "yesterday", "2025-13-01", "2025-11-27T25:00:00Z", "1e9"] {
            let err = parse(text, NOW);
            if text == "7" {
                assert_eq!(err, Ok(7), "digits alone are epoch seconds");
                continue;
            }
            let err = err.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("{:?}", text.trim())) && err.contains("RFC 3339"), "{text}: {err}");
        }
        assert!(parse("1969-12-31T00:00:00Z", NOW).is_err(), "before the epoch");
    }

    #[test]
    fn formats() {
        assert_eq!(format_seconds(NOW), "2025-11-27T10:00:00Z");
        assert_eq!(format_ms(NOW * 1000 + 999), "2025-11-27T10:00:00Z");
        assert_eq!(format_duration(42), "42s");
        assert_eq!(format_duration(185), "3m 05s");
        assert_eq!(format_duration(7_800), "2h 10m");
    }
}
