//! What every `rollcall-bench` run starts with: a real controller in a temp dir with the per-source limits lifted
//! (every simulated agent comes from 127.0.0.1), a published root, a `bench` site with a token for N agents; and
//! enrollment of one simulated agent through the real `Enroll` call with its own key.

use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rollcall_controller::cli::local::LocalController;
use rollcall_controller::cli::{pkg, AdminClient};
use rollcall_proto::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use rollcall_proto::{ClientIdentity, ServerTrust, Token};
use tonic::transport::Channel;

/// A started bench controller.
pub struct BenchController {
    /// Holds the controller's data, the signing keys and the repository; removed on drop.
    pub dir: tempfile::TempDir,
    pub controller: LocalController,
    pub admin: AdminClient,
    pub keys: std::path::PathBuf,
    pub repo: std::path::PathBuf,
    /// A token of the `bench` site for every agent.
    pub token: String,
    /// The controller's device CA, to trust it with a client certificate.
    pub ca: CertificateDer<'static>,
    /// An anonymous channel pinned by the token, for enrollments.
    pub enroll_channel: Channel,
}

impl BenchController {
    /// Start a controller with `checkin_interval` (and `extra` lines of `controller.toml`) and prepare the `bench`
    /// site for `agents` enrollments.
    pub async fn start(
        agents: usize,
        checkin_interval: &str,
        extra: &str,
    ) -> anyhow::Result<BenchController> {
        let dir = tempfile::Builder::new()
            .prefix("rollcall-bench-")
            .tempdir()?;
        let controller = LocalController::start(
            &dir.path().join("controller"),
            checkin_interval,
            &format!(
                "anonymous_calls_per_second = 1000000\nanonymous_connections_per_source = 1000000\n{extra}"
            ),
        )
        .await?;
        let admin = controller.admin().await?;
        // Tokens pin the published root: publish one.
        let (keys, repo) = (dir.path().join("keys"), dir.path().join("repo"));
        pkg::keygen(&keys)?;
        let online = pkg::online_keys_of(&admin).await?;
        pkg::init_repo(&keys, &repo, &online, Duration::from_secs(86400)).await?;
        pkg::push(&admin, &repo).await?;
        admin
            .rpc
            .clone()
            .add_site(v1::AddSiteRequest {
                name: "bench".into(),
            })
            .await?;
        let token = admin
            .rpc
            .clone()
            .create_token(v1::CreateTokenRequest {
                site: "bench".into(),
                uses: agents as u32,
                ttl_seconds: 4 * 3600,
            })
            .await?
            .into_inner()
            .token;
        let pin = Token::parse(&token).map_err(anyhow::Error::msg)?.ca_sha256;
        let ServerTrust::Ca(ca) =
            ServerTrust::ca_pem_file(&controller.admin_creds().join("ca.crt"))?
        else {
            anyhow::bail!("unexpected trust type");
        };
        let enroll_channel =
            rollcall_proto::connect(&controller.url, ServerTrust::PinnedCa(pin), None).await?;
        Ok(BenchController {
            dir,
            controller,
            admin,
            keys,
            repo,
            token,
            ca,
            enroll_channel,
        })
    }

    /// How a simulated agent reaches the controller (to move into a task).
    pub fn trust(&self) -> AgentTrust {
        AgentTrust {
            url: self.controller.url.clone(),
            ca: self.ca.clone(),
        }
    }
}

/// The controller's URL and device CA.
#[derive(Clone)]
pub struct AgentTrust {
    url: String,
    ca: CertificateDer<'static>,
}

impl AgentTrust {
    /// A lazily connecting channel to the controller as `identity`.
    pub fn channel(&self, identity: ClientIdentity) -> anyhow::Result<Channel> {
        Ok(rollcall_proto::tls::connect_lazy(
            &self.url,
            ServerTrust::Ca(self.ca.clone()),
            Some(identity),
        )?)
    }
}

/// Enroll one simulated agent as `hostname` over `channel` with `token`: its own key, the real Enroll call.
pub async fn enroll_one(
    channel: Channel,
    token: String,
    hostname: String,
) -> anyhow::Result<ClientIdentity> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    let resp = AgentServiceClient::new(channel)
        .enroll(v1::EnrollRequest {
            token,
            csr_der: csr.der().to_vec(),
            hostname,
            platform: "linux-x86_64".into(),
            agent_version: "bench".into(),
            inventory: None,
        })
        .await?
        .into_inner();
    Ok(ClientIdentity {
        chain: vec![CertificateDer::from(resp.certificate_der)],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// The machine's `TcpExtListenOverflows` and `TcpExtListenDrops` counters (what `nstat` reports), from
/// `/proc/net/netstat`: handshakes dropped because an accept queue was full.
pub fn listen_overflows() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let field = |name: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
    };
    Some((field("ListenOverflows")?, field("ListenDrops")?))
}
