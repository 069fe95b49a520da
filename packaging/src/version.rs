//! Version ordering by each platform's own rules, so `software.openssl<3.0.13` means what dpkg or rpm would say:
//!
//! - [`Scheme::Debian`]: dpkg's ordering (deb-version(7)): `[epoch:]upstream[-revision]`, the epoch first, then
//!   the upstream version and the revision (after the last hyphen) compared alternately by non-digit runs, where
//!   `~` sorts before everything (even the end) and letters before other characters, and digit runs as numbers.
//! - [`Scheme::Rpm`]: rpm's `rpmvercmp` over `[epoch:]version[-release]` (epoch, then version, then release, a
//!   missing release equal to any): alphanumeric segments, digits before letters, `~` before everything, `^`
//!   after the end but before any further segment.
//! - [`Scheme::Generic`]: part by part on `.`, `-`, `+`, `~`; digits as numbers, text ignoring case; for facts that
//!   come from no package database (OS versions, Windows software).
//!
//! Digit runs compare as strings without leading zeros, so no length of number overflows; no input panics.
//! Tested by the tables at the bottom, and against `dpkg --compare-versions` where dpkg is installed.

use std::cmp::Ordering;

/// How versions of one kind of software compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Generic,
    Debian,
    Rpm,
}

/// `a` against `b` by `scheme`.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Ordering {
    match scheme {
        Scheme::Generic => generic(a, b),
        Scheme::Debian => debian(a, b),
        Scheme::Rpm => rpm(a, b),
    }
}

/// Two digit runs as numbers (leading zeros ignored, any length).
fn numbers(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The leading run of `s` whose bytes satisfy `f`, and the rest.
fn split_run(s: &str, f: impl Fn(u8) -> bool) -> (&str, &str) {
    let end = s.bytes().position(|b| !f(b)).unwrap_or(s.len());
    s.split_at(end)
}

/// An epoch and the rest: `1:2.0` → (`1`, `2.0`); no colon, or a colon after a non-digit start → (`0`, all).
fn epoch(v: &str) -> (&str, &str) {
    match v.split_once(':') {
        Some((e, rest)) if e.bytes().all(|b| b.is_ascii_digit()) => {
            (if e.is_empty() { "0" } else { e }, rest)
        }
        _ => ("0", v),
    }
}

// === generic ===

fn generic(a: &str, b: &str) -> Ordering {
    let parts = |s| str::split(s, ['.', '-', '+', '~']);
    let (mut a, mut b) = (parts(a), parts(b));
    loop {
        let order = match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => generic_part(x, y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

/// An empty part before a number before text; numbers as numbers, text ignoring case.
fn generic_part(x: &str, y: &str) -> Ordering {
    if x.is_empty() || y.is_empty() {
        return y.is_empty().cmp(&x.is_empty());
    }
    let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match (numeric(x), numeric(y)) {
        (true, true) => numbers(x, y),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x
            .chars()
            .flat_map(char::to_lowercase)
            .cmp(y.chars().flat_map(char::to_lowercase)),
    }
}

// === Debian ===

fn debian(a: &str, b: &str) -> Ordering {
    let (ea, ra) = epoch(a.trim());
    let (eb, rb) = epoch(b.trim());
    let ((ua, va), (ub, vb)) = (revision(ra), revision(rb));
    numbers(ea, eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(va, vb))
}

/// The upstream version and the revision after the last hyphen ("" when there is none).
fn revision(s: &str) -> (&str, &str) {
    s.rsplit_once('-').unwrap_or((s, ""))
}

/// dpkg's weight of a character in a non-digit run: `~` lowest (below the end of the run), then the end, letters,
/// and everything else after letters.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(mut a: &str, mut b: &str) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        let (na, ra) = split_run(a, |c| !c.is_ascii_digit());
        let (nb, rb) = split_run(b, |c| !c.is_ascii_digit());
        let (mut x, mut y) = (na.bytes(), nb.bytes());
        loop {
            let (cx, cy) = (x.next(), y.next());
            if cx.is_none() && cy.is_none() {
                break;
            }
            let order = weight(cx).cmp(&weight(cy));
            if order != Ordering::Equal {
                return order;
            }
        }
        let (da, ra) = split_run(ra, |c| c.is_ascii_digit());
        let (db, rb) = split_run(rb, |c| c.is_ascii_digit());
        let order = numbers(da, db);
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (ra, rb);
    }
    Ordering::Equal
}

/// Why a Debian version is not one (deb-version(7)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version {0:?} is empty")]
    Empty(String),
    #[error("version {0:?}: the epoch before ':' must be a number")]
    Epoch(String),
    #[error("version {0:?}: the upstream version must start with a digit")]
    Start(String),
    #[error("version {version:?}: {ch:?} is not allowed (letters, digits and . + ~ - : only)")]
    Character { version: String, ch: char },
    #[error("version {0:?}: the revision after the last '-' is empty")]
    Revision(String),
}

/// Whether `v` is a valid Debian version (what dpkg accepts in a control file).
pub fn check_debian(v: &str) -> Result<(), VersionError> {
    if v.trim().is_empty() {
        return Err(VersionError::Empty(v.to_owned()));
    }
    let rest = match v.split_once(':') {
        Some((e, rest)) => {
            if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                return Err(VersionError::Epoch(v.to_owned()));
            }
            rest
        }
        None => v,
    };
    if !rest.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err(VersionError::Start(v.to_owned()));
    }
    if let Some(ch) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".+~-:".contains(*c)))
    {
        return Err(VersionError::Character {
            version: v.to_owned(),
            ch,
        });
    }
    if rest.ends_with('-') {
        return Err(VersionError::Revision(v.to_owned()));
    }
    Ok(())
}

// === rpm ===

fn rpm(a: &str, b: &str) -> Ordering {
    let (ea, ra) = epoch(a.trim());
    let (eb, rb) = epoch(b.trim());
    let ((va, la), (vb, lb)) = (release(ra), release(rb));
    numbers(ea, eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| match (la, lb) {
            (Some(x), Some(y)) => rpmvercmp(x, y),
            // A missing release matches any (as rpm compares a dependency without one).
            _ => Ordering::Equal,
        })
}

/// The version and the release after the last hyphen, if any.
fn release(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once('-') {
        Some((v, r)) => (v, Some(r)),
        None => (s, None),
    }
}

fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    let (mut a, mut b) = (a, b);
    loop {
        a = a.trim_start_matches(|c: char| c.is_ascii() && separator(c as u8));
        b = b.trim_start_matches(|c: char| c.is_ascii() && separator(c as u8));
        // Non-ASCII bytes are separators too.
        a = a.trim_start_matches(|c: char| !c.is_ascii());
        b = b.trim_start_matches(|c: char| !c.is_ascii());
        // `~` sorts before everything, the end included.
        match (a.strip_prefix('~'), b.strip_prefix('~')) {
            (Some(x), Some(y)) => {
                (a, b) = (x, y);
                continue;
            }
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => {}
        }
        // `^` sorts after the end, before anything else.
        match (a.strip_prefix('^'), b.strip_prefix('^')) {
            (Some(x), Some(y)) => {
                (a, b) = (x, y);
                continue;
            }
            (Some(_), None) => {
                return if b.is_empty() {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (None, Some(_)) => {
                return if a.is_empty() {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (None, None) => {}
        }
        if a.is_empty() || b.is_empty() {
            break;
        }
        let digits = a.as_bytes()[0].is_ascii_digit();
        let run = |s| {
            split_run(s, |c| {
                if digits {
                    c.is_ascii_digit()
                } else {
                    c.is_ascii_alphabetic()
                }
            })
        };
        let ((x, ra), (y, rb)) = (run(a), run(b));
        if y.is_empty() {
            // Different kinds of segment: numbers are newer than letters.
            return if digits {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if digits { numbers(x, y) } else { x.cmp(y) };
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (ra, rb);
    }
    // The one with anything left is newer.
    (!a.is_empty()).cmp(&!b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn table(scheme: Scheme, cases: &[(&str, &str, Ordering)]) {
        for (a, b, order) in cases {
            assert_eq!(compare(scheme, a, b), *order, "{scheme:?}: {a} vs {b}");
            assert_eq!(
                compare(scheme, b, a),
                order.reverse(),
                "{scheme:?}: {b} vs {a}"
            );
        }
    }

    #[test]
    fn generic_splits_on_separators() {
        table(
            Scheme::Generic,
            &[
                ("22.04", "22.10", Less),
                ("3.0.2", "3.0.13", Less),
                ("22.04", "22.4", Equal),
                ("22.04", "22.04.1", Less),
                ("5.15.0-91-generic", "5.15.0-100-generic", Less),
                ("1.2.3+build7", "1.2.3+build10", Greater),
                ("1.0~rc1", "1.0~RC1", Equal),
                ("1.0.1", "1.0.rc1", Less),
                ("99999999999999999999999", "100000000000000000000000", Less),
                ("", "0", Less),
                ("1..2", "1.0.2", Less),
                ("", "", Equal),
            ],
        );
    }

    #[test]
    fn debian_follows_dpkg() {
        table(
            Scheme::Debian,
            &[
                ("1.0~rc1", "1.0", Less),
                ("1.0", "1.0+b1", Less),
                ("1:0.9", "2.0", Greater),
                ("1.0-1", "1.0-1ubuntu1", Less),
                ("3.0.2-0ubuntu1.15", "3.0.13", Less),
                ("2.10-3", "1:2.10-3", Less),
                ("1.0a", "1.0+", Less),
                ("1.0~~", "1.0~~a", Less),
                ("1.0~~a", "1.0~", Less),
                ("1.0~", "1.0", Less),
                ("1.0", "1.0a", Less),
                ("1.0", "1.0-0", Equal),
                ("0:1.0", "1.0", Equal),
                ("1.0-1", "1.0.0-1", Less),
                ("2.36-9", "2.36-9+deb12u4", Less),
                ("1.2.3", "1.2.3", Equal),
                ("1.002", "1.2", Equal),
                ("9", "10", Less),
                (
                    "123456789012345678901234567890",
                    "123456789012345678901234567891",
                    Less,
                ),
                ("1:12.2.0-14", "12.3", Greater),
                ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
                ("", "0", Equal),
                ("a", "1", Greater),
                ("1.0-a-1", "1.0-a-2", Less),
            ],
        );
    }

    #[test]
    fn debian_agrees_with_dpkg_itself() {
        if !std::path::Path::new("/usr/bin/dpkg").exists() {
            eprintln!("dpkg is not installed: cross-check skipped");
            return;
        }
        let versions = [
            "0",
            "1",
            "1.0",
            "1.0~rc1",
            "1.0~~",
            "1.0+b1",
            "1.0a",
            "1.0-1",
            "1.0-1ubuntu1",
            "1:0.9",
            "2.0",
            "2:1.0",
            "3.0.2-0ubuntu1.15",
            "3.0.13",
            "3.0.13-0ubuntu3",
            "1.0.0",
            "1.00",
            "10",
            "9.9",
            "1.0-0",
            "2.36-9+deb12u4",
            "2.36-9",
            "1.0+dfsg-1",
            "1.0~dfsg-1",
        ];
        let mut checked = 0;
        for a in versions {
            for b in versions {
                let ours = compare(Scheme::Debian, a, b);
                let dpkg = |op: &str| {
                    std::process::Command::new("dpkg")
                        .args(["--compare-versions", a, op, b])
                        .status()
                        .unwrap()
                        .success()
                };
                let theirs = if dpkg("lt") {
                    Less
                } else if dpkg("eq") {
                    Equal
                } else {
                    Greater
                };
                assert_eq!(ours, theirs, "{a} vs {b}");
                checked += 1;
            }
        }
        assert_eq!(checked, versions.len() * versions.len());
    }

    #[test]
    fn rpm_follows_rpmvercmp() {
        table(
            Scheme::Rpm,
            &[
                ("1.0", "1.0", Equal),
                ("1.0", "2.0", Less),
                ("2.0.1", "2.0.1a", Less),
                ("1.0", "1.0.1", Less),
                ("1.0a", "1.0", Greater),
                ("1.0~rc1", "1.0", Less),
                ("1.0~rc1", "1.0~rc2", Less),
                ("1.0~rc1~git123", "1.0~rc1", Less),
                ("1.0^", "1.0", Greater),
                ("1.0^git1", "1.0", Greater),
                ("1.0^git1", "1.0.1", Less),
                ("1.0^git1", "1.0^git2", Less),
                ("1.0^git1~pre", "1.0^git1", Less),
                ("1.0^", "1.0^git1", Less),
                ("5.5p1", "5.5p10", Less),
                ("xyz10", "xyz10.1", Less),
                ("1.0010", "1.9", Greater),
                ("1.05", "1.5", Equal),
                ("2a", "2.0", Less),
                ("1.0-1", "1.0-2", Less),
                ("1:1.0", "2.0", Greater),
                ("1.0-27.el9", "1.0-27.el9_1", Less),
                ("3.0.7-27.el9", "3.0.7", Equal),
                ("5.14.0-362.el9", "5.14.0-362.el9~1", Greater),
                ("a+", "a_", Equal),
                ("+a", "_a", Equal),
            ],
        );
    }

    #[test]
    fn debian_versions_are_checked_in_words() {
        for good in ["1.0", "1:2.10-3", "2.36-9+deb12u4", "1.0~rc1", "0"] {
            assert_eq!(check_debian(good), Ok(()), "{good}");
        }
        for (bad, words) in [
            ("", "is empty"),
            ("x:1.0", "epoch"),
            ("v1.0", "must start with a digit"),
            ("1.0 beta", "' ' is not allowed"),
            ("1.0-", "revision"),
        ] {
            let e = check_debian(bad).unwrap_err().to_string();
            assert!(e.contains(words), "{bad}: {e}");
        }
    }
}
