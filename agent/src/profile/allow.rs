//! The allow-list: a profile may only touch paths inside the folders the agent's configuration allows. A signed
//! profile is still checked, so that one mistaken (or stolen) signing key cannot rewrite /etc/shadow through a
//! config package. Checked lexically (absolute, no `..`, under a root) and then once symlinks are followed: the
//! deepest part of the path that exists is canonicalized, so a symlinked folder or file that leads outside is
//! refused too. Drift checks run it again, so a symlink changed later is caught before anything is written.

use std::path::{Component, Path, PathBuf};

/// `path` resolved through symlinks, or why it is refused.
pub(crate) fn resolve(path: &str, allow: &[PathBuf]) -> Result<PathBuf, String> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{} has a .. component", path.display()));
    }
    if !allow.iter().any(|root| path.starts_with(root)) {
        return Err(format!("{} is outside the allowed folders", path.display()));
    }
    let real = follow(path)?;
    if !allow.iter().any(|root| real.starts_with(canonical(root))) {
        return Err(format!(
            "{} leads to {} through a symlink, outside the allowed folders",
            path.display(),
            real.display()
        ));
    }
    Ok(real)
}

/// The allowed roots for messages: `/etc/vpn, /etc/hosts` (`none` when the list is empty).
pub(crate) fn describe(allow: &[PathBuf]) -> String {
    if allow.is_empty() {
        return "none".to_owned();
    }
    let roots: Vec<String> = allow.iter().map(|r| r.display().to_string()).collect();
    roots.join(", ")
}

/// The deepest existing part of `path` canonicalized, with the rest joined on.
fn follow(path: &Path) -> Result<PathBuf, String> {
    for existing in path.ancestors() {
        match std::fs::symlink_metadata(existing) {
            Ok(_) => {
                let real = std::fs::canonicalize(existing).map_err(|e| {
                    format!(
                        "{} cannot be followed ({e}): a broken symlink?",
                        existing.display()
                    )
                })?;
                let rest = path.strip_prefix(existing).unwrap_or(Path::new(""));
                return Ok(if rest.as_os_str().is_empty() {
                    real
                } else {
                    real.join(rest)
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot look at {}: {e}", existing.display())),
        }
    }
    Ok(path.to_path_buf())
}

/// A root as it really is (itself when it does not exist yet).
fn canonical(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_resolve_and_the_rest_are_refused_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("vpn")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let allow = vec![root.clone()];
        let at = |p: &str| format!("{}/{p}", dir.path().display());

        assert_eq!(
            resolve(&at("etc/vpn/new/x.conf"), &allow),
            Ok(canonical(&root).join("vpn/new/x.conf"))
        );
        assert_eq!(
            resolve("etc/x", &allow).unwrap_err(),
            "etc/x is not an absolute path"
        );
        assert!(resolve(&at("etc/../outside/x"), &allow)
            .unwrap_err()
            .ends_with("has a .. component"));
        assert!(resolve(&at("outside/x"), &allow)
            .unwrap_err()
            .ends_with("is outside the allowed folders"));
        assert!(
            resolve(&at("etcetera"), &allow).is_err(),
            "a sibling sharing the prefix is outside"
        );

        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let e = resolve(&at("etc/link/x.conf"), &allow).unwrap_err();
        assert!(
            e.contains("through a symlink, outside the allowed folders"),
            "{e}"
        );
        std::fs::write(outside.join("hosts"), b"").unwrap();
        std::os::unix::fs::symlink(outside.join("hosts"), root.join("hosts")).unwrap();
        assert!(resolve(&at("etc/hosts"), &allow)
            .unwrap_err()
            .contains("through a symlink"));
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("broken")).unwrap();
        assert!(resolve(&at("etc/broken"), &allow)
            .unwrap_err()
            .contains("a broken symlink?"));

        std::os::unix::fs::symlink(root.join("vpn"), root.join("inside")).unwrap();
        assert_eq!(
            resolve(&at("etc/inside/x"), &allow),
            Ok(canonical(&root).join("vpn/x"))
        );
        assert_eq!(describe(&[]), "none");
    }
}
