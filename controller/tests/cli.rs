//! The `rollcall-controller` and `rollcall` binaries' refusals that need no running controller.

use std::process::Command;

fn controller() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rollcall-controller"))
}

fn rollcall() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_creates_a_data_dir_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = controller()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "controller.toml",
        "ca/ca.crt",
        "ca/ca.key",
        "tls/server.crt",
        "tuf/snapshot.pk8",
        "tuf/online-keys.json",
        "admin/client.crt",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
    let ca_before = std::fs::read(data.join("ca/ca.key")).unwrap();
    let out = controller()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(data.join("ca/ca.key")).unwrap(),
        ca_before,
        "the CA key was not replaced"
    );
}

#[test]
fn init_accepts_an_existing_empty_directory_and_a_relative_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state/lost+found")).unwrap();
    let out = controller()
        .current_dir(dir.path())
        .args(["init", "--data", "state"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("state/controller.toml").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".rollcall-init-")
        })
        .collect();
    assert!(leftovers.is_empty(), "no staging folder left behind");
}

#[test]
fn serve_refuses_an_uninitialised_dir_and_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = controller()
        .args(["serve", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("rollcall-controller init"),
        "{}",
        stderr(&out)
    );

    let data = dir.path().join("data");
    assert!(controller()
        .args(["init", "--data"])
        .arg(&data)
        .output()
        .unwrap()
        .status
        .success());
    std::fs::write(
        data.join("controller.toml"),
        "version = 1\ncheckin_interval = \"often\"\n",
    )
    .unwrap();
    let out = controller()
        .args(["serve", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("controller.toml") && stderr(&out).contains("checkin_interval"),
        "{}",
        stderr(&out)
    );
    assert!(!data.join("controller.addr").exists(), "it never listened");
}

#[test]
fn pkg_build_names_the_missing_manifest_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("payload")).unwrap();
    std::fs::write(
        dir.path().join("manifest.toml"),
        "name = \"app\"\nversion = \"1.0\"\nrelease_counter = 1\nplatforms = [\"linux\"]\n[install]\ncommand = [\"sh\", \"install.sh\"]\n",
    )
    .unwrap();
    let out = rollcall()
        .current_dir(dir.path())
        .args([
            "pkg",
            "build",
            "--manifest",
            "manifest.toml",
            "--payload",
            "payload",
            "--out",
            "out",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("verify") && err.contains("manifest.toml"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn commands_without_credentials_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = rollcall()
        .args(["agents", "list", "--creds"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("no admin credentials"),
        "{}",
        stderr(&out)
    );
    let out = rollcall()
        .args(["rollout", "create", "app"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "missing --wave is a usage error"
    );
}

#[test]
fn offline_keys_encrypted_with_a_passphrase_sign_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| dir.path().join(rel);
    let out = controller()
        .args(["init", "--data"])
        .arg(p("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(p("pass"), "correct horse battery staple\n").unwrap();
    std::fs::write(p("wrong"), "incorrect horse battery staple\n").unwrap();
    std::fs::write(p("short"), "short\n").unwrap();
    let run = |pass: Option<&str>, args: &[&str]| {
        let mut cmd = rollcall();
        cmd.current_dir(dir.path())
            .env_remove("ROLLCALL_KEY_PASSPHRASE_FILE")
            .stdin(std::process::Stdio::null());
        if let Some(pass) = pass {
            cmd.env("ROLLCALL_KEY_PASSPHRASE_FILE", p(pass));
        }
        cmd.args(args).output().unwrap()
    };

    let out = run(
        Some("short"),
        &["pkg", "keygen", "--keys", "k", "--encrypt"],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("at least 12 characters"));
    assert!(!p("k").exists() || std::fs::read_dir(p("k")).unwrap().next().is_none());

    let out = run(
        Some("pass"),
        &["pkg", "keygen", "--keys", "keys", "--encrypt"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for key in ["root.pk8", "targets.pk8"] {
        let bytes = std::fs::read(p("keys").join(key)).unwrap();
        assert!(bytes.starts_with(b"rollcall-encrypted-key-v1\n"), "{key}");
    }
    let online = p("data/tuf/online-keys.json");
    let init = |pass| {
        run(
            pass,
            &[
                "pkg",
                "init",
                "--keys",
                "keys",
                "--repo",
                "repo",
                "--online-keys",
                online.to_str().unwrap(),
            ],
        )
    };
    // Without the passphrase (no terminal here) the refusal says where it is looked for; nothing is written.
    let out = init(None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is encrypted")
            && stderr(&out).contains("ROLLCALL_KEY_PASSPHRASE_FILE"),
        "{}",
        stderr(&out)
    );
    assert!(!p("repo/root.json").exists());
    let out = init(Some("wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert!(!p("repo/root.json").exists());
    let out = init(Some("pass"));
    assert!(out.status.success(), "{}", stderr(&out));

    // Signing a package needs the targets key's passphrase too.
    std::fs::create_dir_all(p("payload")).unwrap();
    std::fs::write(p("payload/install.sh"), "true\n").unwrap();
    std::fs::write(
        p("manifest.toml"),
        "name = \"app\"\nversion = \"1.0\"\nrelease_counter = 1\nplatforms = [\"linux\"]\n[install]\ncommand = [\"sh\", \"install.sh\"]\n[verify]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let out = run(
        None,
        &[
            "pkg",
            "build",
            "--manifest",
            "manifest.toml",
            "--payload",
            "payload",
            "--out",
            "out",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(p("repo/targets.json")).unwrap();
    let sign = |pass| {
        run(
            pass,
            &[
                "pkg",
                "sign",
                "--repo",
                "repo",
                "--keys",
                "keys",
                "out/app_1.0.tar.gz",
            ],
        )
    };
    let out = sign(Some("wrong"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(p("repo/targets.json")).unwrap(), before);
    let out = sign(Some("pass"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(std::fs::read(p("repo/targets.json")).unwrap(), before);
}
