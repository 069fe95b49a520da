//! Version ordering by each platform's own rules, so `software.openssl<3.0.13` means what dpkg or rpm would say
//! about the installed package, and the agent orders `.deb` and `.rpm` versions as their installers do.
//!
//! - [`Scheme::Debian`]: dpkg's `dpkg_version_compare` (deb-version(7)) over `[epoch:]upstream[-revision]`.
//! - [`Scheme::Rpm`]: rpm's `rpmvercmp` over `[epoch:]version[-release]`, epoch first, then version, then
//!   release, as rpm matches a dependency.
//! - [`Scheme::Generic`]: part by part on `.`, `-`, `+`, `~`, for versions no package database vouches for (OS
//!   versions, Windows software).
//!
//! [`compare`] takes any string and never panics: what dpkg or rpm would refuse is still ordered, by the rules
//! written on each [`Scheme`]. Digit runs compare as strings without leading zeros, so no number is too long.
//! [`check_debian`] says in words why a string is not a Debian version.
//!
//! Tested by the tables at the bottom (cases from dpkg's and rpm's own test suites among them), and against
//! `dpkg --compare-versions` on the table and on generated pairs where dpkg is installed.

use std::cmp::Ordering;

/// How versions of one kind of software compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// For versions from no package database: split on `.`, `-`, `+`, `~`; digit parts as numbers, others as
    /// text ignoring case; an empty part before a number before text; a prefix before what extends it.
    Generic,
    /// For dpkg packages. What dpkg refuses still compares: surrounding whitespace is ignored, an empty string
    /// is the lowest version (equal to `0`, as dpkg's blank version), an empty epoch (`:1.0`) is epoch 0, an
    /// epoch that is not all digits (`x:1.0`) makes the whole string the upstream version, an empty revision
    /// (`1.0-`) is none, and bytes beyond ASCII sort between letters and punctuation (as dpkg on amd64 does).
    Debian,
    /// For rpm packages. A release missing on either side (or empty, `1.0-`) matches any release, so
    /// `3.0.7 = 3.0.7-27.el9` as in an rpm dependency; that equality is not transitive, so sort with
    /// `Scheme::Rpm` only versions that all carry a release. Epochs as for [`Scheme::Debian`].
    Rpm,
}

/// `a` against `b` by `scheme`: `Less` when `a` is older.
pub fn compare(scheme: Scheme, a: &str, b: &str) -> Ordering {
    match scheme {
        Scheme::Generic => generic(a, b),
        Scheme::Debian => debian(a, b),
        Scheme::Rpm => rpm(a, b),
    }
}

/// Why a string is not a Debian version, in words a packager can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("version `{version}` is empty")]
    Empty { version: String },
    #[error(
        "version `{version}`: `{ch}` is not allowed in a version (only letters, digits and `. + ~ - :`)"
    )]
    Character { version: String, ch: char },
    #[error("version `{version}`: the epoch before the first `:` must be a number")]
    Epoch { version: String },
    #[error("version `{version}`: the epoch is larger than dpkg accepts (2147483647)")]
    EpochTooBig { version: String },
    #[error(
        "version `{version}`: the upstream version between the epoch and the revision is empty"
    )]
    NoUpstream { version: String },
    #[error("version `{version}`: the upstream version must start with a digit")]
    Start { version: String },
    #[error("version `{version}`: it ends with `-`, so the revision after it is empty")]
    EmptyRevision { version: String },
    #[error(
        "version `{version}`: `{ch}` is not allowed in the revision after the last `-` (only letters, digits and `. + ~`)"
    )]
    RevisionCharacter { version: String, ch: char },
}

/// Whether dpkg would accept `v` without complaint, so a package is refused when it is built, not when an
/// endpoint installs it.
pub fn check_debian(v: &str) -> Result<(), VersionError> {
    let version = || v.to_owned();
    if v.trim().is_empty() {
        return Err(VersionError::Empty { version: version() });
    }
    if let Some(ch) = v.chars().find(|c| !allowed(*c, ".+~-:")) {
        return Err(VersionError::Character {
            version: version(),
            ch,
        });
    }
    let rest = match v.split_once(':') {
        Some((e, _)) if e.is_empty() || !all_digits(e) => {
            return Err(VersionError::Epoch { version: version() })
        }
        Some((e, _)) if numbers(e, "2147483647") == Ordering::Greater => {
            return Err(VersionError::EpochTooBig { version: version() })
        }
        Some((_, rest)) => rest,
        None => v,
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((_, "")) => return Err(VersionError::EmptyRevision { version: version() }),
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    match upstream.bytes().next() {
        None => return Err(VersionError::NoUpstream { version: version() }),
        Some(b) if !b.is_ascii_digit() => return Err(VersionError::Start { version: version() }),
        Some(_) => {}
    }
    match revision.chars().find(|c| !allowed(*c, ".+~")) {
        Some(ch) => Err(VersionError::RevisionCharacter {
            version: version(),
            ch,
        }),
        None => Ok(()),
    }
}

/// An ASCII letter, digit or one of `extra`: what deb-version(7) allows in a part.
fn allowed(c: char, extra: &str) -> bool {
    c.is_ascii_alphanumeric() || extra.contains(c)
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

/// Two digit runs as numbers of any length (leading zeros ignored); both packagers compare this way.
fn numbers(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The leading run of `s` whose bytes satisfy `f`, and the rest.
fn split_run(s: &str, f: impl Fn(u8) -> bool) -> (&str, &str) {
    let end = s.bytes().position(|b| !f(b)).unwrap_or(s.len());
    s.split_at(end)
}

/// The epoch and the rest, split at the first colon as both packagers do: `1:2.0` → (`1`, `2.0`), `:2.0` →
/// (`0`, `2.0`); no colon, or a non-digit before it → (`0`, all).
fn epoch(v: &str) -> (&str, &str) {
    match v.split_once(':') {
        Some(("", rest)) => ("0", rest),
        Some((e, rest)) if all_digits(e) => (e, rest),
        _ => ("0", v),
    }
}

// === Generic ===

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
    match (all_digits(x), all_digits(y)) {
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

/// The upstream version and the revision after the last hyphen ("" when there is none, as dpkg stores it).
fn revision(s: &str) -> (&str, &str) {
    s.rsplit_once('-').unwrap_or((s, ""))
}

/// dpkg's `verrevcmp`: alternately a non-digit run, compared byte by byte by [`weight`], and a digit run,
/// compared as a number (an absent run is empty, or zero).
fn verrevcmp(mut a: &str, mut b: &str) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        let not_digit = |c: u8| !c.is_ascii_digit();
        let ((ta, ra), (tb, rb)) = (split_run(a, not_digit), split_run(b, not_digit));
        let ((da, ra), (db, rb)) = (
            split_run(ra, |c| c.is_ascii_digit()),
            split_run(rb, |c| c.is_ascii_digit()),
        );
        let order = text(ta, tb).then_with(|| numbers(da, db));
        if order != Ordering::Equal {
            return order;
        }
        (a, b) = (ra, rb);
    }
    Ordering::Equal
}

/// Two non-digit runs, the shorter one padded with "end", which weighs between `~` and everything else.
fn text(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.bytes(), b.bytes());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (x, y) => match weight(x).cmp(&weight(y)) {
                Ordering::Equal => continue,
                order => return order,
            },
        }
    }
}

/// dpkg's `order()`: `~` below the end of a run (so `1.0~rc1 < 1.0`), then letters in ASCII order, then all
/// else. Bytes beyond ASCII weigh what dpkg gives them where `char` is signed (amd64, i386): between letters
/// and punctuation.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) if c.is_ascii() => i32::from(c) + 256,
        Some(c) => i32::from(c),
    }
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
            // rpm's rpmverOverlap: a side without a release matches any release.
            _ => Ordering::Equal,
        })
}

/// The version and the release after the last hyphen; an empty release is none, as rpm treats it.
fn release(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once('-') {
        Some((v, r)) if !r.is_empty() => (v, Some(r)),
        Some((v, _)) => (v, None),
        None => (s, None),
    }
}

/// rpm's `rpmvercmp` (4.15+): separators are skipped and only the runs of digits or of letters between them
/// count; `~` sorts before everything, the end included; `^` after the end but before anything else.
fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut a, mut b) = (a, b);
    loop {
        (a, b) = (skip_separators(a), skip_separators(b));
        match (a.bytes().next(), b.bytes().next()) {
            (Some(b'~'), Some(b'~')) | (Some(b'^'), Some(b'^')) => (a, b) = (&a[1..], &b[1..]),
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), None) | (Some(_), Some(b'^')) => return Ordering::Greater,
            (None, Some(b'^')) | (Some(b'^'), Some(_)) => return Ordering::Less,
            (None, _) | (_, None) => break,
            (Some(_), Some(_)) => match segment(a, b) {
                (Ordering::Equal, ra, rb) => (a, b) = (ra, rb),
                (order, _, _) => return order,
            },
        }
    }
    // Whichever has anything left is newer.
    (!a.is_empty()).cmp(&!b.is_empty())
}

/// Everything before the next ASCII letter, digit, `~` or `^` (bytes beyond ASCII are separators to rpm).
fn skip_separators(s: &str) -> &str {
    s.trim_start_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '~' || c == '^'))
}

/// The segment `a` starts with (digits or letters) against the same kind at the start of `b`, and what follows
/// each. A number is newer than letters; letters compare as bytes, case and all.
fn segment<'a, 'b>(a: &'a str, b: &'b str) -> (Ordering, &'a str, &'b str) {
    let digits = a.as_bytes()[0].is_ascii_digit();
    let kind = move |c: u8| {
        if digits {
            c.is_ascii_digit()
        } else {
            c.is_ascii_alphabetic()
        }
    };
    let ((x, ra), (y, rb)) = (split_run(a, kind), split_run(b, kind));
    let order = match (y.is_empty(), digits) {
        (true, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (false, true) => numbers(x, y),
        (false, false) => x.cmp(y),
    };
    (order, ra, rb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use Ordering::{Equal, Greater, Less};

    /// Each case both ways round, so the order is also antisymmetric.
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
                ("1.0~rc1", "1.0~rc2", Less),
                ("1.0.1", "1.0.rc1", Less),
                ("99999999999999999999999", "100000000000000000000000", Less),
                ("", "0", Less),
                ("1..2", "1.0.2", Less),
                ("", "", Equal),
            ],
        );
    }

    /// dpkg's order; every valid pair here is also put to dpkg itself below.
    const DPKG_CASES: &[(&str, &str, Ordering)] = &[
        // The classics.
        ("1.0~rc1", "1.0", Less),
        ("1.0", "1.0+b1", Less),
        ("1:0.9", "2.0", Greater),
        ("1.0-1", "1.0-1ubuntu1", Less),
        ("3.0.2-0ubuntu1.15", "3.0.13", Less),
        ("2.10-3", "1:2.10-3", Less),
        ("1.0a", "1.0+", Less),
        ("2.36-9", "2.36-9+deb12u4", Less),
        ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Less),
        ("1:12.2.0-14", "12.3", Greater),
        // `~` below the end, the end below letters, letters below other characters.
        ("1.0~~", "1.0~~a", Less),
        ("1.0~~a", "1.0~", Less),
        ("1.0~", "1.0", Less),
        ("1.0", "1.0a", Less),
        ("1.0~a", "1.0a", Less),
        ("1.0z", "1.0.", Less),
        ("1.0Z", "1.0a", Less),
        // The revision is after the last hyphen; a missing one is "", which equals "0".
        ("1.0", "1.0-0", Equal),
        ("0:1.0", "1.0", Equal),
        ("1.0-1", "1.0.0-1", Less),
        ("1.0-a-1", "1.0-a-2", Less),
        // Digit runs as numbers, however long.
        ("1.2.3", "1.2.3", Equal),
        ("1.002", "1.2", Equal),
        ("9", "10", Less),
        (
            "123456789012345678901234567890",
            "123456789012345678901234567891",
            Less,
        ),
        (
            "1.99999999999999999999999",
            "1.100000000000000000000000",
            Less,
        ),
        ("1.000000000000000000000000000001", "1.1", Equal),
        ("99999999999999999999:1", "100000000000000000000:0", Less),
        // dpkg's own test data (scripts/t/Dpkg_Version.t).
        ("1.0-1", "2.0-2", Less),
        ("2.2~rc-4", "2.2-1", Less),
        ("1.0000-1", "1.0-1", Equal),
        ("1", "0:1", Equal),
        ("0", "0:0-0", Equal),
        ("2:2.5", "1:7.5", Greater),
        ("1:0foo", "0foo", Greater),
        ("0foo-0", "0foo", Equal),
        ("0foo", "0fo", Greater),
        ("0foo-0", "0foo+", Less),
        ("0foo~1", "0foo", Less),
        ("0foo~foo+Bar", "0foo~foo+bar", Less),
        ("0foo~~", "0foo~", Less),
        ("1~", "1", Less),
        (
            "12345+that-really-is-some-ver-0",
            "12345+that-really-is-some-ver-10",
            Less,
        ),
        ("0foo-0", "0foo-01", Less),
        ("0foo.bar", "0foobar", Greater),
        ("0foo.bar", "0foo1bar", Greater),
        ("0foo.bar", "0foo0bar", Greater),
        ("0foo1bar-1", "0foobar-1", Less),
        ("0foo2.0", "0foo2", Greater),
        ("0foo2.0.0", "0foo2.10.0", Less),
        ("0foo2.0", "0foo2.0.0", Less),
        ("0foo2.0", "0foo2.10", Less),
        ("0foo2.1", "0foo2.10", Less),
        ("1.09", "1.9", Equal),
        ("1.0.8+nmu1", "1.0.8", Greater),
        ("3.11", "3.10+nmu1", Greater),
        ("0.9j-20080306-4", "0.9i-20070324-2", Greater),
        ("1.2.0~b7-1", "1.2.0~b6-1", Greater),
        ("1.011-1", "1.06-2", Greater),
        ("0.0.9+dfsg1-1", "0.0.8+dfsg1-3", Greater),
        ("4.6.99+svn6582-1", "4.6.99+svn6496-1", Greater),
        ("53", "52", Greater),
        ("0.9.9~pre122-1", "0.9.9~pre111-1", Greater),
        ("2:2.3.2-2+lenny2", "2:2.3.2-2", Greater),
        ("1:3.8.1-1", "3.8.GA-1", Greater),
        ("1.0.1+gpl-1", "1.0.1-2", Greater),
        ("1a", "1000a", Less),
        // What dpkg refuses or warns about, ordered as `Scheme::Debian` says.
        ("", "0", Equal),
        ("", "0~", Greater),
        ("  1.0 ", "1.0", Equal),
        (":1.0", "1.0", Equal),
        ("x:1.0", "1.0", Greater),
        ("1.0-", "1.0", Equal),
        ("a", "1", Greater),
        ("1.0é", "1.0z", Greater),
        ("1.0é", "1.0+", Less),
    ];

    #[test]
    fn debian_follows_dpkg() {
        table(Scheme::Debian, DPKG_CASES);
    }

    /// A fixed-seed xorshift, so every run puts the same generated pairs to dpkg.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    const PIECES: &[&str] = &[
        "0", "1", "9", "10", "01", "a", "b", "Z", "rc", "~", "~~", "+", ".", "-", ":",
    ];

    fn generated(rng: &mut Rng) -> String {
        let mut v = String::from(rng.pick(&["", "", "", "1:", "0:", "2:"]));
        v.push_str(rng.pick(&["0", "1", "2", "10"]));
        for _ in 0..rng.below(5) {
            v.push_str(rng.pick(PIECES));
        }
        v
    }

    /// A neighbour of `a`, so that pairs share prefixes and exercise more than their first byte.
    fn neighbour(rng: &mut Rng, a: &str) -> String {
        match rng.below(5) {
            0 => format!("{a}-0"),
            1 => format!("{a}{}", rng.pick(PIECES)),
            2 => format!("{}{}", &a[..a.len() - 1], rng.pick(PIECES)),
            3 => format!("{}{}", &a[..rng.below(a.len())], rng.pick(PIECES)),
            _ => format!("{}{a}", rng.pick(&["0:", "1:", "", "00"])),
        }
    }

    /// dpkg's verdict on `a op b`; dpkg must not even warn, since only versions `check_debian` accepts are asked.
    fn dpkg(a: &str, op: &str, b: &str) -> bool {
        let out = Command::new("dpkg")
            .args(["--compare-versions", a, op, b])
            .output()
            .expect("dpkg runs");
        let complaint = String::from_utf8_lossy(&out.stderr);
        assert!(complaint.is_empty(), "dpkg on {a} {op} {b}: {complaint}");
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            code => panic!("dpkg on {a} {op} {b} exited with {code:?}"),
        }
    }

    #[test]
    fn debian_agrees_with_dpkg_itself() {
        if !std::path::Path::new("/usr/bin/dpkg").exists() {
            eprintln!("dpkg is not installed: cross-check skipped");
            return;
        }
        let mut pairs: Vec<(String, String)> = DPKG_CASES
            .iter()
            .filter(|(a, b, _)| check_debian(a).is_ok() && check_debian(b).is_ok())
            .map(|(a, b, _)| (a.to_string(), b.to_string()))
            .collect();
        let from_table = pairs.len();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        while pairs.len() < from_table + 150 {
            let a = generated(&mut rng);
            let b = neighbour(&mut rng, &a);
            if check_debian(&a).is_ok() && check_debian(&b).is_ok() {
                pairs.push((a, b));
            }
        }
        let mut orders = [0; 3];
        for (a, b) in &pairs {
            let theirs = if dpkg(a, "lt", b) {
                Less
            } else if dpkg(a, "eq", b) {
                Equal
            } else {
                Greater
            };
            assert_eq!(compare(Scheme::Debian, a, b), theirs, "{a} vs {b}");
            orders[(theirs as i8 + 1) as usize] += 1;
        }
        assert!(from_table >= 60, "{from_table} table pairs");
        assert!(orders.iter().all(|n| *n >= 20), "{orders:?} lt/eq/gt");
    }

    #[test]
    fn rpm_follows_rpmvercmp() {
        table(
            Scheme::Rpm,
            &[
                // rpm's own test suite (tests/rpmvercmp.at).
                ("1.0", "1.0", Equal),
                ("1.0", "2.0", Less),
                ("2.0.1", "2.0.1", Equal),
                ("2.0", "2.0.1", Less),
                ("2.0.1a", "2.0.1a", Equal),
                ("2.0.1a", "2.0.1", Greater),
                ("5.5p1", "5.5p1", Equal),
                ("5.5p1", "5.5p2", Less),
                ("5.5p10", "5.5p10", Equal),
                ("5.5p1", "5.5p10", Less),
                ("10xyz", "10.1xyz", Less),
                ("xyz10", "xyz10", Equal),
                ("xyz10", "xyz10.1", Less),
                ("xyz.4", "xyz.4", Equal),
                ("xyz.4", "8", Less),
                ("xyz.4", "2", Less),
                ("5.5p2", "5.6p1", Less),
                ("5.6p1", "6.5p1", Less),
                ("6.0.rc1", "6.0", Greater),
                ("10b2", "10a1", Greater),
                ("10a2", "10b2", Less),
                ("1.0aa", "1.0aa", Equal),
                ("1.0a", "1.0aa", Less),
                ("10.0001", "10.0001", Equal),
                ("10.0001", "10.1", Equal),
                ("10.0001", "10.0039", Less),
                ("4.999.9", "5.0", Less),
                ("20101121", "20101121", Equal),
                ("20101121", "20101122", Less),
                ("2_0", "2_0", Equal),
                ("2.0", "2_0", Equal),
                ("a", "a", Equal),
                ("a+", "a+", Equal),
                ("a+", "a_", Equal),
                ("+a", "+a", Equal),
                ("+a", "_a", Equal),
                ("+_", "+_", Equal),
                ("_+", "+_", Equal),
                ("+", "_", Equal),
                ("1.0~rc1", "1.0~rc1", Equal),
                ("1.0~rc1", "1.0", Less),
                ("1.0~rc1", "1.0~rc2", Less),
                ("1.0~rc1~git123", "1.0~rc1~git123", Equal),
                ("1.0~rc1~git123", "1.0~rc1", Less),
                ("1.0^", "1.0^", Equal),
                ("1.0^", "1.0", Greater),
                ("1.0^git1", "1.0^git1", Equal),
                ("1.0^git1", "1.0", Greater),
                ("1.0^git1", "1.0^git2", Less),
                ("1.0^git1", "1.01", Less),
                ("1.0^20160101", "1.0^20160101", Equal),
                ("1.0^20160101", "1.0.1", Less),
                ("1.0^20160101^git1", "1.0^20160101^git1", Equal),
                ("1.0^20160102", "1.0^20160101^git1", Greater),
                ("1.0~rc1^git1", "1.0~rc1^git1", Equal),
                ("1.0~rc1^git1", "1.0~rc1", Greater),
                ("1.0^git1~pre", "1.0^git1~pre", Equal),
                ("1.0^git1", "1.0^git1~pre", Greater),
                // The oddities rpm documents and keeps (RhBug:811992; bytes beyond ASCII are separators).
                ("1b.fc17", "1b.fc17", Equal),
                ("1b.fc17", "1.fc17", Less),
                ("1g.fc17", "1.fc17", Greater),
                ("1.1.α", "1.1.β", Equal),
                ("1.1.αα", "1.1.α", Equal),
                ("1.1.ββ", "1.1.αα", Equal),
                ("1.α.2", "1.2", Equal),
                // The rest of the brief's cases.
                ("1.0", "1.0.1", Less),
                ("1.0a", "1.0", Greater),
                ("1.0^", "1.0^git1", Less),
                ("1.0^git1", "1.0.1", Less),
                ("1.0~", "1.0^", Less),
                ("1.0010", "1.9", Greater),
                ("2a", "2.0", Less),
                ("1.0A", "1.0a", Less),
                ("99999999999999999999999", "100000000000000000000000", Less),
            ],
        );
    }

    #[test]
    fn rpm_compares_epoch_then_version_then_release() {
        table(
            Scheme::Rpm,
            &[
                ("1.0-1", "1.0-2", Less),
                ("1:1.0", "2.0", Greater),
                ("0:2.0", "2.0", Equal),
                (":2.0", "2.0", Equal),
                ("1:1.0-1", "1:1.0-1", Equal),
                ("2:1.0", "1:9.0", Greater),
                ("1.0-27.el9", "1.0-27.el9_1", Less),
                ("5.14.0-362.el9", "5.14.0-362.el9~1", Greater),
                ("1.0-1", "1.0.1-0", Less),
                ("1.0-rc-2", "1.0-rc-10", Less),
                // A missing (or empty) release matches any.
                ("3.0.7-27.el9", "3.0.7", Equal),
                ("3.0.7-1", "3.0.7-", Equal),
                ("3.0.7", "3.0.8-1", Less),
                // Not an epoch, so part of the version: letters before a number.
                ("x:1.0", "1.0", Less),
            ],
        );
    }

    #[test]
    fn odd_input_never_panics_and_stays_antisymmetric() {
        let odd = [
            "",
            " ",
            ":",
            "-",
            "::",
            "--",
            "1:",
            ":1",
            "1:-",
            "-1",
            "x:1",
            "1:2:3",
            "1-2-3",
            "~",
            "^",
            "~^~",
            "é",
            "1.é.~",
            "\0",
            "1\t0",
            "00000000000000000000000000000000000000001",
            "99999999999999999999999999999999999999999:1",
        ];
        for scheme in [Scheme::Generic, Scheme::Debian, Scheme::Rpm] {
            for a in odd {
                assert_eq!(compare(scheme, a, a), Equal, "{scheme:?}: {a:?}");
                for b in odd {
                    assert_eq!(
                        compare(scheme, a, b),
                        compare(scheme, b, a).reverse(),
                        "{scheme:?}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn debian_versions_are_checked() {
        for good in [
            "0",
            "1.0",
            "1:2.10-3",
            "2.36-9+deb12u4",
            "1.0~rc1",
            "1:1.0:2-1",
            "1.0-a-b",
            "2147483647:1",
            "0foo~foo+Bar",
        ] {
            assert_eq!(check_debian(good), Ok(()), "{good}");
        }
        let version = |v: &str| v.to_owned();
        for (bad, refusal) in [
            (
                "",
                VersionError::Empty {
                    version: version(""),
                },
            ),
            (
                " ",
                VersionError::Empty {
                    version: version(" "),
                },
            ),
            (
                "1.0 beta",
                VersionError::Character {
                    version: version("1.0 beta"),
                    ch: ' ',
                },
            ),
            (
                " 1.0",
                VersionError::Character {
                    version: version(" 1.0"),
                    ch: ' ',
                },
            ),
            (
                "1.0_1",
                VersionError::Character {
                    version: version("1.0_1"),
                    ch: '_',
                },
            ),
            (
                "1.0é",
                VersionError::Character {
                    version: version("1.0é"),
                    ch: 'é',
                },
            ),
            (
                "x:1.0",
                VersionError::Epoch {
                    version: version("x:1.0"),
                },
            ),
            (
                ":1.0",
                VersionError::Epoch {
                    version: version(":1.0"),
                },
            ),
            (
                "1.0:2",
                VersionError::Epoch {
                    version: version("1.0:2"),
                },
            ),
            (
                "2147483648:1",
                VersionError::EpochTooBig {
                    version: version("2147483648:1"),
                },
            ),
            (
                "1:",
                VersionError::NoUpstream {
                    version: version("1:"),
                },
            ),
            (
                "1:-1",
                VersionError::NoUpstream {
                    version: version("1:-1"),
                },
            ),
            (
                "-1",
                VersionError::NoUpstream {
                    version: version("-1"),
                },
            ),
            (
                "v1.0",
                VersionError::Start {
                    version: version("v1.0"),
                },
            ),
            (
                "1:~1",
                VersionError::Start {
                    version: version("1:~1"),
                },
            ),
            (
                "1.0-",
                VersionError::EmptyRevision {
                    version: version("1.0-"),
                },
            ),
            (
                "1:1.0-1:2",
                VersionError::RevisionCharacter {
                    version: version("1:1.0-1:2"),
                    ch: ':',
                },
            ),
        ] {
            assert_eq!(check_debian(bad), Err(refusal), "{bad:?}");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong_in_words() {
        let said = |v: &str| check_debian(v).unwrap_err().to_string();
        assert_eq!(
            said("1.0 beta"),
            "version `1.0 beta`: ` ` is not allowed in a version (only letters, digits and `. + ~ - :`)"
        );
        assert_eq!(
            said("x:1.0"),
            "version `x:1.0`: the epoch before the first `:` must be a number"
        );
        assert_eq!(
            said("v1.0"),
            "version `v1.0`: the upstream version must start with a digit"
        );
        assert_eq!(
            said("1.0-"),
            "version `1.0-`: it ends with `-`, so the revision after it is empty"
        );
        assert_eq!(
            said("1:1.0-1:2"),
            "version `1:1.0-1:2`: `:` is not allowed in the revision after the last `-` (only letters, digits and `. + ~`)"
        );
    }
}
