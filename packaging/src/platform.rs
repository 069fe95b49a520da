//! Platform strings: `any`, an OS (`linux`, `windows`) or an OS and architecture
//! (`linux-x86_64`, `windows-aarch64`), spelled as Rust's `std::env::consts` spells them.

/// Operating systems a manifest may name.
pub const KNOWN_OS: &[&str] = &["linux", "windows", "macos"];

/// Architectures a manifest may name after the OS.
pub const KNOWN_ARCH: &[&str] = &[
    "x86_64",
    "x86",
    "aarch64",
    "arm",
    "riscv64",
    "powerpc64",
    "s390x",
    "loongarch64",
];

/// The platform this process runs on, e.g. `linux-x86_64`, as an agent reports it.
pub fn current() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// The OS part of a platform string (`linux` for `linux-x86_64`).
pub fn os_of(platform: &str) -> &str {
    platform.split_once('-').map_or(platform, |(os, _arch)| os)
}

/// Whether an endpoint on `platform` (e.g. `linux-x86_64`) may install a package listing `platforms`: `any`,
/// the exact platform, or its OS.
pub fn matches(platforms: &[String], platform: &str) -> bool {
    let os = os_of(platform);
    platforms
        .iter()
        .any(|p| p == "any" || p == platform || p == os)
}

/// Why a manifest's platform entry is not one we know, or `None` when it is valid.
pub fn problem(platform: &str) -> Option<String> {
    if platform == "any" {
        return None;
    }
    let (os, arch) = match platform.split_once('-') {
        Some((os, arch)) => (os, Some(arch)),
        None => (platform, None),
    };
    if !KNOWN_OS.contains(&os) {
        return Some(format!(
            "`{platform}` names unknown OS `{os}` (expected `any`, one of {} or OS-ARCH)",
            KNOWN_OS.join(", ")
        ));
    }
    match arch {
        Some(arch) if !KNOWN_ARCH.contains(&arch) => Some(format!(
            "`{platform}` names unknown architecture `{arch}` (expected one of {})",
            KNOWN_ARCH.join(", ")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_a_valid_platform() {
        let p = current();
        assert_eq!(problem(&p), None, "{p}");
        assert_eq!(os_of(&p), std::env::consts::OS);
    }

    #[test]
    fn validates_platform_strings() {
        for good in ["any", "linux", "windows", "linux-x86_64", "windows-aarch64"] {
            assert_eq!(problem(good), None, "{good}");
        }
        for bad in ["", "linx", "linux-", "linux-x86-64", "Linux", "any-x86_64"] {
            assert!(problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn os_part() {
        assert_eq!(os_of("linux-x86_64"), "linux");
        assert_eq!(os_of("windows"), "windows");
    }
}
