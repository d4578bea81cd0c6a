//! Parsers for the human-friendly values a config file holds.

use std::time::Duration;

pub const DURATION_FORMS: &str =
    r#"a number with a unit: "500ms", "90s", "5m", "2h", "1d", or a sum like "1h30m""#;
pub const SIZE_FORMS: &str =
    r#"a number of bytes, or a number with a unit: "512KB", "50MB", "1GB" (or KiB/MiB/GiB)"#;

/// The longest duration a config may hold: longer waits are mistakes, and bounding them here
/// keeps every deadline vigil computes far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// `"90s"`, `"5m"`, `"1h30m"`, `"250ms"`, `"2d"`. Whitespace between parts is allowed.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` is not a number", &rest[..digits]))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ms" | "msec" | "millisecond" | "milliseconds" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86_400.0,
            "" => return Err(format!("`{s}` has no unit")),
            other => return Err(format!("unknown unit `{other}`")),
        };
        let too_long = || format!("`{text}` is too long: durations are at most 365d");
        let part = Duration::try_from_secs_f64(number * seconds).map_err(|_| too_long())?;
        total = total
            .checked_add(part)
            .filter(|t| *t <= MAX_DURATION)
            .ok_or_else(too_long)?;
    }
    Ok(total)
}

/// `"50MB"`, `"10 MiB"`, `"1GB"`, `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split]
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let factor: f64 = match text[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit `{other}`")),
    };
    Ok((number * factor) as u64)
}

/// A node name: what a person would call the host in an alert (a hostname, `fra-1`).
pub fn node_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("`{s}` must be 1 to 64 characters"));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(format!(
            "`{s}` has {c:?}: use letters, digits, `-`, `_` and `.`"
        )),
        None => Ok(()),
    }
}

/// This machine's hostname, the default node name.
pub fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if node_name(&name).is_ok() {
        name
    } else {
        "localhost".to_string()
    }
}

/// The closest known name, when it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("60").unwrap_err().contains("no unit"));
        assert_eq!(parse_duration("5 minutes"), Ok(Duration::from_secs(300)));
        assert!(
            parse_duration("5 mn")
                .unwrap_err()
                .contains("unknown unit `mn`")
        );
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        for absurd in [
            "366d",
            "99999999999999999999d",
            "5000000000000000000s",
            "1e3d",
        ] {
            let e = parse_duration(absurd).unwrap_err();
            assert!(
                e.contains("at most 365d") || e.contains("unknown unit"),
                "{absurd}: {e}"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("10 MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("comand", &["command", "cwd"]), Some("command"));
        assert_eq!(
            did_you_mean("max_restart", &["max_restarts", "window"]),
            Some("max_restarts")
        );
        assert_eq!(did_you_mean("zzz", &["command", "cwd"]), None);
    }
}
