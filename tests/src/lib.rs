//! End-to-end harness: a real controller process on `127.0.0.1:0` in a temp dir, real agent processes, and an
//! admin with offline keys who builds, signs and pushes packages through the same code as `rollcall pkg`.
//! The tests in `tests/tests/` use it; `rollcall-bench` (src/bin) measures the check-in path.
//!
//! Binaries are found beside the test executable, or in `$ROLLCALL_BIN_DIR`. Run `cargo test --workspace`:
//! it builds the agent and controller binaries first. `cargo test -p rollcall-tests` alone does not, and would
//! test whatever (possibly stale) binaries are lying in `target/debug`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rollcall_controller::cli::local::{run_ok, LocalAgent, LocalController};
use rollcall_controller::cli::{pkg, AdminClient};
use rollcall_proto::v1;

pub use rollcall_controller::cli::local::bin;

pub mod bare;
pub mod benchkit;
pub mod footprint;
pub mod fuzz;
pub mod h2probe;
pub mod invbench;
pub mod netns;
pub mod proxy;

/// A running controller with an admin who holds the offline keys.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub controller: Option<LocalController>,
    pub admin: AdminClient,
    pub keys: PathBuf,
    pub repo: PathBuf,
    pub agents: Vec<LocalAgent>,
}

/// A package to build: manifest fields and payload scripts.
pub struct PackageSpec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub release_counter: u64,
    pub install: &'a str,
    pub verify: &'a str,
    pub rollback: Option<&'a str>,
    pub install_timeout_secs: u64,
    /// `reboot = "required"` in the manifest.
    pub reboot: bool,
}

impl<'a> PackageSpec<'a> {
    /// A package whose install writes `<data>/<name>.marker` with its version and whose verify checks it.
    pub fn marker(name: &'a str, version: &'a str, release_counter: u64) -> PackageSpec<'a> {
        PackageSpec {
            name,
            version,
            release_counter,
            install: "echo \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"",
            verify:
                "grep -qx \"$ROLLCALL_VERSION\" \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"",
            rollback: None,
            install_timeout_secs: 60,
            reboot: false,
        }
    }
}

impl Cluster {
    /// Start a controller (check-in every second) and set up the admin's keys and image repository.
    pub async fn start() -> anyhow::Result<Cluster> {
        Self::start_with_config("").await
    }

    /// Like [`Cluster::start`], with extra lines appended to the controller's `controller.toml`.
    pub async fn start_with_config(extra: &str) -> anyhow::Result<Cluster> {
        Self::start_with(extra, &[]).await
    }

    /// Like [`Cluster::start_with_config`], with extra names (`init --name`) in the controller's certificate: the
    /// addresses agents in a network namespace reach it by.
    pub async fn start_with(extra: &str, names: &[&str]) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("rollcall-test-")
            .tempdir()?;
        let data = dir.path().join("controller");
        let mut init = tokio::process::Command::new(bin("rollcall-controller")?);
        init.arg("init").arg("--data").arg(&data);
        for name in names {
            init.arg("--name").arg(name);
        }
        run_ok(&mut init).await?;
        let config = data.join("controller.toml");
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(&config, format!("{text}\n{extra}"))?;
        let controller = LocalController::serve(&data, "1s").await?;
        let admin = controller.admin().await?;
        let keys = dir.path().join("keys");
        let repo = dir.path().join("repo");
        pkg::keygen(&keys)?;
        let online = pkg::online_keys_of(&admin).await?;
        pkg::init_repo(&keys, &repo, &online, Duration::from_secs(86400)).await?;
        // Publish root.json (and the empty targets.json) so tokens can pin the root before any package exists.
        pkg::push(&admin, &repo).await?;
        Ok(Cluster {
            dir,
            controller: Some(controller),
            admin,
            keys,
            repo,
            agents: Vec::new(),
        })
    }

    pub fn controller(&self) -> &LocalController {
        self.controller.as_ref().expect("controller running")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Build a package from `spec` (not yet signed). Returns the .tar.gz path.
    pub fn build(&self, spec: &PackageSpec<'_>) -> anyhow::Result<PathBuf> {
        let src = self.path(&format!("src/{}-{}", spec.name, spec.version));
        std::fs::create_dir_all(src.join("payload"))?;
        let mut manifest = format!(
            "name = \"{}\"\nversion = \"{}\"\nrelease_counter = {}\nplatforms = [\"linux\"]\n\n[install]\ncommand = [\"sh\", \"install.sh\"]\ntimeout_secs = {}\n\n[verify]\ncommand = [\"sh\", \"verify.sh\"]\ntimeout_secs = 30\n",
            spec.name, spec.version, spec.release_counter, spec.install_timeout_secs
        );
        if spec.reboot {
            manifest = manifest.replace("[install]", "reboot = \"required\"\n\n[install]");
        }
        std::fs::write(
            src.join("payload/install.sh"),
            format!("set -eu\n{}\n", spec.install),
        )?;
        std::fs::write(
            src.join("payload/verify.sh"),
            format!("set -eu\n{}\n", spec.verify),
        )?;
        if let Some(rollback) = spec.rollback {
            manifest
                .push_str("\n[rollback]\ncommand = [\"sh\", \"rollback.sh\"]\ntimeout_secs = 30\n");
            std::fs::write(
                src.join("payload/rollback.sh"),
                format!("set -eu\n{rollback}\n"),
            )?;
        }
        std::fs::write(src.join("manifest.toml"), manifest)?;
        let (path, _) = pkg::build(
            &src.join("manifest.toml"),
            &src.join("payload"),
            &self.path("out"),
        )?;
        Ok(path)
    }

    /// Build, sign and push a configuration profile package `name@version` whose payload is `profile.toml` with
    /// `profile` (and `files`, paths relative to the payload).
    pub async fn publish_profile(
        &self,
        name: &str,
        version: &str,
        release_counter: u64,
        profile: &str,
        files: &[(&str, &str)],
    ) -> anyhow::Result<v1::PushMetadataResponse> {
        let src = self.path(&format!("src/{name}-{version}"));
        std::fs::create_dir_all(src.join("payload"))?;
        std::fs::write(
            src.join("manifest.toml"),
            format!(
                "name = \"{name}\"\nversion = \"{version}\"\nrelease_counter = {release_counter}\n\
                 kind = \"config\"\nplatforms = [\"linux\"]\n"
            ),
        )?;
        std::fs::write(src.join("payload/profile.toml"), profile)?;
        for (rel, content) in files {
            let path = src.join("payload").join(rel);
            std::fs::create_dir_all(path.parent().context("no parent")?)?;
            std::fs::write(path, content)?;
        }
        let (package, _) = pkg::build(
            &src.join("manifest.toml"),
            &src.join("payload"),
            &self.path("out"),
        )?;
        pkg::sign(&self.repo, &self.keys, &package, Duration::from_secs(86400)).await?;
        pkg::push(&self.admin, &self.repo).await
    }

    /// Build, sign with the targets key, and push.
    pub async fn publish(
        &self,
        spec: &PackageSpec<'_>,
    ) -> anyhow::Result<v1::PushMetadataResponse> {
        let package = self.build(spec)?;
        pkg::sign(&self.repo, &self.keys, &package, Duration::from_secs(86400)).await?;
        pkg::push(&self.admin, &self.repo).await
    }

    /// A token for `site`, which is added first if it does not exist yet.
    pub async fn token(&self, site: &str, uses: u32, ttl_secs: u64) -> anyhow::Result<String> {
        let added = self
            .admin
            .rpc
            .clone()
            .add_site(v1::AddSiteRequest { name: site.into() })
            .await;
        if let Err(e) = added {
            if e.code() != tonic::Code::AlreadyExists {
                return Err(e.into());
            }
        }
        Ok(self
            .admin
            .rpc
            .clone()
            .create_token(v1::CreateTokenRequest {
                site: site.into(),
                uses,
                ttl_seconds: ttl_secs,
            })
            .await?
            .into_inner()
            .token)
    }

    /// Enroll one agent at `site` as `hostname` (data dir `agents/<hostname>`), not started: a test that gives it
    /// settings, a wrapper or a controller URL of its own starts it itself.
    pub async fn enroll(&self, site: &str, hostname: &str) -> anyhow::Result<LocalAgent> {
        let token = self.token(site, 1, 600).await?;
        let data = self.path(&format!("agents/{hostname}"));
        LocalAgent::enroll(&data, &self.controller().url, &token, hostname).await
    }

    /// Enroll `count` agents at `site` and start them. Returns their data dirs.
    pub async fn add_agents(&mut self, site: &str, count: usize) -> anyhow::Result<Vec<PathBuf>> {
        let token = self.token(site, count as u32, 600).await?;
        let mut dirs = Vec::new();
        let first = self.agents.len() + 1;
        for i in 0..count {
            let hostname = format!("{site}-{:02}", first + i);
            let data = self.path(&format!("agents/{hostname}"));
            let mut agent =
                LocalAgent::enroll(&data, &self.controller().url, &token, &hostname).await?;
            agent.start()?;
            dirs.push(data);
            self.agents.push(agent);
        }
        Ok(dirs)
    }

    /// Create and start a rollout of `package@version` with one wave per entry of `waves` (built-in gates, no
    /// automatic retries, so a failure is final at once).
    pub async fn rollout(
        &self,
        package: &str,
        version: &str,
        waves: &[&[&str]],
    ) -> anyhow::Result<String> {
        self.rollout_with(v1::CreateRolloutRequest {
            package: package.into(),
            version: version.into(),
            waves: waves.iter().map(|w| sites_wave(w)).collect(),
            retries: Some(0),
            ..Default::default()
        })
        .await
    }

    /// Create and start a rollout from a full request.
    pub async fn rollout_with(&self, mut req: v1::CreateRolloutRequest) -> anyhow::Result<String> {
        req.start = true;
        let created = self
            .admin
            .rpc
            .clone()
            .create_rollout(req)
            .await?
            .into_inner();
        Ok(created.id)
    }

    /// Kill the controller (SIGKILL: no flush, no shutdown), wait `down`, and start it again on the same data and
    /// address, so the agents reconnect by themselves.
    pub async fn kill_and_restart_controller(&mut self, down: Duration) -> anyhow::Result<()> {
        let controller = self.controller.take().context("no controller running")?;
        let (data, addr) = (controller.data.clone(), controller.addr().to_owned());
        controller.kill().await;
        tokio::time::sleep(down).await;
        let restarted = LocalController::serve_at(&data, &addr, "1s").await?;
        self.admin = restarted.admin().await?;
        self.controller = Some(restarted);
        Ok(())
    }

    /// The fleet, as `rollcall agents list` sees it.
    pub async fn agents(&self) -> anyhow::Result<Vec<v1::AgentSummary>> {
        Ok(self
            .admin
            .rpc
            .clone()
            .list_agents(v1::ListAgentsRequest::default())
            .await?
            .into_inner()
            .agents)
    }

    /// The packages the controller has published, as `name@version`.
    pub async fn published(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .admin
            .rpc
            .clone()
            .list_packages(v1::ListPackagesRequest {})
            .await?
            .into_inner()
            .packages
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect())
    }

    /// Stop the controller cleanly, run `between` on its data directory (a backup, a restore, a forgery), and
    /// start it again on the same address.
    pub async fn restart_controller_with<F>(
        &mut self,
        between: impl FnOnce(PathBuf) -> F,
    ) -> anyhow::Result<()>
    where
        F: std::future::Future<Output = ()>,
    {
        let controller = self.controller.take().context("no controller running")?;
        let (data, addr) = (controller.data.clone(), controller.addr().to_owned());
        controller.stop().await;
        between(data.clone()).await;
        // sled may hold the store's lock for a moment after the process exits.
        let mut last = None;
        for _ in 0..20 {
            match LocalController::serve_at(&data, &addr, "1s").await {
                Ok(restarted) => {
                    self.admin = restarted.admin().await?;
                    self.controller = Some(restarted);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(last.context("controller did not restart")?)
    }

    /// Run the `rollcall` CLI as this cluster's admin; returns (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = tokio::process::Command::new(bin("rollcall")?)
            .arg("--creds")
            .arg(self.controller().admin_creds())
            .arg("--controller")
            .arg(&self.controller().url)
            .args(args)
            .output()
            .await?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Poll `status` until `done` says so (bounded: 60 s).
    pub async fn wait_for(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&v1::RolloutStatus) -> bool,
    ) -> anyhow::Result<v1::RolloutStatus> {
        let started = Instant::now();
        loop {
            let s = self.status(id).await?;
            if done(&s) {
                return Ok(s);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("rollout {id}: {what} did not happen within 60 s: {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn status(&self, id: &str) -> anyhow::Result<v1::RolloutStatus> {
        Ok(self
            .admin
            .rpc
            .clone()
            .get_rollout(v1::RolloutRef { id: id.into() })
            .await?
            .into_inner())
    }

    /// Poll until the rollout is completed, paused or cancelled (bounded: 60 s).
    pub async fn settle(&self, id: &str) -> anyhow::Result<v1::RolloutStatus> {
        let started = Instant::now();
        loop {
            let s = self.status(id).await?;
            let state = v1::RolloutState::try_from(s.state).unwrap_or_default();
            if matches!(
                state,
                v1::RolloutState::Completed
                    | v1::RolloutState::Paused
                    | v1::RolloutState::Cancelled
            ) {
                return Ok(s);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("rollout {id} did not settle within 60 s: {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(mut self) {
        for agent in &mut self.agents {
            agent.stop().await;
        }
        if let Some(c) = self.controller.take() {
            c.stop().await;
        }
    }
}

/// A wave of these sites with the rollout's gates.
pub fn sites_wave(sites: &[&str]) -> v1::WaveSpec {
    v1::WaveSpec {
        sites: sites.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `len` bytes that gzip cannot shrink (xorshift from `seed`): a payload with a middle to interrupt.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The agent's local state file, parsed.
/// The id an enrolled agent was given (from its `agent.toml`).
pub fn agent_id(data: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(data.join("agent.toml"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("agent_id = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .context("no agent_id in agent.toml")
}

/// An enrolled agent's client certificate and key, to call the controller as that agent.
pub fn agent_identity(data: &Path) -> anyhow::Result<rollcall_proto::tls::ClientIdentity> {
    let pem = data.join("identity/client.pem");
    Ok(rollcall_proto::tls::ClientIdentity::from_pem_files(
        &pem, &pem,
    )?)
}

/// A gRPC channel to the controller as the agent enrolled in `data` (or as nobody when `data` is `None`).
pub async fn agent_channel(
    c: &Cluster,
    data: Option<&Path>,
) -> anyhow::Result<tonic::transport::Channel> {
    let identity = data.map(agent_identity).transpose()?;
    let trust = rollcall_proto::tls::ServerTrust::ca_pem_file(
        &c.controller().admin_creds().join("ca.crt"),
    )?;
    Ok(rollcall_proto::tls::connect(&c.controller().url, trust, identity).await?)
}

pub fn agent_state(data: &Path) -> anyhow::Result<serde_json::Value> {
    let path = data.join("state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// Files in a folder (empty when it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
