//! tough's `Transport` over the controller's `Fetch` stream. Metadata comes whole; a target is appended to a
//! `.part` file as it arrives, and a later fetch first replays the `.part` bytes and asks the controller only for
//! the rest — so tough still hashes the whole payload, and a dropped link costs only what was not yet received.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Base URLs tough is given; the transport maps their paths to `Fetch` calls.
pub const METADATA_BASE: &str = "rollcall://controller/metadata/";
pub const TARGETS_BASE: &str = "rollcall://controller/targets/";

const REPLAY_CHUNK: usize = 64 * 1024;
/// A transfer that brings no byte for this long is cut (and resumed at the next attempt from what arrived): a
/// dead connection must never hold the agent. The controller sends 64 KiB chunks, so this is also a throughput
/// floor of about 4 kbit/s.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(120);

/// The next item of `stream`, or `Err` when nothing arrives within `stall`.
pub async fn next_or_stall<S: futures::Stream + Unpin>(
    stream: &mut S,
    stall: std::time::Duration,
) -> Result<Option<S::Item>, String> {
    tokio::time::timeout(stall, stream.next())
        .await
        .map_err(|_| format!("no data for {}s: the transfer stalled", stall.as_secs()))
}

use super::Cause;

/// A transfer failure with its cause (never `Package`: that is tough's verdict on the content). tough wraps
/// transport errors in its own, so the transport keeps the cause beside them, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub cause: Cause,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct GrpcTransport {
    client: AgentServiceClient<Channel>,
    downloads: PathBuf,
    /// Bytes per second a target download may use (0: no cap).
    rate: u64,
    /// The last failure of the transport itself (as opposed to tough refusing the content).
    failure: Arc<Mutex<Option<Failure>>>,
}

/// gRPC codes that mean "the link or the controller is not there right now".
fn is_network(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
    )
}

impl GrpcTransport {
    pub fn new(channel: Channel, downloads: PathBuf, rate: u64) -> GrpcTransport {
        GrpcTransport {
            client: AgentServiceClient::new(channel),
            downloads,
            rate,
            failure: Arc::default(),
        }
    }

    /// The transport failure seen since the last call, if any (and forget it).
    pub fn take_failure(&self) -> Option<Failure> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}

/// Remember `reason` as the transport's failure and make the error tough sees.
fn failed(
    slot: &Mutex<Option<Failure>>,
    url: &str,
    cause: Cause,
    reason: String,
) -> TransportError {
    if let Ok(mut f) = slot.lock() {
        *f = Some(Failure {
            cause,
            reason: reason.clone(),
        });
    }
    TransportError::new_with_cause(TransportErrorKind::Other, url, reason)
}

/// The cause a gRPC status stands for.
fn cause_of(code: tonic::Code) -> Cause {
    if is_network(code) {
        Cause::Network
    } else {
        Cause::Controller
    }
}

impl GrpcTransport {
    /// The `.part` file of a target file name (`<sha256>.<target>`).
    pub fn part_path(&self, file: &str) -> PathBuf {
        part_path(&self.downloads, file)
    }
}

/// The `.part` file in `downloads` of a target file name (`<sha256>.<target>`): the one naming of partial
/// downloads, also used to delete them.
pub fn part_path(downloads: &Path, file: &str) -> PathBuf {
    downloads.join(format!("{}.part", file.replace(['/', '\\'], "_")))
}

#[tough::async_trait]
impl Transport for GrpcTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let path = url.path();
        let (kind, file) = if let Some(file) = path.strip_prefix("/metadata/") {
            (v1::FetchKind::Metadata, file.to_owned())
        } else if let Some(file) = path.strip_prefix("/targets/") {
            (v1::FetchKind::Target, file.to_owned())
        } else {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url.as_str(),
            ));
        };
        let part = (kind == v1::FetchKind::Target).then(|| self.part_path(&file));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, TransportError>>(8);
        let mut client = self.client.clone();

        // Replay what we have, then open the stream at the right offset. A missing file must surface as
        // FileNotFound before tough reads anything (it decides root rotation on it), so open the call here.
        let slot = self.failure.clone();
        let url_text = url.to_string();
        let local = |what: &str, path: &Path, e: std::io::Error| {
            let reason = format!("cannot {what} {}: {e}", path.display());
            failed(&slot, &url_text, Cause::Local, reason)
        };
        let mut offset = 0u64;
        let mut part_file = None;
        if let Some(part) = &part {
            if let Some(dir) = part.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| local("create", dir, e))?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(part)
                .await
                .map_err(|e| local("open", part, e))?;
            offset = f
                .metadata()
                .await
                .map_err(|e| local("read", part, e))?
                .len();
            part_file = Some(f);
        }
        let request = v1::FetchRequest {
            kind: kind as i32,
            path: file.clone(),
            offset,
        };
        let opened = match tokio::time::timeout(STALL, client.fetch(request)).await {
            Ok(result) => result,
            Err(_) => {
                let reason = format!("the controller did not answer within {}s", STALL.as_secs());
                return Err(failed(&slot, &url_text, Cause::Network, reason));
            }
        };
        let mut stream = match opened {
            Ok(resp) => resp.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(TransportError::new(
                    TransportErrorKind::FileNotFound,
                    url.as_str(),
                ))
            }
            Err(status) => {
                let reason = format!("the controller refused the transfer: {}", status.message());
                return Err(failed(&slot, &url_text, cause_of(status.code()), reason));
            }
        };

        let part_path = part.clone();
        let mut pace = Pace::new(self.rate);
        tokio::spawn(async move {
            let fail = |cause: Cause, reason: String| failed(&slot, &url_text, cause, reason);
            if let Some(path) = part_path.as_ref() {
                let mut replay = match tokio::fs::File::open(path).await {
                    Ok(r) => r,
                    Err(e) => {
                        let reason = format!("cannot read {}: {e}", path.display());
                        let _ = tx.send(Err(fail(Cause::Local, reason))).await;
                        return;
                    }
                };
                let mut buf = vec![0u8; REPLAY_CHUNK];
                let mut left = offset;
                while left > 0 {
                    let want = (left as usize).min(buf.len());
                    match replay.read(&mut buf[..want]).await {
                        Ok(0) => break,
                        Ok(n) => {
                            left -= n as u64;
                            if tx
                                .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            let reason = format!("cannot read {}: {e}", path.display());
                            let _ = tx.send(Err(fail(Cause::Local, reason))).await;
                            return;
                        }
                    }
                }
            }
            let mut expected = offset;
            loop {
                let item = match next_or_stall(&mut stream, STALL).await {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(stalled) => {
                        let reason = format!("download interrupted: {stalled}");
                        let _ = tx.send(Err(fail(Cause::Network, reason))).await;
                        return;
                    }
                };
                let chunk = match item {
                    Ok(c) => c,
                    Err(status) => {
                        let reason = format!("download interrupted: {}", status.message());
                        let _ = tx.send(Err(fail(cause_of(status.code()), reason))).await;
                        return;
                    }
                };
                if chunk.offset != expected {
                    // Nothing of it is written: what the .part holds stays good for a later resume.
                    let reason = format!(
                        "the controller sent data for offset {}, expected {expected}",
                        chunk.offset
                    );
                    let _ = tx.send(Err(fail(Cause::Controller, reason))).await;
                    return;
                }
                expected += chunk.data.len() as u64;
                if let (Some(f), Some(path)) = (part_file.as_mut(), part_path.as_ref()) {
                    if let Err(e) = f.write_all(&chunk.data).await {
                        let reason = format!("cannot write {}: {e}", path.display());
                        let _ = tx.send(Err(fail(Cause::Local, reason))).await;
                        return;
                    }
                }
                let len = chunk.data.len() as u64;
                if tx.send(Ok(Bytes::from(chunk.data))).await.is_err() {
                    return;
                }
                pace.after(len).await;
            }
            if let Some(f) = part_file.as_mut() {
                let _ = f.sync_all().await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// Keeps a transfer at or under `rate` bytes per second on average, by waiting after each chunk.
struct Pace {
    rate: u64,
    started: tokio::time::Instant,
    bytes: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            rate,
            started: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    async fn after(&mut self, len: u64) {
        if self.rate == 0 {
            return;
        }
        self.bytes += len;
        let due = std::time::Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        tokio::time::sleep_until(self.started + due).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
    use std::pin::Pin;
    use tonic::{Request, Response, Status};

    type Chunks = Pin<Box<dyn futures::Stream<Item = Result<v1::FetchChunk, Status>> + Send>>;
    type Wakes = Pin<Box<dyn futures::Stream<Item = Result<v1::WakeUp, Status>> + Send>>;

    /// A controller that answers `Fetch` wrongly, the one way each test asks for: the edge the agent must
    /// survive. Every other call is unimplemented.
    #[derive(Clone)]
    enum Hostile {
        /// Sends its chunk for this offset whatever was asked.
        WrongOffset(u64),
        /// Refuses with this status.
        Refuse(tonic::Code),
    }

    #[tonic::async_trait]
    impl AgentService for Hostile {
        async fn enroll(
            &self,
            _: Request<v1::EnrollRequest>,
        ) -> Result<Response<v1::EnrollResponse>, Status> {
            Err(Status::unimplemented("enroll"))
        }
        async fn check_in(
            &self,
            _: Request<v1::CheckInRequest>,
        ) -> Result<Response<v1::CheckInResponse>, Status> {
            Err(Status::unimplemented("check-in"))
        }
        type FetchStream = Chunks;
        async fn fetch(&self, _: Request<v1::FetchRequest>) -> Result<Response<Chunks>, Status> {
            match self.clone() {
                Hostile::WrongOffset(offset) => {
                    let chunk = v1::FetchChunk {
                        offset,
                        data: b"garbage".to_vec(),
                        total_size: 100,
                    };
                    Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
                }
                Hostile::Refuse(code) => Err(Status::new(code, "no such thing")),
            }
        }
        async fn renew(
            &self,
            _: Request<v1::RenewRequest>,
        ) -> Result<Response<v1::RenewResponse>, Status> {
            Err(Status::unimplemented("renew"))
        }
        type WatchStream = Wakes;
        async fn watch(&self, _: Request<v1::WatchRequest>) -> Result<Response<Wakes>, Status> {
            Err(Status::unimplemented("watch"))
        }
    }

    /// Fetch a target from a hostile controller; returns the failure the transport recorded.
    async fn fetch_from(hostile: Hostile, downloads: &Path) -> Failure {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AgentServiceServer::new(hostile))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let transport = GrpcTransport::new(channel, downloads.to_owned(), 0);
        let url = Url::parse(&format!("{TARGETS_BASE}abc.app_1.tar.gz")).unwrap();
        if let Ok(mut stream) = transport.fetch(url).await {
            while let Some(Ok(_)) = stream.next().await {}
        }
        server.abort();
        transport.take_failure().expect("a failure was recorded")
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_keeps_a_download_under_its_rate() {
        let started = tokio::time::Instant::now();
        let mut pace = Pace::new(100_000);
        for _ in 0..10 {
            pace.after(64 * 1024).await;
        }
        let took = started.elapsed().as_secs_f64();
        assert!(
            (6.5..6.6).contains(&took),
            "640 KiB at 100 kB/s took {took}s"
        );
        let mut free = Pace::new(0);
        free.after(1 << 30).await;
        assert!(started.elapsed().as_secs_f64() < 6.6, "no cap: no wait");
    }

    #[tokio::test]
    async fn data_for_the_wrong_offset_is_the_controllers_fault_and_never_written() {
        let tmp = tempfile::tempdir().unwrap();
        let part = part_path(tmp.path(), "abc.app_1.tar.gz");
        std::fs::write(&part, b"0123456789").unwrap();
        let failure = fetch_from(Hostile::WrongOffset(0), tmp.path()).await;
        assert_eq!(failure.cause, Cause::Controller);
        assert_eq!(
            failure.reason,
            "the controller sent data for offset 0, expected 10"
        );
        assert_eq!(
            std::fs::read(&part).unwrap(),
            b"0123456789",
            "the partial download is untouched and still resumes"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_the_controllers_fault_and_unavailable_is_the_networks() {
        let tmp = tempfile::tempdir().unwrap();
        let refused = fetch_from(Hostile::Refuse(tonic::Code::PermissionDenied), tmp.path()).await;
        assert_eq!(refused.cause, Cause::Controller);
        assert!(
            refused.reason.contains("no such thing"),
            "{}",
            refused.reason
        );
        let away = fetch_from(Hostile::Refuse(tonic::Code::Unavailable), tmp.path()).await;
        assert_eq!(away.cause, Cause::Network);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_stops_sending_is_cut_after_the_stall_time() {
        let mut silent = futures::stream::pending::<u8>();
        let started = tokio::time::Instant::now();
        let err = next_or_stall(&mut silent, STALL).await.unwrap_err();
        assert!(err.contains("no data for 120s"), "{err}");
        assert_eq!(
            started.elapsed(),
            STALL,
            "cut exactly at the stall time (paused clock)"
        );
        let mut one = futures::stream::iter([7u8]);
        assert_eq!(next_or_stall(&mut one, STALL).await, Ok(Some(7)));
        assert_eq!(next_or_stall(&mut one, STALL).await, Ok(None));
    }
}
