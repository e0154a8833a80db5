//! Byte sizes as people write them (`5GB`, `500MB`, `1.5GiB`, `0`) and
//! as reports print them.

/// Parses a size: a number with an optional unit, decimal (`kB`, `MB`, `GB`,
/// `TB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`, `TiB`: powers of
/// 1024); case and spaces do not matter; `B` or no unit means bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let split = compact
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(compact.len());
    let (number, unit) = compact.split_at(split);
    let bad = || format!("{text:?} is not a size (examples: 5GB, 500MB, 1.5GiB, 0)");
    if number.is_empty() || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = (value * factor).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
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
        for bad in ["", "GB", "5XB", "-1GB", "1.2.3MB", "1e3", "99999999999TB"] {
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
