//! Inventory from sysinfo: hostname, OS, kernel, CPU, memory, disks, network interfaces, uptime. The hash
//! leaves out what changes every minute (uptime, free space), so an unchanged machine sends its inventory once.

use prost::Message;
use rollcall_proto::v1;
use sysinfo::{Disks, Networks, System};

/// Collect the current inventory. `hostname` overrides the machine's name (set at enrollment). Every probe is
/// best effort: a field sysinfo cannot read stays empty rather than failing the check-in.
pub fn collect(hostname: Option<&str>) -> v1::Inventory {
    let (cpu_brand, cpu_count, memory_total_bytes) = match System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            let brand = sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_owned())
                .unwrap_or_default();
            (brand, sys.cpus().len() as u32, sys.total_memory())
        }
        Err(_) => (String::new(), 0, 0),
    };
    let disks = Disks::new_with_refreshed_list()
        .map(|disks| {
            disks
                .iter()
                .map(|d| v1::Disk {
                    mount_point: d.mount_point().display().to_string(),
                    file_system: d.file_system().to_string_lossy().into_owned(),
                    total_bytes: d.total_space(),
                    available_bytes: d.available_space(),
                    removable: d.is_removable(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut interfaces: Vec<v1::NetworkInterface> = Networks::new_with_refreshed_list()
        .map(|nets| {
            nets.iter()
                .map(|(name, data)| v1::NetworkInterface {
                    name: name.to_string_lossy().into_owned(),
                    mac_address: data.mac_address().to_string(),
                    addresses: data
                        .ip_networks()
                        .iter()
                        .map(|n| format!("{}/{}", n.addr, n.prefix))
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    v1::Inventory {
        hostname: hostname
            .map(str::to_owned)
            .or_else(|| System::host_name().ok())
            .unwrap_or_default(),
        os_name: System::name().unwrap_or_default(),
        os_version: System::os_version().unwrap_or_default(),
        kernel_version: System::kernel_version().unwrap_or_default(),
        arch: System::cpu_arch(),
        cpu_brand,
        cpu_count,
        memory_total_bytes,
        disks,
        interfaces,
        uptime_seconds: System::uptime().unwrap_or_default(),
        boot_time_unix: System::boot_time().unwrap_or_default() as i64,
        platform: crate::platform::current(),
        agent_version: crate::VERSION.to_owned(),
    }
}

/// Hash of the parts of the inventory that matter for change detection.
pub fn hash(inventory: &v1::Inventory) -> String {
    let mut stable = inventory.clone();
    stable.uptime_seconds = 0;
    for d in &mut stable.disks {
        d.available_bytes = 0;
    }
    rollcall_proto::sha256_hex(&stable.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_this_machine_and_hashes_stably() {
        let inv = collect(Some("test-host"));
        assert_eq!(inv.hostname, "test-host");
        assert!(!inv.os_name.is_empty() || !inv.kernel_version.is_empty());
        assert!(inv.memory_total_bytes > 0);
        assert!(inv.cpu_count > 0);
        let mut later = inv.clone();
        later.uptime_seconds += 60;
        assert_eq!(hash(&inv), hash(&later), "uptime does not change the hash");
        later.memory_total_bytes += 1;
        assert_ne!(hash(&inv), hash(&later));
    }
}
