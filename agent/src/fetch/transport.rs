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

#[derive(Debug, Clone)]
pub struct GrpcTransport {
    client: AgentServiceClient<Channel>,
    downloads: PathBuf,
    /// The last failure that was the network's (unreachable controller, dropped stream), not the content's.
    /// tough wraps transport errors in its own; this keeps the distinction typed.
    network_failure: Arc<Mutex<Option<String>>>,
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
    pub fn new(channel: Channel, downloads: PathBuf) -> GrpcTransport {
        GrpcTransport {
            client: AgentServiceClient::new(channel),
            downloads,
            network_failure: Arc::default(),
        }
    }

    /// The network failure seen since the last call, if any (and forget it).
    pub fn take_network_failure(&self) -> Option<String> {
        self.network_failure.lock().ok().and_then(|mut f| f.take())
    }

    fn note_network_failure(slot: &Mutex<Option<String>>, reason: String) {
        if let Ok(mut f) = slot.lock() {
            *f = Some(reason);
        }
    }

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

fn other(url: &Url, cause: impl std::fmt::Display) -> TransportError {
    TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), cause.to_string())
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
        let mut offset = 0u64;
        let mut part_file = None;
        if let Some(part) = &part {
            if let Some(dir) = part.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| other(&url, e))?;
            }
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(part)
                .await
                .map_err(|e| other(&url, e))?;
            offset = f.metadata().await.map_err(|e| other(&url, e))?.len();
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
                Self::note_network_failure(&self.network_failure, reason.clone());
                return Err(other(&url, reason));
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
                if is_network(status.code()) {
                    Self::note_network_failure(&self.network_failure, status.message().to_owned());
                }
                return Err(other(&url, status.message()));
            }
        };
        let network_failure = self.network_failure.clone();

        let url_text = url.to_string();
        let part_path = part.clone();
        tokio::spawn(async move {
            let fail = |msg: String| {
                TransportError::new_with_cause(TransportErrorKind::Other, url_text.clone(), msg)
            };
            if let Some(path) = part_path.as_ref() {
                let mut replay = match tokio::fs::File::open(path).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(fail(e.to_string()))).await;
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
                            let _ = tx.send(Err(fail(e.to_string()))).await;
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
                        GrpcTransport::note_network_failure(&network_failure, reason.clone());
                        let _ = tx.send(Err(fail(reason))).await;
                        return;
                    }
                };
                let chunk = match item {
                    Ok(c) => c,
                    Err(status) => {
                        let reason = format!("download interrupted: {}", status.message());
                        if is_network(status.code()) {
                            GrpcTransport::note_network_failure(&network_failure, reason.clone());
                        }
                        let _ = tx.send(Err(fail(reason))).await;
                        return;
                    }
                };
                if chunk.offset != expected {
                    let _ = tx
                        .send(Err(fail(format!(
                            "controller sent offset {}, expected {expected}",
                            chunk.offset
                        ))))
                        .await;
                    return;
                }
                expected += chunk.data.len() as u64;
                if let Some(f) = part_file.as_mut() {
                    if let Err(e) = f.write_all(&chunk.data).await {
                        let _ = tx
                            .send(Err(fail(format!("cannot write partial download: {e}"))))
                            .await;
                        return;
                    }
                }
                if tx.send(Ok(Bytes::from(chunk.data))).await.is_err() {
                    return;
                }
            }
            if let Some(f) = part_file.as_mut() {
                let _ = f.sync_all().await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
