//! The baseline of `rollcall-bench checkin --baseline`: a bare tonic server with the controller's own TLS
//! configuration (its certificate and key, mTLS against its device CA, the same rustls provider) whose `CheckIn`
//! decodes the request and answers a response of the controller's shape at once: no store, no gate, no rules.
//! Whatever the controller's figure lacks against this one is the controller's own work.

use std::path::Path;
use std::sync::Arc;

use futures::stream::BoxStream;
use rollcall_proto::v1::{self, agent_service_server::AgentService};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Answers check-ins and nothing else.
#[derive(Debug, Default)]
struct Bare;

#[tonic::async_trait]
impl AgentService for Bare {
    async fn enroll(
        &self,
        _: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        Err(Status::unimplemented(
            "the baseline server only answers check-ins",
        ))
    }

    async fn check_in(
        &self,
        req: Request<v1::CheckInRequest>,
    ) -> Result<Response<v1::CheckInResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(v1::CheckInResponse {
            checkin_interval_seconds: 3600,
            jitter_seconds: 60,
            send_inventory: req.inventory.is_none() && req.inventory_hash.is_empty(),
            now_unix: chrono::Utc::now().timestamp(),
            ..Default::default()
        }))
    }

    type FetchStream = BoxStream<'static, Result<v1::FetchChunk, Status>>;

    async fn fetch(
        &self,
        _: Request<v1::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        Err(Status::unimplemented(
            "the baseline server only answers check-ins",
        ))
    }

    async fn renew(
        &self,
        _: Request<v1::RenewRequest>,
    ) -> Result<Response<v1::RenewResponse>, Status> {
        Err(Status::unimplemented(
            "the baseline server only answers check-ins",
        ))
    }

    type WatchStream = BoxStream<'static, Result<v1::WakeUp, Status>>;

    async fn watch(
        &self,
        _: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "the baseline server only answers check-ins",
        ))
    }
}

/// A running baseline server; stopped (listener and server) on drop.
pub struct BareServer {
    pub url: String,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for BareServer {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// Start the baseline on 127.0.0.1 with the TLS configuration of the controller whose data directory is `data`.
pub async fn start(data: &Path) -> anyhow::Result<BareServer> {
    let dir = rollcall_controller::datadir::DataDir::new(data);
    let tls = rollcall_controller::pki::tls::server_config(
        &dir.ca_cert(),
        &dir.server_cert(),
        &dir.server_key(),
    )?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let accept = tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors, say: the next accept may work.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok::<_, std::io::Error>(stream)).await;
                }
            });
        }
    });
    let serve = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(v1::agent_service_server::AgentServiceServer::new(Bare))
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
    });
    Ok(BareServer {
        url,
        tasks: [accept, serve],
    })
}
