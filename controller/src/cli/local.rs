//! Real controller and agent processes on this machine, started through their public command lines. Used by
//! `rollcall demo` and by the end-to-end tests, so both exercise exactly what an admin would run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use tokio::process::{Child, Command};

use super::AdminClient;
use crate::datadir::DataDir;

/// Folder holding the rollcall binaries: `$ROLLCALL_BIN_DIR`, else the folder of the running executable
/// (its parent when that is cargo's `deps/`, as for test binaries).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ROLLCALL_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// Path of a rollcall binary, with a clear error when it has not been built.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        bail!(
            "{} not found: build the workspace first (cargo build --release), or set ROLLCALL_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// Run a command to completion; its stderr becomes the error when it fails.
pub async fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .context("cannot start command")?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            format!("{:?}", cmd.as_std().get_program()).trim_matches('"'),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ask a child to stop with SIGTERM (the daemons' shutdown path) and wait up to `grace`, then kill it.
pub async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
        #[cfg(not(unix))]
        let _ = pid;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// A controller process with its data directory.
#[derive(Debug)]
pub struct LocalController {
    pub data: PathBuf,
    pub url: String,
    pub log: PathBuf,
    child: Child,
}

impl LocalController {
    /// `rollcall-controller init`, `extra` lines appended to its `controller.toml`, then `serve --listen
    /// 127.0.0.1:0`; returns once it listens.
    pub async fn start(
        data: &Path,
        checkin_interval: &str,
        extra: &str,
    ) -> anyhow::Result<LocalController> {
        let controller = bin("rollcall-controller")?;
        run_ok(
            Command::new(&controller)
                .arg("init")
                .arg("--data")
                .arg(data),
        )
        .await?;
        if !extra.is_empty() {
            let config = DataDir::new(data).config();
            let text = std::fs::read_to_string(&config)?;
            std::fs::write(&config, format!("{text}\n{extra}"))?;
        }
        Self::serve(data, checkin_interval).await
    }

    /// `serve` an already initialised data directory.
    pub async fn serve(data: &Path, checkin_interval: &str) -> anyhow::Result<LocalController> {
        Self::serve_at(data, "127.0.0.1:0", checkin_interval).await
    }

    /// `serve` on a given address (a restart on the port the agents already know).
    pub async fn serve_at(
        data: &Path,
        listen: &str,
        checkin_interval: &str,
    ) -> anyhow::Result<LocalController> {
        let controller = bin("rollcall-controller")?;
        let dirs = DataDir::new(data);
        let _ = std::fs::remove_file(dirs.addr_file());
        let log = data.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = Command::new(&controller)
            .args([
                "serve",
                "--listen",
                listen,
                "--checkin-interval",
                checkin_interval,
            ])
            .args(["--engine-interval", "1s", "--data"])
            .arg(data)
            .env(
                "ROLLCALL_LOG",
                std::env::var("ROLLCALL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start rollcall-controller")?;
        let started = Instant::now();
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(dirs.addr_file()) {
                break text.trim().to_owned();
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "controller exited ({status}) before listening; see {}",
                    log.display()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "controller did not listen within 30 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(LocalController {
            data: data.to_owned(),
            url: format!("https://{addr}"),
            log,
            child,
        })
    }

    pub fn admin_creds(&self) -> PathBuf {
        DataDir::new(&self.data).admin_creds()
    }

    pub async fn admin(&self) -> anyhow::Result<AdminClient> {
        AdminClient::connect(Some(&self.url), &self.admin_creds()).await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        terminate(&mut self.child, Duration::from_secs(15)).await;
    }

    /// SIGKILL: the controller gets no chance to flush or clean up (a crash, a power cut).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// The address it listens on (from the URL).
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("https://")
    }
}

/// An agent process with its data directory.
#[derive(Debug)]
pub struct LocalAgent {
    pub data: PathBuf,
    pub hostname: String,
    child: Option<Child>,
}

impl LocalAgent {
    /// `rollcall-agent enroll`.
    pub async fn enroll(
        data: &Path,
        url: &str,
        token: &str,
        hostname: &str,
    ) -> anyhow::Result<LocalAgent> {
        let agent = LocalAgent {
            data: data.to_owned(),
            hostname: hostname.to_owned(),
            child: None,
        };
        agent.run_enroll(url, token, &[]).await?;
        Ok(agent)
    }

    /// `rollcall-agent enroll --again`: a new identity for an enrolled agent (stopped).
    pub async fn enroll_again(&self, url: &str, token: &str) -> anyhow::Result<()> {
        self.run_enroll(url, token, &["--again"]).await
    }

    /// The token goes in through a file, as an installer passes it.
    async fn run_enroll(&self, url: &str, token: &str, extra: &[&str]) -> anyhow::Result<()> {
        let token_file = self.data.with_extension("token");
        if let Some(parent) = token_file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&token_file, token)?;
        let result = run_ok(
            Command::new(bin("rollcall-agent")?)
                .arg("enroll")
                .args(["--controller", url, "--hostname", &self.hostname])
                .args(extra)
                .arg("--token-file")
                .arg(&token_file)
                .arg("--data")
                .arg(&self.data)
                .arg("--config")
                .arg(self.data.with_extension("toml")),
        )
        .await
        .map_err(|e| anyhow!("enrolling {}: {e}", self.hostname));
        let _ = std::fs::remove_file(&token_file);
        result.map(|_| ())
    }

    /// Start `rollcall-agent run`, logging to `<data>.log`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_in(&[])
    }

    /// Start it under `wrapper` (e.g. `ip netns exec NS`, to run it in a network namespace).
    pub fn start_in(&mut self, wrapper: &[&str]) -> anyhow::Result<()> {
        let log = self.data.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let agent = bin("rollcall-agent")?;
        let mut child = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(&agent);
                c
            }
            None => std::process::Command::new(&agent),
        };
        child
            .arg("run")
            .arg("--data")
            .arg(&self.data)
            // Its settings beside its data dir (absent: every default), never the machine's /etc/rollcall.
            .arg("--config")
            .arg(self.data.with_extension("toml"))
            .env(
                "ROLLCALL_LOG",
                std::env::var("ROLLCALL_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let mut cmd = Command::from(child);
        self.child = Some(
            cmd.kill_on_drop(true)
                .spawn()
                .context("cannot start rollcall-agent")?,
        );
        Ok(())
    }

    /// SIGKILL: the agent gets no chance to save or clean up (a crash, a power cut). Commands it started run on in
    /// their own process groups.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// The agent process's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10)).await;
        }
    }
}
