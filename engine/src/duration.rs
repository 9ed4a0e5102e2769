//! Durations as workflows write them (`500ms`, `90s`, `5m`), and the bound
//! every one of them is held to.

use std::time::Duration;

/// The longest duration a workflow may write (a timeout, a retry wait): 30
/// days. Anything longer is a typo, and a far-off deadline overflows timers.
pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parses a duration such as `500ms`, `90s` or `5m`, of at most [`MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "`{text}` is not a duration ({e}); write a number and a unit, like 500ms, 90s or 5m"
        )
    })?;
    if d > MAX {
        return Err(format!(
            "`{text}` is longer than 30 days, the longest duration kpilot accepts; write at most 30d"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30d"), Ok(MAX));
        let err = parse_duration("99999999999999h").expect_err("too long");
        assert!(err.contains("30 days"), "{err}");
        assert!(parse_duration("soon").is_err());
    }
}
