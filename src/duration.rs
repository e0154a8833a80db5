//! Periods as people write them in flags and volume attributes: a whole,
//! positive number and its unit (`30s`, `10m`, `1h`, `1d`).

use std::time::Duration;

/// Parses a period: a whole, positive number followed by `s`, `m`, `h` or
/// `d`; anything else is refused with examples, as sizes are.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (examples: 30s, 10m, 1h, 1d)");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(seconds)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?} is too long")),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("1s").unwrap().as_secs(), 1);
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("1d").unwrap().as_secs(), 86_400);
        for bad in [
            "",
            "s",
            "1",
            "0s",
            "1.5h",
            "-1s",
            "1 h",
            "1w",
            "1H",
            "99999999999999999999d",
        ] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
        assert!(
            parse_duration("often")
                .unwrap_err()
                .contains("30s, 10m, 1h, 1d")
        );
    }
}
