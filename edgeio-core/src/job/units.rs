//! Human units in descriptors: CPU in cores or millicores, memory and disk sizes, durations.
//!
//! Every function reads the text as written and computes with exact decimal arithmetic on
//! integers, so `0.3` cores is exactly 300 millicores and `1.5Gi` exactly 1,610,612,736 bytes;
//! nothing goes through a float, nothing wraps: an amount too large for its field is an error.
//!
//! | quantity | no unit | units |
//! |---|---|---|
//! | CPU ([`parse_cpu_millis`]) | cores (`2`, `0.5`) | `m` millicores (`500m`) |
//! | size ([`parse_bytes`]) | MB as Docker reads `m`: 2^20 bytes (`1000`) | `B`; decimal `K`/`k`, `M`, `G`, `T`; binary `Ki`, `Mi`, `Gi`, `Ti` |
//! | duration ([`parse_duration_ms`]) | milliseconds (`500`) | `ms`, `s`, `m` (minutes), `h` |
//!
//! A number may carry a fraction and an exponent (`1.5`, `1e3`), a leading `+`, and spaces
//! between the number and its unit. The result must be a whole number of the base unit
//! (millicores, bytes, milliseconds).

/// Millicores in one core.
pub const MILLIS_PER_CORE: u64 = 1000;
/// Most CPU a job may ask for: 1024 cores, in millicores.
pub const MAX_CPU_MILLIS: u64 = 1024 * MILLIS_PER_CORE;
/// Bytes in the descriptor's "MB": 2^20, as Docker reads `--memory 1000m`.
///
/// The thesis writes `memory: 1000 # in MB` and hands the number to Docker, which reads `m`
/// as mebibytes; reading it the same way keeps v0.1 descriptors meaning what they meant.
pub const BYTES_PER_MB: u64 = 1 << 20;
/// Largest memory or disk size accepted: 16 TiB.
pub const MAX_BYTES: u64 = 16 << 40;
/// Longest duration accepted: one hour, in milliseconds.
pub const MAX_DURATION_MS: u64 = 3_600_000;

/// Why a quantity was refused. The `Display` text is a rule, ready to follow a field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// The text does not start with a number.
    #[error("must be a number, optionally followed by a unit")]
    NotANumber,
    /// A unit this quantity does not know.
    #[error("unknown unit {unit:?}; use {expected}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The accepted units, for the message.
        expected: &'static str,
    },
    /// Zero or negative where only positive amounts make sense.
    #[error("must be positive")]
    NotPositive,
    /// Negative where zero is allowed.
    #[error("must not be negative")]
    Negative,
    /// Not a whole number of the base unit (`0.5B`, `0.1m` millicores).
    #[error("must be a whole number of {unit}")]
    NotWhole {
        /// The base unit (`bytes`, `millicores`, `milliseconds`).
        unit: &'static str,
    },
    /// Larger than the quantity's maximum (or too large to compute at all).
    #[error("must be at most {max}")]
    TooLarge {
        /// The maximum, as users write it (`16 TiB`).
        max: &'static str,
    },
    /// More significant digits than can be computed exactly.
    #[error("has too many digits")]
    TooManyDigits,
}

/// CPU in millicores from `"500m"` (millicores), `"0.5"` or `"2"` (cores).
///
/// The result is positive and at most [`MAX_CPU_MILLIS`].
pub fn parse_cpu_millis(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split(text, "1024 cores")?;
    let per_unit = match unit {
        "" => MILLIS_PER_CORE,
        "m" => 1,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_string(),
                expected: "m for millicores, or no unit for cores",
            })
        }
    };
    positive(number)?;
    let millis = number.times(per_unit, "millicores", "1024 cores")?;
    at_most(millis, MAX_CPU_MILLIS, "1024 cores")
}

/// Bytes from a size: a bare number is MB ([`BYTES_PER_MB`]); units `B`, `K`/`k`, `M`, `G`,
/// `T` (powers of 1000) and `Ki`, `Mi`, `Gi`, `Ti` (powers of 1024).
///
/// The result is positive and at most [`MAX_BYTES`].
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split(text, "16 TiB")?;
    let per_unit = match unit {
        "" => BYTES_PER_MB,
        "B" => 1,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_string(),
                expected: "B, K, M, G, T, Ki, Mi, Gi or Ti",
            })
        }
    };
    positive(number)?;
    let bytes = number.times(per_unit, "bytes", "16 TiB")?;
    at_most(bytes, MAX_BYTES, "16 TiB")
}

/// Milliseconds from a duration: a bare number is milliseconds; units `ms`, `s`, `m`, `h`.
///
/// Zero is allowed; the result is at most [`MAX_DURATION_MS`].
pub fn parse_duration_ms(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split(text, "1h")?;
    let per_unit = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(UnitError::UnknownUnit {
                unit: other.to_string(),
                expected: "ms, s, m or h",
            })
        }
    };
    if number.negative && number.mantissa != 0 {
        return Err(UnitError::Negative);
    }
    let ms = number.times(per_unit, "milliseconds", "1h")?;
    at_most(ms, MAX_DURATION_MS, "1h")
}

fn positive(number: Decimal) -> Result<(), UnitError> {
    if number.negative || number.mantissa == 0 {
        Err(UnitError::NotPositive)
    } else {
        Ok(())
    }
}

fn at_most(value: u128, max: u64, max_text: &'static str) -> Result<u64, UnitError> {
    match u64::try_from(value) {
        Ok(value) if value <= max => Ok(value),
        _ => Err(UnitError::TooLarge { max: max_text }),
    }
}

/// An exact decimal: `mantissa × 10^exponent`, the mantissa without trailing zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    mantissa: u128,
    exponent: i64,
}

impl Decimal {
    /// `self × factor` as a whole number.
    fn times(self, factor: u64, unit: &'static str, max: &'static str) -> Result<u128, UnitError> {
        if self.mantissa == 0 {
            return Ok(0);
        }
        let product =
            self.mantissa
                .checked_mul(u128::from(factor))
                .ok_or(if self.exponent >= 0 {
                    UnitError::TooLarge { max }
                } else {
                    UnitError::TooManyDigits
                })?;
        if self.exponent >= 0 {
            let scale = u32::try_from(self.exponent)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .ok_or(UnitError::TooLarge { max })?;
            product
                .checked_mul(scale)
                .ok_or(UnitError::TooLarge { max })
        } else {
            // A divisor past u128 is larger than any product, which is not zero here.
            let divisor = u32::try_from(self.exponent.unsigned_abs())
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .ok_or(UnitError::NotWhole { unit })?;
            if product % divisor == 0 {
                Ok(product / divisor)
            } else {
                Err(UnitError::NotWhole { unit })
            }
        }
    }
}

/// Splits `text` into its number and its unit (spaces around either are ignored); `max` names
/// the quantity's maximum for a number too long to compute.
fn split<'a>(text: &'a str, max: &'static str) -> Result<(Decimal, &'a str), UnitError> {
    let text = text.trim();
    let (number, rest) = parse_decimal(text, max)?;
    Ok((number, rest.trim_start()))
}

/// Reads `[+-]digits[.digits][(e|E)[+-]digits]` from the start of `text`.
fn parse_decimal<'a>(text: &'a str, max: &'static str) -> Result<(Decimal, &'a str), UnitError> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut negative = false;
    if let Some(&sign @ (b'+' | b'-')) = bytes.first() {
        negative = sign == b'-';
        at = 1;
    }
    let mut mantissa: u128 = 0;
    // Zeros seen after the last non-zero digit, not yet folded into the mantissa.
    let mut zeros: i64 = 0;
    let mut fraction_digits: i64 = 0;
    let mut digits = 0usize;
    let mut in_fraction = false;
    while let Some(&b) = bytes.get(at) {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                if in_fraction {
                    fraction_digits += 1;
                }
                if b == b'0' {
                    if mantissa != 0 {
                        zeros += 1;
                    }
                } else {
                    let scale = u32::try_from(zeros + 1)
                        .ok()
                        .and_then(|e| 10u128.checked_pow(e));
                    mantissa = scale
                        .and_then(|s| mantissa.checked_mul(s))
                        .and_then(|m| m.checked_add(u128::from(b - b'0')))
                        .ok_or(if in_fraction {
                            UnitError::TooManyDigits
                        } else {
                            // Only reachable for integer parts of 39 or more digits.
                            UnitError::TooLarge { max }
                        })?;
                    zeros = 0;
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            _ => break,
        }
        at += 1;
    }
    if digits == 0 {
        return Err(UnitError::NotANumber);
    }
    let mut exponent = zeros - fraction_digits;
    if let Some(b'e' | b'E') = bytes.get(at) {
        let mut look = at + 1;
        let mut exp_negative = false;
        if let Some(&sign @ (b'+' | b'-')) = bytes.get(look) {
            exp_negative = sign == b'-';
            look += 1;
        }
        if bytes.get(look).is_some_and(u8::is_ascii_digit) {
            let mut exp: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = bytes.get(look) {
                // Past a million the answer is "too large" or "not whole" either way.
                exp = (exp * 10 + i64::from(d - b'0')).min(1_000_000);
                look += 1;
            }
            exponent += if exp_negative { -exp } else { exp };
            at = look;
        }
    }
    let rest = text.get(at..).unwrap_or("");
    Ok((
        Decimal {
            negative,
            mantissa,
            exponent,
        },
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_reads_cores_and_millicores() {
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("0.5"), Ok(500));
        assert_eq!(parse_cpu_millis("0.3"), Ok(300));
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis(" 250 m "), Ok(250));
        assert_eq!(parse_cpu_millis("1e0"), Ok(1000));
        assert_eq!(parse_cpu_millis("2.0"), Ok(2000));
        assert_eq!(parse_cpu_millis("1024"), Ok(1_024_000));
    }

    #[test]
    fn cpu_refuses_fractions_of_millicores_zero_and_too_many_cores() {
        assert_eq!(
            parse_cpu_millis("0.0005"),
            Err(UnitError::NotWhole { unit: "millicores" })
        );
        assert_eq!(
            parse_cpu_millis("500.5m"),
            Err(UnitError::NotWhole { unit: "millicores" })
        );
        assert_eq!(parse_cpu_millis("0"), Err(UnitError::NotPositive));
        assert_eq!(parse_cpu_millis("-1"), Err(UnitError::NotPositive));
        assert_eq!(
            parse_cpu_millis("1025"),
            Err(UnitError::TooLarge { max: "1024 cores" })
        );
        assert_eq!(
            parse_cpu_millis("1e300"),
            Err(UnitError::TooLarge { max: "1024 cores" })
        );
        assert_eq!(parse_cpu_millis("lots"), Err(UnitError::NotANumber));
        assert!(matches!(
            parse_cpu_millis("2 cores"),
            Err(UnitError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn bare_sizes_are_mebibytes_like_docker_reads_m() {
        assert_eq!(parse_bytes("1000"), Ok(1000 * 1024 * 1024));
        assert_eq!(parse_bytes("0.5"), Ok(512 * 1024));
    }

    #[test]
    fn size_units_are_decimal_or_binary() {
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_bytes("2Ti"), Ok(2 << 40));
        assert_eq!(parse_bytes("1Ki"), Ok(1024));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("1K"), Ok(1000));
        assert_eq!(parse_bytes("3M"), Ok(3_000_000));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_bytes("42B"), Ok(42));
        assert_eq!(parse_bytes("16Ti"), Ok(MAX_BYTES));
    }

    #[test]
    fn sizes_refuse_unknown_units_fractions_of_bytes_and_overflow() {
        assert!(matches!(
            parse_bytes("12MB"),
            Err(UnitError::UnknownUnit { ref unit, .. }) if unit == "MB"
        ));
        assert_eq!(
            parse_bytes("1.5B"),
            Err(UnitError::NotWhole { unit: "bytes" })
        );
        assert_eq!(parse_bytes("-5"), Err(UnitError::NotPositive));
        assert_eq!(parse_bytes("-0"), Err(UnitError::NotPositive));
        let too_large = Err(UnitError::TooLarge { max: "16 TiB" });
        assert_eq!(parse_bytes("17Ti"), too_large);
        assert_eq!(
            parse_bytes("99999999999999999999999999999999999Ti"),
            too_large
        );
        assert_eq!(parse_bytes("1e30"), too_large);
        assert!(parse_bytes(&"9".repeat(500)).is_err());
        assert_eq!(
            parse_bytes(&format!("0.{}1", "0".repeat(60))),
            Err(UnitError::NotWhole { unit: "bytes" })
        );
        assert_eq!(parse_bytes(""), Err(UnitError::NotANumber));
        assert_eq!(parse_bytes("."), Err(UnitError::NotANumber));
        assert_eq!(parse_bytes("Mi"), Err(UnitError::NotANumber));
    }

    #[test]
    fn durations_read_ms_s_m_h() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("1h"), Ok(MAX_DURATION_MS));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("-1s"), Err(UnitError::Negative));
        assert_eq!(
            parse_duration_ms("2h"),
            Err(UnitError::TooLarge { max: "1h" })
        );
        assert_eq!(
            parse_duration_ms("0.5ms"),
            Err(UnitError::NotWhole {
                unit: "milliseconds"
            })
        );
        assert!(matches!(
            parse_duration_ms("5 fortnights"),
            Err(UnitError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn exponents_are_exact() {
        assert_eq!(parse_bytes("1e3B"), Ok(1000));
        assert_eq!(
            parse_bytes("25e-1B"),
            Err(UnitError::NotWhole { unit: "bytes" })
        );
        assert_eq!(parse_bytes("20e-1B"), Ok(2));
        assert_eq!(parse_cpu_millis("5e-1"), Ok(500));
        // An "e" not followed by digits is a unit, not an exponent.
        assert!(matches!(
            parse_bytes("1e"),
            Err(UnitError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn error_texts_read_as_rules() {
        assert_eq!(UnitError::NotPositive.to_string(), "must be positive");
        assert_eq!(
            UnitError::UnknownUnit {
                unit: "XB".into(),
                expected: "B or Ki"
            }
            .to_string(),
            "unknown unit \"XB\"; use B or Ki"
        );
    }
}
