//! Agents (endpoints) and sites as the controller knows them.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use rollcall_packaging::version::Scheme;
use rollcall_proto::v1;
use serde::{Deserialize, Serialize};

use super::filter::Facts;
use super::software::{SoftwareIndex, SoftwareSets};
use super::window::{Schedule, WindowError, WindowSpec};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledRecord {
    pub name: String,
    pub version: String,
    pub release_counter: u64,
    pub installed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: String,
    pub hostname: String,
    pub site: String,
    pub platform: String,
    pub enrolled_at: i64,
    /// 0 when the agent never checked in.
    #[serde(default)]
    pub last_checkin: i64,
    #[serde(default)]
    pub agent_version: String,
    /// "Ubuntu 22.04", for people.
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub os_name: String,
    #[serde(default)]
    pub os_version: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub arch: String,
    /// sha256 of the stored inventory, as the agent computed it.
    #[serde(default)]
    pub inventory_hash: String,
    #[serde(default)]
    pub installed: Vec<InstalledRecord>,
    /// The agent enforces the install windows it is given (says so at every check-in); an older one gets its work
    /// only while its site's window is open.
    #[serde(default)]
    pub enforces_windows: bool,
    /// When its certificates were revoked (0: never). It must enroll again.
    #[serde(default)]
    pub revoked_at: i64,
    /// When it was retired (0: in service). A retired agent lives in the store's retired agents, not the fleet.
    #[serde(default)]
    pub retired_at: i64,
    /// The inventory facts filters ask about beyond the fields above, by filter key (`hw.model`, `memory.gib`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
    /// The id of its installed software list in the store's software sets ("" when it reported none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub software_set: String,
}

impl AgentRecord {
    /// A newly enrolled agent that has not checked in yet.
    pub fn new(id: &str, hostname: &str, site: &str, platform: &str, now: i64) -> AgentRecord {
        AgentRecord {
            id: id.to_owned(),
            hostname: hostname.to_owned(),
            site: site.to_owned(),
            platform: platform.to_owned(),
            enrolled_at: now,
            last_checkin: 0,
            agent_version: String::new(),
            os: String::new(),
            os_name: String::new(),
            os_version: String::new(),
            kernel: String::new(),
            arch: String::new(),
            inventory_hash: String::new(),
            installed: Vec::new(),
            enforces_windows: false,
            revoked_at: 0,
            retired_at: 0,
            facts: BTreeMap::new(),
            software_set: String::new(),
        }
    }

    /// Take what filters and listings read from a newly accepted inventory (whose hash is `hash` and whose
    /// software list is the set `software_set`).
    pub fn absorb(&mut self, inv: &v1::Inventory, hash: &str, software_set: &str) {
        self.inventory_hash = hash.to_owned();
        self.software_set = software_set.to_owned();
        if !inv.hostname.is_empty() {
            self.hostname = inv.hostname.clone();
        }
        self.os = format!("{} {}", inv.os_name, inv.os_version)
            .trim()
            .to_owned();
        self.os_name = inv.os_name.clone();
        self.os_version = inv.os_version.clone();
        self.kernel = inv.kernel_version.clone();
        self.arch = inv.arch.clone();
        let hw = inv.hardware.clone().unwrap_or_default();
        let metered = inv.interfaces.iter().find(|n| n.default_route).map(|n| {
            if n.metered {
                "yes"
            } else {
                "no"
            }
        });
        self.facts = [
            ("os.build", inv.os_build.clone()),
            ("os.timezone", inv.time_zone.clone()),
            ("hw.vendor", hw.vendor),
            ("hw.model", hw.model),
            ("hw.serial", hw.serial),
            ("bios.version", hw.bios_version),
            ("cpu.model", inv.cpu_brand.clone()),
            ("cpu.count", inv.cpu_count.to_string()),
            (
                "memory.gib",
                // Rounded, so an 8 GiB machine that reports a little less still reads 8.
                ((inv.memory_total_bytes as f64) / f64::from(1u32 << 30))
                    .round()
                    .to_string(),
            ),
            ("net.metered", metered.unwrap_or_default().to_owned()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty() && v != "0")
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    }

    /// The installed release counter of `package`, if any.
    pub fn installed_counter(&self, package: &str) -> Option<&InstalledRecord> {
        self.installed.iter().find(|p| p.name == package)
    }

    /// When the controller last heard of the agent: its last check-in, or its enrollment if it never checked in.
    pub fn last_seen(&self) -> i64 {
        if self.last_checkin > 0 {
            self.last_checkin
        } else {
            self.enrolled_at
        }
    }

    /// How people see the agent at `now`: "online" within `offline_after` seconds of its last check-in,
    /// "stale" when silent (since enrollment if it never checked in) past `cutoff`, the membership cutoff after
    /// which rollouts stop counting it; otherwise "offline" or "never checked in"; "revoked" and "retired" first.
    pub fn presence(&self, offline_after: i64, cutoff: i64, now: i64) -> &'static str {
        if self.retired_at > 0 {
            "retired"
        } else if self.revoked_at > 0 {
            "revoked"
        } else if self.seen_within(offline_after, now) {
            "online"
        } else if now - self.last_seen() > cutoff {
            "stale"
        } else if self.last_checkin == 0 {
            "never checked in"
        } else {
            "offline"
        }
    }

    /// Seen within `cutoff` seconds before `now` (an agent that never checked in never is).
    pub fn seen_within(&self, cutoff: i64, now: i64) -> bool {
        self.last_checkin > 0 && now - self.last_checkin <= cutoff
    }
}

impl Facts for AgentRecord {
    fn fact(&self, key: &str) -> Option<String> {
        let value = match key {
            "hostname" => &self.hostname,
            "site" => &self.site,
            "platform" => &self.platform,
            "os.name" => &self.os_name,
            "os.version" => &self.os_version,
            "os.kernel" => &self.kernel,
            "arch" => &self.arch,
            "agent.version" => &self.agent_version,
            other => return self.facts.get(other).cloned(),
        };
        (!value.is_empty()).then(|| value.clone())
    }
}

/// An agent with its installed software at hand, as filters see it: the software set is looked up only when a
/// filter asks about software, so a filter on other facts costs no lookup.
pub struct AgentFacts<'a> {
    pub agent: &'a AgentRecord,
    sets: &'a dyn SoftwareSets,
    software: OnceCell<Option<Arc<SoftwareIndex>>>,
}

impl<'a> AgentFacts<'a> {
    pub fn new(agent: &'a AgentRecord, sets: &'a dyn SoftwareSets) -> AgentFacts<'a> {
        AgentFacts {
            agent,
            sets,
            software: OnceCell::new(),
        }
    }

    /// Where the software sets are looked up.
    pub fn sets(&self) -> &'a dyn SoftwareSets {
        self.sets
    }

    /// The agent's software list, `None` when it reported none.
    pub fn index(&self) -> Option<&SoftwareIndex> {
        self.software
            .get_or_init(|| self.sets.software_set(&self.agent.software_set))
            .as_deref()
    }
}

impl Facts for AgentFacts<'_> {
    fn fact(&self, key: &str) -> Option<String> {
        self.agent.fact(key)
    }

    fn software(&self, name: &str) -> Vec<(String, Scheme)> {
        self.index()
            .map(|index| {
                index
                    .get(name)
                    .iter()
                    .map(|i| (i.version.clone(), i.scheme))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub name: String,
    pub created_at: i64,
    /// Maintenance windows: installs start only inside one (downloads any time). Empty: any time.
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
    /// IANA time zone of the windows.
    #[serde(default)]
    pub time_zone: String,
}

impl SiteRecord {
    pub fn new(name: &str, now: i64) -> SiteRecord {
        SiteRecord {
            name: name.to_owned(),
            created_at: now,
            windows: Vec::new(),
            time_zone: String::new(),
        }
    }

    /// Replace the site's windows (`clear`: remove them all, installs any time). Refused, leaving the site as it
    /// was, with a message naming the bad window or time zone.
    pub fn set_windows(&mut self, windows: &[String], tz: &str, clear: bool) -> Result<(), String> {
        if clear {
            if !windows.is_empty() {
                return Err("--clear-windows and --window do not go together".into());
            }
            self.windows.clear();
            self.time_zone.clear();
            return Ok(());
        }
        if windows.is_empty() {
            return Err(
                "give at least one --window \"DAYS HH:MM-HH:MM\" (or --clear-windows)".into(),
            );
        }
        let specs = windows
            .iter()
            .map(|w| w.parse::<WindowSpec>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = Schedule::new(specs.clone(), tz).map_err(|e| e.to_string())?;
        self.windows = specs;
        self.time_zone = schedule.tz().to_owned();
        Ok(())
    }

    /// The site's maintenance schedule, `None` when it has no windows (installs any time).
    pub fn schedule(&self) -> Result<Option<Schedule>, WindowError> {
        if self.windows.is_empty() {
            return Ok(None);
        }
        Schedule::new(self.windows.clone(), &self.time_zone).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_windows_is_all_or_nothing() {
        let mut site = SiteRecord::new("north", 0);
        site.set_windows(
            &["Mon-Fri 01:00-05:00".into()],
            "america/los_angeles",
            false,
        )
        .unwrap();
        assert_eq!(
            site.time_zone, "America/Los_Angeles",
            "stored by its canonical name"
        );
        let before = site.clone();
        for (windows, tz, clear, words) in [
            (
                vec!["Mon-Fry 01:00-05:00".to_string()],
                "UTC",
                false,
                "unknown day \"Fry\"",
            ),
            (
                vec!["Mon 05:00-05:00".to_string()],
                "UTC",
                false,
                "never opens",
            ),
            (
                vec!["Mon 01:00-05:00".to_string()],
                "Mars/Base",
                false,
                "unknown time zone",
            ),
            (vec![], "UTC", false, "at least one --window"),
            (
                vec!["Mon 01:00-05:00".to_string()],
                "UTC",
                true,
                "do not go together",
            ),
        ] {
            let e = site.set_windows(&windows, tz, clear).unwrap_err();
            assert!(e.contains(words), "{e}");
            assert_eq!(site, before, "nothing changed");
        }
        site.set_windows(&[], "", true).unwrap();
        assert!(site.windows.is_empty() && site.schedule().unwrap().is_none());
    }
}
