//! The inventory filter language that selects agents, for `agents list --where` and rollout targets:
//! `--where os.name=Ubuntu --where 'os.version>=22.04' --where 'software.openssl<3.0.13'`.
//!
//! A filter is `KEY OP VALUE`. The key is one of the closed list of facts [`Key`] or `software.NAME`, an installed
//! package ([`Subject`]); [`Op`] is the comparison. An agent's inventory answers through the [`Facts`] trait, so this
//! module knows nothing of how agents are stored. Versions of installed software compare by the rules of the
//! database they came from (Debian ordering for dpkg, rpmvercmp for rpm; `rollcall_packaging::version`), other
//! facts by a generic part-wise ordering. The seams for the language to grow: [`Filter::parse`] reads one term and
//! [`Op::test`] decides one comparison, so a richer grammar parses into and combines [`Filter`]s, a new key is one
//! entry in [`Key::ALL`], and a new operator one variant of [`Op`].
//!
//! Tested by the unit tests at the bottom: parsing and printing, every refusal with its exact message (which
//! points at the bad part), and matching against a HashMap-backed [`Facts`].

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use rollcall_packaging::version::{compare, Scheme};
use serde::{Deserialize, Serialize};

/// Why a filter was refused: the filter, what is wrong, and (in the message's second and third lines) the filter
/// again with the bad part underlined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub text: String,
    pub problem: Problem,
    /// The bad part, in characters of `text`.
    at: usize,
    len: usize,
}

/// What is wrong with a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    MissingOperator,
    MissingKey,
    UnknownKey(String),
    MissingPackage,
    EmptyValue,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingOperator => write!(
                f,
                "missing operator (expected KEY OP VALUE with OP one of =, !=, <, <=, >, >=, ~, e.g. \"os.version>=22.04\")"
            ),
            Problem::MissingKey => {
                write!(f, "missing key (expected KEY OP VALUE, e.g. \"os.name=Ubuntu\")")
            }
            Problem::UnknownKey(key) => write!(
                f,
                "unknown key {key:?} (known keys: {}, or software.NAME for an installed package)",
                known_keys()
            ),
            Problem::MissingPackage => write!(
                f,
                "software. needs a package name (e.g. \"software.openssl<3.0.13\")"
            ),
            Problem::EmptyValue => {
                write!(f, "empty value (expected KEY OP VALUE, e.g. \"os.name=Ubuntu\")")
            }
        }
    }
}

impl FilterError {
    /// `problem` with the characters `at..at + len` of `text` underlined (counted in characters, as printed).
    fn new(text: &str, problem: Problem, at: usize, len: usize) -> FilterError {
        FilterError {
            text: text.to_owned(),
            problem,
            at,
            len: len.max(1),
        }
    }

    /// The characters of `byte_range` of the filter text.
    fn at_bytes(text: &str, problem: Problem, start: usize, end: usize) -> FilterError {
        let at = text[..start].chars().count();
        FilterError::new(text, problem, at, text[start..end].chars().count())
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter {:?}: {}", self.text, self.problem)?;
        if !self.text.is_empty() && !self.text.chars().any(char::is_control) {
            write!(
                f,
                "\n  {}\n  {}{}",
                self.text,
                " ".repeat(self.at),
                "^".repeat(self.len)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for FilterError {}

// === impl Key ===

/// The agent facts a filter may ask about; a closed list so a typo is refused instead of matching nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Hostname,
    Site,
    Platform,
    OsName,
    OsVersion,
    OsBuild,
    OsKernel,
    TimeZone,
    Arch,
    AgentVersion,
    HwVendor,
    HwModel,
    HwSerial,
    BiosVersion,
    CpuModel,
    CpuCount,
    MemoryGib,
    Metered,
}

impl Key {
    /// Every key, in the order the refusal message lists them.
    pub const ALL: [Key; 18] = [
        Key::Hostname,
        Key::Site,
        Key::Platform,
        Key::OsName,
        Key::OsVersion,
        Key::OsBuild,
        Key::OsKernel,
        Key::TimeZone,
        Key::Arch,
        Key::AgentVersion,
        Key::HwVendor,
        Key::HwModel,
        Key::HwSerial,
        Key::BiosVersion,
        Key::CpuModel,
        Key::CpuCount,
        Key::MemoryGib,
        Key::Metered,
    ];

    /// The name admins type and [`Facts::fact`] is asked with.
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Hostname => "hostname",
            Key::Site => "site",
            Key::Platform => "platform",
            Key::OsName => "os.name",
            Key::OsVersion => "os.version",
            Key::OsBuild => "os.build",
            Key::OsKernel => "os.kernel",
            Key::TimeZone => "os.timezone",
            Key::Arch => "arch",
            Key::AgentVersion => "agent.version",
            Key::HwVendor => "hw.vendor",
            Key::HwModel => "hw.model",
            Key::HwSerial => "hw.serial",
            Key::BiosVersion => "bios.version",
            Key::CpuModel => "cpu.model",
            Key::CpuCount => "cpu.count",
            Key::MemoryGib => "memory.gib",
            Key::Metered => "net.metered",
        }
    }

    /// The key for a typed name, any case.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL
            .into_iter()
            .find(|key| key.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn known_keys() -> String {
    Key::ALL.map(Key::as_str).join(", ")
}

/// What a filter asks about: a fact of the inventory, or an installed package.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Fact(Key),
    /// `software.NAME`: the versions of package NAME (any case) the agent has installed.
    Software(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Fact(key) => f.write_str(key.as_str()),
            Subject::Software(name) => write!(f, "software.{name}"),
        }
    }
}

// === impl Op ===

/// How a filter compares a fact with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=`: equal, ignoring case (for software: the same version).
    Eq,
    /// `!=`: not equal; also true when the agent lacks the fact or the package.
    Ne,
    /// `<`: older version.
    Lt,
    /// `<=`: older or same version.
    Le,
    /// `>`: newer version.
    Gt,
    /// `>=`: newer or same version.
    Ge,
    /// `~`: contains, ignoring case.
    Contains,
}

impl Op {
    /// Two-character operators first, so `<=` is not read as `<` followed by a value `=…`.
    const BY_LENGTH: [Op; 7] = [Op::Ne, Op::Le, Op::Ge, Op::Eq, Op::Lt, Op::Gt, Op::Contains];

    /// The operator as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "~",
        }
    }

    /// Whether `fact OP value` holds, versions ordered by `scheme`; the one place a comparison's meaning is
    /// decided. Equality of facts ignores case; equality of software versions follows the scheme (`1.0` and
    /// `0:1.0` are the same Debian version).
    pub fn test(self, fact: &str, value: &str, scheme: Scheme) -> bool {
        let same = || match scheme {
            Scheme::Generic => eq_ignore_case(fact, value),
            _ => compare(scheme, fact, value) == Ordering::Equal,
        };
        match self {
            Op::Eq => same(),
            Op::Ne => !same(),
            Op::Lt => compare(scheme, fact, value) == Ordering::Less,
            Op::Le => compare(scheme, fact, value) != Ordering::Greater,
            Op::Gt => compare(scheme, fact, value) == Ordering::Greater,
            Op::Ge => compare(scheme, fact, value) != Ordering::Less,
            Op::Contains => fact.to_lowercase().contains(&value.to_lowercase()),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

// === impl Filter ===

/// An agent's inventory as a filter sees it, so the model does not depend on how agents are stored.
pub trait Facts {
    /// The fact named by a [`Key::as_str`], or `None` when the agent did not report it.
    fn fact(&self, key: &str) -> Option<String>;

    /// The installed versions of package `name` (any case) with the ordering they follow; empty when the package
    /// is not installed or the agent reported no software.
    fn software(&self, _name: &str) -> Vec<(String, Scheme)> {
        Vec::new()
    }
}

/// One `KEY OP VALUE` term of `--where`; an agent is selected when it matches all of the filters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Filter {
    subject: Subject,
    op: Op,
    /// Never empty, no surrounding whitespace.
    value: String,
}

impl Filter {
    /// Reads `os.name=Ubuntu`, `os.version >= 22.04`, `hostname~web`, `software.openssl<3.0.13`; a fact key is
    /// any case, spaces are trimmed.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let Some((at, op)) = find_op(text) else {
            return Err(FilterError::new(
                text,
                Problem::MissingOperator,
                0,
                text.chars().count(),
            ));
        };
        let name = text[..at].trim();
        let value_at = at + op.as_str().len();
        let value = text[value_at..].trim();
        if name.is_empty() {
            return Err(FilterError::at_bytes(
                text,
                Problem::MissingKey,
                at,
                value_at,
            ));
        }
        let name_at = text.find(name).unwrap_or(0);
        let subject = match name.get(..9) {
            Some(prefix) if prefix.eq_ignore_ascii_case("software.") => {
                let package = name[9..].trim();
                if package.is_empty() {
                    return Err(FilterError::at_bytes(
                        text,
                        Problem::MissingPackage,
                        name_at,
                        name_at + name.len(),
                    ));
                }
                Subject::Software(package.to_owned())
            }
            _ => Subject::Fact(Key::from_name(name).ok_or_else(|| {
                FilterError::at_bytes(
                    text,
                    Problem::UnknownKey(name.to_owned()),
                    name_at,
                    name_at + name.len(),
                )
            })?),
        };
        if value.is_empty() {
            return Err(FilterError::at_bytes(
                text,
                Problem::EmptyValue,
                at,
                text.len(),
            ));
        }
        Ok(Filter {
            subject,
            op,
            value: value.to_string(),
        })
    }

    /// What this filter asks about.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// How the fact is compared.
    pub fn op(&self) -> Op {
        self.op
    }

    /// What the fact is compared with.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether an agent is selected by this term. With several values (a package installed for two
    /// architectures) one matching is enough, except for `!=`, which needs all to differ; an agent without the
    /// fact or the package matches only `!=`.
    pub fn matches(&self, facts: &impl Facts) -> bool {
        let values = match &self.subject {
            Subject::Fact(key) => facts
                .fact(key.as_str())
                .map(|v| vec![(v, Scheme::Generic)])
                .unwrap_or_default(),
            Subject::Software(name) => facts.software(name),
        };
        let holds = |(fact, scheme): &(String, Scheme)| self.op.test(fact, &self.value, *scheme);
        match self.op {
            Op::Ne => values.iter().all(holds),
            _ => values.iter().any(holds),
        }
    }
}

/// Whether an agent is selected by every filter (no filters: every agent).
pub fn matches_all(filters: &[Filter], facts: &impl Facts) -> bool {
    filters.iter().all(|filter| filter.matches(facts))
}

/// The first operator in `text` and its byte offset; keys never hold operator characters, values may.
fn find_op(text: &str) -> Option<(usize, Op)> {
    text.char_indices()
        .filter(|(_, c)| matches!(c, '=' | '!' | '<' | '>' | '~'))
        .find_map(|(at, _)| {
            let rest = &text[at..];
            Op::BY_LENGTH
                .into_iter()
                .find(|op| rest.starts_with(op.as_str()))
                .map(|op| (at, op))
        })
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A value starting with `=` after `<` or `>` would read back as `<=` or `>=`; a space keeps them apart.
        let gap = if self.value.starts_with('=') { " " } else { "" };
        write!(f, "{}{}{gap}{}", self.subject, self.op, self.value)
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Filter, FilterError> {
        Filter::parse(text)
    }
}

impl TryFrom<String> for Filter {
    type Error = FilterError;

    fn try_from(text: String) -> Result<Filter, FilterError> {
        Filter::parse(&text)
    }
}

impl From<Filter> for String {
    fn from(filter: Filter) -> String {
        filter.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Inventory(HashMap<String, String>, Vec<(String, String, Scheme)>);

    impl Inventory {
        fn with_software(mut self, software: &[(&str, &str, Scheme)]) -> Inventory {
            self.1 = software
                .iter()
                .map(|(n, v, s)| (n.to_string(), v.to_string(), *s))
                .collect();
            self
        }
    }

    impl Facts for Inventory {
        fn fact(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }

        fn software(&self, name: &str) -> Vec<(String, Scheme)> {
            self.1
                .iter()
                .filter(|(n, _, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v, s)| (v.clone(), *s))
                .collect()
        }
    }

    fn inventory(pairs: &[(&str, &str)]) -> Inventory {
        Inventory(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Vec::new(),
        )
    }

    fn filter(text: &str) -> Filter {
        Filter::parse(text).unwrap()
    }

    fn refusal(text: &str) -> String {
        Filter::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parse_reads_key_op_and_value() {
        let cases = [
            ("os.name=Ubuntu", Key::OsName, Op::Eq, "Ubuntu"),
            ("os.name!=Ubuntu", Key::OsName, Op::Ne, "Ubuntu"),
            ("os.version<22.04", Key::OsVersion, Op::Lt, "22.04"),
            ("os.version<=22.04", Key::OsVersion, Op::Le, "22.04"),
            ("os.version>22.04", Key::OsVersion, Op::Gt, "22.04"),
            ("os.version>=22.04", Key::OsVersion, Op::Ge, "22.04"),
            ("hostname~web", Key::Hostname, Op::Contains, "web"),
            (" OS.Version >= 22.04 ", Key::OsVersion, Op::Ge, "22.04"),
            (
                "platform~Windows Server",
                Key::Platform,
                Op::Contains,
                "Windows Server",
            ),
            (
                "os.kernel=5.15.0-91-generic",
                Key::OsKernel,
                Op::Eq,
                "5.15.0-91-generic",
            ),
            ("os.version<1.0~rc1", Key::OsVersion, Op::Lt, "1.0~rc1"),
            ("hostname~a=b", Key::Hostname, Op::Contains, "a=b"),
            ("site==north", Key::Site, Op::Eq, "=north"),
            ("arch=x86_64", Key::Arch, Op::Eq, "x86_64"),
            ("agent.version>=0.3.0", Key::AgentVersion, Op::Ge, "0.3.0"),
        ];
        for (text, key, op, value) in cases {
            let parsed = filter(text);
            assert_eq!(
                (parsed.subject(), parsed.op(), parsed.value()),
                (&Subject::Fact(key), op, value),
                "{text}"
            );
            assert_eq!(text.parse::<Filter>().unwrap(), parsed);
        }
    }

    #[test]
    fn display_round_trips() {
        let cases = [
            ("os.name=Ubuntu", "os.name=Ubuntu"),
            (" OS.Version >= 22.04 ", "os.version>=22.04"),
            ("hostname ~ web-0", "hostname~web-0"),
            ("platform~Windows Server", "platform~Windows Server"),
            ("os.version< =1", "os.version< =1"),
            ("os.version> =1", "os.version> =1"),
            ("site==north", "site= =north"),
            ("hostname~a=b", "hostname~a=b"),
        ];
        for (text, canonical) in cases {
            let parsed = filter(text);
            assert_eq!(parsed.to_string(), canonical, "{text}");
            assert_eq!(filter(canonical), parsed, "{canonical} reads back the same");
        }
    }

    #[test]
    fn parse_refuses_with_the_expected_form_and_points_at_the_bad_part() {
        let operator = "missing operator (expected KEY OP VALUE with OP one of =, !=, <, <=, >, >=, ~, e.g. \"os.version>=22.04\")";
        let unknown = |key: &str| {
            format!(
                "unknown key \"{key}\" (known keys: {}, or software.NAME for an installed package)",
                known_keys()
            )
        };
        let empty = "empty value (expected KEY OP VALUE, e.g. \"os.name=Ubuntu\")";
        let cases = [
            ("osname", operator.to_owned(), "^^^^^^"),
            ("os.name!Ubuntu", operator.to_owned(), "^^^^^^^^^^^^^^"),
            ("", operator.to_owned(), ""),
            (
                "=Ubuntu",
                "missing key (expected KEY OP VALUE, e.g. \"os.name=Ubuntu\")".to_owned(),
                "^",
            ),
            ("os.nam=Ubuntu", unknown("os.nam"), "^^^^^^"),
            (" os name =Ubuntu", unknown("os name"), " ^^^^^^^"),
            ("os.name=", empty.to_owned(), "       ^"),
            ("os.version>=   ", empty.to_owned(), "          ^^^^^"),
            (
                "software.=1",
                "software. needs a package name (e.g. \"software.openssl<3.0.13\")".to_owned(),
                "^^^^^^^^^",
            ),
            ("ös.nam=x", unknown("ös.nam"), "^^^^^^"),
        ];
        for (text, problem, marker) in cases {
            let expected = if text.is_empty() {
                format!("filter \"\": {problem}")
            } else {
                format!("filter {text:?}: {problem}\n  {text}\n  {marker}")
            };
            assert_eq!(refusal(text), expected, "{text:?}");
        }
        let e = Filter::parse("os.nam=Ubuntu").unwrap_err();
        assert_eq!(e.problem, Problem::UnknownKey("os.nam".into()));
        assert_eq!(e.text, "os.nam=Ubuntu");
    }

    #[test]
    fn software_filters_follow_the_package_database_ordering() {
        let agent = Inventory(HashMap::new(), Vec::new()).with_software(&[
            ("openssl", "3.0.2-0ubuntu1.15", Scheme::Debian),
            ("libc6", "2.36-9", Scheme::Debian),
            ("libc6", "2.36-9+deb12u4", Scheme::Debian),
            ("kernel", "5.14.0-362.el9", Scheme::Rpm),
            ("Cisco Secure Client", "5.1.2.42", Scheme::Generic),
        ]);
        let cases = [
            ("software.openssl<3.0.13", true),
            ("software.OpenSSL<3.0.2", false),
            ("software.openssl>=3.0.2-0ubuntu1.15", true),
            ("software.openssl=3.0.2-0ubuntu1.15", true),
            ("software.openssl<1:1.0", true),
            ("software.openssl~ubuntu", true),
            ("software.libc6<2.36-9+deb12u4", true),
            ("software.libc6!=2.36-9", false),
            ("software.libc6!=2.37", true),
            ("software.kernel<5.14.0-362.el9~1", false),
            ("software.kernel>5.14.0-300.el9", true),
            ("software.cisco secure client<5.1.10", true),
            ("software.zsh!=5.9", true),
            ("software.zsh<99", false),
        ];
        for (text, expected) in cases {
            assert_eq!(filter(text).matches(&agent), expected, "{text}");
        }
        assert_eq!(
            filter("Software.openssl < 3.0.13").to_string(),
            "software.openssl<3.0.13"
        );
    }

    #[test]
    fn serde_is_the_filter_text() {
        let f = filter("OS.Version >= 22.04");
        assert_eq!(serde_json::to_string(&f).unwrap(), r#""os.version>=22.04""#);
        assert_eq!(
            serde_json::from_str::<Filter>(r#""os.version>=22.04""#).unwrap(),
            f
        );
        let err = serde_json::from_str::<Filter>(r#""os.name=""#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"filter "os.name=": empty value"#),
            "{err}"
        );
    }

    #[test]
    fn keys_have_one_name_each() {
        for key in Key::ALL {
            assert_eq!(Key::from_name(key.as_str()), Some(key));
            assert_eq!(Key::from_name(&key.as_str().to_uppercase()), Some(key));
        }
        assert_eq!(Key::from_name("os"), None);
    }

    #[test]
    fn equality_ignores_case() {
        let agent = inventory(&[("os.name", "Ubuntu"), ("hostname", "ÉCOLE-01")]);
        assert!(filter("os.name=ubuntu").matches(&agent));
        assert!(filter("os.name=UBUNTU").matches(&agent));
        assert!(!filter("os.name=Debian").matches(&agent));
        assert!(!filter("os.name=Ubuntu Server").matches(&agent));
        assert!(filter("hostname=école-01").matches(&agent));
        assert!(!filter("os.name!=ubuntu").matches(&agent));
        assert!(filter("os.name!=Debian").matches(&agent));
    }

    #[test]
    fn contains_ignores_case() {
        let agent = inventory(&[("platform", "Windows Server 2022")]);
        assert!(filter("platform~server").matches(&agent));
        assert!(filter("platform~WINDOWS SERVER").matches(&agent));
        assert!(filter("platform~2022").matches(&agent));
        assert!(!filter("platform~linux").matches(&agent));
    }

    #[test]
    fn a_missing_fact_matches_only_not_equal() {
        let agent = inventory(&[("os.name", "Ubuntu")]);
        assert!(filter("os.kernel!=6.1").matches(&agent));
        for text in [
            "os.kernel=6.1",
            "os.kernel<6.1",
            "os.kernel<=6.1",
            "os.kernel>6.1",
            "os.kernel>=6.1",
            "os.kernel~6",
        ] {
            assert!(!filter(text).matches(&agent), "{text}");
        }
    }

    #[test]
    fn order_operators_compare_versions() {
        let agent = inventory(&[("os.version", "22.04"), ("agent.version", "3.0.2")]);
        let cases = [
            ("os.version<22.10", true),
            ("os.version<=22.10", true),
            ("os.version>22.10", false),
            ("os.version>=22.04", true),
            ("os.version<=22.4", true),
            ("os.version>=22.4", true),
            ("os.version<22.04", false),
            ("os.version>22.04", false),
            ("os.version>9", true),
            ("os.version<22.04.1", true),
            ("agent.version<3.0.13", true),
            ("agent.version>3.0.13", false),
            ("agent.version>=3", true),
        ];
        for (text, expected) in cases {
            assert_eq!(filter(text).matches(&agent), expected, "{text}");
        }
    }

    #[test]
    fn matches_all_needs_every_filter() {
        let agent = inventory(&[
            ("os.name", "Ubuntu"),
            ("os.version", "22.04"),
            ("site", "north"),
        ]);
        let filters = |texts: &[&str]| texts.iter().map(|t| filter(t)).collect::<Vec<_>>();
        assert!(matches_all(&[], &agent));
        assert!(matches_all(
            &filters(&["os.name=Ubuntu", "os.version>=22.04"]),
            &agent
        ));
        assert!(!matches_all(
            &filters(&["os.name=Ubuntu", "os.version>=24.04"]),
            &agent
        ));
        assert!(!matches_all(
            &filters(&["site=south", "os.name=Ubuntu"]),
            &agent
        ));
    }
}
