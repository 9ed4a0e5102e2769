//! Kubernetes resource quantities (`100Mi`, `1.5`, `250m`, `2e3`) as numbers.

/// Why a text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is not a Kubernetes quantity: {}", crate::quoted(.text), .why)]
pub struct QuantityError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The value of a quantity in base units (bytes, cores): `100Mi` is
/// 104857600, `250m` is 0.25, `1k` is 1000, `1e3` is 1000.
///
/// Suffixes: binary `Ki Mi Gi Ti Pi Ei`, decimal `n u m k M G T P E`, or an
/// exponent `e`/`E` followed by an integer.
pub fn parse(text: &str) -> Result<f64, QuantityError> {
    let err = |why| QuantityError {
        text: text.to_owned(),
        why,
    };
    let s = text.trim();
    let (sign, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (-1.0, &s[1..]),
        Some(b'+') => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    let end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err("it does not start with a number"));
    }
    let number: f64 = number
        .parse()
        .map_err(|_| err("it does not start with a number"))?;
    // (multiplier, divisor): dividing keeps `250m` exactly 0.25.
    let (mul, div) = match suffix {
        "" => (1.0, 1.0),
        "Ki" => (1024f64, 1.0),
        "Mi" => (1024f64.powi(2), 1.0),
        "Gi" => (1024f64.powi(3), 1.0),
        "Ti" => (1024f64.powi(4), 1.0),
        "Pi" => (1024f64.powi(5), 1.0),
        "Ei" => (1024f64.powi(6), 1.0),
        "n" => (1.0, 1e9),
        "u" => (1.0, 1e6),
        "m" => (1.0, 1e3),
        "k" => (1e3, 1.0),
        "M" => (1e6, 1.0),
        "G" => (1e9, 1.0),
        "T" => (1e12, 1.0),
        "P" => (1e15, 1.0),
        "E" => (1e18, 1.0),
        exp if exp.starts_with(['e', 'E']) => {
            let power: i32 = exp[1..]
                .parse()
                .map_err(|_| err("an exponent must be an integer, like 2e3"))?;
            if power >= 0 {
                (10f64.powi(power), 1.0)
            } else {
                (1.0, 10f64.powi(-power))
            }
        }
        _ => {
            return Err(err(
                "unknown suffix; use Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent",
            ))
        }
    };
    Ok(sign * number * mul / div)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse("100Mi"), Ok(104_857_600.0));
        assert_eq!(parse("1Gi"), Ok(1_073_741_824.0));
        assert_eq!(parse("1Ti"), Ok(1024f64.powi(4)));
        assert_eq!(parse("1k"), Ok(1000.0));
        assert_eq!(parse("1M"), Ok(1_000_000.0));
        assert_eq!(parse("2"), Ok(2.0));
        assert_eq!(parse("1.5"), Ok(1.5));
        assert_eq!(parse("250m"), Ok(0.25));
        assert_eq!(parse("2e3"), Ok(2000.0));
        assert_eq!(parse("-1Ki"), Ok(-1024.0));
        assert!(parse("1Gi").expect("q") > parse("1000Mi").expect("q"));
        assert!(parse("1G").expect("q") < parse("1Gi").expect("q"));
    }

    #[test]
    fn not_quantities() {
        for bad in ["", "Mi", "1.2.3", "12 Mi", "1mi", "1e", "1ex", "."] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
