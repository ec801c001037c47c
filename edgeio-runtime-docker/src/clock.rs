//! The engine's timestamps (RFC 3339) as Unix nanoseconds.
//!
//! Event replay and log catch-up are asked for in the engine's clock, never in this host's:
//! over `tcp://` the engine may run on a machine whose clock differs.

/// `2026-11-23T10:00:01.5Z` or `…+01:00` → nanoseconds since the epoch.
pub(crate) fn unix_nanos(ts: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = ts.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if ts.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let mut rest = ts.get(19..)?;
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<9}", &fraction[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = rest.get(1..)?.split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3_600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // days from the civil date (Howard Hinnant's algorithm)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3_600 + mm * 60 + ss - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_read_as_unix_nanoseconds() {
        assert_eq!(unix_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_nanos("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000_000)
        );
        assert_eq!(
            unix_nanos("2026-11-23T10:00:01.123456789Z"),
            Some(1_795_428_001_123_456_789)
        );
        assert_eq!(
            unix_nanos("2026-11-23T11:00:01.5+01:00"),
            Some(1_795_428_001_500_000_000)
        );
        assert_eq!(unix_nanos("2026-11-23 10:00:01Z"), None);
        assert_eq!(unix_nanos("yesterday"), None);
    }
}
