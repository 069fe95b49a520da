//! `rollcall`: the admin and field-tech CLI.

fn main() -> std::process::ExitCode {
    rollcall_controller::cli::admin_main()
}
