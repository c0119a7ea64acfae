//! Parsing of byte sizes given by users ("524288", "512KB", "1.5MB", "6MiB").
//! Knows nothing of which option a size belongs to; callers name the option in their error.

#![forbid(unsafe_code)]

use std::fmt;

/// Why a size was rejected. The message states the expected form; callers prefix it with the
/// option name and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a size, got nothing (use bytes or a number with B, KB, MB or GB)")]
    Empty,
    #[error("sizes cannot be negative (use bytes or a number with B, KB, MB or GB)")]
    Negative,
    #[error(
        "expected bytes or a number with B, KB, MB or GB (1024-based), e.g. 524288, 512KB or 1.5MB"
    )]
    Malformed,
    #[error("unknown unit '{0}': expected B, KB, MB or GB (or KiB, MiB, GiB)")]
    UnknownUnit(String),
    #[error("too large: sizes must be below 16 EiB")]
    Overflow,
}

/// Multiplier of a unit, case-insensitive. Units are 1024-based, as in the original.
fn unit_multiplier(unit: &str) -> Option<u64> {
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// Parses a size: digits, optionally a fraction, optionally a unit. Fractions of a byte are
/// rounded down ("1.5B" is 1 byte).
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    if s.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(num_end);
    let unit = unit.trim_start();
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(SizeError::Malformed);
    }
    let mult = unit_multiplier(unit).ok_or_else(|| {
        if unit.chars().all(|c| c.is_ascii_alphabetic()) {
            SizeError::UnknownUnit(unit.to_string())
        } else {
            SizeError::Malformed
        }
    })?;
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| SizeError::Overflow)?
    };
    let mut bytes = whole.checked_mul(mult).ok_or(SizeError::Overflow)?;
    if !frac.is_empty() {
        // Exact decimal arithmetic: frac / 10^digits * mult, in u128, rounded down. Digits
        // beyond 18 cannot change the result for multipliers up to 2^30.
        let digits = &frac[..frac.len().min(18)];
        let f: u128 = digits.parse().map_err(|_| SizeError::Malformed)?;
        let scale = 10u128.pow(digits.len() as u32);
        let part = (f * u128::from(mult) / scale) as u64;
        bytes = bytes.checked_add(part).ok_or(SizeError::Overflow)?;
    }
    Ok(bytes)
}

/// A size shown to humans in the same 1024-based units users type.
pub struct HumanSize(pub u64);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opts = humansize::FormatSizeOptions::from(humansize::BINARY)
            .decimal_places(1)
            .decimal_zeroes(0);
        f.write_str(&humansize::format_size(self.0, opts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes() {
        assert_eq!(parse_size("524288"), Ok(524288));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn units_are_1024_based_and_case_insensitive() {
        assert_eq!(parse_size("512KB"), Ok(512 * 1024));
        assert_eq!(parse_size("6mb"), Ok(6 << 20));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("3kib"), Ok(3 << 10));
        assert_eq!(parse_size("4 MB"), Ok(4 << 20));
    }

    #[test]
    fn decimals() {
        assert_eq!(parse_size("1.5MB"), Ok(1536 * 1024));
        assert_eq!(parse_size("0.5KB"), Ok(512));
        assert_eq!(parse_size(".5KB"), Ok(512));
        assert_eq!(parse_size("1.5B"), Ok(1));
    }

    #[test]
    fn rejects_empty_negative_and_malformed() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("  "), Err(SizeError::Empty));
        assert_eq!(parse_size("-1"), Err(SizeError::Negative));
        assert_eq!(parse_size("-5MB"), Err(SizeError::Negative));
        assert_eq!(parse_size("MB"), Err(SizeError::Malformed));
        assert_eq!(parse_size("1.2.3MB"), Err(SizeError::Malformed));
        assert_eq!(parse_size("."), Err(SizeError::Malformed));
        assert_eq!(parse_size("12 3"), Err(SizeError::Malformed));
    }

    #[test]
    fn rejects_unknown_units() {
        assert_eq!(parse_size("12XB"), Err(SizeError::UnknownUnit("XB".into())));
        assert_eq!(parse_size("5PB"), Err(SizeError::UnknownUnit("PB".into())));
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(parse_size("18446744073709551616"), Err(SizeError::Overflow));
        assert_eq!(parse_size("99999999999GB"), Err(SizeError::Overflow));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn human_size_uses_binary_units() {
        assert_eq!(HumanSize(6 << 20).to_string(), "6 MiB");
        assert_eq!(HumanSize(1536).to_string(), "1.5 KiB");
        assert_eq!(HumanSize(12).to_string(), "12 B");
    }
}
