//! Byte sizes as people write them (`5GB`, `500MB`, `1.5GiB`, `0`) and
//! as reports print them; counts of things too.

/// `1 file`, `2 files`.
pub fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Digits after the point that are kept; more are refused rather than
/// rounded away (no one means a size to a billionth of a byte).
const MAX_DECIMALS: usize = 9;

/// Parses a size: a number with an optional unit, decimal (`kB`, `MB`, `GB`,
/// `TB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`, `TiB`: powers of
/// 1024); case and spaces do not matter; `B` or no unit means bytes. The
/// arithmetic is exact (integers, rounded to the nearest byte at the end),
/// so `1.5GiB` is 1610612736 whatever floating point would say.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a size (examples: 5GB, 500MB, 1.5GiB, 0)");
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let split = compact
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(compact.len());
    let (number, unit) = compact.split_at(split);
    let factor: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000u128.pow(2),
        "g" | "gb" => 1000u128.pow(3),
        "t" | "tb" => 1000u128.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let (whole, decimals) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && decimals.is_empty())
        || decimals.contains('.')
        || decimals.len() > MAX_DECIMALS
    {
        return Err(bad());
    }
    // Leading zeros say nothing; past 20 digits a whole number of bytes
    // no longer fits in a u64 (and u128 arithmetic could overflow).
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return Err(bad());
    }
    let digits = |s: &str| -> Result<u128, String> {
        match s.is_empty() {
            true => Ok(0),
            false => s.parse::<u128>().map_err(|_| bad()),
        }
    };
    let scale = 10u128.pow(decimals.len() as u32);
    // (whole + decimals / scale) * factor, rounded half up.
    let scaled = (digits(whole)? * scale + digits(decimals)?) * factor;
    let bytes = (scaled + scale / 2) / scale;
    u64::try_from(bytes).map_err(|_| bad())
}

/// `1.2 GB`, `350 kB`, `12 B` (decimal units).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_write() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("500 mb"), Ok(500_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("0.5kB"), Ok(500));
        assert_eq!(parse_size(".5 KiB"), Ok(512));
        assert_eq!(parse_size("2.5B"), Ok(3), "rounded half up");
        assert_eq!(parse_size("0.1TiB"), Ok(109_951_162_778));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("00000000000000000000000001"), Ok(1));
        for bad in [
            "",
            ".",
            "GB",
            "5XB",
            "-1GB",
            "+1GB",
            "1.2.3MB",
            "1e3",
            "NaN",
            "inf",
            "99999999999TB",
            "18446744073709551616",
            "16777216TiB",
            "1.0000000001GB",
            "999999999999999999999999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_for_reports() {
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_size(1_234_567), "1.2 MB");
        assert_eq!(format_size(5_000_000_000), "5.0 GB");
    }
}
