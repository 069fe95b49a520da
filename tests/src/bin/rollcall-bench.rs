//! `rollcall-bench checkin --agents N --seconds S`: a real controller process and N simulated agents, each
//! enrolled through the real Enroll call and holding its own mTLS connection, checking in back to back for S
//! seconds on loopback. Prints check-ins/s, latency percentiles and the controller's peak RSS.
//!
//! Bounded: enrollment and load both stop at their deadlines; traffic goes only to 127.0.0.1.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rollcall_controller::cli::local::LocalController;
use rollcall_controller::cli::pkg;
use rollcall_proto::tls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rollcall_proto::v1::{self, agent_service_client::AgentServiceClient};
use rollcall_proto::{ClientIdentity, ServerTrust, Token};

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

/// Peak and current resident set of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Cmd::Checkin {
        agents,
        seconds,
        enroll_concurrency,
        rollout,
    } = args.cmd;
    raise_fd_limit((agents as u64) * 2 + 1024);
    let dir = tempfile::Builder::new()
        .prefix("rollcall-bench-")
        .tempdir()?;
    // Long interval: the bench drives the pace, not the controller.
    let controller = LocalController::start(&dir.path().join("controller"), "1h").await?;
    let pid = controller.pid().unwrap_or(0);
    let admin = controller.admin().await?;
    let keys = dir.path().join("keys");
    let repo = dir.path().join("repo");
    pkg::keygen(&keys)?;
    let online = pkg::online_keys_of(&admin).await?;
    pkg::init_repo(&keys, &repo, &online, Duration::from_secs(3600)).await?;
    pkg::push(&admin, &repo).await?;
    let token = admin
        .rpc
        .clone()
        .create_token(v1::CreateTokenRequest {
            site: "bench".into(),
            uses: agents as u32,
            ttl_seconds: 3600,
        })
        .await?
        .into_inner()
        .token;
    let pin = Token::parse(&token).map_err(anyhow::Error::msg)?.ca_sha256;
    let ServerTrust::Ca(ca) = ServerTrust::ca_pem_file(&controller.admin_creds().join("ca.crt"))?
    else {
        anyhow::bail!("unexpected trust type");
    };

    // Enroll through the real API, `enroll_concurrency` at a time, within 10 minutes at most.
    eprintln!("enrolling {agents} agents…");
    let started = Instant::now();
    let enroll_deadline = started + Duration::from_secs(600);
    let enroll_channel =
        rollcall_proto::connect(&controller.url, ServerTrust::PinnedCa(pin), None).await?;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(enroll_concurrency));
    let mut tasks = Vec::with_capacity(agents);
    for i in 0..agents {
        let permit = semaphore.clone().acquire_owned().await?;
        let mut client = AgentServiceClient::new(enroll_channel.clone());
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            if Instant::now() > enroll_deadline {
                anyhow::bail!("enrollment deadline passed");
            }
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let csr = CertificateParams::default().serialize_request(&key)?;
            let resp = client
                .enroll(v1::EnrollRequest {
                    token,
                    csr_der: csr.der().to_vec(),
                    hostname: format!("bench-{i:05}"),
                    platform: "linux-x86_64".into(),
                    agent_version: "bench".into(),
                })
                .await?
                .into_inner();
            Ok(ClientIdentity {
                chain: vec![CertificateDer::from(resp.certificate_der)],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            })
        }));
    }
    let mut identities = Vec::with_capacity(agents);
    for t in tasks {
        identities.push(t.await??);
    }
    let enroll_secs = started.elapsed().as_secs_f64();
    eprintln!("enrolled {agents} in {enroll_secs:.1}s; connecting…");

    let inventory = rollcall_agent::inventory::collect(Some("bench"));
    let inventory_hash = rollcall_agent::inventory::hash(&inventory);
    let mut clients = Vec::with_capacity(agents);
    for id in identities {
        let channel = rollcall_proto::tls::connect_lazy(
            &controller.url,
            ServerTrust::Ca(ca.clone()),
            Some(id),
        )?;
        clients.push(AgentServiceClient::new(channel));
    }

    // Load: every agent checks in back to back until the deadline (first with inventory, then hash only).
    if rollout {
        start_rollout(&admin, dir.path(), &keys, &repo).await?;
    }
    eprintln!("{agents} agents checking in for {seconds}s…");
    let load_start = Instant::now();
    let deadline = load_start + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(agents);
    for mut client in clients {
        let inventory = inventory.clone();
        let hash = inventory_hash.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut first = true;
            while Instant::now() < deadline {
                let req = v1::CheckInRequest {
                    inventory: first.then(|| inventory.clone()),
                    inventory_hash: hash.clone(),
                    reports: vec![],
                    agent_version: "bench".into(),
                    installed: vec![],
                };
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(30), client.check_in(req)).await {
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
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = load_start.elapsed().as_secs_f64();
    all.sort();
    let (peak, current) = rss_kib(pid);
    println!(
        "rollcall-bench checkin{}",
        if rollout { " --rollout" } else { "" }
    );
    println!("  agents:               {agents}");
    println!(
        "  enrollment:           {enroll_secs:.1} s ({:.0} agents/s)",
        agents as f64 / enroll_secs
    );
    println!(
        "  check-ins:            {} in {elapsed:.1} s ({errors} errors)",
        all.len()
    );
    println!("  check-ins/s:          {:.0}", all.len() as f64 / elapsed);
    println!(
        "  latency p50:          {:.2} ms",
        percentile(&all, 0.50).as_secs_f64() * 1e3
    );
    println!(
        "  latency p99:          {:.2} ms",
        percentile(&all, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "  latency max:          {:.2} ms",
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  controller peak RSS:  {:.1} MiB (now {:.1} MiB)",
        peak as f64 / 1024.0,
        current as f64 / 1024.0
    );
    controller.stop().await;
    Ok(())
}

/// Publish a tiny package and start a one-wave rollout over the bench site.
async fn start_rollout(
    admin: &rollcall_controller::cli::AdminClient,
    dir: &std::path::Path,
    keys: &std::path::Path,
    repo: &std::path::Path,
) -> anyhow::Result<()> {
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
    pkg::sign(repo, keys, &package, Duration::from_secs(3600)).await?;
    pkg::push(admin, repo).await?;
    let mut rpc = admin.rpc.clone();
    let created = rpc
        .create_rollout(v1::CreateRolloutRequest {
            package: "bench".into(),
            version: "1".into(),
            waves: vec![v1::WaveSpec {
                sites: vec!["bench".into()],
            }],
            name: String::new(),
        })
        .await?
        .into_inner();
    rpc.start_rollout(v1::RolloutRef { id: created.id }).await?;
    Ok(())
}

/// Each simulated agent holds a connection: make room for them in this process and in the controller it spawns.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
