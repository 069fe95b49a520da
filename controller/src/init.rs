//! `rollcall-controller init`: a new data directory with its config, device CA, TLS server certificate, online
//! TUF keys, the first admin's credentials and an empty store.

use std::path::PathBuf;
use std::time::Duration;

use rollcall_packaging::online::OnlineKeys;

use crate::config::EXAMPLE;
use crate::datadir::DataDir;
use crate::error::{write_atomic, Error, Result};
use crate::pki::Ca;
use crate::store::{AuditEntry, CertRecord, Role, Store};

/// Lifetime of the controller's TLS server certificate and of the first admin certificate.
const SERVER_CERT_VALIDITY: Duration = Duration::from_secs(2 * 365 * 86400);
const ADMIN_CERT_VALIDITY: Duration = Duration::from_secs(365 * 86400);

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub data: PathBuf,
    /// Extra DNS names / IP addresses agents use to reach the controller (localhost and loopback are always in).
    pub names: Vec<String>,
}

#[derive(Debug)]
pub struct InitReport {
    pub ca_fingerprint: String,
    pub admin_creds: PathBuf,
    pub online_keys: PathBuf,
}

/// Prefix of the staging folder `init` builds in, inside the data directory.
const STAGING_PREFIX: &str = ".rollcall-init-";

/// Create the data directory. Everything is built in a staging folder *inside* it (so a mount point or a
/// symlinked directory works) and moved into place at the end, `controller.toml` last: a failure leaves no
/// initialised-looking directory, and `init` can simply be run again (it removes stale staging folders).
pub async fn init(opts: &InitOptions) -> Result<InitReport> {
    let root = std::path::absolute(&opts.data).map_err(|source| Error::Write {
        path: opts.data.clone(),
        source,
    })?;
    let target = DataDir::new(&root);
    let write_err = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    std::fs::create_dir_all(&root).map_err(write_err(&root))?;
    for entry in std::fs::read_dir(&root)
        .map_err(write_err(&root))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAGING_PREFIX) {
            // Left by an init that died: it never became a controller, its keys were never used.
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name != "lost+found" {
            return Err(Error::AlreadyInitialised {
                path: opts.data.clone(),
                found: entry.path(),
            });
        }
    }
    let staging = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempdir_in(&root)
        .map_err(write_err(&root))?;
    let report = build(&DataDir::new(staging.path()), opts).await?;
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(staging.path())
        .map_err(write_err(staging.path()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    // controller.toml last: its presence is what makes the directory a controller's.
    names.sort_by_key(|n| n == "controller.toml");
    for name in names {
        std::fs::rename(staging.path().join(&name), root.join(&name))
            .map_err(write_err(&root.join(&name)))?;
    }
    // Make the renames durable.
    #[cfg(unix)]
    std::fs::File::open(&root)
        .and_then(|d| d.sync_all())
        .map_err(write_err(&root))?;
    Ok(InitReport {
        ca_fingerprint: report.ca_fingerprint,
        admin_creds: target.admin_creds(),
        online_keys: target.online_keys(),
    })
}

async fn build(data: &DataDir, opts: &InitOptions) -> Result<InitReport> {
    let ca = Ca::generate("rollcall device CA")?;
    ca.save(&data.ca_cert(), &data.ca_key())?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = local_hostname() {
        names.push(host);
    }
    for n in &opts.names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let server = ca.issue_server(&names, SERVER_CERT_VALIDITY)?;
    let chain = format!("{}{}", server.pem, ca.cert_pem());
    write_atomic(&data.server_cert(), chain.as_bytes(), 0o644)?;
    write_atomic(
        &data.server_key(),
        server.key_pem.unwrap_or_default().as_bytes(),
        0o600,
    )?;

    rollcall_packaging::keys::generate_key(&data.snapshot_key())?;
    rollcall_packaging::keys::generate_key(&data.timestamp_key())?;
    let online = OnlineKeys {
        snapshot: rollcall_packaging::keys::public_key(&data.snapshot_key()).await?,
        timestamp: rollcall_packaging::keys::public_key(&data.timestamp_key()).await?,
    };
    write_atomic(&data.online_keys(), online.to_json()?.as_bytes(), 0o644)?;

    let store = Store::open(&data.store())?;
    let admin = ca.issue_client("admin", ADMIN_CERT_VALIDITY)?;
    let creds = data.admin_creds();
    write_atomic(&creds.join("ca.crt"), ca.cert_pem().as_bytes(), 0o644)?;
    write_atomic(&creds.join("client.crt"), admin.pem.as_bytes(), 0o644)?;
    write_atomic(
        &creds.join("client.key"),
        admin.key_pem.clone().unwrap_or_default().as_bytes(),
        0o600,
    )?;
    store.put_cert(
        &rollcall_proto::sha256_hex(&admin.der),
        &CertRecord {
            subject: "admin".into(),
            role: Role::Admin,
            issued_at: chrono::Utc::now().timestamp(),
            not_after: admin.not_after,
            revoked: false,
            replaces: None,
            renewed_by: None,
        },
    )?;
    store.audit(&AuditEntry {
        at: chrono::Utc::now().timestamp(),
        actor: "local".into(),
        action: "init".into(),
        detail: format!("CA {}", ca.fingerprint()),
        from: String::new(),
        result: "ok".into(),
    })?;
    store.flush().await?;
    std::fs::create_dir_all(data.blobs()).map_err(|source| Error::Write {
        path: data.blobs(),
        source,
    })?;
    write_atomic(&data.config(), EXAMPLE.as_bytes(), 0o644)?;

    Ok(InitReport {
        ca_fingerprint: ca.fingerprint(),
        admin_creds: creds,
        online_keys: data.online_keys(),
    })
}

pub(crate) fn local_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())?;
    let name = name.trim().to_owned();
    (!name.is_empty()).then_some(name)
}
