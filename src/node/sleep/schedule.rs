//! A weekly sleep schedule: the hours a node takes no work, in its
//! machine's local time, as people say them: `mon-fri 09:00-18:00`.
//!
//! Windows are separated by `;`. A window is days, hours, or both:
//! - days: `mon`..`sun` (or the whole names), ranges (`mon-fri`, `fri-mon`
//!   wraps), lists (`sat,sun`), or `daily`; no days means every day;
//! - hours: `HH:MM-HH:MM`; an end at or before the start runs past
//!   midnight into the next day (`22:00-06:00`), `24:00` is the end of
//!   the day; no hours means the whole day.
//!
//! The schedule is evaluated on a week of minutes, [`WeekMinute`], so
//! finding the next change is arithmetic, not a walk over wall-clock time.
//! (On the day clocks change for daylight saving, a change falls an hour
//! early or late; the next evaluation, each second, is right again.)

use std::fmt;

/// Minutes in a day and in a week.
const DAY: u16 = 24 * 60;
const WEEK: u32 = 7 * DAY as u32;

/// Monday = 0 .. Sunday = 6, as the schedule's text names them.
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A moment of the week: the day (Monday = 0) and the minute of that day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeekMinute {
    pub day: u8,
    pub minute: u16,
}

impl WeekMinute {
    fn of_week(m: u32) -> WeekMinute {
        let m = m % WEEK;
        WeekMinute {
            day: (m / u32::from(DAY)) as u8,
            minute: (m % u32::from(DAY)) as u16,
        }
    }

    fn in_week(self) -> u32 {
        u32::from(self.day) * u32::from(DAY) + u32::from(self.minute)
    }

    /// The local time now, or at `unix_s`.
    pub fn local(unix_s: i64) -> WeekMinute {
        // SAFETY: localtime_r writes only into the `tm` it is given.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let t = unix_s as libc::time_t;
        let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
        if !ok {
            // Out of range for the C library: UTC, which is never far wrong.
            let days = unix_s.div_euclid(86_400);
            let minute = (unix_s.rem_euclid(86_400) / 60) as u16;
            // 1970-01-01 was a Thursday (3).
            let day = ((days + 3).rem_euclid(7)) as u8;
            return WeekMinute { day, minute };
        }
        WeekMinute {
            day: ((tm.tm_wday + 6) % 7) as u8,
            minute: (tm.tm_hour * 60 + tm.tm_min) as u16,
        }
    }
}

impl fmt::Display for WeekMinute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = DAYS[usize::from(self.day % 7)];
        write!(f, "{d} {:02}:{:02}", self.minute / 60, self.minute % 60)
    }
}

/// One window: on each of `days`, from `start` for `len` minutes (which
/// may run into the next day).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    start: u16,
    len: u16,
}

impl Window {
    fn covers(&self, at: WeekMinute) -> bool {
        let now = at.in_week();
        (0..7u8).filter(|d| self.days[usize::from(*d)]).any(|d| {
            let start = u32::from(d) * u32::from(DAY) + u32::from(self.start);
            let since = (now + WEEK - start) % WEEK;
            since < u32::from(self.len)
        })
    }
}

/// When a node sleeps each week.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SleepSchedule {
    windows: Vec<Window>,
    text: String,
}

/// What was wrong with a schedule's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sleep schedule {text:?}: {why} (write it like \"mon-fri 09:00-18:00; sat,sun\")")]
pub struct ScheduleError {
    text: String,
    why: String,
}

impl SleepSchedule {
    pub fn parse(text: &str) -> Result<SleepSchedule, ScheduleError> {
        let err = |why: String| ScheduleError {
            text: text.to_string(),
            why,
        };
        let windows = text
            .split(';')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| parse_window(w).map_err(|why| err(format!("in {w:?}: {why}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if windows.is_empty() {
            return Err(err("it names no window".into()));
        }
        Ok(SleepSchedule {
            windows,
            text: text.trim().to_string(),
        })
    }

    /// The schedule as it was written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the node sleeps at `at`.
    pub fn asleep_at(&self, at: WeekMinute) -> bool {
        self.windows.iter().any(|w| w.covers(at))
    }

    /// How many minutes from `at` until the schedule says otherwise, and
    /// the moment it does; `None` if it never does (asleep or awake all
    /// week).
    pub fn next_change(&self, at: WeekMinute) -> Option<(u32, WeekMinute)> {
        let now = self.asleep_at(at);
        let from = at.in_week();
        (1..=WEEK)
            .map(|k| (k, WeekMinute::of_week(from + k)))
            .find(|(_, m)| self.asleep_at(*m) != now)
    }
}

fn parse_window(w: &str) -> Result<Window, String> {
    let (days, hours) = match w.split_once(char::is_whitespace) {
        Some((d, h)) => (Some(d), Some(h.trim())),
        None if w.contains(':') => (None, Some(w)),
        None => (Some(w), None),
    };
    let days = match days {
        Some(d) => parse_days(d)?,
        None => [true; 7],
    };
    let (start, len) = match hours {
        Some(h) => parse_hours(h)?,
        None => (0, DAY),
    };
    Ok(Window { days, start, len })
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for part in text.split(',').map(str::trim) {
        let lower = part.to_ascii_lowercase();
        if lower == "daily" {
            days = [true; 7];
            continue;
        }
        let (a, b) = match lower.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(&lower)?, day(&lower)?),
        };
        let mut d = a;
        loop {
            days[d] = true;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

fn day(word: &str) -> Result<usize, String> {
    let word = word.trim();
    DAYS.iter()
        .zip(DAY_NAMES)
        .position(|(short, long)| word == *short || word == long)
        .ok_or_else(|| {
            format!("unknown day {word:?} (mon, tue, wed, thu, fri, sat, sun, or daily)")
        })
}

/// `HH:MM-HH:MM` as a start minute and a length in minutes.
fn parse_hours(text: &str) -> Result<(u16, u16), String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("hours {text:?} are not HH:MM-HH:MM"))?;
    let start = minute_of_day(a)?;
    let end = minute_of_day(b)?;
    if start == DAY {
        return Err(format!("{a:?}: a window cannot start at 24:00"));
    }
    if start == end {
        return Err(format!(
            "{text:?} is empty (for a whole day, leave the hours out)"
        ));
    }
    let len = if end > start {
        end - start
    } else {
        DAY - start + end
    };
    Ok((start, len))
}

fn minute_of_day(text: &str) -> Result<u16, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a time of day HH:MM (00:00 to 24:00)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) || text.len() > 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u8, h: u16, m: u16) -> WeekMinute {
        WeekMinute {
            day,
            minute: h * 60 + m,
        }
    }

    #[test]
    fn office_hours_on_weekdays() {
        let s = SleepSchedule::parse("mon-fri 09:00-18:00").unwrap();
        assert!(s.asleep_at(at(0, 9, 0)));
        assert!(s.asleep_at(at(4, 17, 59)));
        assert!(!s.asleep_at(at(4, 18, 0)));
        assert!(!s.asleep_at(at(2, 8, 59)));
        assert!(!s.asleep_at(at(5, 12, 0)), "Saturday is free");
        assert_eq!(s.next_change(at(0, 8, 0)), Some((60, at(0, 9, 0))));
        assert_eq!(s.next_change(at(0, 9, 0)), Some((9 * 60, at(0, 18, 0))));
        // Friday evening: the next change is Monday morning.
        let (mins, when) = s.next_change(at(4, 18, 0)).unwrap();
        assert_eq!(when, at(0, 9, 0));
        assert_eq!(mins, (6 + 48 + 9) * 60);
        assert_eq!(when.to_string(), "mon 09:00");
    }

    #[test]
    fn windows_run_past_midnight_and_wrap_the_week() {
        let s = SleepSchedule::parse("sun 22:00-06:00").unwrap();
        assert!(s.asleep_at(at(6, 23, 0)));
        assert!(s.asleep_at(at(0, 5, 59)), "Sunday's night ends on Monday");
        assert!(!s.asleep_at(at(0, 6, 0)));
        assert!(!s.asleep_at(at(5, 23, 0)));
        let weekend = SleepSchedule::parse("fri-mon").unwrap();
        let asleep: Vec<bool> = (0..7).map(|d| weekend.asleep_at(at(d, 12, 0))).collect();
        assert_eq!(asleep, [true, false, false, false, true, true, true]);
    }

    #[test]
    fn several_windows_days_alone_and_hours_alone() {
        let s = SleepSchedule::parse("Mon-Fri 09:00-12:30; Monday-Friday 13:30-18:00; sat,sun")
            .unwrap();
        assert!(s.asleep_at(at(1, 12, 0)));
        assert!(!s.asleep_at(at(1, 13, 0)), "lunch is free");
        assert!(s.asleep_at(at(6, 3, 0)));
        assert_eq!(s.next_change(at(1, 12, 0)), Some((30, at(1, 12, 30))));
        let nightly = SleepSchedule::parse("00:00-07:00").unwrap();
        assert!((0..7).all(|d| nightly.asleep_at(at(d, 6, 59))));
        assert!((0..7).all(|d| !nightly.asleep_at(at(d, 7, 0))));
        let always = SleepSchedule::parse("daily 00:00-24:00").unwrap();
        assert!(always.asleep_at(at(3, 0, 0)));
        assert_eq!(always.next_change(at(3, 0, 0)), None);
        assert_eq!(always.text(), "daily 00:00-24:00");
    }

    #[test]
    fn bad_schedules_say_what_was_wrong() {
        let cases = [
            ("mon-fry 09:00-18:00", "unknown day \"fry\""),
            ("mon 9-18", "not a time of day"),
            ("mon 09:00", "not HH:MM-HH:MM"),
            ("mon 25:00-26:00", "\"25:00\" is not a time of day"),
            ("mon 09:60-10:00", "not a time of day"),
            ("mon 24:00-06:00", "cannot start at 24:00"),
            ("mon 09:00-09:00", "is empty"),
            (" ; ", "names no window"),
        ];
        for (text, why) in cases {
            let e = SleepSchedule::parse(text).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("mon-fri 09:00-18:00"), "{e} shows the form");
        }
    }

    #[test]
    fn local_time_is_a_moment_of_the_week() {
        // Whatever the zone, a day later is the next day at the same minute
        // (away from daylight-saving changes: mid-January and mid-July).
        for t in [1_768_478_400_i64, 1_784_116_800] {
            let a = WeekMinute::local(t);
            let b = WeekMinute::local(t + 86_400);
            assert_eq!(b.day, (a.day + 1) % 7);
            assert_eq!(b.minute, a.minute);
        }
    }
}
