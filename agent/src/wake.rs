//! Fast reaction: a background task keeps `AgentService.Watch` open on the agent's channel. Each `WakeUp` (a wave
//! opened, a cancel, a retry) wakes the check-in loop after a random delay of up to the wake-up's `spread_ms`, so
//! the agent checks in at once instead of sleeping out its interval, and thousands of woken agents do not arrive
//! together. Polling on the interval stays the fallback: a failed stream reconnects after a jittered backoff
//! (1 s doubling to 60 s, reset after a stream that delivered something), and a controller that answers
//! `Unimplemented` is simply polled.
//!
//! Tested by the unit tests below (an unreachable controller is retried without waking the loop and the task
//! stops on request; a server without `Watch` ends the task); the wake-up path end to end by `tests/` against a
//! real controller.

use std::sync::Arc;
use std::time::Duration;

use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info};

use crate::backoff::{jitter, Backoff};

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// A controller asking for a longer spread is capped: polling would be as fast.
const MAX_SPREAD: Duration = Duration::from_secs(600);

/// The running watch task. Dropping it (or [`Watcher::stop`]) ends the task and closes its stream.
#[derive(Debug)]
pub struct Watcher {
    task: JoinHandle<()>,
}

impl Watcher {
    /// Watch through `channel`; each wake-up calls `wake.notify_one()`. Restart it with a new channel after a
    /// certificate renewal (the old channel still presents the old certificate).
    pub fn start(channel: Channel, wake: Arc<Notify>) -> Watcher {
        Watcher {
            task: tokio::spawn(watch(AgentServiceClient::new(channel), wake)),
        }
    }

    /// End the task and wait until it has ended.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// True once the task ended by itself (the controller does not implement `Watch`).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one watch stream ended.
enum Ended {
    /// The controller does not offer `Watch`: stop, polling only.
    Unimplemented,
    /// Failed or closed; `delivered` when it carried at least one wake-up first.
    Retry { delivered: bool, reason: String },
}

async fn watch(mut client: AgentServiceClient<Channel>, wake: Arc<Notify>) {
    let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    loop {
        match watch_once(&mut client, &wake).await {
            Ended::Unimplemented => {
                info!("The controller does not offer Watch; checking in on the interval only.");
                return;
            }
            Ended::Retry { delivered, reason } => {
                if delivered {
                    backoff.reset();
                }
                let wait = backoff.next_wait();
                debug!(error = %reason, retry_in = ?wait, "Watch stream ended; reconnecting.");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Open one stream and relay its wake-ups until it ends.
async fn watch_once(client: &mut AgentServiceClient<Channel>, wake: &Notify) -> Ended {
    let ended = |status: tonic::Status, delivered: bool| match status.code() {
        tonic::Code::Unimplemented => Ended::Unimplemented,
        _ => Ended::Retry {
            delivered,
            reason: status.message().to_owned(),
        },
    };
    let mut stream = match client.watch(v1::WatchRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => return ended(status, false),
    };
    let mut delivered = false;
    loop {
        match stream.message().await {
            Ok(Some(wake_up)) => {
                delivered = true;
                let spread = Duration::from_millis(u64::from(wake_up.spread_ms)).min(MAX_SPREAD);
                let delay = jitter(spread);
                info!(reason = %wake_up.reason, delay = ?delay, "Woken by the controller; checking in.");
                tokio::time::sleep(delay).await;
                wake.notify_one();
            }
            Ok(None) => {
                return Ended::Retry {
                    delivered,
                    reason: "closed by the controller".into(),
                }
            }
            Err(status) => return ended(status, delivered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel to a local port nothing listens on: the controller is unreachable.
    fn unreachable_channel() -> Channel {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy()
    }

    #[tokio::test]
    async fn an_unreachable_controller_is_retried_without_waking_the_loop_and_stop_ends_the_task() {
        let wake = Arc::new(Notify::new());
        let watcher = Watcher::start(unreachable_channel(), wake.clone());
        let woken = tokio::time::timeout(Duration::from_millis(2500), wake.notified()).await;
        assert!(woken.is_err(), "a failing stream is not a wake-up");
        assert!(!watcher.is_finished(), "still retrying, not given up");
        tokio::time::timeout(Duration::from_secs(5), watcher.stop())
            .await
            .expect("stop ends the task");
    }

    #[tokio::test]
    async fn a_controller_without_watch_is_only_polled() {
        // A real gRPC server that serves no AgentService: what a controller older than Watch answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::default())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let wake = Arc::new(Notify::new());
        let mut watcher = Watcher::start(channel, wake.clone());
        tokio::time::timeout(Duration::from_secs(20), &mut watcher.task)
            .await
            .expect("the task gave up watching by itself")
            .expect("and ended without a panic");
        let woken = tokio::time::timeout(Duration::from_millis(100), wake.notified()).await;
        assert!(woken.is_err(), "Unimplemented is not a wake-up");
        server.abort();
    }
}
