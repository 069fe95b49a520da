//! What `profile.toml` says, exactly as written: serde types that refuse unknown keys, so a misspelt key is an
//! error rather than a setting silently ignored. `validate` turns a `Spec` into items the engine can apply.

use std::path::Path;

use serde::Deserialize;

use super::ProfileError;

/// The whole `profile.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    #[serde(default)]
    pub profile: Header,
    #[serde(default)]
    pub directory: Vec<DirectorySpec>,
    #[serde(default)]
    pub file: Vec<FileSpec>,
    #[serde(default)]
    pub setting: Vec<SettingSpec>,
    #[serde(default)]
    pub line: Vec<LineSpec>,
    #[serde(default)]
    pub service: Vec<ServiceSpec>,
    #[serde(default)]
    pub registry: Vec<RegistrySpec>,
}

/// `[profile]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Header {
    #[serde(default = "yes")]
    pub restore_on_remove: bool,
    #[serde(default)]
    pub remove: bool,
}

impl Default for Header {
    fn default() -> Header {
        Header {
            restore_on_remove: true,
            remove: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// An owner or group: a name, or a numeric id written as a number or a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Id {
    Number(u32),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    Ini,
    Toml,
    Json,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Ini => "INI",
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSpec {
    pub path: String,
    pub content: Option<String>,
    pub source: Option<String>,
    pub mode: Option<String>,
    pub owner: Option<Id>,
    pub group: Option<Id>,
    pub format: Option<Format>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DirectorySpec {
    pub path: String,
    pub mode: Option<String>,
    pub owner: Option<Id>,
    pub group: Option<Id>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingSpec {
    pub file: String,
    #[serde(default)]
    pub section: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineSpec {
    pub file: String,
    pub line: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSpec {
    pub unit: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RegType {
    #[default]
    String,
    Dword,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistrySpec {
    pub key: String,
    pub name: String,
    pub value: String,
    #[serde(default, rename = "type")]
    pub kind: RegType,
}

/// Reads and parses `dir/profile.toml`.
pub(crate) fn read(profile: &str, dir: &Path) -> Result<Spec, ProfileError> {
    let path = dir.join("profile.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| ProfileError::Read {
        profile: profile.to_owned(),
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ProfileError::Syntax {
        profile: profile.to_owned(),
        path: path.display().to_string(),
        reason: toml_reason(&text, &e),
    })
}

/// A TOML error on one line: `line 4: unknown field ...` (toml's own Display spans several lines).
pub(crate) fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, String> {
        toml::from_str::<Spec>(text).map_err(|e| toml_reason(text, &e))
    }

    #[test]
    fn the_documented_example_parses_with_defaults() {
        let spec = parse(
            "[[file]]\npath = \"/etc/a\"\ncontent = \"x\"\nowner = 0\ngroup = \"root\"\nformat = \"ini\"\n\
             [[setting]]\nfile = \"/etc/b\"\nkey = \"k\"\nvalue = \"v\"\n\
             [[registry]]\nkey = 'HKLM\\X'\nname = \"n\"\nvalue = \"1\"\ntype = \"dword\"\n",
        )
        .unwrap();
        assert!(spec.profile.restore_on_remove && !spec.profile.remove);
        assert!(matches!(spec.file[0].owner, Some(Id::Number(0))));
        assert!(matches!(&spec.file[0].group, Some(Id::Name(n)) if n == "root"));
        assert_eq!(spec.file[0].format, Some(Format::Ini));
        assert_eq!(spec.setting[0].section, "");
        assert_eq!(spec.registry[0].kind, RegType::Dword);
    }

    #[test]
    fn unknown_keys_and_formats_are_refused_with_their_line() {
        let e =
            parse("[[file]]\npath = \"/etc/a\"\ncontent = \"x\"\ncolour = \"red\"\n").unwrap_err();
        assert!(e.starts_with("line 4: unknown field `colour`"), "{e}");
        let e = parse("[profile]\nremove = true\nforce = true\n").unwrap_err();
        assert!(e.starts_with("line 3: unknown field `force`"), "{e}");
        let e =
            parse("[[file]]\npath = \"/etc/a\"\ncontent = \"x\"\nformat = \"yaml\"\n").unwrap_err();
        assert!(e.contains("unknown variant `yaml`"), "{e}");
        let e = parse("[[package]]\nname = \"x\"\n").unwrap_err();
        assert!(e.contains("unknown field `package`"), "{e}");
    }
}
