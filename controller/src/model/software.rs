//! Installed software as filters and compliance reports ask about it: by package name, with the version ordering
//! of the database the package came from (Debian ordering for dpkg, rpmvercmp for rpm).
//!
//! A fleet installed from a few images shares a few software lists, so the store keeps each distinct list once
//! (a *software set*, named by its sha256) and an agent names its set; [`SoftwareSets`] is how the model asks
//! for one without knowing how it is stored.

use std::collections::HashMap;
use std::sync::Arc;

use rollcall_packaging::version::Scheme;
use rollcall_proto::v1;

/// One software list, by lower-case package name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SoftwareIndex {
    by_name: HashMap<String, Vec<Installed>>,
}

/// One installed entry of a package (a package can be installed for two architectures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub version: String,
    pub arch: String,
    pub scheme: Scheme,
}

impl SoftwareIndex {
    pub fn new(software: &[v1::Software]) -> SoftwareIndex {
        let mut by_name: HashMap<String, Vec<Installed>> = HashMap::with_capacity(software.len());
        for s in software {
            by_name
                .entry(s.name.to_lowercase())
                .or_default()
                .push(Installed {
                    version: s.version.clone(),
                    arch: s.arch.clone(),
                    scheme: scheme_of(s.source),
                });
        }
        SoftwareIndex { by_name }
    }

    /// Every installed entry of `name` (any case); empty when it is not installed.
    pub fn get(&self, name: &str) -> &[Installed] {
        self.by_name
            .get(&name.to_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// How versions from `source` compare.
pub fn scheme_of(source: i32) -> Scheme {
    match v1::SoftwareSource::try_from(source) {
        Ok(v1::SoftwareSource::Dpkg) => Scheme::Debian,
        Ok(v1::SoftwareSource::Rpm) => Scheme::Rpm,
        _ => Scheme::Generic,
    }
}

/// Where software sets are looked up by id (the store; `()` when there is none, as in model tests).
pub trait SoftwareSets {
    /// The set named `id`, `None` when unknown (or `id` is empty: the agent never reported software).
    fn software_set(&self, id: &str) -> Option<Arc<SoftwareIndex>>;
}

impl SoftwareSets for () {
    fn software_set(&self, _id: &str) -> Option<Arc<SoftwareIndex>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_name_in_any_case_with_the_source_scheme() {
        let sw = |name: &str, version: &str, arch: &str, source: v1::SoftwareSource| v1::Software {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            source: source as i32,
            publisher: String::new(),
        };
        let index = SoftwareIndex::new(&[
            sw("libc6", "2.36-9", "amd64", v1::SoftwareSource::Dpkg),
            sw("libc6", "2.36-9", "i386", v1::SoftwareSource::Dpkg),
            sw(
                "openssl",
                "1:3.0.7-27.el9",
                "x86_64",
                v1::SoftwareSource::Rpm,
            ),
            sw(
                "Cisco Secure Client",
                "5.1",
                "x64",
                v1::SoftwareSource::Windows,
            ),
        ]);
        assert_eq!(index.get("LIBC6").len(), 2);
        assert_eq!(index.get("openssl")[0].scheme, Scheme::Rpm);
        assert_eq!(index.get("cisco secure client")[0].scheme, Scheme::Generic);
        assert!(index.get("zsh").is_empty());
        assert_eq!(index.len(), 3);
    }
}
