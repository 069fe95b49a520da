//! `rollcall-controller init | serve | token create | user add`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::admin::create_token;
use super::AdminClient;
use crate::datadir::DataDir;
use crate::init::{init, InitOptions};
use crate::server::{serve, ServeOptions};

/// Where the systemd unit keeps the controller's data.
const DEFAULT_DATA: &str = "/var/lib/rollcall-controller";

#[derive(Debug, Parser)]
#[command(
    name = "rollcall-controller",
    version,
    about = "The rollcall controller daemon"
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a data directory: config, device CA, TLS certificate, online TUF keys, first admin credentials.
    Init {
        #[arg(long, value_name = "DIR", env = "ROLLCALL_CONTROLLER_DATA", default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Extra DNS name or IP address agents use to reach this controller (repeatable).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
    },
    /// Run the gRPC server until SIGTERM or SIGINT.
    Serve {
        #[arg(long, value_name = "DIR", env = "ROLLCALL_CONTROLLER_DATA", default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Address to listen on (overrides `listen` in controller.toml); port 0 picks a free port.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Check-in interval handed to agents (overrides the config), e.g. "30s".
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        checkin_interval: Option<Duration>,
        /// How often the rollout engine runs (overrides the config), e.g. "1s".
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        engine_interval: Option<Duration>,
    },
    /// Enrollment tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// People (talks to the running controller with DATA/admin).
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Issue personal credentials for the `rollcall` CLI with a role, into a new folder.
    Add {
        #[arg(long, value_name = "DIR", env = "ROLLCALL_CONTROLLER_DATA", default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Controller URL (default: the one the running controller wrote to DATA/admin/controller).
        #[arg(long, value_name = "URL")]
        controller: Option<String>,
        name: String,
        #[arg(long, value_enum)]
        role: super::users::RoleArg,
        /// Folder to write the credentials to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Print a one-time enrollment token for a site (talks to the running controller with DATA/admin).
    Create {
        #[arg(long, value_name = "DIR", env = "ROLLCALL_CONTROLLER_DATA", default_value = DEFAULT_DATA)]
        data: PathBuf,
        /// Controller URL (default: the one the running controller wrote to DATA/admin/controller).
        #[arg(long, value_name = "URL")]
        controller: Option<String>,
        #[arg(long)]
        site: String,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid, e.g. "24h", "7d".
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.cmd {
        Cmd::Init { data, names } => {
            let report = init(&InitOptions {
                data: data.clone(),
                names,
            })
            .await?;
            println!("Initialised controller data in {}", data.display());
            println!("  CA fingerprint (sha256): {}", report.ca_fingerprint);
            println!(
                "  admin credentials:       {}",
                report.admin_creds.display()
            );
            println!(
                "  online TUF keys:         {}",
                report.online_keys.display()
            );
            println!("Next: rollcall-controller serve --data {}", data.display());
        }
        Cmd::Serve {
            data,
            listen,
            checkin_interval,
            engine_interval,
        } => {
            let opts = ServeOptions {
                data,
                listen,
                checkin_interval,
                engine_interval,
            };
            serve(opts, shutdown_signal()).await?;
        }
        Cmd::Token {
            cmd:
                TokenCmd::Create {
                    data,
                    controller,
                    site,
                    uses,
                    ttl,
                    json,
                },
        } => {
            let client =
                AdminClient::connect(controller.as_deref(), &DataDir::new(&data).admin_creds())
                    .await?;
            create_token(&client, &site, uses, ttl, json).await?;
        }
        Cmd::User {
            cmd:
                UserCmd::Add {
                    data,
                    controller,
                    name,
                    role,
                    out,
                    json,
                },
        } => {
            let client =
                AdminClient::connect(controller.as_deref(), &DataDir::new(&data).admin_creds())
                    .await?;
            super::users::add(&client, &name, role, &out, json).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT: the one shutdown path of the daemon.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
