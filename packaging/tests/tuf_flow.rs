//! The whole signing flow with real keys: the admin's offline repository, the controller's
//! verification and online signing, and tough's own client loading the result over `file://`.

use chrono::{Duration, Utc};
use rollcall_packaging::{
    build_payload, check_root_online_keys, extract_payload, generate_key, key_source,
    sign_snapshot, sign_timestamp, target_entries, verify_root, verify_root_at, verify_targets,
    verify_targets_at, Error, ImageRepo, Manifest, OnlineKeys, SignedFile, TargetEntry,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;
use tough::{IntoVec, RepositoryLoader, TargetName};
use url::Url;

const MANIFEST: &str = r#"
name = "station-proxy"
version = "1.0.0+build.1"
release_counter = 1
platforms = ["linux", "windows-x86_64"]
description = "hello proxy"

[install]
command = ["/bin/sh", "install.sh"]

[verify]
command = ["/bin/sh", "verify.sh"]
"#;

struct Fixture {
    tmp: TempDir,
    repo: ImageRepo,
    root_key: PathBuf,
    targets_key: PathBuf,
    snapshot_key: PathBuf,
    timestamp_key: PathBuf,
    online: OnlineKeys,
    manifest: Manifest,
    payload: PathBuf,
    entry: TargetEntry,
}

fn key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join("keys").join(name);
    generate_key(&path).expect("generate key");
    path
}

fn payload(dir: &Path, name: &str, script: &str) -> PathBuf {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(src.join("files")).expect("mkdir");
    std::fs::write(src.join("install.sh"), script).expect("write");
    std::fs::write(src.join("files/proxy.conf"), b"proxy=10.0.0.1:3128\n").expect("write");
    let out = dir.join(format!("{name}.tar.gz"));
    build_payload(&src, &out).expect("build payload");
    out
}

fn in_a_year() -> chrono::DateTime<Utc> {
    Utc::now() + Duration::days(365)
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root_key = key(tmp.path(), "root.pk8");
    let targets_key = key(tmp.path(), "targets.pk8");
    let snapshot_key = key(tmp.path(), "snapshot.pk8");
    let timestamp_key = key(tmp.path(), "timestamp.pk8");
    let online = OnlineKeys::from_key_files(&snapshot_key, &timestamp_key)
        .await
        .expect("online keys");
    let repo = ImageRepo::create(
        &tmp.path().join("repo"),
        &root_key,
        &targets_key,
        &online,
        in_a_year(),
    )
    .await
    .expect("create repo");
    let manifest = Manifest::from_toml_str(MANIFEST).expect("manifest");
    let payload = payload(tmp.path(), "p1", "#!/bin/sh\necho one\n");
    let entry = repo
        .add_package(&payload, &manifest, &targets_key, in_a_year())
        .await
        .expect("add package");
    Fixture {
        tmp,
        repo,
        root_key,
        targets_key,
        snapshot_key,
        timestamp_key,
        online,
        manifest,
        payload,
        entry,
    }
}

/// What the controller does with a push: verify, then sign snapshot and timestamp.
async fn publish(f: &Fixture, version: u64) -> (SignedFile, SignedFile) {
    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("verify root");
    check_root_online_keys(&root, &f.online).expect("online keys");
    let targets_bytes = f.repo.targets_bytes().expect("targets");
    let targets = verify_targets(&root, &targets_bytes).expect("verify targets");
    let snapshot = sign_snapshot(
        &root,
        &targets_bytes,
        targets.signed.version.get(),
        version,
        &key_source(&f.snapshot_key),
        Utc::now() + Duration::days(7),
    )
    .await
    .expect("sign snapshot");
    let timestamp = sign_timestamp(
        &root,
        &snapshot,
        version,
        &key_source(&f.timestamp_key),
        Utc::now() + Duration::days(1),
    )
    .await
    .expect("sign timestamp");
    (snapshot, timestamp)
}

/// Lays the metadata out as a consistent-snapshot TUF repository that tough's client can read.
fn serve(f: &Fixture, served: &Path, snapshot: &SignedFile, timestamp: &SignedFile) {
    let metadata = served.join("metadata");
    let targets = served.join("targets");
    std::fs::create_dir_all(&metadata).expect("mkdir");
    std::fs::create_dir_all(&targets).expect("mkdir");
    std::fs::write(
        metadata.join("1.root.json"),
        f.repo.root_bytes().expect("root"),
    )
    .expect("write");
    let version = f.repo.targets_version().expect("version");
    std::fs::write(
        metadata.join(format!("{version}.targets.json")),
        f.repo.targets_bytes().expect("targets"),
    )
    .expect("write");
    std::fs::write(
        metadata.join(format!("{}.snapshot.json", snapshot.version)),
        &snapshot.bytes,
    )
    .expect("write");
    std::fs::write(metadata.join("timestamp.json"), &timestamp.bytes).expect("write");
    for entry in f.repo.entries().expect("entries") {
        std::fs::copy(
            f.repo.payload_path(&entry),
            targets.join(format!("{}.{}", entry.sha256, entry.name)),
        )
        .expect("copy payload");
    }
}

async fn load(f: &Fixture, served: &Path, datastore: &Path) -> tough::Repository {
    let root = f.repo.root_bytes().expect("root");
    RepositoryLoader::new(
        &root,
        Url::from_directory_path(served.join("metadata")).expect("url"),
        Url::from_directory_path(served.join("targets")).expect("url"),
    )
    .datastore(datastore)
    .load()
    .await
    .expect("tough loads the repository")
}

#[tokio::test]
async fn signed_package_verifies_and_online_signing_works() {
    let f = fixture().await;
    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("verify root");
    assert!(root.signed.consistent_snapshot);
    check_root_online_keys(&root, &f.online).expect("online keys");

    let targets = verify_targets(&root, &f.repo.targets_bytes().expect("targets")).expect("verify");
    assert_eq!(targets.signed.version.get(), 2);
    let entries = target_entries(&targets).expect("entries");
    assert_eq!(entries, vec![f.entry.clone()]);
    assert_eq!(entries, f.repo.entries().expect("repo entries"));

    let built = rollcall_packaging::sha256_file(&f.payload).expect("hash");
    assert_eq!(f.entry.sha256, built.sha256);
    assert_eq!(f.entry.length, built.length);
    assert_eq!(f.entry.name, "station-proxy_1.0.0+build.1.tar.gz");
    assert_eq!(f.entry.manifest, f.manifest);
    let stored = f.repo.payload_path(&f.entry);
    assert_eq!(
        rollcall_packaging::sha256_file(&stored).expect("hash"),
        built
    );

    let (snapshot, timestamp) = publish(&f, 1).await;
    assert_eq!(snapshot.version, 1);
    assert_eq!(timestamp.version, 1);
    assert_eq!(
        SignedFile::from_bytes(snapshot.bytes.clone(), 1),
        snapshot,
        "sha256/length describe the exact bytes"
    );
}

#[tokio::test]
async fn tough_client_round_trip() {
    let f = fixture().await;
    let served = f.tmp.path().join("served");
    let datastore = f.tmp.path().join("datastore");
    std::fs::create_dir_all(&datastore).expect("mkdir");

    let (snapshot, timestamp) = publish(&f, 1).await;
    serve(&f, &served, &snapshot, &timestamp);
    let client = load(&f, &served, &datastore).await;

    let name = TargetName::new(f.entry.name.as_str()).expect("name");
    let target = client
        .targets()
        .signed
        .find_target(&name, false)
        .expect("target listed");
    assert_eq!(
        Manifest::from_custom(&target.custom).expect("manifest"),
        f.manifest
    );
    let bytes = client
        .read_target(&name)
        .await
        .expect("read target")
        .expect("target exists")
        .into_vec()
        .await
        .expect("payload streams and verifies");
    assert_eq!(bytes, std::fs::read(&f.payload).expect("payload"));

    let downloaded = f.tmp.path().join("downloaded.tar.gz");
    std::fs::write(&downloaded, &bytes).expect("write");
    let unpacked = f.tmp.path().join("unpacked");
    extract_payload(&downloaded, &unpacked).expect("extract");
    assert_eq!(
        std::fs::read_to_string(unpacked.join("install.sh")).expect("read"),
        "#!/bin/sh\necho one\n"
    );

    // A second release, published with new snapshot/timestamp versions, loads over the same
    // datastore.
    let mut next = f.manifest.clone();
    next.version = "1.1.0".into();
    next.release_counter = 2;
    let payload2 = payload(f.tmp.path(), "p2", "#!/bin/sh\necho two\n");
    let entry2 = f
        .repo
        .add_package(&payload2, &next, &f.targets_key, in_a_year())
        .await
        .expect("add second");
    let (snapshot, timestamp) = publish(&f, 2).await;
    serve(&f, &served, &snapshot, &timestamp);
    let client = load(&f, &served, &datastore).await;
    assert_eq!(client.targets().signed.version.get(), 3);
    assert_eq!(client.all_targets().count(), 2);
    let name2 = TargetName::new(entry2.name.as_str()).expect("name");
    let bytes2 = client
        .read_target(&name2)
        .await
        .expect("read")
        .expect("exists")
        .into_vec()
        .await
        .expect("verifies");
    assert_eq!(bytes2, std::fs::read(&payload2).expect("payload"));

    // A tampered payload never verifies.
    let served_payload = served
        .join("targets")
        .join(format!("{}.{}", f.entry.sha256, f.entry.name));
    let mut tampered = std::fs::read(&served_payload).expect("read");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    std::fs::write(&served_payload, &tampered).expect("write");
    let err = client
        .read_target(&name)
        .await
        .expect("read target")
        .expect("target exists")
        .into_vec()
        .await
        .expect_err("tampered payload");
    let chain = error_chain(&err);
    assert!(chain.to_lowercase().contains("hash"), "{chain}");
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[tokio::test]
async fn targets_signed_by_an_unknown_key_are_refused() {
    let f = fixture().await;
    let other_root = key(f.tmp.path(), "other-root.pk8");
    let other_targets = key(f.tmp.path(), "other-targets.pk8");
    let other = ImageRepo::create(
        &f.tmp.path().join("other-repo"),
        &other_root,
        &other_targets,
        &f.online,
        in_a_year(),
    )
    .await
    .expect("other repo");
    other
        .add_package(&f.payload, &f.manifest, &other_targets, in_a_year())
        .await
        .expect("add");

    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("root");
    let err =
        verify_targets(&root, &other.targets_bytes().expect("targets")).expect_err("unknown key");
    assert!(
        matches!(&err, Error::SignatureInvalid { file, .. } if file == "targets.json"),
        "{err:?}"
    );
    assert!(err.to_string().contains("did not verify"), "{err}");

    // The controller refuses to list them in a snapshot, too.
    let err = sign_snapshot(
        &root,
        &other.targets_bytes().expect("targets"),
        2,
        1,
        &key_source(&f.snapshot_key),
        in_a_year(),
    )
    .await
    .expect_err("snapshot over unverified targets");
    assert!(matches!(err, Error::SignatureInvalid { .. }), "{err:?}");

    // The admin cannot sign with a key root does not list for targets; nothing changes.
    let before = f.repo.targets_bytes().expect("targets");
    let mut next = f.manifest.clone();
    next.version = "2.0.0".into();
    next.release_counter = 5;
    for wrong in [&other_targets, &f.root_key] {
        let err = f
            .repo
            .add_package(&f.payload, &next, wrong, in_a_year())
            .await
            .expect_err("wrong targets key");
        assert!(matches!(err, Error::WrongTargetsKey { .. }), "{err:?}");
    }
    assert_eq!(f.repo.targets_bytes().expect("targets"), before);
}

#[tokio::test]
async fn root_delegating_to_other_online_keys_is_refused() {
    let f = fixture().await;
    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("root");

    let stranger = key(f.tmp.path(), "stranger.pk8");
    let stranger = rollcall_packaging::public_key(&stranger)
        .await
        .expect("key");
    let other_snapshot = OnlineKeys {
        snapshot: stranger.clone(),
        timestamp: f.online.timestamp.clone(),
    };
    let err = check_root_online_keys(&root, &other_snapshot).expect_err("snapshot");
    assert!(
        matches!(err, Error::OnlineKeyMismatch { role: "snapshot" }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "root.json does not delegate snapshot to this controller's online key"
    );

    let other_timestamp = OnlineKeys {
        snapshot: f.online.snapshot.clone(),
        timestamp: stranger,
    };
    let err = check_root_online_keys(&root, &other_timestamp).expect_err("timestamp");
    assert!(
        matches!(err, Error::OnlineKeyMismatch { role: "timestamp" }),
        "{err:?}"
    );

    // Swapped roles are refused as well.
    let swapped = OnlineKeys {
        snapshot: f.online.timestamp.clone(),
        timestamp: f.online.snapshot.clone(),
    };
    check_root_online_keys(&root, &swapped).expect_err("swapped");

    // And the controller cannot sign snapshot with its timestamp key.
    let err = sign_snapshot(
        &root,
        &f.repo.targets_bytes().expect("targets"),
        2,
        1,
        &key_source(&f.timestamp_key),
        in_a_year(),
    )
    .await
    .expect_err("wrong online key");
    match &err {
        Error::Tuf { source, .. } => assert!(
            matches!(**source, tough::error::Error::SigningKeysNotFound { .. }),
            "{source:?}"
        ),
        other => panic!("expected Tuf, got {other:?}"),
    }
}

#[tokio::test]
async fn flipped_bytes_are_refused() {
    let f = fixture().await;
    let root_bytes = f.repo.root_bytes().expect("root");
    let root = verify_root(&root_bytes).expect("root");
    let targets = f.repo.targets_bytes().expect("targets");

    // A flip that keeps the JSON valid: the signature catches it.
    let text = String::from_utf8(targets.clone()).expect("utf8");
    assert!(text.contains("hello proxy"));
    let tampered = text.replace("hello proxy", "jello proxy");
    let err = verify_targets(&root, tampered.as_bytes()).expect_err("tampered");
    assert!(matches!(err, Error::SignatureInvalid { .. }), "{err:?}");

    // Any single flipped bit is refused, one way or another.
    for at in (0..targets.len()).step_by(97) {
        let mut flipped = targets.clone();
        flipped[at] ^= 0x04;
        assert!(
            verify_targets(&root, &flipped).is_err(),
            "flip at {at} accepted"
        );
    }
    for at in (0..root_bytes.len()).step_by(89) {
        let mut flipped = root_bytes.clone();
        flipped[at] ^= 0x04;
        assert!(verify_root(&flipped).is_err(), "root flip at {at} accepted");
    }
}

#[tokio::test]
async fn expired_metadata_is_refused() {
    let f = fixture().await;
    let later = Utc::now() + Duration::days(400);
    let err = verify_root_at(&f.repo.root_bytes().expect("root"), later).expect_err("root");
    assert!(
        matches!(&err, Error::Expired { file, .. } if file == "root.json"),
        "{err:?}"
    );
    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("root");
    let err =
        verify_targets_at(&root, &f.repo.targets_bytes().expect("targets"), later).expect_err("t");
    assert!(
        matches!(&err, Error::Expired { file, .. } if file == "targets.json"),
        "{err:?}"
    );
}

#[tokio::test]
async fn package_conflicts_and_counter_rollbacks_are_refused() {
    let f = fixture().await;

    // Re-adding identical content re-signs.
    f.repo
        .add_package(&f.payload, &f.manifest, &f.targets_key, in_a_year())
        .await
        .expect("identical re-add");
    assert_eq!(f.repo.targets_version().expect("version"), 3);
    let before = f.repo.targets_bytes().expect("targets");

    let other_payload = payload(f.tmp.path(), "px", "#!/bin/sh\necho different\n");
    let err = f
        .repo
        .add_package(&other_payload, &f.manifest, &f.targets_key, in_a_year())
        .await
        .expect_err("different payload, same version");
    assert!(matches!(err, Error::PackageConflict { .. }), "{err:?}");
    assert!(
        err.to_string().contains("station-proxy 1.0.0+build.1"),
        "{err}"
    );

    let mut changed = f.manifest.clone();
    changed.install.command = vec!["/bin/rm".into(), "-rf".into(), "/".into()];
    let err = f
        .repo
        .add_package(&f.payload, &changed, &f.targets_key, in_a_year())
        .await
        .expect_err("different manifest, same version");
    assert!(matches!(err, Error::PackageConflict { .. }), "{err:?}");

    let mut older = f.manifest.clone();
    older.version = "1.0.1".into();
    let err = f
        .repo
        .add_package(&other_payload, &older, &f.targets_key, in_a_year())
        .await
        .expect_err("same counter");
    assert!(
        matches!(err, Error::ReleaseCounterNotIncreasing { .. }),
        "{err:?}"
    );

    assert_eq!(f.repo.targets_bytes().expect("targets"), before);
}

#[tokio::test]
async fn create_refuses_existing_repos_and_online_keys_as_offline_keys() {
    let f = fixture().await;
    let err = ImageRepo::create(
        f.repo.dir(),
        &f.root_key,
        &f.targets_key,
        &f.online,
        in_a_year(),
    )
    .await
    .expect_err("exists");
    assert!(matches!(err, Error::RepoExists { .. }), "{err:?}");

    let err = ImageRepo::create(
        &f.tmp.path().join("bad"),
        &f.root_key,
        &f.snapshot_key,
        &f.online,
        in_a_year(),
    )
    .await
    .expect_err("online key as targets key");
    assert!(
        matches!(err, Error::KeyReuse { role: "targets" }),
        "{err:?}"
    );
    assert!(!f.tmp.path().join("bad/root.json").exists());

    let err = ImageRepo::open(&f.tmp.path().join("nowhere")).expect_err("missing");
    assert!(matches!(err, Error::RepoRead { .. }), "{err:?}");
    assert!(err.to_string().contains("root.json"), "{err}");
    ImageRepo::open(f.repo.dir()).expect("open");
}

#[tokio::test]
async fn targets_whose_name_does_not_match_the_manifest_are_refused() {
    use tough::editor::signed::SignedRole;
    use tough::schema::{KeyHolder, Target};

    let f = fixture().await;
    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("root");
    let mut targets = verify_targets(&root, &f.repo.targets_bytes().expect("t"))
        .expect("targets")
        .signed;
    let mut target = Target::from_path(&f.payload).await.expect("target");
    target.custom = f.manifest.to_custom();
    targets.add_target(
        TargetName::new("innocent_9.9.tar.gz").expect("name"),
        target,
    );
    targets.version = targets.version.checked_add(1).expect("version");
    let sources: Vec<Box<dyn tough::key_source::KeySource>> =
        vec![Box::new(key_source(&f.targets_key))];
    let signed = SignedRole::new(
        targets,
        &KeyHolder::Root(root.signed.clone()),
        &sources,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .await
    .expect("sign");
    let err = verify_targets(&root, signed.buffer()).expect_err("mismatched name");
    assert!(
        matches!(&err, Error::TargetInvalid { target, .. } if target == "innocent_9.9.tar.gz"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_signature_duplicated_to_fake_a_threshold_is_refused_in_words() {
    let f = fixture().await;
    f.repo
        .add_package(&f.payload, &f.manifest, &f.targets_key, in_a_year())
        .await
        .expect("add");
    let mut targets: serde_json::Value =
        serde_json::from_slice(&f.repo.targets_bytes().expect("targets")).expect("json");
    let sig = targets["signatures"][0].clone();
    targets["signatures"].as_array_mut().unwrap().push(sig);
    let bytes = serde_json::to_vec(&targets).unwrap();
    let root = verify_root(&f.repo.root_bytes().expect("root")).expect("root");
    let err = verify_targets(&root, &bytes).expect_err("duplicated signature");
    let text = error_chain(&err);
    assert!(
        !text.contains("Decoded") && !text.contains("PhantomData"),
        "{text}"
    );
    let key = targets["signatures"][0]["keyid"].as_str().unwrap();
    assert!(text.contains(&format!("Duplicate key ID: {key}")), "{text}");
}

#[tokio::test]
async fn a_root_threshold_holds_and_a_rotation_needs_both_thresholds() {
    let f = fixture().await;
    let dir = f.tmp.path();
    let keepers: Vec<PathBuf> = (1..=3)
        .map(|i| key(dir, &format!("root-{i}.pk8")))
        .collect();
    let repo = ImageRepo::create_with(
        &dir.join("repo2"),
        &keepers,
        2,
        &f.targets_key,
        &f.online,
        in_a_year(),
    )
    .await
    .expect("2 of 3");
    let root = verify_root(&repo.root_bytes().unwrap()).expect("signed by all three");
    assert_eq!(
        root.signed.roles[&tough::schema::RoleType::Root]
            .threshold
            .get(),
        2
    );
    // A threshold beyond the keys is refused.
    let err = ImageRepo::create_with(
        &dir.join("repo3"),
        &keepers[..1],
        2,
        &f.targets_key,
        &f.online,
        in_a_year(),
    )
    .await
    .expect_err("2 of 1");
    assert!(err.to_string().contains("threshold of 2"), "{err}");

    // Rotating with one of the three current keys does not reach the current threshold.
    let fresh = vec![key(dir, "fresh.pk8")];
    let err = repo
        .rotate_root(&keepers[..1], &fresh, 1, None, in_a_year())
        .await
        .expect_err("one keeper");
    assert!(
        err.to_string()
            .contains("not signed by the keys of root version 1"),
        "{err}"
    );
    assert_eq!(
        verify_root(&repo.root_bytes().unwrap())
            .unwrap()
            .signed
            .version
            .get(),
        1,
        "nothing written"
    );
    // Two of them do; the new root follows the old one and the chain is kept.
    let v = repo
        .rotate_root(&keepers[..2], &fresh, 1, None, in_a_year())
        .await
        .expect("two keepers");
    assert_eq!(v, 2);
    let old = verify_root(&repo.roots_after(0).unwrap()[0]).unwrap();
    rollcall_packaging::online::verify_root_update(&old, &repo.root_bytes().unwrap())
        .expect("v2 follows v1");
    assert_eq!(repo.roots_after(1).unwrap().len(), 1);
}
