//! `rollcall pkg`: keys, the admin's image repository, building, signing and pushing packages.
//!
//! `keygen`, `init` (with `--online-keys`), `build` and `sign` work offline; `push` and `list` talk to the
//! controller.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rollcall_packaging::online::OnlineKeys;
use rollcall_packaging::{ImageRepo, Manifest};
use rollcall_proto::v1;
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::output::{print_json, table};
use super::{rpc, usage, AdminClient};

const UPLOAD_CHUNK: usize = 256 * 1024;

#[derive(Debug, Subcommand)]
pub enum PkgCmd {
    /// Make the offline root and targets keys (Ed25519) in a folder. Keep it off the network.
    Keygen {
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Root keys to make (root.pk8 for one; root-1.pk8 … root-N.pk8 for several, each for one keeper).
        #[arg(long, default_value_t = 1, value_name = "N")]
        root_keys: u32,
        /// Encrypt the keys with a passphrase (asked on the terminal, or read from the file named by
        /// ROLLCALL_KEY_PASSPHRASE_FILE); every command that signs asks for it again.
        #[arg(long)]
        encrypt: bool,
    },
    /// Create the image repository folder: root.json signed with the root key(s), an empty targets.json.
    Init {
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// The controller's online-keys.json; without it the keys are fetched from the controller.
        #[arg(long, value_name = "FILE")]
        online_keys: Option<PathBuf>,
        /// How many of the root keys in --keys must sign every later root (e.g. 2 of 3).
        #[arg(long, default_value_t = 1, value_name = "N")]
        root_threshold: u64,
        /// How long root.json stays valid.
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        expires: Duration,
    },
    /// Rotate root: a new root.json version listing the root keys in --new-keys (and their targets key with
    /// --targets), signed by the current root keys (--keys) and the new ones. Agents walk to it on their own after
    /// `pkg push`.
    RotateRoot {
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// Folder with the current root keys (at least the current threshold of them).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Folder with the new root keys (and targets.pk8 with --targets).
        #[arg(long, value_name = "DIR")]
        new_keys: PathBuf,
        /// How many of the new root keys must sign every later root.
        #[arg(long, default_value_t = 1, value_name = "N")]
        root_threshold: u64,
        /// Also move the targets role to --new-keys/targets.pk8 (targets.json is signed again with it).
        #[arg(long)]
        targets: bool,
        /// How long the new root.json stays valid.
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        expires: Duration,
    },
    /// Build a package: the payload folder as a tar.gz, with the manifest beside it.
    Build {
        /// Package manifest (TOML: name, version, release_counter, platforms, install, verify, …).
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// Folder whose contents become the payload; install commands run inside it.
        #[arg(long, value_name = "DIR")]
        payload: PathBuf,
        /// Output folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Sign a built package into the image repository with the offline targets key.
    Sign {
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// The package's .tar.gz from `pkg build` (its .manifest.toml must sit beside it).
        package: PathBuf,
        /// How long the new targets.json stays valid.
        #[arg(long, default_value = "365days", value_parser = humantime::parse_duration)]
        expires: Duration,
    },
    /// Upload new payloads and the signed metadata to the controller.
    Push {
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
    },
    /// Packages the controller has published.
    List,
}

fn root_key(keys: &Path) -> PathBuf {
    keys.join("root.pk8")
}

/// The root keys in a folder: `root.pk8` and `root-N.pk8`, in name order.
fn root_keys(keys: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(keys)
        .map_err(|e| {
            usage(format!(
                "cannot read the keys folder {}: {e}",
                keys.display()
            ))
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "root.pk8" || (name.starts_with("root-") && name.ends_with(".pk8"))
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(usage(format!(
            "no root key (root.pk8 or root-N.pk8) in {}",
            keys.display()
        )));
    }
    Ok(found)
}

fn targets_key(keys: &Path) -> PathBuf {
    keys.join("targets.pk8")
}

/// `demo-app_1.0.tar.gz` → `demo-app_1.0.manifest.toml`.
pub fn manifest_beside(package: &Path) -> PathBuf {
    let name = package
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".tar.gz").unwrap_or(&name);
    package.with_file_name(format!("{stem}.manifest.toml"))
}

fn expires_in(d: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::seconds(d.as_secs() as i64)
}

pub async fn run(
    cmd: PkgCmd,
    controller: Option<&str>,
    creds: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match cmd {
        PkgCmd::Keygen {
            keys,
            root_keys: n,
            encrypt,
        } => {
            if n == 0 {
                return Err(usage("--root-keys must be at least 1"));
            }
            let passphrase = if encrypt {
                Some(new_passphrase(&keys)?)
            } else {
                None
            };
            let written = keygen_with(&keys, n, passphrase.as_deref())?;
            println!(
                "Wrote {}",
                written
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        PkgCmd::RotateRoot {
            repo,
            keys,
            new_keys,
            root_threshold,
            targets,
            expires,
        } => {
            let version =
                rotate_root(&repo, &keys, &new_keys, root_threshold, targets, expires).await?;
            println!(
                "Wrote root.json version {version} into {}{}; publish it with `rollcall pkg push --repo {}`",
                repo.display(),
                if targets {
                    " (targets.json signed again with the new targets key)"
                } else {
                    ""
                },
                repo.display()
            );
        }
        PkgCmd::Init {
            keys,
            repo,
            online_keys,
            root_threshold,
            expires,
        } => {
            let online = match online_keys {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
                    OnlineKeys::from_json(&text)?
                }
                None => {
                    let client = AdminClient::connect(controller, creds).await?;
                    online_keys_of(&client).await?
                }
            };
            ImageRepo::create_with(
                &repo,
                &root_keys(&keys)?,
                root_threshold,
                &targets_key(&keys),
                &online,
                expires_in(expires),
            )
            .await?;
            println!(
                "Created image repository {} (root.json v1, empty targets.json)",
                repo.display()
            );
        }
        PkgCmd::Build {
            manifest,
            payload,
            out,
        } => {
            let (path, m) = build(&manifest, &payload, &out)?;
            if json {
                print_json(&json!({"package": path, "name": m.name, "version": m.version}));
            } else {
                println!("Built {} ({}@{})", path.display(), m.name, m.version);
            }
        }
        PkgCmd::Sign {
            repo,
            keys,
            package,
            expires,
        } => {
            let entry = sign(&repo, &keys, &package, expires).await?;
            println!(
                "Signed {} as target {} (sha256 {}) into {}",
                package.display(),
                entry.name,
                entry.sha256,
                repo.display()
            );
        }
        PkgCmd::Push { repo } => {
            let client = AdminClient::connect(controller, creds).await?;
            let published = repository_info(&client).await?;
            let local = rollcall_proto::sha256_hex(&ImageRepo::open(&repo)?.targets_bytes()?);
            if published.targets_sha256 == local {
                let published = published.targets_version;
                // Running push twice is not an error: there is simply nothing new.
                if json {
                    print_json(&json!({"targets_version": published, "new_packages": []}));
                } else {
                    println!("Nothing new: targets v{published} is already published");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let resp = push(&client, &repo).await?;
            if json {
                print_json(&json!({"targets_version": resp.targets_version,
                    "new_packages": resp.new_packages.iter().map(|p| format!("{}@{}", p.name, p.version)).collect::<Vec<_>>()}));
            } else {
                println!(
                    "Published targets v{} (snapshot v{})",
                    resp.targets_version, resp.snapshot_version
                );
                for p in &resp.new_packages {
                    println!(
                        "  new: {}@{} (release {})",
                        p.name, p.version, p.release_counter
                    );
                }
            }
        }
        PkgCmd::List => {
            let client = AdminClient::connect(controller, creds).await?;
            let resp = client
                .rpc
                .clone()
                .list_packages(v1::ListPackagesRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                let packages: Vec<_> = resp
                    .packages
                    .iter()
                    .map(|p| json!({"name": p.name, "version": p.version, "release_counter": p.release_counter,
                                    "sha256": p.sha256, "length": p.length, "platforms": p.platforms, "kind": p.kind}))
                    .collect();
                print_json(&json!({ "packages": packages }));
            } else {
                let rows: Vec<Vec<String>> = resp
                    .packages
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            p.version.clone(),
                            p.release_counter.to_string(),
                            p.kind.clone(),
                            p.platforms.join(","),
                            p.length.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["NAME", "VERSION", "RELEASE", "KIND", "PLATFORMS", "BYTES"],
                        &rows
                    )
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn keygen(keys: &Path) -> anyhow::Result<()> {
    keygen_n(keys, 1).map(|_| ())
}

/// `n` root keys (root.pk8 for one, root-1.pk8 … otherwise) and targets.pk8; returns what it wrote.
pub fn keygen_n(keys: &Path, n: u32) -> anyhow::Result<Vec<PathBuf>> {
    keygen_with(keys, n, None)
}

/// [`keygen_n`], encrypted with `passphrase` when given.
pub fn keygen_with(keys: &Path, n: u32, passphrase: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let mut written: Vec<PathBuf> = if n == 1 {
        vec![root_key(keys)]
    } else {
        (1..=n)
            .map(|i| keys.join(format!("root-{i}.pk8")))
            .collect()
    };
    written.push(targets_key(keys));
    for path in &written {
        rollcall_packaging::keys::generate_key_with(path, passphrase)?;
    }
    Ok(written)
}

/// A new passphrase: from ROLLCALL_KEY_PASSPHRASE_FILE, or asked twice on the terminal.
fn new_passphrase(keys: &Path) -> anyhow::Result<String> {
    let passphrase = if std::env::var_os("ROLLCALL_KEY_PASSPHRASE_FILE").is_some() {
        rollcall_packaging::keys::passphrase_for(keys).map_err(usage)?
    } else {
        let first = rollcall_packaging::keys::ask_secret("New passphrase for the keys: ")
            .ok_or_else(|| {
                usage("--encrypt needs a terminal, or a file holding the passphrase in ROLLCALL_KEY_PASSPHRASE_FILE")
            })?;
        let again = rollcall_packaging::keys::ask_secret("Again: ").unwrap_or_default();
        if first != again {
            return Err(usage("the passphrases differ"));
        }
        first
    };
    if passphrase.chars().count() < 12 {
        return Err(usage(
            "a passphrase for offline keys needs at least 12 characters",
        ));
    }
    Ok(passphrase)
}

/// `pkg rotate-root`.
pub async fn rotate_root(
    repo: &Path,
    keys: &Path,
    new_keys: &Path,
    threshold: u64,
    targets: bool,
    expires: Duration,
) -> anyhow::Result<u64> {
    let new_targets = targets.then(|| targets_key(new_keys));
    Ok(ImageRepo::open(repo)?
        .rotate_root(
            &root_keys(keys)?,
            &root_keys(new_keys)?,
            threshold,
            new_targets.as_deref(),
            expires_in(expires),
        )
        .await?)
}

async fn repository_info(client: &AdminClient) -> anyhow::Result<v1::RepositoryInfo> {
    Ok(client
        .rpc
        .clone()
        .get_repository(v1::GetRepositoryRequest {})
        .await
        .map_err(rpc)?
        .into_inner())
}

pub async fn online_keys_of(client: &AdminClient) -> anyhow::Result<OnlineKeys> {
    Ok(OnlineKeys::from_json(
        &repository_info(client).await?.online_keys_json,
    )?)
}

pub async fn init_repo(
    keys: &Path,
    repo: &Path,
    online: &OnlineKeys,
    expires: Duration,
) -> anyhow::Result<ImageRepo> {
    Ok(ImageRepo::create_with(
        repo,
        &root_keys(keys)?,
        1,
        &targets_key(keys),
        online,
        expires_in(expires),
    )
    .await?)
}

/// Build `OUT/<name>_<version>.tar.gz` and copy the manifest beside it.
pub fn build(manifest: &Path, payload: &Path, out: &Path) -> anyhow::Result<(PathBuf, Manifest)> {
    let m = Manifest::read(manifest)?;
    if !payload.is_dir() {
        return Err(usage(format!(
            "payload {} is not a folder",
            payload.display()
        )));
    }
    if m.kind == rollcall_packaging::PackageKind::Config {
        check_profile(payload)?;
    }
    std::fs::create_dir_all(out)?;
    let path = out.join(m.target_name());
    rollcall_packaging::build_payload(payload, &path)?;
    std::fs::copy(manifest, manifest_beside(&path))?;
    Ok((path, m))
}

/// A config package's payload holds a `profile.toml` that is TOML. Everything else about it (allowed folders,
/// owners, formats) is checked by each agent before it writes anything, against that device.
fn check_profile(payload: &Path) -> anyhow::Result<()> {
    let path = payload.join("profile.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| usage(format!("a config package needs {}: {e}", path.display())))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| {
        usage(format!(
            "{} is not valid TOML: {}",
            path.display(),
            e.message()
        ))
    })?;
    Ok(())
}

pub async fn sign(
    repo: &Path,
    keys: &Path,
    package: &Path,
    expires: Duration,
) -> anyhow::Result<rollcall_packaging::online::TargetEntry> {
    let manifest_path = manifest_beside(package);
    let manifest = Manifest::read(&manifest_path)?;
    let repo = ImageRepo::open(repo)?;
    Ok(repo
        .add_package(package, &manifest, &targets_key(keys), expires_in(expires))
        .await?)
}

/// Upload every payload the controller lacks, then the metadata (with root.json while the controller has none).
pub async fn push(
    client: &AdminClient,
    repo_dir: &Path,
) -> anyhow::Result<v1::PushMetadataResponse> {
    let repo = ImageRepo::open(repo_dir)?;
    let info = repository_info(client).await?;
    for entry in repo.entries()? {
        upload(
            client,
            &repo.payload_path(&entry),
            &entry.sha256,
            entry.length,
        )
        .await?;
    }
    let (root_json, newer_roots) = if info.root_version == 0 {
        (repo.root_bytes()?, Vec::new())
    } else {
        (Vec::new(), repo.roots_after(info.root_version)?)
    };
    let resp = client
        .rpc
        .clone()
        .push_metadata(v1::PushMetadataRequest {
            root_json,
            targets_json: repo.targets_bytes()?,
            newer_roots,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    Ok(resp)
}

async fn upload(
    client: &AdminClient,
    path: &Path,
    sha256: &str,
    length: u64,
) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read payload {}: {e}", path.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::PayloadChunk>(4);
    let sha = sha256.to_owned();
    let display = path.display().to_string();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut first = true;
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 && !first {
                return Ok::<_, std::io::Error>(());
            }
            let chunk = v1::PayloadChunk {
                sha256: if first { sha.clone() } else { String::new() },
                length: if first { length } else { 0 },
                data: buf[..n].to_vec(),
            };
            first = false;
            if tx.send(chunk).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let result = client
        .rpc
        .clone()
        .push_payload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader
        .await
        .map_err(|e| anyhow::anyhow!("reading {display}: {e}"))?
        .map_err(|e| anyhow::anyhow!("reading {display}: {e}"))?;
    result.map_err(rpc)?;
    Ok(())
}
