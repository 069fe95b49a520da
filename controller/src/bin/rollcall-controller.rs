//! `rollcall-controller`: the controller daemon (`init`, `serve`, `token create`).

fn main() -> std::process::ExitCode {
    rollcall_controller::cli::controller_main()
}
