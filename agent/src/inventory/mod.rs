//! The device's inventory: hardware, OS, network and installed software. sysinfo reads what it can on every
//! platform; the rest comes from the platform's own records (Linux: `/sys/class/dmi/id`, `/etc/os-release`,
//! `/proc/net/route`; installed software from the package databases, `software.rs`). Every probe is best effort: a
//! field that cannot be read stays empty rather than failing the check-in.
//!
//! What counts as a change (the hash) and the delta sent instead of the whole live in `rollcall_proto::inventory`,
//! shared with the controller.

use rollcall_proto::v1;
use sysinfo::{Disks, Networks, System};

use crate::config::Settings;

pub mod software;

pub use rollcall_proto::inventory::hash;

/// Collect the current inventory. `hostname` overrides the machine's name (set at enrollment); `settings` say
/// which links are metered.
pub fn collect(hostname: Option<&str>, settings: &Settings) -> v1::Inventory {
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
    let routes = default_routes();
    let mut interfaces: Vec<v1::NetworkInterface> = Networks::new_with_refreshed_list()
        .map(|nets| {
            nets.iter()
                .map(|(name, data)| {
                    let name = name.to_string_lossy().into_owned();
                    let route = routes.iter().find(|r| r.interface == name);
                    v1::NetworkInterface {
                        mac_address: data.mac_address().to_string(),
                        addresses: data
                            .ip_networks()
                            .iter()
                            .map(|n| format!("{}/{}", n.addr, n.prefix))
                            .collect(),
                        default_route: route.is_some(),
                        gateway: route.map(|r| r.gateway.clone()).unwrap_or_default(),
                        metered: settings.is_metered(Some(&name)),
                        name,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    let release = os_release();
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
        hardware: Some(hardware()),
        os_build: release
            .get("BUILD_ID")
            .or_else(|| release.get("VERSION_CODENAME"))
            .cloned()
            .unwrap_or_default(),
        time_zone: time_zone(),
        software: software::installed(settings),
    }
}

/// What the firmware says (Linux DMI; the serial is readable by root only). Elsewhere empty for now.
fn hardware() -> v1::Hardware {
    let dmi = |name: &str| {
        std::fs::read_to_string(std::path::Path::new("/sys/class/dmi/id").join(name))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    v1::Hardware {
        vendor: dmi("sys_vendor"),
        model: dmi("product_name"),
        serial: dmi("product_serial"),
        bios_vendor: dmi("bios_vendor"),
        bios_version: dmi("bios_version"),
        bios_date: dmi("bios_date"),
    }
}

/// `/etc/os-release` as key/value pairs, quotes removed (empty where the file is missing).
fn os_release() -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    parse_os_release(&text)
}

fn parse_os_release(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

/// The IANA time zone: `TZ` when set, else where `/etc/localtime` points, else `/etc/timezone`.
fn time_zone() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.trim_start_matches(':');
        if !tz.is_empty() {
            return tz.to_owned();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let target = target.to_string_lossy();
        if let Some((_, zone)) = target.split_once("zoneinfo/") {
            return zone.to_owned();
        }
    }
    std::fs::read_to_string("/etc/timezone")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// A default route: the interface it leaves through and its gateway ("" when on-link).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    interface: String,
    gateway: String,
}

/// Default routes from the kernel's tables (Linux; none elsewhere yet).
fn default_routes() -> Vec<Route> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let mut routes = parse_route_v4(&v4);
    routes.extend(parse_route_v6(&v6));
    routes
}

/// `/proc/net/route`: Iface, Destination, Gateway (hex, host byte order of a little-endian machine), Flags, …
fn parse_route_v4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gw, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
            if *dest != "00000000" || *mask != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(gw, 16).ok()?;
            let gateway = if gw == 0 {
                String::new()
            } else {
                // Printed as the native-order number of the address's bytes.
                std::net::Ipv4Addr::from(gw.to_ne_bytes()).to_string()
            };
            Some(Route {
                interface: (*iface).to_owned(),
                gateway,
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination, prefix length, source, source prefix, next hop, metric, refcnt, use,
/// flags, interface. The default route is `::/0` (not through `lo`, where the kernel keeps its unreachable entry).
fn parse_route_v6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, len, hop, iface) = (f.first()?, f.get(1)?, f.get(4)?, f.get(9)?);
            if dest.bytes().any(|b| b != b'0') || *len != "00" || *iface == "lo" {
                return None;
            }
            let hop = u128::from_str_radix(hop, 16).ok()?;
            let gateway = if hop == 0 {
                String::new()
            } else {
                std::net::Ipv6Addr::from(hop).to_string()
            };
            Some(Route {
                interface: (*iface).to_owned(),
                gateway,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_this_machine_and_hashes_stably() {
        let inv = collect(Some("test-host"), &Settings::default());
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

    #[test]
    fn reads_default_routes_and_os_release() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                  eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_route_v4(v4),
            vec![Route {
                interface: "eth0".into(),
                gateway: "192.168.1.1".into()
            }]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  fe800000000000000000000000000001 00000400 00000001 00000000 00000003 wwan0\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
                  00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n";
        assert_eq!(
            parse_route_v6(v6),
            vec![Route {
                interface: "wwan0".into(),
                gateway: "fe80::1".into()
            }]
        );
        let release =
            parse_os_release("NAME=\"Debian GNU/Linux\"\nVERSION_CODENAME=bookworm\n# c\n");
        assert_eq!(release["NAME"], "Debian GNU/Linux");
        assert_eq!(release["VERSION_CODENAME"], "bookworm");
    }
}
