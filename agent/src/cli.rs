//! The `rollcall-agent` command line: `enroll`, `run`, `status`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{AgentDirs, ConfigError};
use crate::enroll::EnrollError;

/// Exit code for usage and configuration errors (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "rollcall-agent",
    version,
    about = "The rollcall endpoint agent"
)]
struct Args {
    /// Data directory (identity, state, downloads).
    #[arg(long, global = true, env = "ROLLCALL_AGENT_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// The operator's settings (default /etc/rollcall/agent.toml; a missing file means every default).
    #[arg(
        long,
        global = true,
        env = "ROLLCALL_AGENT_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Enroll with a one-time token from `rollcall-controller token create`.
    Enroll {
        /// Controller URL, https://HOST:PORT (with --again: the one stored at enrollment unless given).
        #[arg(long)]
        controller: Option<String>,
        /// A file holding the token, or `-` for standard input: the token never lands in shell history or `ps`.
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The token itself (visible in shell history and `ps`; prefer --token-file).
        #[arg(long)]
        token: Option<String>,
        /// Name to report instead of this machine's hostname.
        #[arg(long)]
        hostname: Option<String>,
        /// Enroll an already enrolled agent again (its certificate expired while it was offline, or was
        /// revoked): new identity, same installed packages and history.
        #[arg(long)]
        again: bool,
    },
    /// Run the agent until SIGTERM / SIGINT.
    Run {
        /// Override the controller URL stored at enrollment.
        #[arg(long)]
        controller: Option<String>,
    },
    /// Show this agent's identity, last check-in, installed packages and actions (no network needed).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Collect the inventory now and print it (what the next check-in reports; no network needed).
    Inventory {
        /// Everything, installed software included, as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLCALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: journald and log files get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let settings = args
        .config
        .clone()
        .unwrap_or_else(crate::platform::default_config_path);
    let dirs = AgentDirs::new(
        args.data
            .clone()
            .unwrap_or_else(crate::platform::default_data_dir),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        match args.cmd {
            Cmd::Enroll {
                controller,
                token_file,
                token,
                hostname,
                again,
            } => {
                let dirs = AgentDirs::new(absolute(dirs.root()));
                let token = match (token, token_file) {
                    (Some(token), None) => token,
                    (None, Some(file)) => read_token(&file)?,
                    _ => {
                        return Err(usage(
                            "give the token with --token-file FILE (or - for standard input)",
                        ))
                    }
                };
                let existing = if again {
                    Some(
                        crate::config::AgentConfig::load(&dirs)
                            .map_err(|e| usage(&format!("--again needs an enrolled agent: {e}")))?,
                    )
                } else {
                    None
                };
                let controller = controller
                    .or_else(|| existing.as_ref().map(|c| c.controller.clone()))
                    .ok_or_else(|| usage("give --controller https://HOST:PORT"))?;
                let hostname = hostname
                    .or_else(|| existing.as_ref().and_then(|c| c.hostname.clone()))
                    .or_else(|| sysinfo::System::host_name().ok())
                    .unwrap_or_else(|| "unknown".into());
                let settings = crate::config::Settings::load(&settings)?;
                let enrolled =
                    crate::enroll::enroll(&dirs, &controller, &token, &hostname, again, &settings)
                        .await?;
                println!(
                    "Enrolled as {} at site {}",
                    enrolled.agent_id, enrolled.site
                );
                Ok(())
            }
            Cmd::Run { controller } => {
                let root = absolute(dirs.root());
                crate::run::run(
                    AgentDirs::new(root),
                    controller,
                    &settings,
                    crate::platform::shutdown_signal(),
                )
                .await?;
                Ok(())
            }
            Cmd::Inventory { json } => {
                let settings = crate::config::Settings::load(&settings)?;
                let hostname = crate::config::AgentConfig::load(&dirs)
                    .ok()
                    .and_then(|c| c.hostname);
                let inv = crate::inventory::collect(hostname.as_deref(), &settings);
                if json {
                    println!("{}", rollcall_proto::inventory::to_json(&inv));
                } else {
                    println!("{}", inv.hostname);
                    print!("{}", rollcall_proto::inventory::describe(&inv, "  "));
                }
                Ok(())
            }
            Cmd::Status { json } => {
                let settings = crate::config::Settings::load(&settings)?;
                // Unwrapped, so a config error is still told apart as a usage error (exit 64).
                crate::status::print(&dirs, &settings, json)
                    .await
                    .map_err(|e| match e {
                        crate::status::StatusError::Config(c) => anyhow::Error::new(c),
                        crate::status::StatusError::State(s) => anyhow::Error::new(s),
                    })?;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", rollcall_proto::error_chain(e.as_ref()));
            let usage = e.downcast_ref::<ConfigError>().is_some_and(|c| {
                matches!(
                    c,
                    ConfigError::NotEnrolled { .. } | ConfigError::Invalid { .. }
                )
            }) || e.downcast_ref::<EnrollError>().is_some_and(|c| {
                matches!(
                    c,
                    EnrollError::BadToken(_)
                        | EnrollError::AlreadyEnrolled { .. }
                        | EnrollError::Usage(_)
                )
            }) || e
                .downcast_ref::<crate::run::RunError>()
                .is_some_and(|c| matches!(c, crate::run::RunError::Config(_)));
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

fn usage(message: &str) -> anyhow::Error {
    anyhow::Error::new(EnrollError::Usage(message.to_owned()))
}

/// The token from a file, or from standard input for `-`.
fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = if file == std::path::Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), 64 * 1024),
            &mut text,
        )
        .map_err(|e| usage(&format!("cannot read the token from standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| {
            usage(&format!(
                "cannot read the token file {}: {e}",
                file.display()
            ))
        })?
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(usage(&format!(
            "the token file {} is empty",
            file.display()
        )));
    }
    Ok(token.to_owned())
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
