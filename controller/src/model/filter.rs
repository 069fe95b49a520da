//! The inventory filter language that narrows rollout targets: `--where os.name=Ubuntu --where 'os.version>=22.04'`.
//!
//! A filter is `KEY OP VALUE`. [`Key`] is the closed list of facts a filter may ask about and [`Op`] the comparisons;
//! an agent's inventory answers through the [`Facts`] trait, so this module knows nothing of how agents are stored.
//! The seams for the language to grow: [`Filter::parse`] reads one term and [`Op::test`] decides one comparison, so a
//! richer grammar (alternatives, negation, lists) parses into and combines [`Filter`]s, a new key is one entry in
//! [`Key::ALL`], and a new operator one variant of [`Op`].
//!
//! Tested by the unit tests at the bottom: parsing and printing, every refusal with its exact message, and matching
//! against a HashMap-backed [`Facts`].

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a filter was refused; each message quotes the filter and shows the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "filter {text:?}: missing operator (expected KEY OP VALUE with OP one of =, !=, <, <=, >, >=, ~, \
         e.g. \"os.version>=22.04\")"
    )]
    MissingOperator { text: String },
    #[error("filter {text:?}: missing key (expected KEY OP VALUE, e.g. \"os.name=Ubuntu\")")]
    MissingKey { text: String },
    #[error("filter {text:?}: unknown key {key:?} (known keys: {})", known_keys())]
    UnknownKey { text: String, key: String },
    #[error("filter {text:?}: empty value (expected KEY OP VALUE, e.g. \"os.name=Ubuntu\")")]
    EmptyValue { text: String },
}

// === impl Key ===

/// The agent facts a filter may ask about; a closed list so a typo is refused instead of matching nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Hostname,
    Site,
    Platform,
    OsName,
    OsVersion,
    OsKernel,
    Arch,
    AgentVersion,
}

impl Key {
    /// Every key, in the order the refusal message lists them.
    pub const ALL: [Key; 8] = [
        Key::Hostname,
        Key::Site,
        Key::Platform,
        Key::OsName,
        Key::OsVersion,
        Key::OsKernel,
        Key::Arch,
        Key::AgentVersion,
    ];

    /// The name admins type and [`Facts::fact`] is asked with.
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Hostname => "hostname",
            Key::Site => "site",
            Key::Platform => "platform",
            Key::OsName => "os.name",
            Key::OsVersion => "os.version",
            Key::OsKernel => "os.kernel",
            Key::Arch => "arch",
            Key::AgentVersion => "agent.version",
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

// === impl Op ===

/// How a filter compares a fact with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=`: equal, ignoring case.
    Eq,
    /// `!=`: not equal, ignoring case; also true when the agent lacks the fact.
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

    /// Whether `fact OP value` holds; the one place a comparison's meaning is decided.
    pub fn test(self, fact: &str, value: &str) -> bool {
        match self {
            Op::Eq => eq_ignore_case(fact, value),
            Op::Ne => !eq_ignore_case(fact, value),
            Op::Lt => compare_versions(fact, value) == Ordering::Less,
            Op::Le => compare_versions(fact, value) != Ordering::Greater,
            Op::Gt => compare_versions(fact, value) == Ordering::Greater,
            Op::Ge => compare_versions(fact, value) != Ordering::Less,
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

/// Orders versions part by part (split on `.`, `-`, `+`, `~`): digits numerically, other parts as text ignoring
/// case, an empty part before a number before text, and a version before any longer one it is a prefix of
/// (`22.04 < 22.04.1`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s| str::split(s, ['.', '-', '+', '~']);
    let (mut a, mut b) = (parts(a), parts(b));
    loop {
        let order = match (a.next(), b.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => compare_part(x, y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
}

fn compare_part(x: &str, y: &str) -> Ordering {
    if x.is_empty() || y.is_empty() {
        return y.is_empty().cmp(&x.is_empty());
    }
    let numeric = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match (numeric(x), numeric(y)) {
        (true, true) => {
            // Compared as digit strings, so no length of number overflows.
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x
            .chars()
            .flat_map(char::to_lowercase)
            .cmp(y.chars().flat_map(char::to_lowercase)),
    }
}

// === impl Filter ===

/// An agent's inventory as a filter sees it, so the model does not depend on how agents are stored.
pub trait Facts {
    /// The fact named by a [`Key::as_str`], or `None` when the agent did not report it.
    fn fact(&self, key: &str) -> Option<String>;
}

/// One `KEY OP VALUE` term of `--where`; a rollout targets the agents that match all of its filters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Filter {
    key: Key,
    op: Op,
    /// Never empty, no surrounding whitespace.
    value: String,
}

impl Filter {
    /// Reads `os.name=Ubuntu`, `os.version >= 22.04`, `hostname~web`; the key is any case, spaces are trimmed.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let Some((at, op)) = find_op(text) else {
            return Err(FilterError::MissingOperator {
                text: text.to_string(),
            });
        };
        let name = text[..at].trim();
        let value = text[at + op.as_str().len()..].trim();
        if name.is_empty() {
            return Err(FilterError::MissingKey {
                text: text.to_string(),
            });
        }
        let key = Key::from_name(name).ok_or_else(|| FilterError::UnknownKey {
            text: text.to_string(),
            key: name.to_string(),
        })?;
        if value.is_empty() {
            return Err(FilterError::EmptyValue {
                text: text.to_string(),
            });
        }
        Ok(Filter {
            key,
            op,
            value: value.to_string(),
        })
    }

    /// The fact this filter asks about.
    pub fn key(&self) -> Key {
        self.key
    }

    /// How the fact is compared.
    pub fn op(&self) -> Op {
        self.op
    }

    /// What the fact is compared with.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether an agent is targeted by this term; an agent without the fact matches only `!=`.
    pub fn matches(&self, facts: &impl Facts) -> bool {
        match facts.fact(self.key.as_str()) {
            Some(fact) => self.op.test(&fact, &self.value),
            None => self.op == Op::Ne,
        }
    }
}

/// Whether an agent is targeted by every filter of a rollout (no filters: every agent).
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
        write!(f, "{}{}{gap}{}", self.key, self.op, self.value)
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

    struct Inventory(HashMap<String, String>);

    impl Facts for Inventory {
        fn fact(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
    }

    fn inventory(pairs: &[(&str, &str)]) -> Inventory {
        Inventory(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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
                (parsed.key(), parsed.op(), parsed.value()),
                (key, op, value),
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
    fn parse_refuses_with_the_expected_form() {
        let cases = [
            (
                "osname",
                r#"filter "osname": missing operator (expected KEY OP VALUE with OP one of =, !=, <, <=, >, >=, ~, e.g. "os.version>=22.04")"#,
            ),
            (
                "os.name!Ubuntu",
                r#"filter "os.name!Ubuntu": missing operator (expected KEY OP VALUE with OP one of =, !=, <, <=, >, >=, ~, e.g. "os.version>=22.04")"#,
            ),
            (
                "",
                r#"filter "": missing operator (expected KEY OP VALUE with OP one of =, !=, <, <=, >, >=, ~, e.g. "os.version>=22.04")"#,
            ),
            (
                "=Ubuntu",
                r#"filter "=Ubuntu": missing key (expected KEY OP VALUE, e.g. "os.name=Ubuntu")"#,
            ),
            (
                "os.nam=Ubuntu",
                r#"filter "os.nam=Ubuntu": unknown key "os.nam" (known keys: hostname, site, platform, os.name, os.version, os.kernel, arch, agent.version)"#,
            ),
            (
                "os name=Ubuntu",
                r#"filter "os name=Ubuntu": unknown key "os name" (known keys: hostname, site, platform, os.name, os.version, os.kernel, arch, agent.version)"#,
            ),
            (
                "os.name=",
                r#"filter "os.name=": empty value (expected KEY OP VALUE, e.g. "os.name=Ubuntu")"#,
            ),
            (
                "os.version>=   ",
                r#"filter "os.version>=   ": empty value (expected KEY OP VALUE, e.g. "os.name=Ubuntu")"#,
            ),
        ];
        for (text, message) in cases {
            assert_eq!(refusal(text), message, "{text:?}");
        }
        assert_eq!(
            Filter::parse("os.nam=Ubuntu"),
            Err(FilterError::UnknownKey {
                text: "os.nam=Ubuntu".to_string(),
                key: "os.nam".to_string()
            })
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
    fn compare_versions_splits_on_separators() {
        use Ordering::{Equal, Greater, Less};
        let cases = [
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
        ];
        for (a, b, order) in cases {
            assert_eq!(compare_versions(a, b), order, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), order.reverse(), "{b} vs {a}");
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
