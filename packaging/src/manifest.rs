//! The package manifest: what a package is and the commands that install, verify and roll it
//! back. The admin writes it as TOML; it travels signed inside the TUF target's `custom` map, so
//! the commands an agent runs are only ever ones an offline key signed.

use crate::error::{Error, Result};
use crate::platform;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Key under which the manifest sits in a TUF target's `custom` map.
pub const CUSTOM_KEY: &str = "rollcall";

/// Default command timeout in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Longest allowed command timeout in seconds (one day).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// A package's signed description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Package name, `^[a-z0-9][a-z0-9.-]{0,63}$`.
    pub name: String,
    /// Package version, `^[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}$`.
    pub version: String,
    /// Anti-rollback counter (>= 1): agents refuse a counter lower than the one installed.
    pub release_counter: u64,
    /// What the package changes.
    #[serde(default)]
    pub kind: PackageKind,
    /// Where it may be installed: `any`, an OS, or OS-ARCH.
    pub platforms: Vec<String>,
    /// Installs the payload (run inside the extracted payload directory). None for a config package: the agent
    /// applies its `profile.toml` itself.
    #[serde(default)]
    pub install: Command,
    /// Exits 0 when the package is in place and working (none for a config package, whose profile the agent
    /// checks itself).
    #[serde(default)]
    pub verify: Command,
    /// Undoes `install` when `verify` fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Command>,
    /// Whether the endpoint must reboot after install.
    #[serde(default)]
    pub reboot: Reboot,
    /// Free text for people.
    #[serde(default)]
    pub description: String,
}

/// What a package changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageKind {
    /// An application.
    #[default]
    App,
    /// An OS update wrapping the OS's own installer.
    Os,
    /// A configuration profile the agent enforces and re-checks for drift.
    Config,
}

/// Reboot behaviour after install.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reboot {
    /// No reboot.
    #[default]
    Never,
    /// The endpoint must reboot to finish the install.
    Required,
}

/// A command run directly (no shell), as an argv list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// argv; `command[0]` is the program.
    pub command: Vec<String>,
    /// Kill the command after this many seconds (1..=86400, default 600).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl Default for Command {
    /// No command (what a config package has).
    fn default() -> Command {
        Command {
            command: Vec::new(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

impl Manifest {
    /// Parses and validates a manifest written as TOML.
    pub fn from_toml_str(s: &str) -> Result<Manifest> {
        let manifest: Manifest = toml::from_str(s).map_err(|source| {
            let line = source.span().map(|span| {
                let start = span.start.min(s.len());
                s.as_bytes()[..start]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            });
            Error::ManifestParse {
                path: None,
                line,
                source: Box::new(source),
            }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Reads, parses and validates a manifest file; errors name the file.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ManifestRead {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::from_toml_str(&text).map_err(|e| e.in_manifest_file(path))
    }

    /// Checks every rule the types cannot express; the error names the first offending field.
    pub fn validate(&self) -> Result<()> {
        check_token(
            "name",
            &self.name,
            |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'),
            "must start with a-z or 0-9 and contain only a-z, 0-9, '.' and '-'",
        )?;
        check_token(
            "version",
            &self.version,
            |c| c.is_ascii_alphanumeric(),
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-'),
            "must start with a letter or digit and contain only letters, digits, '.', '+', '~' and '-'",
        )?;
        if self.release_counter == 0 {
            return Err(invalid("release_counter", "must be at least 1"));
        }
        if self.platforms.is_empty() {
            return Err(invalid(
                "platforms",
                "must list at least one platform (e.g. \"linux-x86_64\", \"windows\" or \"any\")",
            ));
        }
        for (i, p) in self.platforms.iter().enumerate() {
            if let Some(reason) = platform::problem(p) {
                return Err(invalid(format!("platforms[{i}]"), reason));
            }
        }
        if self.kind == PackageKind::Config {
            let commands = [
                ("install", !self.install.command.is_empty()),
                ("verify", !self.verify.command.is_empty()),
                ("rollback", self.rollback.is_some()),
            ];
            if let Some((field, _)) = commands.iter().find(|(_, given)| *given) {
                return Err(invalid(
                    *field,
                    "a config package has no commands: the agent applies, checks and restores its profile.toml \
                     itself",
                ));
            }
            return Ok(());
        }
        for (field, c) in [("install", &self.install), ("verify", &self.verify)] {
            if c.command.is_empty() {
                return Err(invalid(
                    field,
                    "is required ([install] and [verify] with a command); only a kind = \"config\" package has \
                     none",
                ));
            }
        }
        self.install.validate("install")?;
        self.verify.validate("verify")?;
        if let Some(rollback) = &self.rollback {
            rollback.validate("rollback")?;
        }
        Ok(())
    }

    /// The TUF target name of this package's payload: `NAME_VERSION.tar.gz`.
    ///
    /// Neither part may contain `_`, so the name is unambiguous.
    pub fn target_name(&self) -> String {
        format!("{}_{}.tar.gz", self.name, self.version)
    }

    /// Whether an endpoint on `platform` (e.g. `linux-x86_64`) may install this package.
    pub fn supports_platform(&self, platform: &str) -> bool {
        platform::matches(&self.platforms, platform)
    }

    /// The signed `custom` map of the package's TUF target.
    pub fn to_custom(&self) -> HashMap<String, serde_json::Value> {
        let mut custom = HashMap::new();
        custom.insert(CUSTOM_KEY.to_string(), self.to_json_value());
        custom
    }

    /// Reads and validates the manifest from a TUF target's `custom` map.
    pub fn from_custom(custom: &HashMap<String, serde_json::Value>) -> Result<Manifest> {
        let value = custom
            .get(CUSTOM_KEY)
            .ok_or_else(|| invalid(format!("custom.{CUSTOM_KEY}"), "is missing from the target"))?;
        let manifest: Manifest = serde_json::from_value(value.clone())
            .map_err(|source| Error::ManifestJson { source })?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn to_json_value(&self) -> serde_json::Value {
        use serde_json::{json, Map, Value};
        let command = |c: &Command| json!({ "command": c.command, "timeout_secs": c.timeout_secs });
        let mut map = Map::new();
        map.insert("name".into(), Value::from(self.name.clone()));
        map.insert("version".into(), Value::from(self.version.clone()));
        map.insert("release_counter".into(), Value::from(self.release_counter));
        map.insert("kind".into(), Value::from(self.kind.as_str()));
        map.insert("platforms".into(), json!(self.platforms));
        // A config package has none (its profile is what the agent applies).
        for (key, c) in [("install", &self.install), ("verify", &self.verify)] {
            if !c.command.is_empty() {
                map.insert(key.into(), command(c));
            }
        }
        if let Some(rollback) = &self.rollback {
            map.insert("rollback".into(), command(rollback));
        }
        map.insert("reboot".into(), Value::from(self.reboot.as_str()));
        map.insert("description".into(), Value::from(self.description.clone()));
        Value::Object(map)
    }
}

impl PackageKind {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageKind::App => "app",
            PackageKind::Os => "os",
            PackageKind::Config => "config",
        }
    }
}

impl Reboot {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reboot::Never => "never",
            Reboot::Required => "required",
        }
    }
}

impl Command {
    fn validate(&self, field: &str) -> Result<()> {
        match self.command.first() {
            None => return Err(invalid(format!("{field}.command"), "must not be empty")),
            Some(program) if program.trim().is_empty() => {
                return Err(invalid(
                    format!("{field}.command[0]"),
                    "must name a program, not be blank",
                ))
            }
            Some(_) => {}
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(invalid(
                format!("{field}.command[{i}]"),
                "must not contain a NUL byte",
            ));
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(invalid(
                format!("{field}.timeout_secs"),
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            ));
        }
        Ok(())
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::ManifestInvalid {
        path: None,
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_token(
    field: &str,
    value: &str,
    first_ok: impl Fn(char) -> bool,
    rest_ok: impl Fn(char) -> bool,
    rule: &str,
) -> Result<()> {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return Err(invalid(field, "must not be empty"));
    };
    if value.len() > 64 {
        return Err(invalid(field, "must be at most 64 characters"));
    }
    if !first_ok(first) || !chars.all(rest_ok) {
        return Err(invalid(field, format!("`{value}` {rule}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "site-agent-config"
version = "1.2.0+build.7"
release_counter = 12
kind = "os"
platforms = ["linux-x86_64", "windows"]
reboot = "required"
description = "Station proxy settings"

[install]
command = ["/bin/sh", "install.sh"]
timeout_secs = 120

[verify]
command = ["/bin/sh", "verify.sh"]

[rollback]
command = ["/bin/sh", "rollback.sh"]
"#;

    fn good() -> Manifest {
        Manifest::from_toml_str(GOOD).expect("good manifest")
    }

    fn without(field: &str) -> String {
        // Drops a top-level key line or a whole [table].
        let mut out = String::new();
        let mut skipping = false;
        for line in GOOD.lines() {
            if line.starts_with('[') {
                skipping = line == format!("[{field}]");
            } else if line.starts_with(&format!("{field} =")) {
                continue;
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn field_of(err: &Error) -> String {
        match err {
            Error::ManifestInvalid { field, .. } => field.clone(),
            other => panic!("expected ManifestInvalid, got {other:?}"),
        }
    }

    #[test]
    fn good_manifest_parses_with_defaults() {
        let m = good();
        assert_eq!(m.name, "site-agent-config");
        assert_eq!(m.kind, PackageKind::Os);
        assert_eq!(m.reboot, Reboot::Required);
        assert_eq!(m.install.timeout_secs, 120);
        assert_eq!(m.verify.timeout_secs, DEFAULT_TIMEOUT_SECS);
        assert_eq!(m.target_name(), "site-agent-config_1.2.0+build.7.tar.gz");

        let minimal = without("rollback")
            .replace("kind = \"os\"\n", "")
            .replace("reboot = \"required\"\n", "")
            .replace("description = \"Station proxy settings\"\n", "");
        let m = Manifest::from_toml_str(&minimal).expect("minimal manifest");
        assert_eq!(m.kind, PackageKind::App);
        assert_eq!(m.reboot, Reboot::Never);
        assert_eq!(m.rollback, None);
        assert_eq!(m.description, "");
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for field in ["install", "verify"] {
            let err = Manifest::from_toml_str(&without(field)).expect_err(field);
            assert_eq!(field_of(&err), field);
            assert!(err.to_string().contains("is required"), "{err}");
        }
        for field in ["name", "version", "release_counter", "platforms"] {
            let err = Manifest::from_toml_str(&without(field)).expect_err(field);
            assert!(
                matches!(err, Error::ManifestParse { .. }),
                "{field}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{field}`")), "{field}: {msg}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let typo = GOOD.replace("reboot =", "reboots =");
        let err = Manifest::from_toml_str(&typo).expect_err("typo");
        assert!(err.to_string().contains("reboots"), "{err}");
        assert!(err.to_string().contains("(line 7)"), "{err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");

        let nested = GOOD.replace("timeout_secs = 120", "timeout = 120");
        let err = Manifest::from_toml_str(&nested).expect_err("nested typo");
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    #[test]
    fn bad_names_and_versions_are_refused() {
        for name in ["", "Site", "-x", ".x", "a_b", "a/b", &"a".repeat(65)] {
            let mut m = good();
            m.name = name.to_string();
            assert_eq!(field_of(&m.validate().expect_err(name)), "name", "{name}");
        }
        for version in ["", "1_0", "1/0", "-1", "1 0"] {
            let mut m = good();
            m.version = version.to_string();
            assert_eq!(field_of(&m.validate().expect_err(version)), "version");
        }
        let mut m = good();
        m.name = "a".repeat(64);
        m.validate().expect("64 characters is allowed");
    }

    #[test]
    fn release_counter_zero_is_refused() {
        let err =
            Manifest::from_toml_str(&GOOD.replace("release_counter = 12", "release_counter = 0"))
                .expect_err("zero");
        assert_eq!(field_of(&err), "release_counter");
        assert!(err.to_string().contains("release_counter"), "{err}");
    }

    #[test]
    fn empty_commands_and_bad_timeouts_are_refused() {
        let mut m = good();
        m.install.command.clear();
        assert_eq!(field_of(&m.validate().expect_err("empty")), "install");

        let mut m = good();
        m.verify.command = vec![String::new(), "x".into()];
        assert_eq!(
            field_of(&m.validate().expect_err("blank")),
            "verify.command[0]"
        );

        let mut m = good();
        m.rollback = Some(Command {
            command: vec!["x".into()],
            timeout_secs: 0,
        });
        assert_eq!(
            field_of(&m.validate().expect_err("zero timeout")),
            "rollback.timeout_secs"
        );

        let mut m = good();
        m.install.timeout_secs = MAX_TIMEOUT_SECS + 1;
        assert_eq!(
            field_of(&m.validate().expect_err("long timeout")),
            "install.timeout_secs"
        );
    }

    #[test]
    fn platforms_are_checked() {
        let mut m = good();
        m.platforms.clear();
        assert_eq!(field_of(&m.validate().expect_err("empty")), "platforms");

        let mut m = good();
        m.platforms.push("linx-x86_64".into());
        assert_eq!(field_of(&m.validate().expect_err("typo")), "platforms[2]");
    }

    #[test]
    fn read_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("manifest.toml");
        let err = Manifest::read(&path).expect_err("missing");
        assert!(matches!(err, Error::ManifestRead { .. }));
        assert!(err.to_string().contains("manifest.toml"), "{err}");

        std::fs::write(
            &path,
            GOOD.replace("release_counter = 12", "release_counter = 0"),
        )
        .expect("write");
        let err = Manifest::read(&path).expect_err("invalid");
        assert!(err.to_string().contains("manifest.toml"), "{err}");
        assert!(err.to_string().contains("release_counter"), "{err}");

        std::fs::write(&path, GOOD).expect("write");
        assert_eq!(Manifest::read(&path).expect("good"), good());
    }

    #[test]
    fn round_trips_through_custom() {
        for m in [good(), {
            let mut m = good();
            m.rollback = None;
            m
        }] {
            let custom = m.to_custom();
            assert_eq!(Manifest::from_custom(&custom).expect("round trip"), m);
            // Canonical JSON has no floats: only strings, integers, arrays and objects.
            fn no_floats(v: &serde_json::Value) -> bool {
                match v {
                    serde_json::Value::Number(n) => n.is_u64() || n.is_i64(),
                    serde_json::Value::Array(a) => a.iter().all(no_floats),
                    serde_json::Value::Object(o) => o.values().all(no_floats),
                    _ => true,
                }
            }
            assert!(no_floats(&custom[CUSTOM_KEY]));
        }
    }

    #[test]
    fn from_custom_refuses_missing_or_invalid_manifests() {
        let err = Manifest::from_custom(&HashMap::new()).expect_err("missing");
        assert_eq!(field_of(&err), "custom.rollcall");

        let mut custom = good().to_custom();
        custom
            .get_mut(CUSTOM_KEY)
            .and_then(|v| v.as_object_mut())
            .expect("object")
            .insert("release_counter".into(), 0.into());
        assert_eq!(
            field_of(&Manifest::from_custom(&custom).expect_err("zero")),
            "release_counter"
        );

        let mut custom = good().to_custom();
        custom
            .get_mut(CUSTOM_KEY)
            .and_then(|v| v.as_object_mut())
            .expect("object")
            .insert("extra".into(), "x".into());
        assert!(matches!(
            Manifest::from_custom(&custom),
            Err(Error::ManifestJson { .. })
        ));
    }

    #[test]
    fn platform_matching() {
        let mut m = good();
        m.platforms = vec!["linux-x86_64".into(), "windows".into()];
        assert!(m.supports_platform("linux-x86_64"));
        assert!(!m.supports_platform("linux-aarch64"));
        assert!(m.supports_platform("windows-x86_64"));
        assert!(m.supports_platform("windows-aarch64"));
        assert!(!m.supports_platform("macos-aarch64"));

        m.platforms = vec!["linux".into()];
        assert!(m.supports_platform("linux-aarch64"));
        assert!(!m.supports_platform("windows-x86_64"));

        m.platforms = vec!["any".into()];
        assert!(m.supports_platform("windows-x86_64"));
        assert!(m.supports_platform(&crate::platform::current()));
    }

    #[test]
    fn a_config_package_has_no_commands() {
        let config =
            "name = \"vpn-settings\"\nversion = \"1\"\nrelease_counter = 1\nkind = \"config\"\n\
                      platforms = [\"linux\"]\n";
        let m = Manifest::from_toml_str(config).unwrap();
        assert!(m.install.command.is_empty() && m.verify.command.is_empty());
        let back = Manifest::from_custom(&m.to_custom()).unwrap();
        assert_eq!(back, m);
        for extra in [
            "[install]\ncommand = [\"sh\", \"x\"]\n",
            "[verify]\ncommand = [\"true\"]\n",
            "[rollback]\ncommand = [\"true\"]\n",
        ] {
            let e = Manifest::from_toml_str(&format!("{config}{extra}")).unwrap_err();
            assert!(
                e.to_string().contains("a config package has no commands"),
                "{e}"
            );
        }
        let e = Manifest::from_toml_str(&config.replace("kind = \"config\"\n", "")).unwrap_err();
        assert_eq!(field_of(&e), "install", "an app needs its commands");
    }
}
