//! The one way a profile writes a file on the device: a temp file beside it, owner then mode set on the temp file,
//! fsync, rename over the target, fsync the folder. A reader (or a crash) sees the old file or the new one whole,
//! never a torn one, and never the new content with the wrong mode: a secret is not readable for a moment.

use std::io::Write;
use std::path::Path;

use crate::platform::profile as platform;

/// The mode and owner a written file ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Perms {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Replaces `path` with `bytes`, atomically, with `perms`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], perms: Perms) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no folder", path.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".rollcall-tmp-")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temp file in {}: {e}", dir.display()))?;
    let fail = |what: &str, e: std::io::Error| {
        format!("cannot {what} a temp file for {}: {e}", path.display())
    };
    tmp.write_all(bytes).map_err(|e| fail("write", e))?;
    platform::set_owner(tmp.path(), perms.uid, perms.gid)
        .map_err(|e| fail("change the owner of", e))?;
    platform::set_mode(tmp.path(), perms.mode).map_err(|e| fail("set the mode of", e))?;
    tmp.as_file().sync_all().map_err(|e| fail("fsync", e))?;
    tmp.persist(path).map_err(|e| {
        format!(
            "cannot rename a temp file to {}: {}",
            path.display(),
            e.error
        )
    })?;
    // Makes the rename durable; folders cannot be opened everywhere, so this is best effort.
    let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

/// The mode and owner of the regular file at `path`, if there is one.
pub(crate) fn file_meta(path: &Path) -> Option<platform::Meta> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.is_file().then(|| platform::meta(&m))
}

/// The text of the file at `path`: None when it does not exist, an error when it is not UTF-8 text.
pub(crate) fn read_text(path: &Path) -> Result<Option<String>, String> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("{} is not UTF-8 text", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes an edited text file, keeping its mode and owner (0644 and ours when it is new).
pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), String> {
    let perms = match file_meta(path) {
        Some(m) => Perms {
            mode: m.mode,
            uid: Some(m.uid),
            gid: Some(m.gid),
        },
        None => Perms {
            mode: 0o644,
            uid: None,
            gid: None,
        },
    };
    write_file(path, text.as_bytes(), perms)
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_with_mode_and_owner_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.conf");
        let root = crate::profile::fixture::is_root();
        let uid = if root { Some(4321) } else { None };
        write_file(
            &path,
            b"secret\n",
            Perms {
                mode: 0o600,
                uid,
                gid: uid,
            },
        )
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret\n");
        let m = file_meta(&path).unwrap();
        assert_eq!(m.mode, 0o600);
        if root {
            assert_eq!((m.uid, m.gid), (4321, 4321));
        } else {
            eprintln!("not root: chown not checked");
        }
        write_text(&path, "again\n").unwrap();
        assert_eq!(file_meta(&path).unwrap(), m, "an edit keeps mode and owner");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("client.conf")]);
        assert_eq!(read_text(&dir.path().join("absent")), Ok(None));
        std::fs::write(dir.path().join("bin"), [0xff]).unwrap();
        assert!(read_text(&dir.path().join("bin"))
            .unwrap_err()
            .ends_with("bin is not UTF-8 text"));
    }
}
