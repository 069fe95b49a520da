//! Wake-ups: online agents hold a `Watch` stream, and the controller pokes the ones a change concerns (a wave
//! opened, a retry is due, a cancel must reach them) so they check in within seconds instead of at their next
//! interval. Each poke carries a spread, so thousands of agents woken together arrive over a few seconds.

use std::collections::HashMap;
use std::sync::Mutex;

use rollcall_proto::v1;
use tokio::sync::mpsc;
use tonic::Status;

use crate::rollout::driver::Wake;

/// Spread of the check-ins that follow a wake-up: half a millisecond per agent woken (2,000 check-ins/s, a fifth
/// of what one controller serves), at most 5 s, so even a 10,000-device wave hears of its opening within 5 s.
const SPREAD_PER_AGENT_US: u32 = 500;
const MAX_SPREAD_MS: u32 = 5_000;

pub(crate) type WakeSender = mpsc::Sender<Result<v1::WakeUp, Status>>;

struct Watcher {
    site: String,
    tx: WakeSender,
    /// Distinguishes a newer stream of the same agent from the one being dropped.
    serial: u64,
}

/// The agents holding a `Watch` stream now.
#[derive(Default)]
pub(crate) struct Watchers {
    inner: Mutex<(u64, HashMap<String, Watcher>)>,
}

impl std::fmt::Debug for Watchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers").finish_non_exhaustive()
    }
}

impl Watchers {
    /// Register an agent's stream (replacing an older one of the same agent). Returns its serial for `remove`.
    pub fn add(&self, agent_id: &str, site: &str, tx: WakeSender) -> u64 {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += 1;
        let serial = guard.0;
        guard.1.insert(
            agent_id.to_owned(),
            Watcher {
                site: site.to_owned(),
                tx,
                serial,
            },
        );
        serial
    }

    /// Forget a stream that ended, unless the agent already opened a newer one.
    pub fn remove(&self, agent_id: &str, serial: u64) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if guard.1.get(agent_id).is_some_and(|w| w.serial == serial) {
            guard.1.remove(agent_id);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    /// Poke every watching agent `wake` concerns. Returns how many were poked.
    pub fn wake(&self, wake: &Wake) -> usize {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let chosen: Vec<&Watcher> = match (&wake.agents, &wake.sites) {
            (Some(ids), _) => ids.iter().filter_map(|id| guard.1.get(id)).collect(),
            (None, Some(sites)) => guard
                .1
                .values()
                .filter(|w| sites.contains(&w.site))
                .collect(),
            (None, None) => guard.1.values().collect(),
        };
        let spread_ms =
            ((chosen.len() as u32).saturating_mul(SPREAD_PER_AGENT_US) / 1000).min(MAX_SPREAD_MS);
        for w in &chosen {
            // A full channel means a wake-up is already on its way.
            let _ = w.tx.try_send(Ok(v1::WakeUp {
                spread_ms,
                reason: wake.reason.clone(),
            }));
        }
        chosen.len()
    }
}

/// The stream a `Watch` call returns; dropping it (the agent went away) unregisters the agent.
pub(crate) struct WatchStream {
    pub inner: tokio_stream::wrappers::ReceiverStream<Result<v1::WakeUp, Status>>,
    pub shared: std::sync::Arc<super::Shared>,
    pub agent_id: String,
    pub serial: u64,
}

impl futures::Stream for WatchStream {
    type Item = Result<v1::WakeUp, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.watchers.remove(&self.agent_id, self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_reach_the_agents_and_sites_they_name() {
        let w = Watchers::default();
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        w.add("a", "north", tx_a);
        let serial_b = w.add("b", "south", tx_b);
        let by_site = Wake {
            agents: None,
            sites: Some(vec!["north".into()]),
            reason: "wave 1 opened".into(),
        };
        assert_eq!(w.wake(&by_site), 1);
        let got = rx_a.try_recv().unwrap().unwrap();
        assert_eq!((got.reason.as_str(), got.spread_ms), ("wave 1 opened", 0));
        assert!(rx_b.try_recv().is_err(), "south was not poked");
        let by_agent = Wake {
            agents: Some(vec!["b".into(), "gone".into()]),
            sites: None,
            reason: "retry".into(),
        };
        assert_eq!(w.wake(&by_agent), 1);
        assert!(rx_b.try_recv().is_ok());
        w.remove("b", serial_b + 100);
        assert_eq!(
            w.len(),
            2,
            "an older stream's end does not remove a newer one"
        );
        w.remove("b", serial_b);
        assert_eq!(w.len(), 1);
    }
}
