//! Quiet windows: times when stall verdicts are suspended (markets closed, maintenance).
//!
//! `"Sat 00:00-Sun 23:59 UTC"` (one range across days), `"daily 23:55-00:05 UTC"`,
//! `"Mon-Fri 21:00-22:00 +02:00"`. Both ends are included (the end minute is quiet until its
//! last second). Time zones are `UTC` or a fixed offset.

use std::fmt;

const MINUTE: i64 = 60_000;
const DAY: i64 = 1440 * MINUTE;
const WEEK: i64 = 7 * DAY;
/// 1970-01-01 was a Thursday, 3 days into a week that starts on Monday 00:00.
const EPOCH_INTO_WEEK: i64 = 3 * DAY;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

pub const QUIET_FORMS: &str =
    r#""Sat 00:00-Sun 23:59 UTC", "daily 23:55-00:05 UTC", "Mon-Fri 21:00-22:00 +02:00""#;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuietWindow {
    /// Intervals as (start, length) in milliseconds after Monday 00:00 of the window's zone.
    spans: Vec<(i64, i64)>,
    /// Offset of the window's zone from UTC.
    offset_ms: i64,
    text: String,
}

fn parse_day(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    DAYS.iter().position(|d| {
        let d = d.to_ascii_lowercase();
        lower == d || (lower.len() >= 3 && d.starts_with(&lower[..3]) && full_day_name(&lower, &d))
    })
}

fn full_day_name(given: &str, short: &str) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    given.len() == 3 || FULL.iter().any(|f| f.starts_with(short) && *f == given)
}

/// `"HH:MM"` → minutes after midnight.
fn parse_hm(s: &str) -> Result<i64, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a time (HH:MM)"))?;
    let h: i64 = h
        .parse()
        .map_err(|_| format!("`{s}` is not a time (HH:MM)"))?;
    let m: i64 = m
        .parse()
        .map_err(|_| format!("`{s}` is not a time (HH:MM)"))?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(format!("`{s}` is not a time of day"));
    }
    Ok(h * 60 + m)
}

fn parse_zone(s: &str) -> Result<i64, String> {
    let upper = s.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    if rest.is_empty() || rest == "Z" {
        return Ok(0);
    }
    let (sign, digits) = match rest.as_bytes()[0] {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => {
            return Err(format!(
                "unknown time zone `{s}`: use UTC or a fixed offset like +02:00"
            ));
        }
    };
    let (h, m) = match digits.split_once(':') {
        Some((h, m)) => (h, m),
        None if digits.len() == 4 => (&digits[..2], &digits[2..]),
        None => (digits, "0"),
    };
    let h: i64 = h.parse().map_err(|_| format!("bad offset `{s}`"))?;
    let m: i64 = m.parse().map_err(|_| format!("bad offset `{s}`"))?;
    if h > 14 || m > 59 {
        return Err(format!("bad offset `{s}`"));
    }
    Ok(sign * (h * 60 + m) * MINUTE)
}

/// `"Mon-Fri"`, `"Sat,Sun"`, `"daily"` → the days it names.
fn parse_days(s: &str) -> Result<Vec<usize>, String> {
    if s.eq_ignore_ascii_case("daily") || s.eq_ignore_ascii_case("everyday") {
        return Ok((0..7).collect());
    }
    if s.eq_ignore_ascii_case("weekdays") {
        return Ok((0..5).collect());
    }
    if s.eq_ignore_ascii_case("weekends") {
        return Ok(vec![5, 6]);
    }
    let mut days = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    parse_day(a).ok_or_else(|| format!("`{a}` is not a day"))?,
                    parse_day(b).ok_or_else(|| format!("`{b}` is not a day"))?,
                );
                let mut d = a;
                loop {
                    days.push(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days.push(parse_day(part).ok_or_else(|| format!("`{part}` is not a day"))?),
        }
    }
    Ok(days)
}

impl QuietWindow {
    pub fn parse(text: &str) -> Result<QuietWindow, String> {
        // Dashes may have spaces around them: "Sat 00:00 - Sun 23:59".
        let mut norm = text.trim().to_string();
        while norm.contains(" -") || norm.contains("- ") {
            norm = norm.replace(" -", "-").replace("- ", "-");
        }
        let words: Vec<&str> = norm.split_whitespace().collect();
        let (spans, zone) = match words.as_slice() {
            // "Sat 00:00-Sun 23:59 UTC": one range from a day and time to another.
            [day_a, glued, time_b, zone @ ..]
                if glued
                    .split_once('-')
                    .is_some_and(|(_, d)| parse_day(d).is_some()) =>
            {
                let (time_a, day_b) = glued.split_once('-').unwrap();
                let a = parse_day(day_a).ok_or_else(|| format!("`{day_a}` is not a day"))?;
                let b = parse_day(day_b).unwrap();
                let start = a as i64 * 1440 + parse_hm(time_a)?;
                let end = b as i64 * 1440 + parse_hm(time_b)?;
                let len = (end - start).rem_euclid(7 * 1440) + 1;
                (vec![(start * MINUTE, len * MINUTE)], zone)
            }
            // "daily 23:55-00:05 UTC", "Mon-Fri 21:00-22:00": the same times on each day.
            [days, range, zone @ ..] if range.contains('-') => {
                let (a, b) = range.split_once('-').unwrap();
                let (start, end) = (parse_hm(a)?, parse_hm(b)?);
                let len = (end - start).rem_euclid(1440) + 1;
                let spans = parse_days(days)?
                    .into_iter()
                    .map(|d| ((d as i64 * 1440 + start) * MINUTE, len * MINUTE))
                    .collect();
                (spans, zone)
            }
            _ => {
                return Err(format!("`{}` is not a quiet window", text.trim()));
            }
        };
        let offset_ms = match zone {
            [] => 0,
            [z] => parse_zone(z)?,
            _ => {
                return Err(format!(
                    "`{}` has extra words after the time zone",
                    text.trim()
                ));
            }
        };
        Ok(QuietWindow {
            spans,
            offset_ms,
            text: text.trim().to_string(),
        })
    }

    fn position(&self, wall_ms: i64) -> i64 {
        (wall_ms + self.offset_ms + EPOCH_INTO_WEEK).rem_euclid(WEEK)
    }

    pub fn contains(&self, wall_ms: i64) -> bool {
        let pos = self.position(wall_ms);
        self.spans
            .iter()
            .any(|(start, len)| (pos - start).rem_euclid(WEEK) < *len)
    }

    /// When the quiet period around `wall_ms` ends (`None` when not quiet now).
    pub fn end_of_current(&self, wall_ms: i64) -> Option<i64> {
        let pos = self.position(wall_ms);
        self.spans
            .iter()
            .filter_map(|(start, len)| {
                let into = (pos - start).rem_euclid(WEEK);
                (into < *len).then(|| wall_ms + (len - into))
            })
            .max()
    }

    /// The most recent end of a quiet period at or before `wall_ms` (within the last week).
    pub fn last_end(&self, wall_ms: i64) -> Option<i64> {
        if self.contains(wall_ms) {
            return None;
        }
        let pos = self.position(wall_ms);
        self.spans
            .iter()
            .map(|(start, len)| wall_ms - (pos - (start + len)).rem_euclid(WEEK))
            .max()
    }

    /// The next start of a quiet period after `wall_ms`.
    pub fn next_start(&self, wall_ms: i64) -> i64 {
        let pos = self.position(wall_ms);
        self.spans
            .iter()
            .map(|(start, _)| {
                let ahead = (start - pos).rem_euclid(WEEK);
                wall_ms + if ahead == 0 { WEEK } else { ahead }
            })
            .min()
            .unwrap_or(wall_ms + WEEK)
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for QuietWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Every quiet window of one agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Quiet {
    pub windows: Vec<QuietWindow>,
}

impl Quiet {
    pub fn is_quiet(&self, wall_ms: i64) -> bool {
        self.windows.iter().any(|w| w.contains(wall_ms))
    }

    /// When the current quiet period ends: the latest end among overlapping windows, followed
    /// through windows that start exactly where another ends.
    pub fn quiet_until(&self, wall_ms: i64) -> Option<i64> {
        let mut until = self
            .windows
            .iter()
            .filter_map(|w| w.end_of_current(wall_ms))
            .max()?;
        for _ in 0..8 {
            match self
                .windows
                .iter()
                .filter_map(|w| w.end_of_current(until))
                .max()
            {
                Some(later) if later > until => until = later,
                _ => break,
            }
        }
        Some(until)
    }

    /// The last moment a quiet period ended before `wall_ms`, if not quiet now.
    pub fn last_end(&self, wall_ms: i64) -> Option<i64> {
        if self.is_quiet(wall_ms) {
            return None;
        }
        self.windows
            .iter()
            .filter_map(|w| w.last_end(wall_ms))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23 (a Monday) at hh:mm UTC, plus `days`.
    fn at(days: i64, hh: i64, mm: i64) -> i64 {
        let monday = 1_795_392_000_000; // 2026-11-23T00:00:00Z
        monday + days * DAY + (hh * 60 + mm) * MINUTE
    }

    #[test]
    fn weekend_window() {
        let w = QuietWindow::parse("Sat 00:00-Sun 23:59 UTC").unwrap();
        assert!(!w.contains(at(4, 23, 59)));
        assert!(w.contains(at(5, 0, 0)));
        assert!(w.contains(at(6, 23, 59) + 59_000));
        assert!(!w.contains(at(7, 0, 0)));
        assert_eq!(w.end_of_current(at(5, 12, 0)), Some(at(7, 0, 0)));
        assert_eq!(w.last_end(at(7, 1, 0)), Some(at(7, 0, 0)));
        assert_eq!(w.next_start(at(0, 9, 0)), at(5, 0, 0));
    }

    #[test]
    fn daily_window_across_midnight() {
        let w = QuietWindow::parse("daily 23:55-00:05 UTC").unwrap();
        assert!(w.contains(at(2, 23, 56)));
        assert!(w.contains(at(3, 0, 5)));
        assert!(!w.contains(at(3, 0, 6)));
        assert!(!w.contains(at(3, 12, 0)));
        assert_eq!(w.end_of_current(at(2, 23, 58)), Some(at(3, 0, 6)));
    }

    #[test]
    fn day_ranges_and_offsets() {
        let w = QuietWindow::parse("Mon-Fri 21:00-22:00 +02:00").unwrap();
        // 21:30 at +02:00 is 19:30 UTC.
        assert!(w.contains(at(0, 19, 30)));
        assert!(!w.contains(at(0, 21, 30)));
        assert!(!w.contains(at(5, 19, 30)), "not on Saturday");
        let w = QuietWindow::parse("Sat 00:00 - Sun 23:59").unwrap();
        assert!(w.contains(at(6, 12, 0)));
        // A range that wraps the end of the week.
        let w = QuietWindow::parse("Sun 22:00-Mon 01:00 UTC").unwrap();
        assert!(w.contains(at(0, 0, 30)));
        assert!(w.contains(at(6, 23, 0)));
    }

    #[test]
    fn bad_windows_say_why() {
        assert!(
            QuietWindow::parse("weekend")
                .unwrap_err()
                .contains("not a quiet window")
        );
        assert!(
            QuietWindow::parse("daily 25:00-26:00 UTC")
                .unwrap_err()
                .contains("not a time of day")
        );
        assert!(
            QuietWindow::parse("daily 10:00-11:00 Europe/Paris")
                .unwrap_err()
                .contains("use UTC or a fixed offset")
        );
        assert!(
            QuietWindow::parse("Caturday 10:00-11:00")
                .unwrap_err()
                .contains("not a day")
        );
    }

    #[test]
    fn overlapping_windows_extend_each_other() {
        let q = Quiet {
            windows: vec![
                QuietWindow::parse("daily 10:00-10:59 UTC").unwrap(),
                QuietWindow::parse("daily 11:00-11:29 UTC").unwrap(),
            ],
        };
        assert_eq!(q.quiet_until(at(1, 10, 30)), Some(at(1, 11, 30)));
        assert_eq!(q.last_end(at(1, 12, 0)), Some(at(1, 11, 30)));
    }
}
