//! Kubernetes resource quantities ("128Mi", "1.5Gi", "1e3", "100m") in bytes.

/// Bytes in a Kubernetes quantity ("128Mi", "1.5Gi", "1G", "1e3", "100m"),
/// rounded up to a whole byte as Kubernetes rounds; `None` when the text is
/// not a quantity, is negative, or does not fit in a u64.
pub fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let mut mantissa: u128 = 0;
    for digit in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
    }
    let pow10 = |exp: u32| 10u128.checked_pow(exp);
    // value = mantissa * multiplier / 10^(fraction digits + shrink)
    let (multiplier, shrink): (u128, u32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, 9),
        "u" => (1, 6),
        "m" => (1, 3),
        "k" => (pow10(3)?, 0),
        "M" => (pow10(6)?, 0),
        "G" => (pow10(9)?, 0),
        "T" => (pow10(12)?, 0),
        "P" => (pow10(15)?, 0),
        "E" => (pow10(18)?, 0),
        _ => {
            let exponent: i32 = suffix.strip_prefix(['e', 'E'])?.parse().ok()?;
            if exponent < 0 {
                (1, exponent.unsigned_abs())
            } else {
                (pow10(exponent.unsigned_abs())?, 0)
            }
        }
    };
    let divisor = pow10(u32::try_from(fraction.len()).ok()?)?.checked_mul(pow10(shrink)?)?;
    let scaled = mantissa.checked_mul(multiplier)?;
    if negative && scaled != 0 {
        return None;
    }
    u64::try_from(scaled.div_ceil(divisor)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        let table: &[(&str, Option<u64>)] = &[
            ("128Mi", Some(128 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1.5Gi", Some(1_610_612_736)),
            ("0.5Ki", Some(512)),
            ("1Ki", Some(1024)),
            ("2Ti", Some(2 << 40)),
            ("1Pi", Some(1 << 50)),
            ("15Ei", Some(15 << 60)),
            ("16Ei", None), // 2^64: does not fit
            ("1G", Some(1_000_000_000)),
            ("512M", Some(512_000_000)),
            ("100000k", Some(100_000_000)),
            ("1T", Some(1_000_000_000_000)),
            ("1P", Some(1_000_000_000_000_000)),
            ("2E", Some(2_000_000_000_000_000_000)),
            ("18E", Some(18_000_000_000_000_000_000)),
            ("19E", None),
            ("1048576", Some(1_048_576)),
            ("0", Some(0)),
            ("+5Mi", Some(5 << 20)),
            ("1e3", Some(1000)),
            ("1E3", Some(1000)),
            ("1.5e3", Some(1500)),
            ("12e+2", Some(1200)),
            ("5e-1", Some(1)), // half a byte rounds up, as Kubernetes' Value() does
            ("1.1", Some(2)),
            ("100m", Some(1)),
            ("1500m", Some(2)),
            ("1000000u", Some(1)),
            ("1000000000n", Some(1)),
            ("0.000001", Some(1)),
            (".5Ki", Some(512)),
            ("1.", Some(1)),
            (" 64Mi ", Some(64 << 20)),
            ("-0", Some(0)),
            ("-1Mi", None),
            ("", None),
            ("Mi", None),
            (".", None),
            ("1.2.3", None),
            ("12MB", None),
            ("1ki", None),
            ("1K", None),
            ("1 Mi", None),
            ("1e", None),
            ("1e3.5", None),
            ("abc", None),
            ("1e40", None),
            ("99999999999999999999999999999999999999999", None),
        ];
        for (text, want) in table {
            assert_eq!(quantity_bytes(text), *want, "{text:?}");
        }
    }
}
