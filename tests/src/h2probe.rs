//! A raw HTTP/2 client over TLS for probing the controller the way an attacker would: without the gRPC client's
//! manners (any path, any body, streams left open, connections that say nothing).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rollcall_proto::tls::{provider, ClientIdentity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type Stream = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr` trusting the CA in `ca_pem`, presenting `identity` if given. The handshake only.
pub async fn tls(
    addr: SocketAddr,
    ca_pem: &Path,
    identity: Option<ClientIdentity>,
) -> anyhow::Result<Stream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca_pem)?)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain, id.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    Ok(TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

/// An HTTP/2 client on a new TLS connection; the connection is driven in the background.
pub async fn h2(
    addr: SocketAddr,
    ca_pem: &Path,
    identity: Option<ClientIdentity>,
) -> anyhow::Result<(
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
)> {
    let stream = tls(addr, ca_pem, identity).await?;
    let (send, conn) = h2::client::handshake(stream).await?;
    Ok((send, tokio::spawn(conn)))
}

/// A gRPC frame: the 5-byte prefix (uncompressed, length) and `message`.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// Start a gRPC call to `path`, send `body` (without ending the stream when `end` is false), and return the
/// grpc-status and message the server answered with, from the headers or the trailers, within `within`.
pub async fn call(
    send: &mut h2::client::SendRequest<Bytes>,
    path: &str,
    body: Bytes,
    end: bool,
    within: Duration,
) -> anyhow::Result<(i32, String)> {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())?;
    let mut ready = send.clone().ready().await?;
    let (resp, mut stream) = ready.send_request(req, false)?;
    // Send what flow control allows now; a server that answers early never opens the window for the rest.
    stream.reserve_capacity(body.len());
    let sending = async move {
        let mut body = body;
        while !body.is_empty() {
            let cap = match futures::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) => n,
                _ => return,
            };
            let chunk = body.split_to(cap.min(body.len()));
            let last = body.is_empty() && end;
            if stream.send_data(chunk, last).is_err() {
                return;
            }
        }
        if end {
            let _ = stream.send_data(Bytes::new(), true);
        }
    };
    let sender = tokio::spawn(sending);
    let answer = tokio::time::timeout(within, async {
        let resp = resp.await?;
        let status = |h: &http::HeaderMap| {
            tonic::Status::from_header_map(h).map(|s| (s.code() as i32, s.message().to_owned()))
        };
        if let Some(found) = status(resp.headers()) {
            return Ok::<_, anyhow::Error>(found);
        }
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await?.unwrap_or_default();
        status(&trailers).ok_or_else(|| anyhow::anyhow!("no grpc-status in the answer"))
    })
    .await;
    sender.abort();
    answer.map_err(|_| anyhow::anyhow!("no answer from {path} within {within:?}"))?
}
