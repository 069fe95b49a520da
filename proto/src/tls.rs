//! TLS for clients of the controller: trust either a known CA or a CA pinned by its sha256 (enrollment), present
//! a client certificate when there is one (every call after enrollment), always with the aws-lc-rs provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// Certificate and key types, re-exported for callers that build identities in memory.
pub use rustls::pki_types;

/// Lowercase hex sha256 of some bytes: certificate fingerprints, root pins, payload names.
/// A new P-256 key pair and a certificate signing request for it with `subject` as its common name: what an agent
/// sends to enroll or renew, and what `rollcall users add` sends for a person. The key never leaves the caller.
pub fn key_and_csr(subject: &str) -> Result<(rcgen::KeyPair, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, subject);
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The rustls provider of the whole product. One place, so nothing ever mixes in ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("controller address {url:?} is not a valid https://HOST:PORT URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read {what} from {path}: {reason}")]
    ReadPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot connect to the controller at {url}: {reason}")]
    Connect { url: String, reason: String },
}

/// How the client decides the server is the controller.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The controller's device CA certificate, known from enrollment.
    Ca(CertificateDer<'static>),
    /// Only the sha256 (hex) of the CA certificate, carried in an enrollment token. The server must present that
    /// CA in its chain and its certificate must verify against it.
    PinnedCa(String),
}

impl ServerTrust {
    /// Trust the CA certificate in a PEM file.
    pub fn ca_pem_file(path: &Path) -> Result<Self, ConnectError> {
        let cert = CertificateDer::from_pem_file(path).map_err(|e| ConnectError::ReadPem {
            what: "CA certificate",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(ServerTrust::Ca(cert))
    }
}

/// A client certificate chain and its private key.
#[derive(Debug)]
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientIdentity {
    /// Load a PEM certificate (chain) and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, ConnectError> {
        let read_err = |what, path: &Path, e: &dyn std::fmt::Display| ConnectError::ReadPem {
            what,
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| read_err("client certificate", cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read_err("client certificate", cert, &e))?;
        if chain.is_empty() {
            return Err(read_err(
                "client certificate",
                cert,
                &"no certificate in file",
            ));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| read_err("private key", key, &e))?;
        Ok(ClientIdentity {
            chain,
            key: key_der,
        })
    }
}

/// Open a gRPC channel to `url` (`https://host:port`). The channel reconnects by itself after a drop.
pub async fn connect(
    url: &str,
    trust: ServerTrust,
    identity: Option<ClientIdentity>,
) -> Result<Channel, ConnectError> {
    let (endpoint, connector) = endpoint(url, trust, identity, None)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| ConnectError::Connect {
            url: url.to_owned(),
            reason: error_chain(&e),
        })
}

/// Like [`connect`], but connects on first use: for daemons that start while the controller is unreachable.
pub fn connect_lazy(
    url: &str,
    trust: ServerTrust,
    identity: Option<ClientIdentity>,
) -> Result<Channel, ConnectError> {
    connect_lazy_via(url, trust, identity, None)
}

/// Like [`connect_lazy`], tunnelled through the HTTP proxy at `proxy` (`host:port`) with CONNECT when one is given.
/// TLS runs end to end inside the tunnel: the proxy sees only the controller's host and port.
pub fn connect_lazy_via(
    url: &str,
    trust: ServerTrust,
    identity: Option<ClientIdentity>,
    proxy: Option<&str>,
) -> Result<Channel, ConnectError> {
    let (endpoint, connector) = endpoint(url, trust, identity, proxy.map(str::to_owned))?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// Longest proxy answer to a CONNECT that is read.
const PROXY_REPLY_MAX: usize = 8 * 1024;

/// A TCP connection to `target` through the HTTP proxy at `proxy`, once it answered the CONNECT with 200.
async fn tunnel(proxy: &str, target: &str) -> std::io::Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let refused = |why: String| std::io::Error::other(format!("proxy {proxy}: {why}"));
    let mut tcp = TcpStream::connect(proxy)
        .await
        .map_err(|e| refused(format!("cannot connect: {e}")))?;
    tcp.set_nodelay(true)?;
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    // Byte by byte up to the blank line: nothing after it (the tunnel's first bytes) may be swallowed.
    let mut reply = Vec::new();
    while !reply.ends_with(b"\r\n\r\n") {
        if reply.len() >= PROXY_REPLY_MAX {
            return Err(refused("its answer to CONNECT has no end".into()));
        }
        let mut byte = [0u8; 1];
        if tcp.read(&mut byte).await? == 0 {
            return Err(refused("closed the connection during CONNECT".into()));
        }
        reply.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&reply);
    let status = text.lines().next().unwrap_or_default().trim().to_owned();
    let code = status.split_whitespace().nth(1);
    if !status.starts_with("HTTP/1.") || code != Some("200") {
        return Err(refused(format!("refused CONNECT {target}: {status}")));
    }
    Ok(tcp)
}

type Connector = tower::util::BoxCloneSyncService<
    Uri,
    TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    std::io::Error,
>;

fn endpoint(
    url: &str,
    trust: ServerTrust,
    identity: Option<ClientIdentity>,
    proxy: Option<String>,
) -> Result<(Endpoint, Connector), ConnectError> {
    let bad = |reason: &str| ConnectError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().ok_or_else(|| bad("no port"))?;
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name = ServerName::try_from(bare_host.clone()).map_err(|e| bad(&e.to_string()))?;
    let addr = if bare_host.contains(':') {
        format!("[{bare_host}]:{port}")
    } else {
        format!("{bare_host}:{port}")
    };

    let config = client_config(trust, identity)?;
    let tls = TlsConnector::from(Arc::new(config));
    let tcp_addr = addr.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        let addr = tcp_addr.clone();
        let proxy = proxy.clone();
        async move {
            let tcp = match &proxy {
                Some(proxy) => tunnel(proxy, &addr).await?,
                None => TcpStream::connect(&addr).await?,
            };
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| bad(&e.to_string()))?
        .connect_timeout(Duration::from_secs(15))
        .http2_keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok((endpoint, tower::util::BoxCloneSyncService::new(connector)))
}

fn client_config(
    trust: ServerTrust,
    identity: Option<ClientIdentity>,
) -> Result<rustls::ClientConfig, ConnectError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match trust {
        ServerTrust::Ca(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca)?;
            builder.with_root_certificates(roots)
        }
        ServerTrust::PinnedCa(pin) => {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier {
                    pin: pin.to_ascii_lowercase(),
                    provider,
                }))
        }
    };
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts the server only if its chain carries the pinned CA and its certificate verifies against that CA.
#[derive(Debug)]
struct PinnedCaVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| sha256_hex(c) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the controller's CA certificate does not match the CA pin in the enrollment token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The whole `source()` chain of an error on one line: tonic hides the useful part (a TLS refusal) deep inside.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}
