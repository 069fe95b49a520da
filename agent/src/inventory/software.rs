//! Installed software from the OS package databases, read directly (never a tool spawned per package):
//!
//! - **dpkg**: the status file (`/var/lib/dpkg/status`), streamed stanza by stanza; only packages whose status is
//!   `install ok installed` (or `hold ok installed`) count.
//! - **rpm**: `rpmdb.sqlite` (rpm 4.16+: RHEL 9, Fedora 33+, openSUSE), each row an rpm header blob parsed here
//!   (bounds-checked; a bad row is skipped). An older rpm keeps a BerkeleyDB `Packages` file, which is not parsed:
//!   there ONE `rpm -qa` lists every package at once.
//! - **Windows**: the uninstall registry keys, behind the platform seam (`platform::installed_software`).
//!
//! A database that cannot be read is logged in words and contributes nothing: the inventory never fails a check-in.
//! The result is sorted by name, arch and version (`rollcall_proto::inventory::software_order`).

use std::io::{BufRead, BufReader};
use std::path::Path;

use rollcall_proto::v1;
use tracing::warn;

use crate::config::Settings;

/// Everything installed, from the databases `settings` name (Linux) or the registry (Windows).
pub fn installed(settings: &Settings) -> Vec<v1::Software> {
    let mut all = crate::platform::installed_software(settings);
    all.sort_by(rollcall_proto::inventory::software_order);
    all
}

/// The Linux databases: dpkg's status file and the rpm database, whichever exist.
pub fn linux(dpkg_status: &Path, rpm_db: &Path) -> Vec<v1::Software> {
    let mut all = Vec::new();
    if dpkg_status.exists() {
        match dpkg(dpkg_status) {
            Ok(found) => all.extend(found),
            Err(e) => {
                warn!(file = %dpkg_status.display(), error = %e, "Cannot read the dpkg database; its packages are left out of the inventory.")
            }
        }
    }
    if rpm_db.is_dir() {
        match rpm(rpm_db) {
            Ok(found) => all.extend(found),
            Err(e) => {
                warn!(folder = %rpm_db.display(), error = %e, "Cannot read the rpm database; its packages are left out of the inventory.")
            }
        }
    }
    all
}

// === dpkg ===

/// Installed packages of a dpkg status file.
pub fn dpkg(path: &Path) -> std::io::Result<Vec<v1::Software>> {
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::with_capacity(1024);
    let mut stanza = Stanza::default();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        let text = line.trim_end_matches(['\n', '\r']);
        if n == 0 || text.is_empty() {
            if let Some(s) = stanza.take() {
                out.push(s);
            }
            if n == 0 {
                return Ok(out);
            }
            continue;
        }
        // Continuation lines (a description) start with a space or tab.
        if text.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((field, value)) = text.split_once(':') {
            stanza.set(field, value.trim());
        }
    }
}

/// The fields of one stanza that matter.
#[derive(Default)]
struct Stanza {
    package: String,
    version: String,
    arch: String,
    maintainer: String,
    installed: bool,
}

impl Stanza {
    fn set(&mut self, field: &str, value: &str) {
        match field {
            "Package" => self.package = value.to_owned(),
            "Version" => self.version = value.to_owned(),
            "Architecture" => self.arch = value.to_owned(),
            // The name, without the address.
            "Maintainer" => {
                self.maintainer = value
                    .split('<')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            }
            "Status" => {
                self.installed = matches!(
                    value.split_whitespace().collect::<Vec<_>>().as_slice(),
                    ["install" | "hold", "ok", "installed"]
                )
            }
            _ => {}
        }
    }

    /// The package this stanza describes, if installed (and the stanza is reset either way).
    fn take(&mut self) -> Option<v1::Software> {
        let s = std::mem::take(self);
        (s.installed && !s.package.is_empty()).then_some(v1::Software {
            name: s.package,
            version: s.version,
            arch: s.arch,
            source: v1::SoftwareSource::Dpkg as i32,
            publisher: s.maintainer,
        })
    }
}

// === rpm ===

/// Installed packages of the rpm database in `dir`.
pub fn rpm(dir: &Path) -> Result<Vec<v1::Software>, String> {
    let sqlite = dir.join("rpmdb.sqlite");
    if sqlite.exists() {
        return rpm_sqlite(&sqlite);
    }
    if dir.join("Packages").exists() || dir.join("Packages.db").exists() {
        return rpm_query();
    }
    Ok(Vec::new())
}

/// Every header of an `rpmdb.sqlite`, opened read-only (rpm may hold it: a short busy wait, then an error).
fn rpm_sqlite(path: &Path) -> Result<Vec<v1::Software>, String> {
    use rusqlite::{Connection, OpenFlags};
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    db.busy_timeout(std::time::Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let mut query = db
        .prepare("SELECT blob FROM Packages")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let rows = query
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(rows
        .filter_map(Result::ok)
        .filter_map(|blob| header(&blob))
        .collect())
}

/// The one fallback for an rpm database this module does not read: one `rpm -qa` for every package at once.
fn rpm_query() -> Result<Vec<v1::Software>, String> {
    let out = std::process::Command::new("rpm")
        .args(["-qa", "--qf", "%{NAME}\\t%{EVR}\\t%{ARCH}\\t%{VENDOR}\\n"])
        .output()
        .map_err(|e| format!("cannot run rpm -qa: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rpm -qa failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, version, arch) = (f.next()?, f.next()?, f.next()?);
            Some(v1::Software {
                name: name.to_owned(),
                version: version.to_owned(),
                arch: arch.to_owned(),
                source: v1::SoftwareSource::Rpm as i32,
                publisher: f
                    .next()
                    .filter(|v| *v != "(none)")
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect())
}

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_VENDOR: u32 = 1011;
const TAG_ARCH: u32 = 1022;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// A package from an rpm header blob (index count, data length, 16-byte index entries, data), or `None` when the
/// blob is not one or has no name. Every read is bounds-checked.
fn header(blob: &[u8]) -> Option<v1::Software> {
    let be32 = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            blob.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let entries = be32(0)? as usize;
    let data_len = be32(4)? as usize;
    let data_at = entries.checked_mul(16)?.checked_add(8)?;
    let data = blob.get(data_at..data_at.checked_add(data_len)?)?;
    let mut found: [Option<String>; 6] = Default::default();
    for i in 0..entries {
        let at = 8 + i * 16;
        let (tag, kind, offset) = (be32(at)?, be32(at + 4)?, be32(at + 8)? as usize);
        let slot = match tag {
            TAG_NAME => 0,
            TAG_VERSION => 1,
            TAG_RELEASE => 2,
            TAG_EPOCH => 3,
            TAG_VENDOR => 4,
            TAG_ARCH => 5,
            _ => continue,
        };
        found[slot] = match kind {
            TYPE_STRING | TYPE_I18NSTRING => {
                let rest = data.get(offset..)?;
                let end = rest.iter().position(|b| *b == 0)?;
                Some(String::from_utf8_lossy(&rest[..end]).into_owned())
            }
            TYPE_INT32 => {
                let bytes = data.get(offset..offset.checked_add(4)?)?;
                Some(u32::from_be_bytes(bytes.try_into().ok()?).to_string())
            }
            _ => None,
        };
    }
    let [name, version, release, epoch, vendor, arch] = found;
    let name = name.filter(|n| !n.is_empty())?;
    // As rpm's %{EVR}: the epoch only when there is one.
    let mut evr = match epoch {
        Some(e) => format!("{e}:{}", version.unwrap_or_default()),
        None => version.unwrap_or_default(),
    };
    if let Some(r) = release.filter(|r| !r.is_empty()) {
        evr = format!("{evr}-{r}");
    }
    Some(v1::Software {
        name,
        version: evr,
        arch: arch.unwrap_or_default(),
        source: v1::SoftwareSource::Rpm as i32,
        publisher: vendor.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_keeps_installed_packages_only() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("status");
        std::fs::write(
            &status,
            "Package: bash\r\nStatus: install ok installed\r\nArchitecture: amd64\r\nVersion: 5.2.15-2+b2\r\n\
             Maintainer: Matthias Klose <doko@debian.org>\r\nDescription: GNU shell\r\n a long\r\n .\r\n text\r\n\r\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
             Version: 1:12.2.0-14\nArchitecture: amd64\nPackage: libstdc++6\nStatus: hold ok installed\n\n\
             Package: half\nStatus: install reinstreq half-installed\nVersion: 2\n\n\
             Package: noversion\nStatus: install ok installed\n",
        )
        .unwrap();
        let found = dpkg(&status).unwrap();
        let names: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|s| (s.name.as_str(), s.version.as_str(), s.publisher.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("bash", "5.2.15-2+b2", "Matthias Klose"),
                ("libstdc++6", "1:12.2.0-14", ""),
                ("noversion", "", ""),
            ]
        );
        assert!(found
            .iter()
            .all(|s| s.source == v1::SoftwareSource::Dpkg as i32));
    }

    #[test]
    fn dpkg_reads_this_machine_as_dpkg_query_does() {
        let status = Path::new("/var/lib/dpkg/status");
        if !status.exists() {
            eprintln!("no dpkg database here: skipped");
            return;
        }
        let found = dpkg(status).unwrap();
        let out = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "dpkg"])
            .output()
            .unwrap();
        let version = String::from_utf8_lossy(&out.stdout).into_owned();
        let ours = found
            .iter()
            .find(|s| s.name == "dpkg")
            .expect("dpkg is installed");
        assert_eq!(ours.version, version);
        assert!(found.len() > 100, "{} packages", found.len());
    }

    /// An rpm header blob with these (tag, type, value) entries.
    fn encode(entries: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, kind, value) in entries {
            while *kind == TYPE_INT32 && data.len() % 4 != 0 {
                data.push(0);
            }
            index.extend(tag.to_be_bytes());
            index.extend(kind.to_be_bytes());
            index.extend((data.len() as u32).to_be_bytes());
            index.extend(1u32.to_be_bytes());
            data.extend_from_slice(value);
        }
        let mut blob = Vec::new();
        blob.extend((entries.len() as u32).to_be_bytes());
        blob.extend((data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    #[test]
    fn rpm_headers_are_read_from_an_rpmdb_sqlite_and_bad_rows_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let db = rusqlite::Connection::open(dir.path().join("rpmdb.sqlite")).unwrap();
        db.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        let openssl = encode(&[
            (TAG_NAME, TYPE_STRING, b"openssl\0"),
            (TAG_VERSION, TYPE_STRING, b"3.0.7\0"),
            (TAG_RELEASE, TYPE_STRING, b"27.el9\0"),
            (TAG_EPOCH, TYPE_INT32, &1u32.to_be_bytes()),
            (TAG_ARCH, TYPE_STRING, b"x86_64\0"),
            (TAG_VENDOR, TYPE_STRING, b"Red Hat, Inc.\0"),
        ]);
        let bash = encode(&[
            (TAG_NAME, TYPE_STRING, b"bash\0"),
            (TAG_VERSION, TYPE_STRING, b"5.1.8\0"),
            (TAG_RELEASE, TYPE_STRING, b"9.el9\0"),
            (TAG_ARCH, TYPE_STRING, b"x86_64\0"),
        ]);
        let mut truncated = openssl.clone();
        truncated.truncate(openssl.len() - 9);
        let mut hostile = bash.clone();
        hostile[8 + 8..8 + 12].copy_from_slice(&u32::MAX.to_be_bytes());
        for blob in [
            &openssl,
            &bash,
            &truncated,
            &hostile,
            &vec![0xff; 3],
            &Vec::new(),
        ] {
            db.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
                .unwrap();
        }
        drop(db);
        let mut found = rpm(dir.path()).unwrap();
        found.sort_by(rollcall_proto::inventory::software_order);
        let got: Vec<(&str, &str, &str, &str)> = found
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.version.as_str(),
                    s.arch.as_str(),
                    s.publisher.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("bash", "5.1.8-9.el9", "x86_64", ""),
                ("openssl", "1:3.0.7-27.el9", "x86_64", "Red Hat, Inc."),
            ]
        );
        assert!(found
            .iter()
            .all(|s| s.source == v1::SoftwareSource::Rpm as i32));
    }

    #[test]
    fn a_missing_or_unreadable_database_contributes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(linux(&dir.path().join("none"), &dir.path().join("none")).is_empty());
        std::fs::write(dir.path().join("rpmdb.sqlite"), b"not a database at all").unwrap();
        assert!(linux(&dir.path().join("none"), dir.path()).is_empty());
        assert!(rpm(dir.path()).is_err());
    }
}
