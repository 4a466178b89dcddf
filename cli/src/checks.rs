//! Checks of command-line values that clap's types do not make: numbers in a meaningful range (never NaN, an
//! infinity, a negative or an overflow) and push ids by shadow-push's own rule. Used as clap value parsers, so a bad
//! value is bad usage (exit 2) with clap's message naming the option, before any AWS call. Pure.

use std::time::Duration;

use shadow_core::push::push_id_problem;
use shadow_core::{ShadowName, ThingName};

/// `--interval`: the poll period, in seconds.
pub const INTERVAL_SECONDS: (f64, f64) = (0.05, 60.0);
/// `--stall-after`: at most a week, in seconds (a lease older than that is long past any hand-off).
pub const MAX_STALL_AFTER_SECONDS: u64 = 7 * 86_400;

/// Seconds between two polls: a finite decimal within [`INTERVAL_SECONDS`].
pub fn interval(text: &str) -> Result<Duration, String> {
    let (low, high) = INTERVAL_SECONDS;
    let range = format!("a number of seconds from {low} to {high}");
    let seconds: f64 = text.trim().parse().map_err(|_| format!("not a number; use {range}"))?;
    if !seconds.is_finite() {
        return Err(format!("not a finite number; use {range}"));
    }
    if !(low..=high).contains(&seconds) {
        return Err(format!("out of range; use {range}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A whole number of seconds from 1 to [`MAX_STALL_AFTER_SECONDS`].
pub fn stall_after(text: &str) -> Result<u64, String> {
    whole(text, 1, MAX_STALL_AFTER_SECONDS, "seconds")
}

/// A count of at least 1 (`push list --limit`: 0 would list nothing).
pub fn count(text: &str) -> Result<usize, String> {
    whole(text, 1, u64::from(u32::MAX), "").map(|n| n as usize)
}

/// A count where 0 means no limit (`history --limit`).
pub fn count_or_zero(text: &str) -> Result<usize, String> {
    whole(text, 0, u64::from(u32::MAX), "").map(|n| n as usize)
}

fn whole(text: &str, low: u64, high: u64, unit: &str) -> Result<u64, String> {
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    let range = format!("a whole number{unit} from {low} to {high}");
    let trimmed = text.trim();
    if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a whole number; use {range}"));
    }
    match trimmed.parse::<u64>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(format!("out of range; use {range}")),
    }
}

/// A push id as shadow-push accepts it (letters, digits and `- _ . :`, at most 64 bytes).
pub fn push_id(text: &str) -> Result<String, String> {
    match push_id_problem(text) {
        Some(problem) => Err(format!("push id {text:?} {problem}")),
        None => Ok(text.to_owned()),
    }
}

/// A time (`--since`, `--until`) as an epoch second: an age counts back from now (see [`crate::when::parse`]).
pub fn time(text: &str) -> Result<u64, String> {
    crate::when::parse(text, crate::now_secs()).map_err(|e| e.to_string())
}

/// A dotted path into a shadow section (`settings.mode`): keys separated by dots, none empty.
pub fn leaf_path(text: &str) -> Result<String, String> {
    if text.is_empty() || text.split('.').any(str::is_empty) {
        return Err(format!("path {text:?} must be keys separated by dots (settings.mode), none of them empty"));
    }
    Ok(text.to_owned())
}

/// A thing's name by AWS IoT's rule (`shared/core/src/names.rs`).
pub fn thing_name(text: &str) -> Result<String, String> {
    ThingName::parse(text).map(String::from).map_err(|e| format!("thing name {text:?} {e}"))
}

/// A named shadow's name by AWS IoT's rule, not one of AWS's own (`$...`).
pub fn shadow_name(text: &str) -> Result<String, String> {
    ShadowName::parse_user(text).map(String::from).map_err(|e| format!("shadow name {text:?} {e}"))
}

/// `--profile`: a profile's name, as the AWS config files hold it (not empty, no spaces or brackets).
pub fn profile(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty; name a profile of ~/.aws/config (`aws configure list-profiles`)".into());
    }
    match text.chars().find(|c| c.is_whitespace() || c.is_control() || "[]".contains(*c)) {
        Some(c) => Err(format!("profile {text:?} contains {c:?}, which no profile name holds")),
        None => Ok(text.to_owned()),
    }
}

/// `--region`: an AWS region's name (`eu-west-1`): lowercase letters, digits and hyphens.
pub fn region(text: &str) -> Result<String, String> {
    let well_formed = !text.is_empty()
        && text.len() <= 32
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if well_formed { Ok(text.to_owned()) } else { Err(format!("{text:?} is not a region name (such as eu-west-1)")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_finite_and_in_range() {
        assert_eq!(interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(interval("60"), Ok(Duration::from_secs(60)));
        for bad in ["nan", "NaN", "inf", "-inf", "infinity", "-1", "0", "0.01", "61", "1e308", "1e400", "", "x", "1s"] {
            let err = interval(bad).err().unwrap_or_default();
            assert!(err.contains("from 0.05 to 60"), "{bad}: {err}");
        }
    }

    #[test]
    fn whole_numbers_refuse_signs_fractions_zero_and_overflow() {
        assert_eq!(stall_after("300"), Ok(300));
        assert_eq!(count("1"), Ok(1));
        assert_eq!(count_or_zero("0"), Ok(0));
        for bad in ["0", "-1", "+1", "1.5", "nan", "", "604801", "18446744073709551616", "99999999999999999999999"] {
            let err = stall_after(bad).err().unwrap_or_default();
            assert!(err.contains("from 1 to 604800"), "{bad}: {err}");
        }
        for bad in ["0", "-3", "4294967296", "1e3"] {
            assert!(count(bad).is_err(), "{bad}");
        }
        assert!(count_or_zero("-1").is_err());
    }

    #[test]
    fn thing_and_shadow_names_follow_aws_iot() {
        assert_eq!(thing_name("dev-1:a_b"), Ok("dev-1:a_b".to_owned()));
        assert_eq!(thing_name("").err().unwrap_or_default(), "thing name \"\" is empty");
        assert!(thing_name("bad/thing").err().unwrap_or_default().contains("contains '/'"));
        assert!(shadow_name("$aws").err().unwrap_or_default().contains("reserves"));
        assert!(shadow_name(&"s".repeat(65)).err().unwrap_or_default().contains("maximum is 64"));
    }

    #[test]
    fn profiles_and_regions() {
        assert_eq!(profile("prod-admin"), Ok("prod-admin".to_owned()));
        assert!(profile("").is_err() && profile("a b").is_err() && profile("[x]").is_err());
        assert_eq!(region("eu-west-1"), Ok("eu-west-1".to_owned()));
        for bad in ["", "EU-WEST-1", "eu west 1", "-eu", "eu_west_1", "eu-west-1-"] {
            assert!(region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn push_ids_follow_shadow_pushs_rule() {
        assert_eq!(push_id("push-18c-ab.1:x_y"), Ok("push-18c-ab.1:x_y".to_owned()));
        assert_eq!(push_id("").err().unwrap_or_default(), "push id \"\" is empty");
        assert!(push_id("a b").err().unwrap_or_default().contains("contains ' '"));
        assert!(push_id(&"p".repeat(65)).err().unwrap_or_default().contains("at most 64"));
    }
}
