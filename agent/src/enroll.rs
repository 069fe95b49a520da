//! `rollcall-agent enroll`: trade a one-time token for an identity. The agent makes its own key and CSR, trusts
//! the controller only through the CA pin in the token, and keeps the TUF root only if it matches the root pin.

use std::path::PathBuf;

use rcgen::KeyPair;
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use rollcall_proto::{sha256_hex, ServerTrust, Token};

use crate::config::{AgentConfig, AgentDirs};
use crate::state::{write_atomic, AgentState};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    BadToken(String),
    #[error("{0}")]
    Usage(String),
    #[error("{dir} is already enrolled as {agent_id}; enroll it again with --again (a new identity, the same installed packages), or use another --data folder")]
    AlreadyEnrolled { dir: PathBuf, agent_id: String },
    #[error(transparent)]
    Connect(#[from] rollcall_proto::ConnectError),
    #[error("the controller refused enrollment: {message} ({code:?})")]
    Refused { code: tonic::Code, message: String },
    #[error("cannot reach the controller: {0}")]
    Unreachable(String),
    #[error("the controller's CA certificate (sha256 {got}) does not match the pin in the token ({want})")]
    CaMismatch { got: String, want: String },
    #[error("the TUF root.json from the controller (sha256 {got}) does not match the pin in the token ({want})")]
    RootMismatch { got: String, want: String },
    #[error("cannot make a key pair: {0}")]
    Key(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What enrollment produced.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub agent_id: String,
    pub site: String,
}

pub async fn enroll(
    dirs: &AgentDirs,
    controller: &str,
    token: &str,
    hostname: &str,
    again: bool,
    settings: &crate::config::Settings,
) -> Result<Enrolled, EnrollError> {
    let token = Token::parse(token).map_err(EnrollError::BadToken)?;
    if let (Ok(existing), false) = (AgentConfig::load(dirs), again) {
        return Err(EnrollError::AlreadyEnrolled {
            dir: dirs.root().to_owned(),
            agent_id: existing.agent_id,
        });
    }
    let (key, csr_der) = key_and_csr(hostname)?;
    // Everything but the software list, which the first check-in brings: a call anyone may make stays small.
    let inventory = v1::Inventory {
        software: Vec::new(),
        ..crate::inventory::collect(Some(hostname), settings)
    };

    let channel = rollcall_proto::connect(
        controller,
        ServerTrust::PinnedCa(token.ca_sha256.clone()),
        None,
    )
    .await?;
    let resp = AgentServiceClient::new(channel)
        .enroll(v1::EnrollRequest {
            token: token.to_string(),
            csr_der,
            hostname: hostname.to_owned(),
            platform: crate::platform::current(),
            agent_version: crate::VERSION.to_owned(),
            inventory: Some(inventory.clone()),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                EnrollError::Unreachable(s.message().to_string())
            }
            code => EnrollError::Refused {
                code,
                message: s.message().to_owned(),
            },
        })?
        .into_inner();

    let ca_sha = sha256_hex(&resp.ca_certificate_der);
    if ca_sha != token.ca_sha256 {
        return Err(EnrollError::CaMismatch {
            got: ca_sha,
            want: token.ca_sha256,
        });
    }
    let root_sha = sha256_hex(&resp.trusted_root);
    if root_sha != token.root_sha256 {
        return Err(EnrollError::RootMismatch {
            got: root_sha,
            want: token.root_sha256,
        });
    }

    let write = |path: PathBuf, bytes: &[u8], mode: u32| {
        write_atomic(&path, bytes, mode).map_err(|source| EnrollError::Write { path, source })
    };
    write(
        dirs.identity(),
        identity_pem(&key, &resp.certificate_der).as_bytes(),
        0o600,
    )?;
    write(
        dirs.ca(),
        pem("CERTIFICATE", &resp.ca_certificate_der).as_bytes(),
        0o644,
    )?;
    write(dirs.root_pin(), &resp.trusted_root, 0o644)?;
    // Enrolled again: what is installed and every open action stay as they are.
    let previous = again
        .then(|| AgentState::load(&dirs.state()).ok())
        .flatten()
        .unwrap_or_default();
    // The controller stored the inventory with the new agent: the first delta is against it.
    let inventory_hash = crate::inventory::hash(&inventory);
    write(
        dirs.inventory(),
        &prost::Message::encode_to_vec(&inventory),
        0o600,
    )?;
    let state = AgentState {
        cert_not_after: resp.certificate_not_after_unix,
        inventory_hash_sent: inventory_hash,
        ..previous
    };
    state.save(&dirs.state()).map_err(|e| EnrollError::Write {
        path: dirs.state(),
        source: std::io::Error::other(e.to_string()),
    })?;
    for dir in [dirs.tuf_datastore(), dirs.downloads()] {
        std::fs::create_dir_all(&dir).map_err(|source| EnrollError::Write { path: dir, source })?;
    }
    // Written last: the agent counts as enrolled only once everything else is in place.
    AgentConfig {
        version: 1,
        controller: controller.to_owned(),
        agent_id: resp.agent_id.clone(),
        site: resp.site.clone(),
        hostname: Some(hostname.to_owned()),
    }
    .save(dirs)
    .map_err(|e| EnrollError::Write {
        path: dirs.config(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(Enrolled {
        agent_id: resp.agent_id,
        site: resp.site,
    })
}

/// Key and certificate in one PEM document (written with mode 0600).
pub fn identity_pem(key: &KeyPair, certificate_der: &[u8]) -> String {
    format!(
        "{}{}",
        key.serialize_pem(),
        pem("CERTIFICATE", certificate_der)
    )
}

/// A key pair and a CSR for it (subject: the agent's name).
pub fn key_and_csr(subject: &str) -> Result<(KeyPair, Vec<u8>), EnrollError> {
    rollcall_proto::tls::key_and_csr(subject).map_err(|e| EnrollError::Key(e.to_string()))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
