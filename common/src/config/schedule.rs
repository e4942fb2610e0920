//! Schedules: `continuous` (the default), an interval (`every 10m`) or a
//! cron expression (`0 3 * * *`, five fields, UTC). One grammar for both
//! users of it:
//!
//! - a scheduled destination (writer) sleeps until its next run; a run
//!   delivers everything staged up to the moment it starts. The schedule
//!   lives in the destination's spec: editing it restarts the destination's
//!   worker within one reconcile period, so the schedule in force is always
//!   the stored one;
//! - a query pull (reader, `[[pull]] schedule`) runs a round at each run.
//!
//! On a (re)start the first run is the next one due, counted from then.

use std::fmt;
use std::time::Duration;

use crate::Timestamp;
use chrono::{DateTime, Datelike, Timelike, Utc};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Schedule {
    #[default]
    Continuous,
    Every(Duration),
    Cron(Cron),
}

/// A five-field cron expression: minute, hour, day of month, month, day of
/// week (0 or 7 is Sunday). Each field is `*`, a number, a range `a-b`, a
/// step `*/n` or `a-b/n`, or a comma list of those. When both day fields
/// are restricted, a day matching either runs (as in Vixie cron).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    any_day: bool,
    any_weekday: bool,
}

fn field(text: &str, min: u32, max: u32, name: &str) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| format!("cron {name}: bad step in {part:?}"))?),
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = a.parse().map_err(|_| format!("cron {name}: {part:?} is not a range"))?;
            let b = b.parse().map_err(|_| format!("cron {name}: {part:?} is not a range"))?;
            (a, b)
        } else {
            let v = range.parse().map_err(|_| format!("cron {name}: {part:?} is not a number"))?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("cron {name}: {part:?} is outside {min}-{max}"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok((set, text == "*"))
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = fields[..] else {
            return Err(format!("cron {text:?}: expected 5 fields (minute hour day-of-month month day-of-week)"));
        };
        let (minutes, _) = field(m, 0, 59, "minute")?;
        let (hours, _) = field(h, 0, 23, "hour")?;
        let (days, any_day) = field(dom, 1, 31, "day of month")?;
        let (months, _) = field(mon, 1, 12, "month")?;
        let (mut weekdays, any_weekday) = field(dow, 0, 7, "day of week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        // Days named only by day of month must exist in a named month
        // (`0 0 30 2 *` would never fire: refused now, not discovered later).
        let longest = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if !any_day && any_weekday && !(1..=12).any(|m| months[m] && (1..=longest[m]).any(|d| days[d])) {
            return Err(format!("cron {text:?} never fires: no month it names has the days it names"));
        }
        Ok(Cron { text: fields.join(" "), minutes, hours, days, months, weekdays, any_day, any_weekday })
    }

    fn matches(&self, t: &DateTime<Utc>) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().num_days_from_sunday() as usize];
        let day_ok = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        };
        self.minutes[t.minute() as usize] && self.hours[t.hour() as usize] && self.months[t.month() as usize] && day_ok
    }

    /// The first matching minute strictly after `after`; `None` if none
    /// within five years (a cron that never fires is refused by `parse`).
    pub fn next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
        let end = after + chrono::Duration::days(5 * 366);
        while t < end {
            if self.matches(&t) {
                return Some(t);
            }
            t += chrono::Duration::minutes(1);
        }
        None
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if s == "continuous" {
            return Ok(Schedule::Continuous);
        }
        if let Some(interval) = s.strip_prefix("every ") {
            let d = super::parse_duration(interval.trim())?;
            if d < Duration::from_secs(1) {
                return Err(format!("schedule {s:?}: the interval must be at least 1s"));
            }
            return Ok(Schedule::Every(d));
        }
        Cron::parse(s).map(Schedule::Cron).map_err(|e| format!("schedule {s:?}: not continuous, every <duration>, or cron: {e}"))
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Continuous => f.write_str("continuous"),
            Schedule::Every(d) => write!(f, "every {}", super::format_duration(*d)),
            Schedule::Cron(c) => f.write_str(&c.text),
        }
    }
}

crate::serde_as_string!(Schedule);

impl Schedule {
    pub fn is_continuous(&self) -> bool {
        matches!(self, Schedule::Continuous)
    }

    /// The next run after `now`; `None` for continuous delivery (or a cron
    /// that never matches).
    pub fn next_run(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Continuous => None,
            Schedule::Every(d) => Some(now.saturating_add(*d)),
            Schedule::Cron(c) => {
                let now = DateTime::<Utc>::from_timestamp_micros(now.0)?;
                c.next(now).map(|t| Timestamp(t.timestamp_micros()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_and_print_back() {
        for s in ["continuous", "every 10m", "every 1m", "0 3 * * *", "*/15 9-17 * * 1-5"] {
            assert_eq!(s.parse::<Schedule>().unwrap().to_string(), s);
        }
        for bad in ["every 0s", "every soon", "0 3 * *", "61 * * * *", "* * * * 8", "*/0 * * * *", "nightly"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cron_that_never_fires_is_refused() {
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *"] {
            let e = never.parse::<Schedule>().unwrap_err();
            assert!(e.contains("never fires"), "{never}: {e}");
        }
        // Day 29 of February fires in leap years; a weekday makes any date fire.
        for fires in ["0 0 29 2 *", "0 0 30 2 1"] {
            let s: Schedule = fires.parse().unwrap();
            assert!(s.next_run(Timestamp::now()).is_some(), "{fires}");
        }
    }

    #[test]
    fn cron_finds_the_next_minute() {
        let nightly = Cron::parse("0 3 * * *").unwrap();
        assert_eq!(nightly.next(at("2026-11-24T16:40:12Z")), Some(at("2026-11-25T03:00:00Z")));
        assert_eq!(nightly.next(at("2026-11-25T03:00:00Z")), Some(at("2026-11-26T03:00:00Z")));
        let weekdays = Cron::parse("*/15 9-17 * * 1-5").unwrap();
        // Friday 17:50 → Monday 09:00.
        assert_eq!(weekdays.next(at("2026-11-27T17:50:00Z")), Some(at("2026-11-30T09:00:00Z")));
        // Either day field matches when both are restricted; 7 is Sunday.
        let either = Cron::parse("0 0 1 * 7").unwrap();
        assert_eq!(either.next(at("2026-11-24T00:00:00Z")), Some(at("2026-11-29T00:00:00Z")));
        // February 29th: the next leap year.
        assert_eq!(Cron::parse("0 0 29 2 *").unwrap().next(at("2026-01-01T00:00:00Z")), Some(at("2028-02-29T00:00:00Z")));
    }
}
