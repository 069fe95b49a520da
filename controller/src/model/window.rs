//! Per-site maintenance windows: when a rollout may touch a site's agents, in the site's own time zone.
//!
//! An admin types windows as text (`"Mon-Fri 01:00-05:00"`, `"Sat 22:00-02:00"`) plus an IANA time zone;
//! [`WindowSpec`] is one such line and [`Schedule`] turns a site's lines into concrete unix-second ranges. Wall-clock
//! times become instants through jiff and the zone's own rules, with jiff's "compatible" disambiguation: a time in a
//! daylight-saving gap moves forward by the gap, a time in a fold takes its first occurrence. Time is always passed
//! in (`from_unix`, `now_unix`), never read here.
//!
//! Tested by the unit tests at the bottom: every parse rule and every refusal with its exact message, and
//! occurrences compared with unix times computed independently of jiff (GNU `date`), including the 2026 US
//! daylight-saving changes in America/Los_Angeles and windows that cross midnight.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How far [`Schedule::state_at`] looks ahead: more than a week, so every weekly window is seen at least once.
pub const STATE_HORIZON_SECS: i64 = 8 * 24 * 60 * 60;

const MINUTES_PER_DAY: u16 = 24 * 60;
const ALL_DAYS: u8 = 0b111_1111;
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const DAY_FULL_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Why a window or a schedule was refused; each message names the bad part and shows the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("window {text:?}: expected DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 01:00-05:00\"")]
    Syntax { text: String },
    #[error(
        "window {text:?}: unknown day {day:?} (expected Mon..Sun, e.g. \"Mon-Fri 01:00-05:00\")"
    )]
    UnknownDay { text: String, day: String },
    #[error(
        "window {text:?}: bad time {time:?} (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, \
         e.g. \"Mon-Fri 01:00-05:00\")"
    )]
    BadTime { text: String, time: String },
    #[error("window {text:?}: never opens ({reason})")]
    NeverOpens { text: String, reason: &'static str },
    #[error("windows need a time zone (an IANA name such as \"Europe/Berlin\")")]
    MissingTimeZone,
    #[error("unknown time zone {tz:?} (expected an IANA name such as \"Europe/Berlin\")")]
    UnknownTimeZone { tz: String },
    #[error("cannot look up time zone {tz:?}: this machine has no time zone database (install tzdata or set TZDIR)")]
    NoTimeZoneDatabase { tz: String },
}

// === impl WindowSpec ===

/// One recurring window as an admin types it; the day names the day the window starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WindowSpec {
    /// Bit `i` set: the window starts on the weekday `i` days after Monday.
    days: u8,
    /// Minutes after midnight, `0..1440`.
    start: u16,
    /// Minutes after midnight, `1..=1440`, never equal to `start`; before `start`: the window ends the next day.
    end: u16,
}

impl WindowSpec {
    /// Reads the admin's text (`"Mon-Fri 01:00-05:00"`, `"Fri-Mon 22:00-02:00"`, `"daily 00:00-24:00"`); spaces
    /// around `,` and `-` are allowed, the times begin at the first word starting with a digit.
    pub fn parse(text: &str) -> Result<WindowSpec, WindowError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let first_time = words
            .iter()
            .position(|word| word.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(words.len());
        let (day_words, time_words) = words.split_at(first_time);
        if time_words.is_empty() {
            return Err(WindowError::Syntax {
                text: text.to_string(),
            });
        }
        let days = if day_words.is_empty() {
            0
        } else {
            parse_days(text, &day_words.join(" "))?
        };
        let (start, end) = parse_times(text, &time_words.concat())?;
        if days == 0 {
            return Err(WindowError::NeverOpens {
                text: text.to_string(),
                reason: "no days given; e.g. \"daily 01:00-05:00\"",
            });
        }
        if start == end {
            return Err(WindowError::NeverOpens {
                text: text.to_string(),
                reason: "start equals end; use 00:00-24:00 for a whole day",
            });
        }
        Ok(WindowSpec { days, start, end })
    }

    /// Whether the window starts on `day` (a window crossing midnight also covers the early hours of the next day).
    pub fn opens_on(&self, day: Weekday) -> bool {
        self.days & day_bit(day) != 0
    }

    /// Wall-clock start, in minutes after midnight (`0..1440`).
    pub fn start_minute(&self) -> u16 {
        self.start
    }

    /// Wall-clock end, in minutes after midnight (`1..=1440`); see [`WindowSpec::crosses_midnight`].
    pub fn end_minute(&self) -> u16 {
        self.end
    }

    /// Whether the window ends on the day after it starts (`"Sat 22:00-02:00"` ends Sunday 02:00).
    pub fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }

    /// The occurrence starting on `day` as civil date-times, or `None` at the edge of jiff's calendar.
    fn civil_occurrence(&self, day: Date) -> Option<(DateTime, DateTime)> {
        let start = day.at(hour(self.start), minute(self.start), 0, 0);
        let end_day = if self.crosses_midnight() {
            day.tomorrow().ok()?
        } else {
            day
        };
        let end = if self.end == MINUTES_PER_DAY {
            end_day.tomorrow().ok()?.at(0, 0, 0, 0)
        } else {
            end_day.at(hour(self.end), minute(self.end), 0, 0)
        };
        Some((start, end))
    }
}

impl FromStr for WindowSpec {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<WindowSpec, WindowError> {
        WindowSpec::parse(text)
    }
}

impl TryFrom<String> for WindowSpec {
    type Error = WindowError;

    fn try_from(text: String) -> Result<WindowSpec, WindowError> {
        WindowSpec::parse(&text)
    }
}

impl From<WindowSpec> for String {
    fn from(spec: WindowSpec) -> String {
        spec.to_string()
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_days(f, self.days)?;
        write!(
            f,
            " {:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// `"Mon"`, `"Mon-Fri"`, `"Fri-Mon"`, `"Sat,Sun"`, `"daily"`, `"*"`, case-insensitive, as a bit set.
fn parse_days(text: &str, part: &str) -> Result<u8, WindowError> {
    let unknown = |day: &str| WindowError::UnknownDay {
        text: text.to_string(),
        day: day.to_string(),
    };
    let mut days = 0u8;
    for item in part.split(',').map(str::trim) {
        if item == "*" || item.eq_ignore_ascii_case("daily") {
            days = ALL_DAYS;
        } else if let Some((first, last)) = item.split_once('-') {
            let first = day_index(first.trim()).ok_or_else(|| unknown(first.trim()))?;
            let last = day_index(last.trim()).ok_or_else(|| unknown(last.trim()))?;
            let mut i = first;
            loop {
                days |= 1 << i;
                if i == last {
                    break;
                }
                i = (i + 1) % 7;
            }
        } else {
            days |= 1 << day_index(item).ok_or_else(|| unknown(item))?;
        }
    }
    Ok(days)
}

/// Monday is 0; three-letter or full English names, any case.
fn day_index(name: &str) -> Option<u8> {
    (0u8..7).find(|&i| {
        let i = usize::from(i);
        name.eq_ignore_ascii_case(DAY_NAMES[i]) || name.eq_ignore_ascii_case(DAY_FULL_NAMES[i])
    })
}

/// `"HH:MM-HH:MM"` as minutes; an end of `00:00` after a later start is written `24:00` (the same instant).
fn parse_times(text: &str, part: &str) -> Result<(u16, u16), WindowError> {
    let (start_text, end_text) = part.split_once('-').ok_or_else(|| WindowError::Syntax {
        text: text.to_string(),
    })?;
    let bad = |time: &str| WindowError::BadTime {
        text: text.to_string(),
        time: time.to_string(),
    };
    let start = parse_time(start_text)
        .filter(|&m| m < MINUTES_PER_DAY)
        .ok_or_else(|| bad(start_text))?;
    let mut end = parse_time(end_text).ok_or_else(|| bad(end_text))?;
    if end == 0 && start > 0 {
        end = MINUTES_PER_DAY;
    }
    Ok((start, end))
}

/// `"H:MM"` or `"HH:MM"` up to `24:00`, as minutes after midnight.
fn parse_time(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= MINUTES_PER_DAY).then_some(minutes)
}

/// Canonical day list: `daily`, ranges of three or more days (`Mon-Fri`, `Fri-Mon`), pairs and singles by comma.
fn write_days(f: &mut fmt::Formatter<'_>, days: u8) -> fmt::Result {
    if days == ALL_DAYS {
        return f.write_str("daily");
    }
    let set = |i: usize| days & (1 << (i % 7)) != 0;
    // Start at the first day that begins a run, so a run wrapping over Sunday prints as one range.
    let Some(first) = (0..7).find(|&i| set(i) && !set(i + 6)) else {
        return Ok(());
    };
    let mut i = first;
    let mut separator = "";
    while i < first + 7 {
        if !set(i) {
            i += 1;
            continue;
        }
        let run = (i..first + 7).take_while(|&j| set(j)).count();
        let (a, b) = (DAY_NAMES[i % 7], DAY_NAMES[(i + run - 1) % 7]);
        match run {
            1 => write!(f, "{separator}{a}")?,
            2 => write!(f, "{separator}{a},{b}")?,
            _ => write!(f, "{separator}{a}-{b}")?,
        }
        separator = ",";
        i += run;
    }
    Ok(())
}

fn day_bit(day: Weekday) -> u8 {
    1 << day.to_monday_zero_offset()
}

fn hour(minutes: u16) -> i8 {
    // Below 24 by construction (an end of 24:00 is handled by the caller).
    (minutes / 60) as i8
}

fn minute(minutes: u16) -> i8 {
    (minutes % 60) as i8
}

// === impl Schedule ===

/// A site's maintenance windows in its time zone; rollouts touch the site's agents only while one is open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "ScheduleRecord", into = "ScheduleRecord")]
pub struct Schedule {
    windows: Vec<WindowSpec>,
    /// The canonical IANA name, or empty when there are no windows.
    tz: String,
    /// `tz` looked up once, so computing ranges cannot fail on a name.
    zone: TimeZone,
}

/// The stored and wire shape of a [`Schedule`]; reading it checks the time zone again.
#[derive(Serialize, Deserialize)]
struct ScheduleRecord {
    windows: Vec<WindowSpec>,
    tz: String,
}

/// Whether a site's window is open at a moment, and when that next changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowNow {
    pub open: bool,
    /// Unix seconds of the next close (if open) or open (if closed); `now + STATE_HORIZON_SECS` when the state
    /// holds through the whole horizon, so the caller asks again then.
    pub changes_at: i64,
}

impl Schedule {
    /// Checks the time zone against the machine's tz database (jiff reads `/usr/share/zoneinfo` or `TZDIR`) and
    /// keeps its canonical name (`"america/los_angeles"` becomes `"America/Los_Angeles"`).
    pub fn new(windows: Vec<WindowSpec>, tz: &str) -> Result<Schedule, WindowError> {
        Schedule::new_in(jiff::tz::db(), windows, tz)
    }

    fn new_in(
        db: &TimeZoneDatabase,
        windows: Vec<WindowSpec>,
        tz: &str,
    ) -> Result<Schedule, WindowError> {
        if tz.trim().is_empty() {
            if windows.is_empty() {
                return Ok(Schedule::default());
            }
            return Err(WindowError::MissingTimeZone);
        }
        let unknown = || WindowError::UnknownTimeZone { tz: tz.to_string() };
        let zone = db.get(tz).map_err(|_| {
            if db.is_definitively_empty() {
                WindowError::NoTimeZoneDatabase { tz: tz.to_string() }
            } else {
                unknown()
            }
        })?;
        // `Etc/Unknown` resolves without an IANA name, and `localtime` is the controller host's own zone.
        let name = zone
            .iana_name()
            .filter(|name| *name != "localtime")
            .ok_or_else(unknown)?
            .to_string();
        Ok(Schedule {
            windows,
            tz: name,
            zone,
        })
    }

    /// The windows as the admin gave them.
    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }

    /// The canonical IANA name of the site's zone, empty when there are no windows.
    pub fn tz(&self) -> &str {
        &self.tz
    }

    /// A schedule without windows is never open; the caller decides what an unrestricted site means.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The occurrences `[start, end)` in unix seconds overlapping `[from_unix, from_unix + horizon_secs)`, merged
    /// where they touch or overlap and sorted; an occurrence already open at `from_unix` keeps its real start.
    ///
    /// Instants outside jiff's range (years -9999..=9999) have no occurrences. A window whose wall-clock times both
    /// fall into one daylight-saving gap (e.g. `"Sun 02:00-03:00"` on a spring-forward day) does not occur that day.
    pub fn ranges(&self, from_unix: i64, horizon_secs: i64) -> Vec<(i64, i64)> {
        let min = Timestamp::MIN.as_second();
        let max = Timestamp::MAX.as_second();
        let from = from_unix.clamp(min, max);
        let until = from_unix.saturating_add(horizon_secs).clamp(min, max);
        if self.windows.is_empty() || from >= until {
            return Vec::new();
        }
        let (Ok(from_ts), Ok(until_ts)) =
            (Timestamp::from_second(from), Timestamp::from_second(until))
        else {
            return Vec::new();
        };
        // An occurrence starts at most a day and a bit before it can still be open; two days back is safe.
        let first_day = self.zone.to_datetime(from_ts).date();
        let mut day = first_day
            .yesterday()
            .and_then(Date::yesterday)
            .unwrap_or(first_day);
        let last_day = self.zone.to_datetime(until_ts).date();

        let mut found = Vec::new();
        while day <= last_day {
            for window in self.windows.iter().filter(|w| w.opens_on(day.weekday())) {
                if let Some((start, end)) = self.occurrence(window, day) {
                    if start < end && end > from && start < until {
                        found.push((start, end));
                    }
                }
            }
            match day.tomorrow() {
                Ok(next) => day = next,
                Err(_) => break,
            }
        }
        merge(found)
    }

    /// Whether a window is open at `now_unix` and when that changes, looking [`STATE_HORIZON_SECS`] ahead.
    pub fn state_at(&self, now_unix: i64) -> WindowNow {
        let until = now_unix.saturating_add(STATE_HORIZON_SECS);
        for (start, end) in self.ranges(now_unix, STATE_HORIZON_SECS) {
            if start <= now_unix && now_unix < end {
                return WindowNow {
                    open: true,
                    changes_at: end.min(until),
                };
            }
            if start > now_unix {
                return WindowNow {
                    open: false,
                    changes_at: start,
                };
            }
        }
        WindowNow {
            open: false,
            changes_at: until,
        }
    }

    /// One occurrence in unix seconds, the site's wall clock resolved with jiff's compatible disambiguation.
    fn occurrence(&self, window: &WindowSpec, day: Date) -> Option<(i64, i64)> {
        let (start, end) = window.civil_occurrence(day)?;
        let instant = |dt: DateTime| {
            self.zone
                .to_ambiguous_zoned(dt)
                .compatible()
                .ok()
                .map(|zoned| zoned.timestamp().as_second())
        };
        Some((instant(start)?, instant(end)?))
    }
}

/// Sorts and joins ranges that overlap or touch.
fn merge(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

impl Default for Schedule {
    /// No windows and no time zone: never open.
    fn default() -> Schedule {
        Schedule {
            windows: Vec::new(),
            tz: String::new(),
            zone: TimeZone::UTC,
        }
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.windows == other.windows && self.tz == other.tz
    }
}

impl Eq for Schedule {}

impl TryFrom<ScheduleRecord> for Schedule {
    type Error = WindowError;

    fn try_from(record: ScheduleRecord) -> Result<Schedule, WindowError> {
        Schedule::new(record.windows, &record.tz)
    }
}

impl From<Schedule> for ScheduleRecord {
    fn from(schedule: Schedule) -> ScheduleRecord {
        ScheduleRecord {
            windows: schedule.windows,
            tz: schedule.tz,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;
    /// 2026-01-05T00:00:00Z, a Monday (`date -u -d 2026-01-05T00:00Z +%s`).
    const MON_JAN5: i64 = 1_767_571_200;
    /// 2026-03-07T00:00:00Z, the Saturday before the US spring-forward (PST is UTC-8 until 2026-03-08T10:00Z).
    const SAT_MAR7: i64 = 1_772_841_600;
    /// 2026-03-08T00:00:00Z, the Sunday of the spring-forward: 02:00 PST becomes 03:00 PDT at 10:00Z.
    const SUN_MAR8: i64 = 1_772_928_000;
    /// 2026-10-31T00:00:00Z, the Saturday before the US fall-back (PDT is UTC-7 until 2026-11-01T09:00Z).
    const SAT_OCT31: i64 = 1_793_404_800;
    /// 2026-11-01T00:00:00Z, the Sunday of the fall-back: 02:00 PDT becomes 01:00 PST at 09:00Z.
    const SUN_NOV1: i64 = 1_793_491_200;

    fn spec(text: &str) -> WindowSpec {
        WindowSpec::parse(text).unwrap()
    }

    fn schedule(windows: &[&str], tz: &str) -> Schedule {
        Schedule::new(windows.iter().map(|w| spec(w)).collect(), tz).unwrap()
    }

    fn refusal(text: &str) -> String {
        WindowSpec::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_constants_are_what_the_comments_say() {
        // Cross-check of the GNU `date` values with jiff, so a typo in a constant cannot hide a bug.
        let at = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
        assert_eq!(at("2026-01-05T00:00:00Z"), MON_JAN5);
        assert_eq!(at("2026-03-07T00:00:00Z"), SAT_MAR7);
        assert_eq!(at("2026-03-08T00:00:00Z"), SUN_MAR8);
        assert_eq!(at("2026-10-31T00:00:00Z"), SAT_OCT31);
        assert_eq!(at("2026-11-01T00:00:00Z"), SUN_NOV1);
    }

    #[test]
    fn parse_prints_the_canonical_form() {
        let cases = [
            ("Mon-Fri 01:00-05:00", "Mon-Fri 01:00-05:00"),
            ("mon-FRI 1:00-05:00", "Mon-Fri 01:00-05:00"),
            ("Sat,Sun 00:00-06:00", "Sat,Sun 00:00-06:00"),
            ("sun,sat 00:00-06:00", "Sat,Sun 00:00-06:00"),
            ("Sat, Sun 00:00-06:00", "Sat,Sun 00:00-06:00"),
            ("Fri-Mon 22:00-02:00", "Fri-Mon 22:00-02:00"),
            ("Mon,Wed,Sat,Sun 03:00-04:00", "Wed,Sat-Mon 03:00-04:00"),
            ("Monday,Wednesday 09:00-10:00", "Mon,Wed 09:00-10:00"),
            ("Tue-Tue 09:00-10:00", "Tue 09:00-10:00"),
            ("daily 00:00-24:00", "daily 00:00-24:00"),
            ("DAILY 00:00-24:00", "daily 00:00-24:00"),
            ("* 03:00-04:00", "daily 03:00-04:00"),
            ("Mon-Sun 03:00-04:00", "daily 03:00-04:00"),
            ("Sun-Sat 03:00-04:00", "daily 03:00-04:00"),
            ("Mon,* 03:00-04:00", "daily 03:00-04:00"),
            ("Sat 22:00-02:00", "Sat 22:00-02:00"),
            ("Sat 22:00-00:00", "Sat 22:00-24:00"),
            ("  Thu   23:59-24:00  ", "Thu 23:59-24:00"),
            ("Mon - Fri 01:00 - 05:00", "Mon-Fri 01:00-05:00"),
        ];
        for (text, canonical) in cases {
            let parsed = spec(text);
            assert_eq!(parsed.to_string(), canonical, "{text}");
            assert_eq!(spec(canonical), parsed, "{canonical} round-trips");
            assert_eq!(text.parse::<WindowSpec>().unwrap(), parsed);
        }
    }

    #[test]
    fn parse_reads_days_and_minutes() {
        let w = spec("Fri-Mon 22:00-02:30");
        let days: Vec<bool> = (0..7)
            .map(|i| w.opens_on(Weekday::from_monday_zero_offset(i).unwrap()))
            .collect();
        // Mon Tue Wed Thu Fri Sat Sun
        assert_eq!(days, [true, false, false, false, true, true, true]);
        assert_eq!((w.start_minute(), w.end_minute()), (22 * 60, 2 * 60 + 30));
        assert!(w.crosses_midnight());

        let w = spec("Mon 00:00-24:00");
        assert_eq!((w.start_minute(), w.end_minute()), (0, 1440));
        assert!(!w.crosses_midnight());
        let w = spec("Mon 22:00-00:00");
        assert_eq!(w.end_minute(), 1440);
        assert!(!w.crosses_midnight());
    }

    #[test]
    fn parse_refuses_with_the_bad_part_and_the_expected_form() {
        let cases = [
            (
                "Mon-Fry 01:00-05:00",
                r#"window "Mon-Fry 01:00-05:00": unknown day "Fry" (expected Mon..Sun, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mo 01:00-05:00",
                r#"window "Mo 01:00-05:00": unknown day "Mo" (expected Mon..Sun, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon,,Tue 01:00-05:00",
                r#"window "Mon,,Tue 01:00-05:00": unknown day "" (expected Mon..Sun, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon-Fri-Sat 01:00-05:00",
                r#"window "Mon-Fri-Sat 01:00-05:00": unknown day "Fri-Sat" (expected Mon..Sun, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 25:00-26:00",
                r#"window "Mon 25:00-26:00": bad time "25:00" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 24:00-05:00",
                r#"window "Mon 24:00-05:00": bad time "24:00" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 01:00-24:30",
                r#"window "Mon 01:00-24:30": bad time "24:30" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 01:60-02:00",
                r#"window "Mon 01:60-02:00": bad time "01:60" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 1-5",
                r#"window "Mon 1-5": bad time "1" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 01:00-5:0",
                r#"window "Mon 01:00-5:0": bad time "5:0" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 01:00-+5:00",
                r#"window "Mon 01:00-+5:00": bad time "+5:00" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "",
                r#"window "": expected DAYS HH:MM-HH:MM, e.g. "Mon-Fri 01:00-05:00""#,
            ),
            (
                "Mon-Fri",
                r#"window "Mon-Fri": expected DAYS HH:MM-HH:MM, e.g. "Mon-Fri 01:00-05:00""#,
            ),
            (
                "Mon-Fri01:00-05:00",
                r#"window "Mon-Fri01:00-05:00": expected DAYS HH:MM-HH:MM, e.g. "Mon-Fri 01:00-05:00""#,
            ),
            (
                "Mon 01:00-05:00 Tue",
                r#"window "Mon 01:00-05:00 Tue": bad time "05:00Tue" (expected HH:MM from 00:00 to 23:59, or 24:00 as an end, e.g. "Mon-Fri 01:00-05:00")"#,
            ),
            (
                "Mon 01:00",
                r#"window "Mon 01:00": expected DAYS HH:MM-HH:MM, e.g. "Mon-Fri 01:00-05:00""#,
            ),
            (
                "Mon 05:00-05:00",
                r#"window "Mon 05:00-05:00": never opens (start equals end; use 00:00-24:00 for a whole day)"#,
            ),
            (
                "Mon 00:00-00:00",
                r#"window "Mon 00:00-00:00": never opens (start equals end; use 00:00-24:00 for a whole day)"#,
            ),
            (
                "01:00-05:00",
                r#"window "01:00-05:00": never opens (no days given; e.g. "daily 01:00-05:00")"#,
            ),
        ];
        for (text, message) in cases {
            assert_eq!(refusal(text), message, "{text}");
        }
        assert_eq!(
            WindowSpec::parse("Mon-Fry 01:00-05:00"),
            Err(WindowError::UnknownDay {
                text: "Mon-Fry 01:00-05:00".to_string(),
                day: "Fry".to_string()
            })
        );
    }

    #[test]
    fn window_serde_is_its_canonical_text() {
        let w = spec("fri-mon 22:00-2:00");
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#""Fri-Mon 22:00-02:00""#
        );
        assert_eq!(
            serde_json::from_str::<WindowSpec>(r#""Fri-Mon 22:00-02:00""#).unwrap(),
            w
        );
        let err = serde_json::from_str::<WindowSpec>(r#""Mon-Fry 01:00-05:00""#).unwrap_err();
        assert!(
            err.to_string().starts_with(
                r#"window "Mon-Fry 01:00-05:00": unknown day "Fry" (expected Mon..Sun, e.g. "Mon-Fri 01:00-05:00")"#
            ),
            "{err}"
        );
    }

    #[test]
    fn schedule_keeps_the_canonical_zone_name() {
        let s = schedule(&["Mon-Fri 01:00-05:00"], "america/los_angeles");
        assert_eq!(s.tz(), "America/Los_Angeles");
        assert_eq!(s.windows(), &[spec("Mon-Fri 01:00-05:00")]);
        assert!(!s.is_empty());
        assert_eq!(schedule(&["daily 01:00-02:00"], "UTC").tz(), "UTC");
    }

    #[test]
    fn schedule_without_windows_needs_no_zone_and_never_opens() {
        let s = Schedule::new(Vec::new(), "").unwrap();
        assert!(s.is_empty());
        assert_eq!(s.tz(), "");
        assert_eq!(s, Schedule::default());
        assert_eq!(s.ranges(MON_JAN5, 7 * DAY), Vec::new());
        // Closed, with no change inside the 8-day horizon: 2026-01-13T00:00Z.
        assert_eq!(
            s.state_at(MON_JAN5),
            WindowNow {
                open: false,
                changes_at: MON_JAN5 + 8 * DAY
            }
        );
        // A zone without windows is still checked.
        assert_eq!(
            Schedule::new(Vec::new(), "Europe/Berln").unwrap_err(),
            WindowError::UnknownTimeZone {
                tz: "Europe/Berln".to_string()
            }
        );
    }

    #[test]
    fn schedule_refuses_bad_zones() {
        let windows = || vec![spec("Mon-Fri 01:00-05:00")];
        let message = |tz: &str| Schedule::new(windows(), tz).unwrap_err().to_string();
        assert_eq!(
            message("America/Los_Angles"),
            r#"unknown time zone "America/Los_Angles" (expected an IANA name such as "Europe/Berlin")"#
        );
        assert_eq!(
            message("Etc/Unknown"),
            r#"unknown time zone "Etc/Unknown" (expected an IANA name such as "Europe/Berlin")"#
        );
        assert_eq!(
            message("localtime"),
            r#"unknown time zone "localtime" (expected an IANA name such as "Europe/Berlin")"#
        );
        assert_eq!(
            message("/usr/share/zoneinfo/UTC"),
            r#"unknown time zone "/usr/share/zoneinfo/UTC" (expected an IANA name such as "Europe/Berlin")"#
        );
        assert_eq!(
            message(""),
            r#"windows need a time zone (an IANA name such as "Europe/Berlin")"#
        );
        assert_eq!(message("  "), message(""));
        assert_eq!(
            Schedule::new_in(&TimeZoneDatabase::none(), windows(), "America/Los_Angeles")
                .unwrap_err()
                .to_string(),
            r#"cannot look up time zone "America/Los_Angeles": this machine has no time zone database (install tzdata or set TZDIR)"#
        );
    }

    #[test]
    fn schedule_serde_checks_the_zone_again() {
        let s = schedule(
            &["Mon-Fri 01:00-05:00", "sat,sun 0:00-06:00"],
            "America/Los_Angeles",
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"windows":["Mon-Fri 01:00-05:00","Sat,Sun 00:00-06:00"],"tz":"America/Los_Angeles"}"#
        );
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        let err = serde_json::from_str::<Schedule>(
            r#"{"windows":["Mon 01:00-02:00"],"tz":"Mars/Olympus"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"unknown time zone "Mars/Olympus""#),
            "{err}"
        );
    }

    #[test]
    fn ranges_lists_each_weekday_occurrence_in_utc() {
        let s = schedule(&["Mon-Fri 01:00-05:00"], "UTC");
        // Monday 2026-01-05 00:00Z for a week: Mon..Fri 01:00Z-05:00Z, nothing at the weekend.
        let expected: Vec<(i64, i64)> = (0..5)
            .map(|d| (MON_JAN5 + d * DAY + HOUR, MON_JAN5 + d * DAY + 5 * HOUR))
            .collect();
        assert_eq!(s.ranges(MON_JAN5, 7 * DAY), expected);
    }

    #[test]
    fn ranges_keeps_the_real_start_of_an_open_occurrence() {
        let s = schedule(&["Mon-Fri 01:00-05:00"], "UTC");
        // From Monday 03:00Z for one hour: the Monday window, from its real 01:00Z start.
        assert_eq!(
            s.ranges(MON_JAN5 + 3 * HOUR, HOUR),
            vec![(MON_JAN5 + HOUR, MON_JAN5 + 5 * HOUR)]
        );
        // The window is [start, end): from 05:00Z exactly it is over; from 00:00Z for one hour it has not begun.
        assert_eq!(s.ranges(MON_JAN5 + 5 * HOUR, HOUR), Vec::new());
        assert_eq!(s.ranges(MON_JAN5, HOUR), Vec::new());
        assert_eq!(
            s.ranges(MON_JAN5, HOUR + 1),
            vec![(MON_JAN5 + HOUR, MON_JAN5 + 5 * HOUR)]
        );
    }

    #[test]
    fn ranges_of_a_window_crossing_midnight_start_on_the_named_day() {
        let s = schedule(&["Sun 22:00-02:00"], "UTC");
        // From Monday 2026-01-05 00:00Z: the window that began Sunday 2026-01-04 22:00Z is open until Monday 02:00Z,
        // and the next one runs from Sunday 2026-01-11 22:00Z to Monday 2026-01-12 02:00Z.
        assert_eq!(
            s.ranges(MON_JAN5, 7 * DAY),
            vec![
                (MON_JAN5 - 2 * HOUR, MON_JAN5 + 2 * HOUR),
                (
                    MON_JAN5 + 6 * DAY + 22 * HOUR,
                    MON_JAN5 + 7 * DAY + 2 * HOUR
                ),
            ]
        );
    }

    #[test]
    fn ranges_merges_touching_and_overlapping_windows() {
        let s = schedule(
            &[
                "Mon 01:00-03:00",
                "Mon 03:00-05:00",
                "Tue 01:00-04:00",
                "Tue 02:00-03:00",
                "Tue 03:30-06:00",
            ],
            "UTC",
        );
        assert_eq!(
            s.ranges(MON_JAN5, 2 * DAY),
            vec![
                (MON_JAN5 + HOUR, MON_JAN5 + 5 * HOUR),
                (MON_JAN5 + DAY + HOUR, MON_JAN5 + DAY + 6 * HOUR),
            ]
        );
        // Daily 22:00-24:00 and 00:00-02:00 join across midnight. From Monday 00:00Z for 2 days: Sunday's
        // 22:00-24:00 ended exactly at `from`, so it does not overlap and the first range starts at 00:00Z; likewise
        // Wednesday's 00:00-02:00 starts exactly at the end of the horizon, so the last range ends at 00:00Z.
        let s = schedule(&["daily 22:00-24:00", "daily 00:00-02:00"], "UTC");
        assert_eq!(
            s.ranges(MON_JAN5, 2 * DAY),
            vec![
                (MON_JAN5, MON_JAN5 + 2 * HOUR),
                (MON_JAN5 + 22 * HOUR, MON_JAN5 + DAY + 2 * HOUR),
                (MON_JAN5 + DAY + 22 * HOUR, MON_JAN5 + 2 * DAY),
            ]
        );
        // Always open: one range from the start of the occurrence holding `from` to the end of the last one.
        let s = schedule(&["daily 00:00-24:00"], "UTC");
        assert_eq!(
            s.ranges(MON_JAN5 + 12 * HOUR, 3 * DAY),
            vec![(MON_JAN5, MON_JAN5 + 4 * DAY)]
        );
    }

    #[test]
    fn ranges_is_empty_for_an_empty_or_unrepresentable_horizon() {
        let s = schedule(&["daily 00:00-24:00"], "UTC");
        assert_eq!(s.ranges(MON_JAN5, 0), Vec::new());
        assert_eq!(s.ranges(MON_JAN5, -DAY), Vec::new());
        assert_eq!(s.ranges(i64::MAX, DAY), Vec::new());
        assert_eq!(s.ranges(i64::MIN, DAY), Vec::new());
    }

    #[test]
    fn ranges_follow_the_spring_forward_in_los_angeles() {
        let la = "America/Los_Angeles";
        // Sun 2026-03-08 01:00 PST = 09:00Z to 05:00 PDT = 12:00Z: three real hours.
        assert_eq!(
            schedule(&["Sun 01:00-05:00"], la).ranges(SUN_MAR8, DAY),
            vec![(SUN_MAR8 + 9 * HOUR, SUN_MAR8 + 12 * HOUR)]
        );
        // Both ends in the 02:00-03:00 gap move forward by the gap: 03:15 PDT = 10:15Z to 03:45 PDT = 10:45Z.
        assert_eq!(
            schedule(&["Sun 02:15-02:45"], la).ranges(SUN_MAR8, DAY),
            vec![(
                SUN_MAR8 + 10 * HOUR + 15 * 60,
                SUN_MAR8 + 10 * HOUR + 45 * 60
            )]
        );
        // 02:00 (gap, becomes 03:00 PDT) to 03:00 PDT is empty: no occurrence that Sunday.
        assert_eq!(
            schedule(&["Sun 02:00-03:00"], la).ranges(SUN_MAR8, DAY),
            Vec::new()
        );
        // Across midnight into the change: Sat 2026-03-07 22:00 PST = 2026-03-08T06:00Z to Sun 02:00 (gap) =
        // 03:00 PDT = 10:00Z: four real hours.
        assert_eq!(
            schedule(&["Sat 22:00-02:00"], la).ranges(SAT_MAR7, 2 * DAY),
            vec![(SUN_MAR8 + 6 * HOUR, SUN_MAR8 + 10 * HOUR)]
        );
        // The day before and after keep their offsets: Sat 01:00 PST = 09:00Z, Mon 01:00 PDT = 08:00Z.
        assert_eq!(
            schedule(&["daily 01:00-02:00"], la).ranges(SAT_MAR7, 3 * DAY),
            vec![
                (SAT_MAR7 + 9 * HOUR, SAT_MAR7 + 10 * HOUR),
                (SUN_MAR8 + 9 * HOUR, SUN_MAR8 + 10 * HOUR),
                (SUN_MAR8 + DAY + 8 * HOUR, SUN_MAR8 + DAY + 9 * HOUR),
            ]
        );
    }

    #[test]
    fn ranges_follow_the_fall_back_in_los_angeles() {
        let la = "America/Los_Angeles";
        // Sun 2026-11-01 01:00 is in the fold; the first one is PDT = 08:00Z. 05:00 PST = 13:00Z: five real hours.
        assert_eq!(
            schedule(&["Sun 01:00-05:00"], la).ranges(SUN_NOV1, DAY),
            vec![(SUN_NOV1 + 8 * HOUR, SUN_NOV1 + 13 * HOUR)]
        );
        // Both ends in the fold take the first 01:xx (PDT): 08:30Z to 08:45Z.
        assert_eq!(
            schedule(&["Sun 01:30-01:45"], la).ranges(SUN_NOV1, DAY),
            vec![(SUN_NOV1 + 8 * HOUR + 30 * 60, SUN_NOV1 + 8 * HOUR + 45 * 60)]
        );
        // Across midnight over the change: Sat 2026-10-31 22:00 PDT = 2026-11-01T05:00Z to Sun 02:00 PST = 10:00Z.
        assert_eq!(
            schedule(&["Sat 22:00-02:00"], la).ranges(SAT_OCT31, 2 * DAY),
            vec![(SUN_NOV1 + 5 * HOUR, SUN_NOV1 + 10 * HOUR)]
        );
        // Sat 01:00 PDT = 08:00Z, Sun 01:00 PDT (first of the fold) = 08:00Z, Mon 01:00 PST = 09:00Z.
        assert_eq!(
            schedule(&["daily 01:00-02:00"], la).ranges(SAT_OCT31, 3 * DAY),
            vec![
                (SAT_OCT31 + 8 * HOUR, SAT_OCT31 + 9 * HOUR),
                // 01:00 PDT to 02:00 PST spans the repeated hour: 08:00Z to 10:00Z.
                (SUN_NOV1 + 8 * HOUR, SUN_NOV1 + 10 * HOUR),
                (SUN_NOV1 + DAY + 9 * HOUR, SUN_NOV1 + DAY + 10 * HOUR),
            ]
        );
    }

    #[test]
    fn state_at_says_open_or_closed_and_when_that_changes() {
        let s = schedule(&["Mon-Fri 01:00-05:00"], "UTC");
        let at = |now: i64| s.state_at(now);
        let state = |open, changes_at| WindowNow { open, changes_at };
        // Monday 00:00Z: closed, opens 01:00Z.
        assert_eq!(at(MON_JAN5), state(false, MON_JAN5 + HOUR));
        // Monday 01:00Z exactly: open (the start is inside), closes 05:00Z.
        assert_eq!(at(MON_JAN5 + HOUR), state(true, MON_JAN5 + 5 * HOUR));
        assert_eq!(at(MON_JAN5 + 3 * HOUR), state(true, MON_JAN5 + 5 * HOUR));
        // Monday 05:00Z exactly: closed (the end is outside), opens Tuesday 01:00Z.
        assert_eq!(at(MON_JAN5 + 5 * HOUR), state(false, MON_JAN5 + DAY + HOUR));
        // Friday 2026-01-09 06:00Z: closed over the weekend, opens Monday 2026-01-12 01:00Z.
        assert_eq!(
            at(MON_JAN5 + 4 * DAY + 6 * HOUR),
            state(false, MON_JAN5 + 7 * DAY + HOUR)
        );
    }

    #[test]
    fn state_at_reports_the_horizon_when_nothing_changes() {
        let s = schedule(&["daily 00:00-24:00"], "UTC");
        // Always open: no close within 8 days, ask again at 2026-01-13T03:00Z.
        assert_eq!(
            s.state_at(MON_JAN5 + 3 * HOUR),
            WindowNow {
                open: true,
                changes_at: MON_JAN5 + 3 * HOUR + STATE_HORIZON_SECS
            }
        );
        // A weekly window is always seen: from just after it closes, the next one opens 7 days later.
        let s = schedule(&["Mon 01:00-05:00"], "UTC");
        assert_eq!(
            s.state_at(MON_JAN5 + 5 * HOUR),
            WindowNow {
                open: false,
                changes_at: MON_JAN5 + 7 * DAY + HOUR
            }
        );
    }

    #[test]
    fn state_at_follows_daylight_saving() {
        let la = "America/Los_Angeles";
        let s = schedule(&["Sun 01:00-05:00"], la);
        // 2026-03-08T11:00Z = 04:00 PDT: open, closes 05:00 PDT = 12:00Z (not 13:00Z as in PST).
        assert_eq!(
            s.state_at(SUN_MAR8 + 11 * HOUR),
            WindowNow {
                open: true,
                changes_at: SUN_MAR8 + 12 * HOUR
            }
        );
        // 2026-11-01T00:00Z = Sat 17:00 PDT: closed, opens at the first 01:00 (PDT) = 08:00Z.
        assert_eq!(
            s.state_at(SUN_NOV1),
            WindowNow {
                open: false,
                changes_at: SUN_NOV1 + 8 * HOUR
            }
        );
        // 2026-11-01T09:30Z = 01:30 PST, the second pass through the fold: still open, closes 05:00 PST = 13:00Z.
        assert_eq!(
            s.state_at(SUN_NOV1 + 9 * HOUR + 30 * 60),
            WindowNow {
                open: true,
                changes_at: SUN_NOV1 + 13 * HOUR
            }
        );
    }
}
