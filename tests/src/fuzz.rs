//! The fuzz targets' bodies: what untrusted bytes reach. `tests/fuzz/` runs them under libFuzzer
//! (`cargo fuzz`), and `tests/tests/fuzz_seeds.rs` runs their seed corpora (`tests/fuzz/corpus/<target>/`) as
//! plain tests in CI. Each panics only on a broken property, never on bad input.

use std::io::Write;

use prost::Message;
use rollcall_packaging::Manifest;
use rollcall_proto::{v1, Token};

/// A package manifest (TOML the admin writes; also what the agent reads from signed metadata).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Manifest::from_toml_str(text) {
        // What parses and validates survives the trip through targets.json's custom field unchanged.
        if m.validate().is_ok() {
            let back = Manifest::from_custom(&m.to_custom()).expect("a valid manifest round-trips");
            assert_eq!(back, m);
        }
    }
}

/// A payload archive as the agent extracts it (after its hash matched, so these are signed bytes, but a signer's
/// mistake must still not write outside the package folder).
pub fn payload(data: &[u8]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("p.tar.gz");
    std::fs::File::create(&archive)
        .and_then(|mut f| f.write_all(data))
        .expect("write archive");
    let dest = dir.path().join("work/dest");
    std::fs::create_dir_all(dir.path().join("work")).expect("mkdir");
    let result = rollcall_packaging::archive::extract_payload_capped(&archive, &dest, 64 << 20);
    // Whatever happened, nothing exists outside `work/` but the archive itself, and no symlink anywhere.
    for entry in walk(dir.path()) {
        let meta = std::fs::symlink_metadata(&entry).expect("stat");
        assert!(
            !meta.file_type().is_symlink(),
            "symlink {}",
            entry.display()
        );
        assert!(
            entry == archive || entry.starts_with(dir.path().join("work")),
            "written outside: {}",
            entry.display()
        );
    }
    if result.is_err() {
        assert!(!dest.exists(), "a refused archive left its destination");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// An enrollment token as typed or pasted by an installer.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Token::parse(text) {
        assert_eq!(Token::parse(&t.to_string()).expect("round trip"), t);
    }
}

/// A check-in request as the controller decodes it from any agent.
pub fn checkin(data: &[u8]) {
    let Ok(req) = v1::CheckInRequest::decode(data) else {
        return;
    };
    let installed = rollcall_controller::store::agents_installed(&req.installed);
    assert_eq!(installed.len(), req.installed.len());
    for report in &req.reports {
        let _ = v1::ActionState::try_from(report.state);
    }
    // Re-encoding what was decoded gives a message that decodes to the same thing.
    let again = v1::CheckInRequest::decode(req.encode_to_vec().as_slice()).expect("re-decode");
    assert_eq!(again, req);
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets by name, for the seed test and the fuzz crate.
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("payload", payload),
    ("token", token),
    ("checkin", checkin),
];
