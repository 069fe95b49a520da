//! `rollcall-agent`: the endpoint daemon.

fn main() -> std::process::ExitCode {
    rollcall_agent::cli::main()
}
