//! Go-style durations (`1h30m`, `45s`, `1.5h`, `0`), the format Kubernetes users write in
//! Tekton, Argo and our own `history.maxAge`.

use std::time::Duration;

const UNITS: [(&str, f64); 7] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
];

/// Parses a non-negative Go duration; `None` when it is not one.
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    if value == "0" {
        return Some(Duration::ZERO);
    }
    if value.is_empty() {
        return None;
    }
    let mut rest = value;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // The longest unit that matches, so `ms` is not read as `m` followed by `s`.
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        seconds += number * scale;
        rest = &rest[unit.len()..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("45m0s"), Some(Duration::from_secs(2700)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(
            parse_go_duration("168h"),
            Some(Duration::from_secs(168 * 3600))
        );
    }

    #[test]
    fn other_text_is_not_a_duration() {
        for bad in ["", "1", "h", "an hour", "1d", "-1h", "1h-", "1..5h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
