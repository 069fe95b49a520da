//! `rollcall-bench`: a real controller process and N simulated agents, each enrolled through the real Enroll call
//! and holding its own mTLS connection, on loopback.
//!
//! - `checkin --agents N --seconds S`: every agent checks in back to back for S seconds. Prints check-ins/s,
//!   latency percentiles and the controller's peak RSS.
//! - `wake --agents N [--interval 5m]`: every agent checks in once and holds its `Watch` stream; then a one-wave
//!   rollout over all of them is created and started. Prints the time from the create call until 50%, 95% and
//!   100% of the agents reported `Downloading` (each checks in after a random delay of up to its wake-up's
//!   spread, gets its assignment and reports at once), how many were woken, and the controller's peak RSS.
//!
//! - `inventory` and `query`: the inventory's cost on this machine and `agents list --where` over a loaded store
//!   (`rollcall_tests::invbench`).
//!
//! Bounded: enrollment, load and wake-ups all stop at their deadlines; traffic goes only to 127.0.0.1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use rollcall_agent::backoff::{jitter, Backoff};
use rollcall_controller::cli::local::LocalController;
use rollcall_controller::cli::{pkg, AdminClient};
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use rollcall_proto::{ClientIdentity, ServerTrust};
use rollcall_tests::footprint::rss_kib;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Longest a single call may take before it counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the agents may take to come online, and the rollout to reach them all.
const WAKE_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Parser)]
#[command(
    name = "rollcall-bench",
    about = "Load benchmarks against a real rollcall controller"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// N agents check in back to back over mTLS for S seconds.
    Checkin {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 32)]
        enroll_concurrency: usize,
        /// Run a rollout over every simulated agent during the load (they never finish it, so every check-in
        /// gets its assignment and the engine tallies all N devices every second).
        #[arg(long)]
        rollout: bool,
        /// Then drive the same agents, the same way, against a bare tonic server with the controller's TLS
        /// configuration that does no work, and print both figures and their ratio.
        #[arg(long)]
        baseline: bool,
    },
    /// Time from starting a rollout until N online agents, woken over their Watch streams, start downloading.
    Wake {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// The controller's check-in interval (polling alone at this interval cannot meet a seconds goal).
        #[arg(long, default_value = "5m")]
        interval: String,
        /// Enrollments in flight at once.
        #[arg(long, default_value_t = 32)]
        enroll_concurrency: usize,
    },
    /// One real idle agent: RSS and PSS after the settle time, CPU seconds per hour of idle check-ins, threads,
    /// stripped binary size; with --cfengine, Debian's cfengine3 daemons measured the same way.
    AgentFootprint {
        #[arg(long, default_value_t = 60)]
        settle_secs: u64,
        /// CPU time is measured over this window and scaled to an hour.
        #[arg(long, default_value_t = 300)]
        window_secs: u64,
        /// The controller's check-in interval.
        #[arg(long, default_value = "60s")]
        interval: String,
        /// A folder with start-cfengine.sh and stop-cfengine.sh (tests/bench/).
        #[arg(long, value_name = "DIR")]
        cfengine: Option<PathBuf>,
    },
    /// N agents checking in on their interval; the controller is killed, stays down, and restarts: how fast do
    /// they come back, and how hard do they arrive?
    Outage {
        #[arg(long, default_value_t = 2000)]
        agents: usize,
        /// The controller's check-in interval, in seconds.
        #[arg(long, default_value_t = 60)]
        interval_secs: u64,
        /// How long the controller stays down.
        #[arg(long, default_value_t = 30)]
        down_secs: u64,
        /// The agents' backoff cap (the agent's `max_backoff_secs`).
        #[arg(long, default_value_t = 60)]
        max_backoff_secs: u64,
        #[arg(long, default_value_t = 32)]
        enroll_concurrency: usize,
        /// The controller's accept queue (`listen_backlog`; default: its own default).
        #[arg(long)]
        listen_backlog: Option<u32>,
    },
    /// The real `rollcall-agent inventory` run N times: CPU per run, peak RSS, packages found, delta size.
    Inventory {
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// N agents with synthetic inventories loaded through the real Enroll and CheckIn calls, then
    /// `agents list --where` and `compliance` timed over them.
    Query {
        #[arg(long, default_value_t = 100_000)]
        agents: usize,
        /// Distinct software lists among the agents (a fleet installed from a few images).
        #[arg(long, default_value_t = 1000)]
        sets: usize,
        /// Agents loading at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Checkin {
            agents,
            seconds,
            enroll_concurrency,
            rollout,
            baseline,
        } => checkin(agents, seconds, enroll_concurrency, rollout, baseline).await,
        Cmd::Wake {
            agents,
            interval,
            enroll_concurrency,
        } => wake(agents, &interval, enroll_concurrency).await,
        Cmd::Inventory { runs } => rollcall_tests::invbench::inventory_cost(runs),
        Cmd::Query {
            agents,
            sets,
            concurrency,
        } => {
            raise_fd_limit(concurrency as u64 * 4 + 1024)?;
            rollcall_tests::invbench::query(agents, sets, concurrency).await
        }
        Cmd::AgentFootprint {
            settle_secs,
            window_secs,
            interval,
            cfengine,
        } => {
            rollcall_tests::footprint::agent_footprint(
                Duration::from_secs(settle_secs),
                Duration::from_secs(window_secs),
                &interval,
                cfengine.as_deref(),
            )
            .await
        }
        Cmd::Outage {
            agents,
            interval_secs,
            down_secs,
            max_backoff_secs,
            enroll_concurrency,
            listen_backlog,
        } => {
            outage(
                agents,
                Duration::from_secs(interval_secs),
                Duration::from_secs(down_secs),
                Duration::from_secs(max_backoff_secs),
                enroll_concurrency,
                listen_backlog,
            )
            .await
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// === the fleet: one controller, N enrolled agents ===

/// One lazily connecting client per identity, to the server at `url` that the device CA `ca` vouches for.
fn clients_for(
    url: &str,
    ca: &rollcall_proto::tls::pki_types::CertificateDer<'static>,
    identities: &[ClientIdentity],
) -> anyhow::Result<Vec<AgentServiceClient<Channel>>> {
    identities
        .iter()
        .map(|identity| {
            let channel = rollcall_proto::tls::connect_lazy(
                url,
                ServerTrust::Ca(ca.clone()),
                Some(identity.clone()),
            )?;
            Ok(AgentServiceClient::new(channel))
        })
        .collect()
}

/// A running controller with N simulated agents enrolled at the `bench` site, each with its own mTLS channel.
struct Fleet {
    /// Holds the controller's data, the signing keys and the repository; removed on drop.
    dir: tempfile::TempDir,
    controller: Option<LocalController>,
    admin: AdminClient,
    keys: PathBuf,
    repo: PathBuf,
    /// One client per agent; its channel connects (TLS handshake) on first use.
    clients: Vec<AgentServiceClient<Channel>>,
    /// Each agent's identity, and the controller's device CA (to reach another server as the same agents).
    identities: Vec<ClientIdentity>,
    ca: rollcall_proto::tls::pki_types::CertificateDer<'static>,
    /// This machine's inventory, reported by every agent.
    inventory: v1::Inventory,
    inventory_hash: String,
    enroll_secs: f64,
}

impl Fleet {
    /// Start a controller with `checkin_interval`, initialise its repository, and enroll `agents` agents through
    /// the real API, `enroll_concurrency` at a time, within 10 minutes at most.
    async fn start(
        agents: usize,
        enroll_concurrency: usize,
        checkin_interval: &str,
        extra: &str,
    ) -> anyhow::Result<Fleet> {
        raise_fd_limit((agents as u64) * 2 + 1024)?;
        let rollcall_tests::benchkit::BenchController {
            dir,
            controller,
            admin,
            keys,
            repo,
            token,
            ca,
            enroll_channel,
        } = rollcall_tests::benchkit::BenchController::start(agents, checkin_interval, extra)
            .await?;
        eprintln!("enrolling {agents} agents…");
        let started = Instant::now();
        let enroll_deadline = started + Duration::from_secs(600);
        let semaphore = Arc::new(tokio::sync::Semaphore::new(enroll_concurrency));
        let mut tasks = Vec::with_capacity(agents);
        for i in 0..agents {
            let permit = semaphore.clone().acquire_owned().await?;
            let (channel, token) = (enroll_channel.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                if Instant::now() > enroll_deadline {
                    anyhow::bail!("enrollment deadline passed");
                }
                rollcall_tests::benchkit::enroll_one(channel, token, format!("bench-{i:05}")).await
            }));
        }
        let mut identities = Vec::with_capacity(agents);
        for t in tasks {
            identities.push(t.await??);
        }
        let clients = clients_for(&controller.url, &ca, &identities)?;
        let enroll_secs = started.elapsed().as_secs_f64();
        eprintln!("enrolled {agents} in {enroll_secs:.1}s");
        let inventory = rollcall_agent::inventory::collect(Some("bench"), &Default::default());
        let inventory_hash = rollcall_agent::inventory::hash(&inventory);
        Ok(Fleet {
            dir,
            controller: Some(controller),
            admin,
            keys,
            repo,
            clients,
            identities,
            ca,
            inventory,
            inventory_hash,
            enroll_secs,
        })
    }

    /// A check-in as an agent sends it: the full inventory on the first one, later only its hash.
    fn check_in_request(&self, first: bool) -> v1::CheckInRequest {
        v1::CheckInRequest {
            inventory: first.then(|| self.inventory.clone()),
            inventory_hash: self.inventory_hash.clone(),
            agent_version: "bench".into(),
            ..Default::default()
        }
    }

    /// Build, sign and push a tiny package `bench@1` (an install that does nothing).
    async fn publish_package(&self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let src = dir.join("pkg");
        std::fs::create_dir_all(src.join("payload"))?;
        std::fs::write(src.join("payload/install.sh"), "true\n")?;
        std::fs::write(
            src.join("manifest.toml"),
            "name = \"bench\"\nversion = \"1\"\nrelease_counter = 1\nplatforms = [\"any\"]\n\
             [install]\ncommand = [\"sh\", \"install.sh\"]\n[verify]\ncommand = [\"true\"]\n",
        )?;
        let (package, _) = pkg::build(
            &src.join("manifest.toml"),
            &src.join("payload"),
            &dir.join("out"),
        )?;
        pkg::sign(&self.repo, &self.keys, &package, Duration::from_secs(3600)).await?;
        pkg::push(&self.admin, &self.repo).await?;
        Ok(())
    }

    /// Create and start a one-wave rollout of `bench@1` over the bench site.
    async fn start_rollout(&self) -> anyhow::Result<()> {
        self.admin
            .rpc
            .clone()
            .create_rollout(v1::CreateRolloutRequest {
                package: "bench".into(),
                version: "1".into(),
                waves: vec![rollcall_tests::sites_wave(&["bench"])],
                start: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// The controller's peak and current RSS, in KiB.
    fn controller_rss_kib(&self) -> (u64, u64) {
        rss_kib(self.controller.as_ref().and_then(|c| c.pid()).unwrap_or(0))
    }

    /// Stop the controller (SIGTERM) and remove the temp dir.
    async fn stop(self) {
        if let Some(controller) = self.controller {
            controller.stop().await;
        }
    }

    /// Kill the controller (SIGKILL), wait `down`, and start it again on the same data and address.
    async fn restart_controller(&mut self, down: Duration, interval: &str) -> anyhow::Result<()> {
        let controller = self.controller.take().context("no controller")?;
        let (data, addr) = (controller.data.clone(), controller.addr().to_owned());
        controller.kill().await;
        tokio::time::sleep(down).await;
        self.controller = Some(LocalController::serve_at(&data, &addr, interval).await?);
        Ok(())
    }
}

// === checkin ===

async fn checkin(
    agents: usize,
    seconds: u64,
    enroll_concurrency: usize,
    rollout: bool,
    baseline: bool,
) -> anyhow::Result<()> {
    // Long interval: the bench drives the pace, not the controller.
    if baseline {
        // The bare server runs in this process: its side of every connection too.
        raise_fd_limit((agents as u64) * 4 + 1024)?;
    }
    let fleet = Fleet::start(agents, enroll_concurrency, "1h", "").await?;

    // Load: every agent checks in back to back until the deadline (first with inventory, then hash only).
    if rollout {
        fleet.publish_package().await?;
        fleet.start_rollout().await?;
    }
    eprintln!("{agents} agents checking in for {seconds}s…");
    let load = drive(&fleet, &fleet.clients, seconds).await?;
    let (peak, current) = fleet.controller_rss_kib();
    let enroll_secs = fleet.enroll_secs;
    println!(
        "rollcall-bench checkin{}",
        if rollout { " --rollout" } else { "" }
    );
    println!("  agents:               {agents}");
    println!(
        "  enrollment:           {enroll_secs:.1} s ({:.0} agents/s)",
        agents as f64 / enroll_secs
    );
    load.print("controller");
    println!(
        "  controller peak RSS:  {:.1} MiB (now {:.1} MiB)",
        peak as f64 / 1024.0,
        current as f64 / 1024.0
    );
    if baseline {
        let data = fleet
            .controller
            .as_ref()
            .map(|c| c.data.clone())
            .context("no controller")?;
        let bare = rollcall_tests::bare::start(&data).await?;
        let clients = clients_for(&bare.url, &fleet.ca, &fleet.identities)?;
        eprintln!("the same {agents} agents against a bare tonic server for {seconds}s…");
        let base = drive(&fleet, &clients, seconds).await?;
        base.print("bare tonic (same TLS, no work)");
        println!(
            "  controller / bare:    {:.0}% of the check-ins/s",
            load.rate() / base.rate().max(0.001) * 100.0
        );
    }
    fleet.stop().await;
    Ok(())
}

/// What one closed-loop run measured.
struct Load {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed
    }

    fn print(&self, against: &str) {
        let all = &self.latencies;
        println!("  against {against}:");
        println!(
            "    check-ins:          {} in {:.1} s ({} errors)",
            all.len(),
            self.elapsed,
            self.errors
        );
        println!("    check-ins/s:        {:.0}", self.rate());
        println!(
            "    latency p50:        {:.2} ms",
            ms(percentile(all, 0.50))
        );
        println!(
            "    latency p99:        {:.2} ms",
            ms(percentile(all, 0.99))
        );
        println!(
            "    latency max:        {:.2} ms",
            ms(all.last().copied().unwrap_or_default())
        );
    }
}

/// Every client checks in back to back for `seconds` (closed loop), the first time with the inventory.
async fn drive(
    fleet: &Fleet,
    clients: &[AgentServiceClient<Channel>],
    seconds: u64,
) -> anyhow::Result<Load> {
    let load_start = Instant::now();
    let deadline = load_start + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let mut client = client.clone();
        let first_req = fleet.check_in_request(true);
        let req = fleet.check_in_request(false);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first = true;
            while Instant::now() < deadline {
                let req = if first {
                    first_req.clone()
                } else {
                    req.clone()
                };
                let t = Instant::now();
                match tokio::time::timeout(CALL_TIMEOUT, client.check_in(req)).await {
                    Ok(Ok(_)) => {
                        // The first check-in includes the TLS handshake; count it separately.
                        if !first {
                            latencies.push(t.elapsed());
                        }
                        first = false;
                    }
                    _ => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    Ok(Load {
        latencies,
        errors,
        elapsed: load_start.elapsed().as_secs_f64(),
    })
}

// === wake ===

/// What one simulated agent of `wake` did, reported as it happens.
#[derive(Debug)]
enum Event {
    /// Checked in once (it is online) and holds its Watch stream.
    Watching,
    /// A wake-up arrived.
    Woken {
        agent: usize,
        spread_ms: u32,
        at: Instant,
    },
    /// Its `Downloading` report was accepted: it started downloading.
    Downloading { agent: usize, at: Instant },
    /// A call failed or a stream ended; the agent retries.
    Error(String),
}

/// Per-agent moments of the `wake` run, from the create call.
struct WakeTally {
    watching: usize,
    woken: Vec<Option<Duration>>,
    wake_ups: usize,
    max_spread_ms: u32,
    started: Vec<Option<Duration>>,
    started_count: usize,
    errors: usize,
    first_error: Option<String>,
}

impl WakeTally {
    fn new(agents: usize) -> WakeTally {
        WakeTally {
            watching: 0,
            woken: vec![None; agents],
            wake_ups: 0,
            max_spread_ms: 0,
            started: vec![None; agents],
            started_count: 0,
            errors: 0,
            first_error: None,
        }
    }

    /// Record one event; its moment counts from `t0`, the create call.
    fn add(&mut self, event: Event, t0: Instant) {
        match event {
            Event::Watching => self.watching += 1,
            Event::Woken {
                agent,
                spread_ms,
                at,
            } => {
                self.wake_ups += 1;
                self.max_spread_ms = self.max_spread_ms.max(spread_ms);
                self.woken[agent].get_or_insert(at.saturating_duration_since(t0));
            }
            Event::Downloading { agent, at } => {
                if self.started[agent]
                    .replace(at.saturating_duration_since(t0))
                    .is_none()
                {
                    self.started_count += 1;
                }
            }
            Event::Error(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn error_summary(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors, first: {e}", self.errors),
            None => "no errors".into(),
        }
    }
}

/// When the first `ceil(share × total)` of the moments had all passed; `None` if they never did.
fn time_to_share(sorted: &[Duration], total: usize, share: f64) -> Option<Duration> {
    let k = ((share * total as f64).ceil() as usize).max(1);
    sorted.get(k - 1).copied()
}

fn show(d: Option<Duration>) -> String {
    d.map_or_else(|| "not reached".into(), |d| format!("{:.0} ms", ms(d)))
}

async fn wake(agents: usize, interval: &str, enroll_concurrency: usize) -> anyhow::Result<()> {
    let fleet = Fleet::start(agents, enroll_concurrency, interval, "").await?;
    eprintln!("{agents} agents coming online and watching…");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = fleet
        .clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(wake_agent(
                i,
                client.clone(),
                fleet.check_in_request(true),
                fleet.check_in_request(false),
                tx.clone(),
            ))
        })
        .collect();
    drop(tx);

    let mut tally = WakeTally::new(agents);
    let online_deadline = tokio::time::Instant::now() + WAKE_DEADLINE;
    while tally.watching < agents {
        match tokio::time::timeout_at(online_deadline, rx.recv()).await {
            Ok(Some(event)) => tally.add(event, Instant::now()),
            Ok(None) | Err(_) => {
                tasks.iter().for_each(|t| t.abort());
                fleet.stop().await;
                anyhow::bail!(
                    "only {} of {agents} agents were online and watching after {} s ({})",
                    tally.watching,
                    WAKE_DEADLINE.as_secs(),
                    tally.error_summary()
                );
            }
        }
    }

    eprintln!("all watching; publishing the package and starting the rollout…");
    fleet.publish_package().await?;
    let t0 = Instant::now();
    fleet.start_rollout().await?;
    let create_call = t0.elapsed();
    let deadline = tokio::time::Instant::from_std(t0 + WAKE_DEADLINE);
    while tally.started_count < agents {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => tally.add(event, t0),
            Ok(None) | Err(_) => break,
        }
    }
    tasks.iter().for_each(|t| t.abort());

    let mut started: Vec<Duration> = tally.started.iter().flatten().copied().collect();
    started.sort();
    let mut woken: Vec<Duration> = tally.woken.iter().flatten().copied().collect();
    woken.sort();
    let (peak, current) = fleet.controller_rss_kib();
    println!("rollcall-bench wake --interval {interval}");
    println!("  agents:                   {agents}");
    println!("  watch streams open:       {}", tally.watching);
    println!("  create call returned:     {:.0} ms", ms(create_call));
    println!(
        "  woken:                    {} agents ({} wake-ups, spread up to {} ms), first at {}, last at {}",
        woken.len(),
        tally.wake_ups,
        tally.max_spread_ms,
        show(woken.first().copied()),
        show(woken.last().copied())
    );
    println!(
        "  started downloading:      {} of {agents}",
        tally.started_count
    );
    println!(
        "  50% started after:        {}",
        show(time_to_share(&started, agents, 0.50))
    );
    println!(
        "  95% started after:        {}",
        show(time_to_share(&started, agents, 0.95))
    );
    println!(
        "  100% started after:       {}",
        show(time_to_share(&started, agents, 1.0))
    );
    println!("  errors:                   {}", tally.error_summary());
    println!(
        "  controller peak RSS:      {:.1} MiB (now {:.1} MiB)",
        peak as f64 / 1024.0,
        current as f64 / 1024.0
    );
    fleet.stop().await;
    if tally.started_count < agents {
        anyhow::bail!(
            "only {} of {agents} agents started downloading within {} s of the create call",
            tally.started_count,
            WAKE_DEADLINE.as_secs()
        );
    }
    Ok(())
}

/// One simulated agent: check in once, hold a Watch stream, and on a wake-up check in after a random delay of
/// up to its spread; given an assignment, report `Downloading` for it at once. Runs until aborted.
async fn wake_agent(
    agent: usize,
    mut client: AgentServiceClient<Channel>,
    first: v1::CheckInRequest,
    later: v1::CheckInRequest,
    events: mpsc::UnboundedSender<Event>,
) {
    check_in(&mut client, first, &events).await;
    let mut stream = open_watch(&mut client, &events).await;
    let _ = events.send(Event::Watching);
    let mut downloading = false;
    loop {
        let wake_up = match stream.message().await {
            Ok(Some(wake_up)) => wake_up,
            Ok(None) => {
                let _ = events.send(Event::Error("watch stream closed".into()));
                stream = open_watch(&mut client, &events).await;
                continue;
            }
            Err(status) => {
                let _ = events.send(Event::Error(format!("watch stream: {status}")));
                stream = open_watch(&mut client, &events).await;
                continue;
            }
        };
        let _ = events.send(Event::Woken {
            agent,
            spread_ms: wake_up.spread_ms,
            at: Instant::now(),
        });
        if downloading {
            continue;
        }
        tokio::time::sleep(jitter(Duration::from_millis(u64::from(wake_up.spread_ms)))).await;
        let answer = check_in(&mut client, later.clone(), &events).await;
        let Some(assignment) = answer.assignments.first() else {
            continue;
        };
        let mut report = later.clone();
        report.open_actions = vec![assignment.action_id.clone()];
        report.reports = vec![v1::ActionReport {
            action_id: assignment.action_id.clone(),
            state: v1::ActionState::Downloading as i32,
            attempt: assignment.attempt,
            report_id: format!("{}#1", assignment.action_id),
            at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
            ..Default::default()
        }];
        check_in(&mut client, report, &events).await;
        downloading = true;
        let _ = events.send(Event::Downloading {
            agent,
            at: Instant::now(),
        });
    }
}

/// Check in until it succeeds, 100 ms between attempts; every failure is an error event.
async fn check_in(
    client: &mut AgentServiceClient<Channel>,
    req: v1::CheckInRequest,
    events: &mpsc::UnboundedSender<Event>,
) -> v1::CheckInResponse {
    loop {
        let error = match tokio::time::timeout(CALL_TIMEOUT, client.check_in(req.clone())).await {
            Ok(Ok(answer)) => return answer.into_inner(),
            Ok(Err(status)) => format!("check-in: {status}"),
            Err(_) => "check-in timed out".into(),
        };
        let _ = events.send(Event::Error(error));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Open a Watch stream until it succeeds, 100 ms between attempts; every failure is an error event.
async fn open_watch(
    client: &mut AgentServiceClient<Channel>,
    events: &mpsc::UnboundedSender<Event>,
) -> tonic::Streaming<v1::WakeUp> {
    loop {
        let error =
            match tokio::time::timeout(CALL_TIMEOUT, client.watch(v1::WatchRequest {})).await {
                Ok(Ok(stream)) => return stream.into_inner(),
                Ok(Err(status)) => format!("watch: {status}"),
                Err(_) => "watch timed out".into(),
            };
        let _ = events.send(Event::Error(error));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// === outage ===

/// One simulated agent's loop, by the real agent's rules (`run.rs`): a check-in that gets through resets the
/// backoff and waits the interval plus the controller's jitter; a failed one waits the full-jitter backoff
/// (1 s doubling, capped). Sends the time of every check-in that got through. Runs until aborted.
async fn outage_agent(
    agent: usize,
    mut client: AgentServiceClient<Channel>,
    req: v1::CheckInRequest,
    interval: Duration,
    max_backoff: Duration,
    done: mpsc::UnboundedSender<(usize, Instant)>,
) {
    // Agents started at different times: spread the first check-ins over one interval.
    tokio::time::sleep(jitter(interval)).await;
    let mut backoff = Backoff::new(Duration::from_secs(1), max_backoff);
    loop {
        let wait = match tokio::time::timeout(CALL_TIMEOUT, client.check_in(req.clone())).await {
            Ok(Ok(answer)) => {
                let _ = done.send((agent, Instant::now()));
                backoff.reset();
                let answer = answer.into_inner();
                Duration::from_secs(u64::from(answer.checkin_interval_seconds.max(1)))
                    + jitter(Duration::from_secs(u64::from(answer.jitter_seconds)))
            }
            _ => backoff.next_wait_full_jitter(),
        };
        tokio::time::sleep(wait).await;
    }
}

/// Check-ins per second over whole one-second buckets of `times` between `from` and `to`.
fn per_second(times: &[Instant], from: Instant, to: Instant) -> Vec<usize> {
    let secs = to.saturating_duration_since(from).as_secs() as usize;
    let mut buckets = vec![0usize; secs.max(1)];
    for t in times {
        if *t >= from && *t < to {
            let i = t.duration_since(from).as_secs() as usize;
            if let Some(b) = buckets.get_mut(i) {
                *b += 1;
            }
        }
    }
    buckets
}

async fn outage(
    agents: usize,
    every: Duration,
    down: Duration,
    max_backoff: Duration,
    enroll_concurrency: usize,
    listen_backlog: Option<u32>,
) -> anyhow::Result<()> {
    let interval = format!("{}s", every.as_secs());
    let interval = interval.as_str();
    let extra = listen_backlog
        .map(|b| format!("listen_backlog = {b}\n"))
        .unwrap_or_default();
    let mut fleet = Fleet::start(agents, enroll_concurrency, interval, &extra).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = fleet
        .clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(outage_agent(
                i,
                client.clone(),
                fleet.check_in_request(false),
                every,
                max_backoff,
                tx.clone(),
            ))
        })
        .collect();
    drop(tx);
    let mut times: Vec<(usize, Instant)> = Vec::new();
    let drain = |rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
                 times: &mut Vec<(usize, Instant)>| {
        while let Ok(t) = rx.try_recv() {
            times.push(t);
        }
    };
    eprintln!("{agents} agents checking in every {interval}; two intervals of steady state…");
    tokio::time::sleep(every * 2).await;
    drain(&mut rx, &mut times);
    let killed = Instant::now();
    let overflows_before = rollcall_tests::benchkit::listen_overflows();
    eprintln!("killing the controller for {} s…", down.as_secs());
    fleet.restart_controller(down, interval).await?;
    let up = Instant::now();
    // Bounded: the agents' backoff cap plus two intervals is the longest a healthy agent can take.
    let deadline = up + max_backoff + every * 2;
    let mut back: Vec<Option<Duration>> = vec![None; agents];
    let mut count = 0;
    while count < agents && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = times.len();
        drain(&mut rx, &mut times);
        for (agent, at) in &times[seen..] {
            if *at >= up && back[*agent].is_none() {
                back[*agent] = Some(at.duration_since(up));
                count += 1;
            }
        }
    }
    // One more interval to see the arrivals settle.
    tokio::time::sleep(every).await;
    drain(&mut rx, &mut times);
    tasks.iter().for_each(|t| t.abort());
    let overflows = rollcall_tests::benchkit::listen_overflows()
        .zip(overflows_before)
        .map(|((o, d), (o0, d0))| (o - o0, d - d0));
    let all: Vec<Instant> = times.iter().map(|(_, t)| *t).collect();
    let steady = per_second(&all, killed - every, killed);
    let steady_rate = steady.iter().sum::<usize>() as f64 / steady.len() as f64;
    let after = per_second(&all, up, Instant::now());
    let peak = after.iter().copied().max().unwrap_or(0);
    let mut back: Vec<Duration> = back.into_iter().flatten().collect();
    back.sort();
    println!(
        "rollcall-bench outage --agents {agents} --interval-secs {} --down-secs {} --max-backoff-secs {}",
        every.as_secs(),
        down.as_secs(),
        max_backoff.as_secs()
    );
    println!(
        "  steady state:             {steady_rate:.1} check-ins/s (the interval before the kill)"
    );
    println!(
        "  controller down:          {:.1} s (kill to listening again)",
        up.duration_since(killed).as_secs_f64()
    );
    println!("  back after the restart:   {} of {agents}", back.len());
    println!(
        "  50% checked in after:     {}",
        show(time_to_share(&back, agents, 0.50))
    );
    println!(
        "  95% checked in after:     {}",
        show(time_to_share(&back, agents, 0.95))
    );
    println!(
        "  100% checked in after:    {}",
        show(time_to_share(&back, agents, 1.0))
    );
    println!(
        "  peak rate after restart:  {peak} check-ins/s in one second = {:.1}x steady state",
        peak as f64 / steady_rate.max(0.001)
    );
    match overflows {
        Some((overflows, drops)) => println!(
            "  accept queue, restart to end: {overflows} overflows, {drops} drops (TcpExtListenOverflows/ListenDrops, whole machine)"
        ),
        None => println!("  accept queue: /proc/net/netstat not readable"),
    }
    fleet.stop().await;
    Ok(())
}

/// Each simulated agent holds a connection: make room for them in this process and in the controller it spawns.
/// The file limit is raised to `want` (the hard limit too, which root may do); a run that cannot have it is
/// refused before it starts, saying what to do, instead of failing halfway.
fn raise_fd_limit(want: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    #[allow(unsafe_code)]
    let got = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: want.max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                lim.rlim_cur = want.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    };
    if got < want {
        anyhow::bail!(
            "this run needs {want} open files and the limit is {got}: run it as root, raise the hard limit \
             (`ulimit -Hn {want}`), or use fewer agents"
        );
    }
    eprintln!("open-file limit: {got} (this run needs {want})");
    Ok(())
}
