//! Times on the command line: `7d`, `90m`, RFC 3339, a date, epoch seconds (10 digits). Pure: "now" is passed in.

use std::str::FromStr;

use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error(
        "{0:?} is not a time: use an age (30s, 15m, 2h, 7d, 2w), an RFC 3339 time (2026-11-27T10:00:00Z), a date \
         (2026-11-27, UTC) or epoch seconds (10 digits, 1764237600)"
    )]
    Malformed(String),
    /// A bare number that is not 10 digits: `7` could be meant as 7 days, 7 hours or 7 s after 1970.
    #[error(
        "{0:?} is ambiguous: an age needs its unit (7s, 7m, 7h, 7d, 7w); epoch seconds have 10 digits \
         (1764237600){1}"
    )]
    BareNumber(String, &'static str),
}

/// Epoch seconds are accepted as exactly this many digits: 2001-09-09 to 2286-11-20.
const EPOCH_DIGITS: usize = 10;

/// The epoch second `text` names, `now` being the current epoch second. An age counts back from `now`.
pub fn parse(text: &str, now: u64) -> Result<u64, TimeError> {
    let bad = || TimeError::Malformed(text.trim().to_owned());
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        if text.len() != EPOCH_DIGITS {
            let hint =
                if text.len() == 13 { "; this looks like epoch milliseconds: drop the last 3 digits" } else { "" };
            return Err(TimeError::BareNumber(text.to_owned(), hint));
        }
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
        for text in ["", "d", "7x", "-7d", "7.5d", "yesterday", "2025-13-01", "2025-11-27T25:00:00Z", "1e9", "-7"] {
            let err = parse(text, NOW).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("{:?}", text.trim())) && err.contains("RFC 3339"), "{text}: {err}");
        }
        assert!(parse("1969-12-31T00:00:00Z", NOW).is_err(), "before the epoch");
    }

    #[test]
    fn a_bare_number_is_epoch_seconds_only_with_10_digits() {
        assert_eq!(parse("1000000000", NOW), Ok(1_000_000_000));
        assert_eq!(parse("9999999999", NOW), Ok(9_999_999_999));
        for text in ["0", "7", "30", "123456789", "00000000007", "99999999999999999999999"] {
            let err = parse(text, NOW).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("ambiguous") && err.contains("7d") && err.contains("10 digits"), "{text}: {err}");
        }
        let millis = parse("1764237600000", NOW).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(millis.contains("epoch milliseconds"), "{millis}");
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
