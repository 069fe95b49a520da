//! The inventory as both ends see it: its hash (what "changed" means), the delta the agent sends instead of the
//! whole when that is smaller, and the limits the controller holds a report to. Agent and controller share this
//! module, so the hash the agent computes is the hash the controller recomputes after applying a delta.
//!
//! Tested by the unit tests at the bottom: delta round trips, a delta against the wrong base, and every limit.

use std::cmp::Ordering;

use prost::Message;

use crate::v1::{Inventory, InventoryDelta, Software};

/// Hash of the parts of the inventory that matter for change detection: everything but uptime and free space,
/// which change every minute.
pub fn hash(inventory: &Inventory) -> String {
    let mut stable = inventory.clone();
    stable.uptime_seconds = 0;
    for d in &mut stable.disks {
        d.available_bytes = 0;
    }
    crate::sha256_hex(&stable.encode_to_vec())
}

/// The order software is kept in: by name, then arch (the identity of an entry), then version.
pub fn software_order(a: &Software, b: &Software) -> Ordering {
    (a.name.as_str(), a.arch.as_str(), a.version.as_str()).cmp(&(
        b.name.as_str(),
        b.arch.as_str(),
        b.version.as_str(),
    ))
}

fn same_entry(a: &Software, b: &Software) -> bool {
    a.name == b.name && a.arch == b.arch
}

/// `current` as changes against `base` (whose hash is `base_hash`). Both must hold their software in
/// [`software_order`].
pub fn delta(base: &Inventory, base_hash: &str, current: &Inventory) -> InventoryDelta {
    let (mut set, mut removed) = (Vec::new(), Vec::new());
    let (mut old, mut new) = (
        base.software.iter().peekable(),
        current.software.iter().peekable(),
    );
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(o), Some(n)) if same_entry(o, n) => {
                if o != n {
                    set.push((*n).clone());
                }
                old.next();
                new.next();
            }
            (Some(o), Some(n)) if (&o.name, &o.arch) < (&n.name, &n.arch) => {
                removed.push(identity(o));
                old.next();
            }
            (Some(o), None) => {
                removed.push(identity(o));
                old.next();
            }
            (_, Some(n)) => {
                set.push((*n).clone());
                new.next();
            }
        }
    }
    InventoryDelta {
        base_hash: base_hash.to_owned(),
        inventory: Some(Inventory {
            software: Vec::new(),
            ..current.clone()
        }),
        software_set: set,
        software_removed: removed,
    }
}

fn identity(s: &Software) -> Software {
    Software {
        name: s.name.clone(),
        arch: s.arch.clone(),
        ..Software::default()
    }
}

/// Why a delta could not be applied; the controller then asks for the full inventory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the inventory delta is against {got:.12}…, the stored inventory is {have:.12}…")]
    WrongBase { have: String, got: String },
    #[error("the inventory delta has no inventory")]
    Empty,
}

/// `base` (with hash `base_hash`) changed by `delta`.
pub fn apply(
    base: &Inventory,
    base_hash: &str,
    delta: &InventoryDelta,
) -> Result<Inventory, DeltaError> {
    if delta.base_hash != base_hash {
        return Err(DeltaError::WrongBase {
            have: base_hash.to_owned(),
            got: delta.base_hash.clone(),
        });
    }
    let mut inventory = delta.inventory.clone().ok_or(DeltaError::Empty)?;
    let gone = |s: &Software| {
        delta
            .software_removed
            .iter()
            .chain(&delta.software_set)
            .any(|r| same_entry(r, s))
    };
    inventory.software = base
        .software
        .iter()
        .filter(|s| !gone(s))
        .chain(&delta.software_set)
        .cloned()
        .collect();
    inventory.software.sort_by(software_order);
    Ok(inventory)
}

/// The name people read for a software source.
pub fn source_name(source: i32) -> &'static str {
    match crate::v1::SoftwareSource::try_from(source) {
        Ok(crate::v1::SoftwareSource::Dpkg) => "dpkg",
        Ok(crate::v1::SoftwareSource::Rpm) => "rpm",
        Ok(crate::v1::SoftwareSource::Windows) => "windows",
        _ => "",
    }
}

/// The inventory as one JSON object (`rollcall-agent inventory --json`, `rollcall agents show --json`).
pub fn to_json(inv: &Inventory) -> serde_json::Value {
    let hw = inv.hardware.clone().unwrap_or_default();
    serde_json::json!({
        "hostname": inv.hostname,
        "platform": inv.platform,
        "agent_version": inv.agent_version,
        "os": {
            "name": inv.os_name,
            "version": inv.os_version,
            "build": inv.os_build,
            "kernel": inv.kernel_version,
            "boot_time_unix": inv.boot_time_unix,
            "uptime_seconds": inv.uptime_seconds,
            "time_zone": inv.time_zone,
        },
        "hardware": {
            "vendor": hw.vendor,
            "model": hw.model,
            "serial": hw.serial,
            "bios_vendor": hw.bios_vendor,
            "bios_version": hw.bios_version,
            "bios_date": hw.bios_date,
            "arch": inv.arch,
            "cpu": inv.cpu_brand,
            "cpu_count": inv.cpu_count,
            "memory_bytes": inv.memory_total_bytes,
        },
        "disks": inv.disks.iter().map(|d| serde_json::json!({
            "mount_point": d.mount_point,
            "file_system": d.file_system,
            "total_bytes": d.total_bytes,
            "available_bytes": d.available_bytes,
            "removable": d.removable,
        })).collect::<Vec<_>>(),
        "interfaces": inv.interfaces.iter().map(|n| serde_json::json!({
            "name": n.name,
            "mac_address": n.mac_address,
            "addresses": n.addresses,
            "default_route": n.default_route,
            "gateway": n.gateway,
            "metered": n.metered,
        })).collect::<Vec<_>>(),
        "software": inv.software.iter().map(|s| serde_json::json!({
            "name": s.name,
            "version": s.version,
            "arch": s.arch,
            "source": source_name(s.source),
            "publisher": s.publisher,
        })).collect::<Vec<_>>(),
    })
}

/// The inventory for people, one `label: value` per line, each indented by `indent` (software as a count; the
/// list is in `--json`).
pub fn describe(inv: &Inventory, indent: &str) -> String {
    use std::fmt::Write;
    let hw = inv.hardware.clone().unwrap_or_default();
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    let join = |parts: &[&str]| {
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        if !value.trim().is_empty() {
            let _ = writeln!(out, "{indent}{label:<10} {value}");
        }
    };
    line(
        "os",
        join(&[&inv.os_name, &inv.os_version, &inv.os_build])
            + &format!(" (kernel {})", inv.kernel_version),
    );
    line("time zone", inv.time_zone.clone());
    line("hardware", join(&[&hw.vendor, &hw.model]));
    line("serial", hw.serial.clone());
    line(
        "bios",
        join(&[&hw.bios_vendor, &hw.bios_version, &hw.bios_date]),
    );
    line(
        "cpu",
        format!("{} × {} {}", inv.cpu_count, inv.cpu_brand, inv.arch),
    );
    line("memory", gib(inv.memory_total_bytes));
    for d in &inv.disks {
        line(
            "disk",
            format!(
                "{} {} {} free of {}",
                d.mount_point,
                d.file_system,
                gib(d.available_bytes),
                gib(d.total_bytes)
            ),
        );
    }
    for n in &inv.interfaces {
        let mut notes = Vec::new();
        if n.default_route {
            notes.push(if n.gateway.is_empty() {
                "default route".to_owned()
            } else {
                format!("default route via {}", n.gateway)
            });
        }
        if n.metered {
            notes.push("metered".to_owned());
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        line(
            "network",
            format!(
                "{} {} {}{notes}",
                n.name,
                n.mac_address,
                n.addresses.join(" ")
            ),
        );
    }
    let sources: std::collections::BTreeSet<&str> =
        inv.software.iter().map(|s| source_name(s.source)).collect();
    line(
        "software",
        format!(
            "{} packages ({})",
            inv.software.len(),
            sources.into_iter().collect::<Vec<_>>().join(", ")
        ),
    );
    out
}

/// The most of each part an inventory report may hold; a report over them is refused whole.
pub mod limits {
    pub const SOFTWARE: usize = 50_000;
    pub const DISKS: usize = 256;
    pub const INTERFACES: usize = 1_024;
    pub const ADDRESSES: usize = 64;
    /// Characters in any one text field.
    pub const TEXT: usize = 1_024;
}

/// Why an inventory report was refused; names the part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("inventory has {count} {part}; at most {max} are accepted")]
    TooMany {
        part: &'static str,
        count: usize,
        max: usize,
    },
    #[error("inventory field {field} is {len} characters long; at most {max} are accepted", max = limits::TEXT)]
    TooLong { field: String, len: usize },
    #[error("inventory software entry {index} has no name")]
    Unnamed { index: usize },
}

/// Refuse a report over [`limits`] (checked before anything is stored).
pub fn check(inventory: &Inventory) -> Result<(), InventoryError> {
    let count = |part, count, max| {
        if count > max {
            Err(InventoryError::TooMany { part, count, max })
        } else {
            Ok(())
        }
    };
    count(
        "software entries",
        inventory.software.len(),
        limits::SOFTWARE,
    )?;
    count("disks", inventory.disks.len(), limits::DISKS)?;
    count("interfaces", inventory.interfaces.len(), limits::INTERFACES)?;
    let text = |field: &dyn Fn() -> String, value: &str| {
        if value.len() > limits::TEXT {
            Err(InventoryError::TooLong {
                field: field(),
                len: value.len(),
            })
        } else {
            Ok(())
        }
    };
    for (name, value) in [
        ("hostname", &inventory.hostname),
        ("os_name", &inventory.os_name),
        ("os_version", &inventory.os_version),
        ("os_build", &inventory.os_build),
        ("kernel_version", &inventory.kernel_version),
        ("arch", &inventory.arch),
        ("cpu_brand", &inventory.cpu_brand),
        ("platform", &inventory.platform),
        ("agent_version", &inventory.agent_version),
        ("time_zone", &inventory.time_zone),
    ] {
        text(&|| name.to_owned(), value)?;
    }
    if let Some(hw) = &inventory.hardware {
        for (name, value) in [
            ("hardware.vendor", &hw.vendor),
            ("hardware.model", &hw.model),
            ("hardware.serial", &hw.serial),
            ("hardware.bios_vendor", &hw.bios_vendor),
            ("hardware.bios_version", &hw.bios_version),
            ("hardware.bios_date", &hw.bios_date),
        ] {
            text(&|| name.to_owned(), value)?;
        }
    }
    for (i, d) in inventory.disks.iter().enumerate() {
        text(&|| format!("disks[{i}].mount_point"), &d.mount_point)?;
        text(&|| format!("disks[{i}].file_system"), &d.file_system)?;
    }
    for (i, n) in inventory.interfaces.iter().enumerate() {
        text(&|| format!("interfaces[{i}].name"), &n.name)?;
        text(&|| format!("interfaces[{i}].mac_address"), &n.mac_address)?;
        text(&|| format!("interfaces[{i}].gateway"), &n.gateway)?;
        count(
            "addresses on one interface",
            n.addresses.len(),
            limits::ADDRESSES,
        )?;
        for a in &n.addresses {
            text(&|| format!("interfaces[{i}].addresses"), a)?;
        }
    }
    for (i, s) in inventory.software.iter().enumerate() {
        if s.name.is_empty() {
            return Err(InventoryError::Unnamed { index: i });
        }
        for (name, value) in [
            ("name", &s.name),
            ("version", &s.version),
            ("arch", &s.arch),
            ("publisher", &s.publisher),
        ] {
            text(&|| format!("software[{i}].{name}"), value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::SoftwareSource;

    fn sw(name: &str, version: &str) -> Software {
        Software {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            source: SoftwareSource::Dpkg as i32,
            publisher: String::new(),
        }
    }

    fn inventory(software: Vec<Software>) -> Inventory {
        Inventory {
            hostname: "desk-1".into(),
            os_name: "Debian".into(),
            software,
            ..Inventory::default()
        }
    }

    #[test]
    fn a_delta_applied_to_its_base_gives_the_current_inventory_and_its_hash() {
        let base = inventory(vec![
            sw("bash", "5.2"),
            sw("curl", "7.88"),
            sw("zsh", "5.9"),
        ]);
        let mut current = inventory(vec![
            sw("bash", "5.2"),
            sw("curl", "8.0"),
            sw("openssl", "3.0.13"),
        ]);
        current.os_version = "12".into();
        let base_hash = hash(&base);
        let d = delta(&base, &base_hash, &current);
        assert_eq!(
            d.software_set,
            vec![sw("curl", "8.0"), sw("openssl", "3.0.13")]
        );
        assert_eq!(d.software_removed.len(), 1);
        assert_eq!(d.software_removed[0].name, "zsh");
        let applied = apply(&base, &base_hash, &d).unwrap();
        assert_eq!(applied, current);
        assert_eq!(hash(&applied), hash(&current));
        assert!(d.encoded_len() < current.encoded_len() || current.software.len() < 4);
    }

    #[test]
    fn a_delta_against_another_base_is_refused() {
        let base = inventory(vec![sw("bash", "5.2")]);
        let d = delta(&base, "aaaa", &inventory(vec![]));
        let e = apply(&base, "bbbb", &d).unwrap_err();
        assert!(matches!(e, DeltaError::WrongBase { .. }), "{e}");
    }

    #[test]
    fn uptime_and_free_space_do_not_change_the_hash() {
        let mut inv = inventory(vec![sw("bash", "5.2")]);
        let before = hash(&inv);
        inv.uptime_seconds += 60;
        assert_eq!(hash(&inv), before);
        inv.software[0].version = "5.3".into();
        assert_ne!(hash(&inv), before);
    }

    #[test]
    fn reports_over_the_limits_are_refused_naming_the_part() {
        let mut inv = inventory(vec![sw("bash", "5.2")]);
        assert_eq!(check(&inv), Ok(()));
        inv.software[0].version = "9".repeat(limits::TEXT + 1);
        let e = check(&inv).unwrap_err().to_string();
        assert!(e.contains("software[0].version"), "{e}");
        inv.software = vec![sw("x", "1"); limits::SOFTWARE + 1];
        let e = check(&inv).unwrap_err().to_string();
        assert!(e.contains("50001 software entries"), "{e}");
        inv.software = vec![sw("", "1")];
        assert_eq!(check(&inv), Err(InventoryError::Unnamed { index: 0 }));
    }
}
