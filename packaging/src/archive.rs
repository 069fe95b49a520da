//! The payload archive: a deterministic gzip'd tar of a directory, and its safe extraction.
//!
//! Building is reproducible (sorted entries, zero times and owners, normalised modes), so the
//! same directory always signs to the same sha256. Extraction accepts only regular files and
//! directories under the destination and stages into a temp dir that is renamed into place only
//! when every entry was written, so a refusal or failure leaves nothing behind.

use crate::atomic;
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};
use tar::{EntryType, Header};

/// Extraction refuses archives that unpack to more than this (8 GiB).
pub const MAX_EXTRACTED_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// What a TUF target records about a payload file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadInfo {
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// Length of the file in bytes.
    pub length: u64,
}

/// Packs the contents of `src_dir` into a deterministic `.tar.gz` at `out` (replaced atomically).
pub fn build_payload(src_dir: &Path, out: &Path) -> Result<PayloadInfo> {
    let meta = fs::metadata(src_dir).map_err(|e| Error::io("read", src_dir, e))?;
    if !meta.is_dir() {
        return Err(Error::UnsupportedSource {
            path: src_dir.to_path_buf(),
            reason: "the payload source must be a directory".into(),
        });
    }
    let src_canon = fs::canonicalize(src_dir).map_err(|e| Error::io("resolve", src_dir, e))?;
    let out_dir = atomic::parent_dir(out);
    if resolve_existing(out_dir).starts_with(&src_canon) {
        return Err(Error::PayloadInsideSource {
            out: out.to_path_buf(),
            src: src_dir.to_path_buf(),
        });
    }
    fs::create_dir_all(out_dir).map_err(|e| Error::io("create directory", out_dir, e))?;

    let mut entries = Vec::new();
    collect(src_dir, "", &mut entries)?;
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));

    let tmp = atomic::temp_beside(out)?;
    let info = {
        let write_err = |e| Error::io("write", tmp.path(), e);
        let hashing = HashingWriter::new(BufWriter::new(tmp.as_file()));
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(hashing, Compression::default());
        let mut builder = tar::Builder::new(gz);
        for entry in &entries {
            append(&mut builder, entry)?;
        }
        let gz = builder.into_inner().map_err(write_err)?;
        let hashing = gz.finish().map_err(write_err)?;
        let (buffered, info) = hashing.finish();
        buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        info
    };
    atomic::commit(tmp, out)?;
    Ok(info)
}

/// Hashes a file as TUF does for targets.
pub fn sha256_file(path: &Path) -> Result<PayloadInfo> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hashing = HashingWriter::new(io::sink());
    io::copy(&mut file, &mut hashing).map_err(|e| Error::io("read", path, e))?;
    Ok(hashing.finish().1)
}

/// Safely unpacks a payload archive into `dest`, which must not exist yet.
pub fn extract_payload(archive: &Path, dest: &Path) -> Result<()> {
    extract_payload_capped(archive, dest, MAX_EXTRACTED_BYTES)
}

pub fn extract_payload_capped(archive: &Path, dest: &Path, cap: u64) -> Result<()> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(Error::DestinationExists {
            path: dest.to_path_buf(),
        });
    }
    let parent = atomic::parent_dir(dest);
    fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
    let file = File::open(archive).map_err(|source| Error::ArchiveRead {
        path: archive.to_path_buf(),
        source,
    })?;
    let staging = tempfile::Builder::new()
        .prefix(".rollcall-extract-")
        .tempdir_in(parent)
        .map_err(|e| Error::io("create a staging directory in", parent, e))?;
    unpack(file, archive, staging.path(), cap)?;
    set_dir_mode(staging.path())?;
    atomic::sync_dir(staging.path())?;

    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        return Err(Error::io("move the extracted payload to", dest, e));
    }
    atomic::sync_dir(parent)
}

// === building ===

/// `path` with its longest existing prefix canonicalized (the rest may not exist yet).
fn resolve_existing(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        if let Ok(resolved) = fs::canonicalize(cur) {
            return missing
                .iter()
                .rev()
                .fold(resolved, |acc: PathBuf, part| acc.join(part));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_owned());
                cur = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

struct SourceEntry {
    /// Path inside the archive, `/`-separated.
    rel: String,
    abs: PathBuf,
    kind: SourceKind,
}

enum SourceKind {
    Dir,
    File { executable: bool },
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<SourceEntry>) -> Result<()> {
    let listing = fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| Error::io("list", dir, e))?;
        let abs = item.path();
        let Some(name) = item.file_name().to_str().map(str::to_owned) else {
            return Err(Error::UnsupportedSource {
                path: abs,
                reason: "file names in a payload must be UTF-8".into(),
            });
        };
        let rel = format!("{prefix}{name}");
        let meta = fs::symlink_metadata(&abs).map_err(|e| Error::io("read", &abs, e))?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            return Err(Error::UnsupportedSource {
                path: abs,
                reason: "symbolic links are not allowed in a payload; copy the file instead".into(),
            });
        } else if file_type.is_dir() {
            collect(&abs, &format!("{rel}/"), out)?;
            out.push(SourceEntry {
                rel,
                abs,
                kind: SourceKind::Dir,
            });
        } else if file_type.is_file() {
            out.push(SourceEntry {
                rel,
                abs,
                kind: SourceKind::File {
                    executable: owner_executable(&meta),
                },
            });
        } else {
            return Err(Error::UnsupportedSource {
                path: abs,
                reason: "only regular files and directories can be packaged".into(),
            });
        }
    }
    Ok(())
}

fn append<W: Write>(builder: &mut tar::Builder<W>, entry: &SourceEntry) -> Result<()> {
    let pack_err = |e| Error::io("pack", &entry.abs, e);
    let mut header = Header::new_gnu();
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    match entry.kind {
        SourceKind::Dir => {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder
                .append_data(&mut header, &entry.rel, io::empty())
                .map_err(pack_err)
        }
        SourceKind::File { executable } => {
            let file = File::open(&entry.abs).map_err(|e| Error::io("open", &entry.abs, e))?;
            let len = file
                .metadata()
                .map_err(|e| Error::io("read", &entry.abs, e))?
                .len();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(len);
            let reader = ExactLen {
                inner: BufReader::new(file),
                remaining: len,
            };
            builder
                .append_data(&mut header, &entry.rel, reader)
                .map_err(pack_err)
        }
    }
}

#[cfg(unix)]
fn owner_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn owner_executable(_meta: &fs::Metadata) -> bool {
    false
}

/// Yields exactly `remaining` bytes and fails if the file shrank or grew while being packed, so a
/// concurrently modified file cannot produce a corrupt archive.
struct ExactLen<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("file grew while it was being packed")),
            };
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 && max > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was being packed",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Passes writes through while hashing and counting them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    length: u64,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            length: 0,
        }
    }

    fn finish(self) -> (W, PayloadInfo) {
        let info = PayloadInfo {
            sha256: hex::encode(self.hasher.finalize()),
            length: self.length,
        };
        (self.inner, info)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.length += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// === extraction ===

fn unpack(file: File, archive: &Path, root: &Path, cap: u64) -> Result<()> {
    let read_err = |source| Error::ArchiveRead {
        path: archive.to_path_buf(),
        source,
    };
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut total: u64 = 0;
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let rel = safe_relative_path(&name)?;
        let refuse = |reason: &str| Error::UnsafeArchiveEntry {
            entry: name.clone(),
            reason: reason.to_string(),
        };
        match kind {
            EntryType::Directory => {
                if let Some(rel) = rel {
                    create_dirs(&root.join(rel))?;
                }
            }
            EntryType::Regular => {
                let rel = rel.ok_or_else(|| refuse("a file entry must have a name"))?;
                let size = entry.header().size().map_err(read_err)?;
                total = total.saturating_add(size);
                if total > cap {
                    return Err(Error::ArchiveTooLarge {
                        path: archive.to_path_buf(),
                        limit: cap,
                    });
                }
                let executable = entry.header().mode().map_err(read_err)? & 0o100 != 0;
                let target = root.join(rel);
                create_dirs(atomic::parent_dir(&target))?;
                let mut out = create_file(&target, executable).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        refuse("the path appears more than once in the archive")
                    } else {
                        Error::io("create", &target, e)
                    }
                })?;
                copy_exact(&mut entry, &mut out, size, &target).map_err(|e| match e {
                    CopyError::Read(source) => read_err(source),
                    CopyError::Write(e) => e,
                })?;
                out.sync_all().map_err(|e| Error::io("fsync", &target, e))?;
            }
            EntryType::Symlink => {
                return Err(refuse("symbolic links are not allowed in a payload"));
            }
            EntryType::Link => return Err(refuse("hard links are not allowed in a payload")),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(refuse(
                    "device and FIFO entries are not allowed in a payload",
                ));
            }
            other => {
                return Err(refuse(&format!(
                    "entry type {other:?} is not allowed; a payload holds only regular files and \
                     directories"
                )));
            }
        }
    }
    Ok(())
}

/// Maps an archive path to a relative path that stays under the destination; `None` for the
/// destination itself (`./`).
fn safe_relative_path(name: &str) -> Result<Option<PathBuf>> {
    let refuse = |reason: &str| Error::UnsafeArchiveEntry {
        entry: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(refuse("the entry has an empty path"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(refuse("absolute paths are not allowed"));
    }
    let mut rel = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("`..` components are not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("absolute paths are not allowed"))
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

enum CopyError {
    Read(io::Error),
    Write(Error),
}

fn copy_exact(
    from: &mut impl Read,
    to: &mut File,
    size: u64,
    target: &Path,
) -> std::result::Result<(), CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = from.read(&mut buf[..want]).map_err(CopyError::Read)?;
        if n == 0 {
            return Err(CopyError::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ended inside a file",
            )));
        }
        to.write_all(&buf[..n])
            .map_err(|e| CopyError::Write(Error::io("write", target, e)))?;
        left -= n as u64;
    }
    Ok(())
}

fn create_dirs(path: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o755);
    }
    builder
        .create(path)
        .map_err(|e| Error::io("create directory", path, e))
}

fn create_file(path: &Path, executable: bool) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if executable { 0o755 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = executable;
    options.open(path)
}

/// The staging dir is created private (0700); the payload root gets the usual 0755.
fn set_dir_mode(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("set permissions on", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_source(root: &Path) -> PathBuf {
        let src = root.join("src");
        fs::create_dir_all(src.join("bin")).expect("mkdir");
        fs::create_dir_all(src.join("empty")).expect("mkdir");
        fs::write(src.join("README"), b"hello\n").expect("write");
        fs::write(src.join("bin/install.sh"), b"#!/bin/sh\necho installed\n").expect("write");
        fs::write(src.join(format!("{}.txt", "long".repeat(40))), b"long name").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                src.join("bin/install.sh"),
                fs::Permissions::from_mode(0o750),
            )
            .expect("chmod");
        }
        src
    }

    fn only_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_preserves_files_and_executable_bit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = sample_source(tmp.path());
        let out = tmp.path().join("payload.tar.gz");
        let info = build_payload(&src, &out).expect("build");
        assert_eq!(info, sha256_file(&out).expect("hash"));
        assert_eq!(info.length, fs::metadata(&out).expect("stat").len());

        let dest = tmp.path().join("unpacked");
        extract_payload(&out, &dest).expect("extract");
        assert_eq!(fs::read(dest.join("README")).expect("read"), b"hello\n");
        assert_eq!(
            fs::read(dest.join("bin/install.sh")).expect("read"),
            b"#!/bin/sh\necho installed\n"
        );
        assert_eq!(
            fs::read(dest.join(format!("{}.txt", "long".repeat(40)))).expect("read"),
            b"long name"
        );
        assert!(dest.join("empty").is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&dest.join("bin/install.sh")) & 0o100, 0o100);
            assert_eq!(mode(&dest.join("README")) & 0o100, 0);
            assert_eq!(mode(&dest) & 0o700, 0o700);
        }
        assert_eq!(
            only_entries(tmp.path()),
            ["payload.tar.gz", "src", "unpacked"]
        );

        let err = extract_payload(&out, &dest).expect_err("dest exists");
        assert!(matches!(err, Error::DestinationExists { .. }), "{err:?}");
    }

    #[test]
    fn builds_are_deterministic_and_sorted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = sample_source(tmp.path());
        let a = build_payload(&src, &tmp.path().join("a.tar.gz")).expect("a");
        // Times must not matter.
        File::options()
            .write(true)
            .open(src.join("README"))
            .expect("open")
            .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(7))
            .expect("set mtime");
        let b = build_payload(&src, &tmp.path().join("b.tar.gz")).expect("b");
        assert_eq!(a, b);

        let file = File::open(tmp.path().join("a.tar.gz")).expect("open");
        let mut tar = tar::Archive::new(GzDecoder::new(file));
        let mut names = Vec::new();
        for entry in tar.entries().expect("entries") {
            let entry = entry.expect("entry");
            let h = entry.header();
            assert_eq!(h.mtime().expect("mtime"), 0);
            assert_eq!(h.uid().expect("uid"), 0);
            assert_eq!(h.gid().expect("gid"), 0);
            names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"bin/install.sh".to_string()), "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_in_source_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = sample_source(tmp.path());
        std::os::unix::fs::symlink("/etc/passwd", src.join("bin/link")).expect("symlink");
        let out = tmp.path().join("p.tar.gz");
        let err = build_payload(&src, &out).expect_err("symlink");
        assert!(
            matches!(&err, Error::UnsupportedSource { path, .. } if path.ends_with("bin/link")),
            "{err:?}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!out.exists());
        assert_eq!(only_entries(tmp.path()), ["src"]);
    }

    #[test]
    fn output_inside_source_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = sample_source(tmp.path());
        let err = build_payload(&src, &src.join("bin/p.tar.gz")).expect_err("inside");
        assert!(matches!(err, Error::PayloadInsideSource { .. }), "{err:?}");
        let err = build_payload(&src, &src.join("new/dir/p.tar.gz")).expect_err("inside");
        assert!(matches!(err, Error::PayloadInsideSource { .. }), "{err:?}");
        assert!(!src.join("new").exists(), "nothing created in the source");

        let out = tmp.path().join("dist/nested/p.tar.gz");
        build_payload(&src, &out).expect("creates the output directory");
        assert!(out.is_file());
    }

    /// A tar written byte by byte, so it can hold what `tar::Builder` would refuse to write.
    fn raw_archive(path: &Path, entries: &[(&str, EntryType, &[u8])]) {
        let gz = GzBuilder::new().write(File::create(path).expect("create"), Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, kind, data) in entries {
            let mut header = Header::new_gnu();
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                header.set_link_name("README").expect("link name");
            }
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder
            .into_inner()
            .expect("tar")
            .finish()
            .expect("gz")
            .sync_all()
            .expect("sync");
    }

    fn assert_refused(entries: &[(&str, EntryType, &[u8])], bad: &str) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        fs::create_dir(&work).expect("mkdir");
        let archive = tmp.path().join("bad.tar.gz");
        raw_archive(&archive, entries);
        let dest = work.join("dest");
        let err = extract_payload(&archive, &dest).expect_err(bad);
        match &err {
            Error::UnsafeArchiveEntry { entry, .. } => assert_eq!(entry, bad),
            other => panic!("{bad}: expected UnsafeArchiveEntry, got {other:?}"),
        }
        assert!(err.to_string().contains(bad), "{err}");
        assert!(!dest.exists(), "{bad}: dest must not exist");
        assert!(only_entries(&work).is_empty(), "{bad}: staging left behind");
        assert_eq!(only_entries(tmp.path()), ["bad.tar.gz", "work"], "{bad}");
    }

    #[test]
    fn parent_dir_entries_are_refused() {
        assert_refused(
            &[
                ("ok.txt", EntryType::Regular, b"fine"),
                ("../evil", EntryType::Regular, b"evil"),
            ],
            "../evil",
        );
        assert_refused(
            &[("a/../../evil", EntryType::Regular, b"evil")],
            "a/../../evil",
        );
    }

    #[test]
    fn absolute_entries_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("evil");
        let name = victim.to_string_lossy().into_owned();
        assert!(name.len() < 100, "temp path too long for a raw header");
        assert_refused(&[(&name, EntryType::Regular, b"evil")], &name);
        assert!(!victim.exists());
    }

    #[test]
    fn links_devices_and_fifos_are_refused() {
        assert_refused(&[("link", EntryType::Symlink, b"")], "link");
        assert_refused(
            &[
                ("README", EntryType::Regular, b"x"),
                ("hard", EntryType::Link, b""),
            ],
            "hard",
        );
        assert_refused(&[("dev", EntryType::Char, b"")], "dev");
        assert_refused(&[("blk", EntryType::Block, b"")], "blk");
        assert_refused(&[("fifo", EntryType::Fifo, b"")], "fifo");
    }

    #[test]
    fn duplicate_files_are_refused() {
        assert_refused(
            &[
                ("twice", EntryType::Regular, b"one"),
                ("twice", EntryType::Regular, b"two"),
            ],
            "twice",
        );
    }

    #[test]
    fn size_cap_is_enforced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = tmp.path().join("big.tar.gz");
        raw_archive(
            &archive,
            &[
                ("a", EntryType::Regular, &[0u8; 600]),
                ("b", EntryType::Regular, &[0u8; 600]),
            ],
        );
        let dest = tmp.path().join("dest");
        let err = extract_payload_capped(&archive, &dest, 1000).expect_err("cap");
        assert!(
            matches!(err, Error::ArchiveTooLarge { limit: 1000, .. }),
            "{err:?}"
        );
        assert!(!dest.exists());
        extract_payload_capped(&archive, &dest, 1200).expect("within cap");
    }

    #[test]
    fn garbage_is_an_archive_read_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let archive = tmp.path().join("junk.tar.gz");
        fs::write(&archive, b"this is not gzip").expect("write");
        let dest = tmp.path().join("dest");
        let err = extract_payload(&archive, &dest).expect_err("junk");
        assert!(matches!(err, Error::ArchiveRead { .. }), "{err:?}");
        assert!(err.to_string().contains("junk.tar.gz"), "{err}");
        assert!(!dest.exists());
        assert_eq!(only_entries(tmp.path()), ["junk.tar.gz"]);
    }
}
