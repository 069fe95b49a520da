//! The command lines: `rollcall-controller` (daemon) and `rollcall` (admins and field techs). Both parse
//! arguments here and call into the library; `main.rs` files only call [`controller_main`] / [`admin_main`].

mod admin;
mod client;
mod compliance;
mod controller;
pub mod demo;
pub mod local;
mod output;
pub mod pkg;
pub mod rollout;
mod spec;
mod users;

use std::process::ExitCode;

pub use client::AdminClient;

/// Exit code for usage and configuration errors (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// An error that is the caller's wrong usage rather than a runtime failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// A gRPC error as one line a person can act on.
pub fn rpc(status: tonic::Status) -> anyhow::Error {
    let code = format!("{:?}", status.code());
    let message = status.message();
    if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::Unknown {
        anyhow::anyhow!("controller unavailable: {message}")
    } else {
        anyhow::anyhow!("{message} ({code})")
    }
}

fn exit_with(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<crate::Error>().is_some_and(|e| {
                    matches!(
                        e,
                        crate::Error::Config { .. }
                            | crate::Error::NotInitialised { .. }
                            | crate::Error::AlreadyInitialised { .. }
                    )
                });
            eprintln!("error: {}", rollcall_proto::error_chain(e.as_ref()));
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

/// Parse arguments; clap's own errors exit 64, `--help` and `--version` exit 0.
fn parse<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                ExitCode::SUCCESS
            }
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                ExitCode::from(EXIT_USAGE)
            }
            _ => ExitCode::from(EXIT_USAGE),
        }
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROLLCALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: journald and log files get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `rollcall-controller`.
pub fn controller_main() -> ExitCode {
    let args = match parse::<controller::Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    init_tracing("info");
    exit_with(runtime().and_then(|rt| rt.block_on(controller::run(args))))
}

/// A reader that went away (`rollcall … | head`) ends the program quietly, as SIGPIPE would (exit 141), instead
/// of a panic message: the standard library ignores SIGPIPE and `println!` panics on the broken pipe.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// `rollcall`.
pub fn admin_main() -> ExitCode {
    quiet_on_broken_pipe();
    let args = match parse::<admin::Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    init_tracing("warn");
    exit_with(runtime().and_then(|rt| rt.block_on(admin::run(args))))
}
