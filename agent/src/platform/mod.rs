//! Everything that differs between operating systems, behind one seam: how install commands are started and
//! killed, the default data directory, and the service stop signal. Linux (`unix.rs`) is complete and tested;
//! Windows (`windows.rs`) is small and NOT YET VERIFIED (no Windows target on our build machines).

/// What configuration profiles change that differs between systems: owners, services, the registry.
pub mod profile;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub use imp::{
    default_boot_id_file, default_config_path, default_data_dir, default_profile_paths,
    default_reboot_command, free_space, gated, group_alive, installed_software, interface_towards,
    kill_tree, prepare_command, seconds_since_start, shutdown_signal, start_time,
};

/// The platform string reported to the controller and matched against package manifests.
pub fn current() -> String {
    rollcall_packaging::platform::current()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn loopback_traffic_leaves_through_lo() {
        assert_eq!(
            super::interface_towards(([127, 0, 0, 1], 9).into()).as_deref(),
            Some("lo")
        );
    }
}
