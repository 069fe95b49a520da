//! Maintenance windows, enforced by the agent. An assignment carries the site's next windows (and a not-before
//! time); the agent downloads at once and starts the install only while `now` is inside a window. The decision is
//! made here, on the device, with the time passed in — so a device that cannot reach the controller still
//! installs when its window opens, and never outside one.
//!
//! Tested by the table test below; the held-install path that uses it is tested in `action.rs`.

use rollcall_proto::v1;
use serde::{Deserialize, Serialize};

/// A span of time `[start, end)` in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn from_proto(range: &v1::TimeRange) -> Window {
        Window {
            start: range.start_unix,
            end: range.end_unix,
        }
    }

    fn contains(self, now: i64) -> bool {
        self.start <= now && now < self.end
    }

    /// Empty or backwards spans never open.
    fn is_valid(self) -> bool {
        self.start < self.end
    }
}

/// Whether an install may start now, and if not, until when it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the install now.
    Install,
    /// No window is open; the next one starts at this time (unix seconds).
    WaitForWindow(i64),
    /// No windows were given and the install may not start before this time (unix seconds).
    NotBefore(i64),
    /// Every window has passed: wait for the controller to send new ones.
    NoWindowLeft,
}

/// Decide at `now`. With windows, only they count (`not_before` is their first start, for older agents);
/// without, the install may start from `not_before` on.
pub fn decide(windows: &[Window], not_before: i64, now: i64) -> Decision {
    if windows.is_empty() {
        return if now >= not_before {
            Decision::Install
        } else {
            Decision::NotBefore(not_before)
        };
    }
    let valid = windows.iter().copied().filter(|w| w.is_valid());
    if valid.clone().any(|w| w.contains(now)) {
        return Decision::Install;
    }
    match valid.filter(|w| w.start > now).map(|w| w.start).min() {
        Some(start) => Decision::WaitForWindow(start),
        None => Decision::NoWindowLeft,
    }
}

impl Decision {
    /// When the agent should wake to decide again, if a time is known.
    pub fn wake_at(self) -> Option<i64> {
        match self {
            Decision::WaitForWindow(t) | Decision::NotBefore(t) => Some(t),
            Decision::Install | Decision::NoWindowLeft => None,
        }
    }

    /// The detail of the `downloaded` report of a held action, for the technician; `None` when it installs.
    pub fn waiting_detail(self) -> Option<String> {
        match self {
            Decision::Install => None,
            Decision::WaitForWindow(t) => Some(format!(
                "downloaded; waiting for the maintenance window at {}",
                utc_text(t)
            )),
            Decision::NotBefore(t) => Some(format!(
                "downloaded; waiting to install at {} or later",
                utc_text(t)
            )),
            Decision::NoWindowLeft => Some(
                "downloaded; every maintenance window sent has passed, waiting for new windows from the \
                 controller"
                    .to_owned(),
            ),
        }
    }
}

/// `2026-11-24 01:00 UTC`: how the agent writes times in its reports.
pub fn utc_text(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || format!("unix time {unix}"),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_482_000; // 2026-11-24 01:00 UTC

    fn w(start: i64, end: i64) -> Window {
        Window { start, end }
    }

    #[test]
    fn decides_inside_outside_all_past_and_not_before() {
        let week = [w(T, T + 3600), w(T + 86_400, T + 90_000)];
        let cases: &[(&str, &[Window], i64, i64, Decision)] = &[
            (
                "inside the first window",
                &week,
                0,
                T + 10,
                Decision::Install,
            ),
            ("at a window's start", &week, 0, T, Decision::Install),
            (
                "at a window's end (exclusive)",
                &week,
                0,
                T + 3600,
                Decision::WaitForWindow(T + 86_400),
            ),
            (
                "before every window",
                &week,
                0,
                T - 5,
                Decision::WaitForWindow(T),
            ),
            (
                "inside the second window",
                &week,
                0,
                T + 86_401,
                Decision::Install,
            ),
            (
                "after every window",
                &week,
                0,
                T + 90_000,
                Decision::NoWindowLeft,
            ),
            (
                "windows win over not-before",
                &week,
                T + 86_400,
                T + 10,
                Decision::Install,
            ),
            (
                "unordered windows: the earliest next start",
                &[w(T + 86_400, T + 90_000), w(T, T + 3600)],
                0,
                T - 100,
                Decision::WaitForWindow(T),
            ),
            (
                "a backwards window never opens",
                &[w(T + 3600, T)],
                0,
                T + 10,
                Decision::NoWindowLeft,
            ),
            ("no windows, no not-before", &[], 0, T, Decision::Install),
            ("no windows, at not-before", &[], T, T, Decision::Install),
            (
                "no windows, before not-before",
                &[],
                T,
                T - 1,
                Decision::NotBefore(T),
            ),
        ];
        for (name, windows, not_before, now, expected) in cases {
            assert_eq!(decide(windows, *not_before, *now), *expected, "{name}");
        }
    }

    #[test]
    fn a_technician_reads_when_a_held_install_starts() {
        assert_eq!(
            Decision::WaitForWindow(T).waiting_detail().as_deref(),
            Some("downloaded; waiting for the maintenance window at 2026-11-24 01:00 UTC")
        );
        assert_eq!(
            Decision::NotBefore(T).waiting_detail().as_deref(),
            Some("downloaded; waiting to install at 2026-11-24 01:00 UTC or later")
        );
        assert!(Decision::NoWindowLeft
            .waiting_detail()
            .is_some_and(|d| d.contains("waiting for new windows from the controller")));
        assert_eq!(Decision::Install.waiting_detail(), None);
        assert_eq!(Decision::WaitForWindow(T).wake_at(), Some(T));
        assert_eq!(Decision::NoWindowLeft.wake_at(), None);
    }
}
