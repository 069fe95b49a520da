//! Compliance: where every endpoint stands on one package, per site, with why. The report an admin sends upward
//! after Patch Tuesday ("which stations are behind on openssl 3.0.13, and why").
//!
//! The package is a rollcall package (the version the agent installed) or installed OS software (dpkg, rpm,
//! Windows; compared by that database's ordering). The rollouts of the package say whether a device that is not
//! current failed or is on its way. A pure function of stored records ([`assess`]); `server` gathers them.
//!
//! Tested by the unit tests at the bottom and end to end in `tests/tests/inventory.rs`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use rollcall_packaging::version::{compare, Scheme};
use rollcall_proto::v1;

use super::engine::{Env, Standing};
use crate::model::agent::AgentFacts;
use crate::model::filter::Facts;
use crate::model::software::SoftwareSets;
use crate::model::{ActionRecord, AgentRecord, RolloutRecord, RolloutState};

/// The version that counts as current and how versions compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub package: String,
    pub version: String,
    pub scheme: Scheme,
    /// "rollcall" for a rollcall package, else the database: "dpkg", "rpm", "windows".
    pub compared_by: &'static str,
}

/// A rollout of the package with its actions by agent id.
pub struct PackageRollout<'a> {
    pub rollout: &'a RolloutRecord,
    pub actions: HashMap<String, ActionRecord>,
}

/// The installed version of the target's package on `agent`: the rollcall package it installed, else the newest
/// entry of the installed software.
fn installed(target: &Target, facts: &AgentFacts) -> Option<(String, Scheme)> {
    if let Some(p) = facts.agent.installed_counter(&target.package) {
        return Some((p.version.clone(), Scheme::Generic));
    }
    facts
        .software(&target.package)
        .into_iter()
        .max_by(|(a, s), (b, _)| compare(*s, a, b))
}

/// Where each agent stands, in `agents` order.
pub fn assess(
    target: &Target,
    agents: &[AgentRecord],
    rollouts: &[PackageRollout],
    sets: &dyn SoftwareSets,
    env: &Env,
) -> Vec<v1::DeviceCompliance> {
    // Newest first: the latest rollout an agent is in decides whether it failed or is on its way.
    let mut rollouts: Vec<&PackageRollout> = rollouts
        .iter()
        .filter(|r| r.rollout.state != RolloutState::Draft)
        .filter(|r| compare(Scheme::Generic, &r.rollout.version, &target.version) != Ordering::Less)
        .collect();
    rollouts.sort_by_key(|r| std::cmp::Reverse(r.rollout.created_at));
    agents
        .iter()
        .map(|agent| {
            let facts = AgentFacts::new(agent, sets);
            let have = installed(target, &facts);
            let (state, why) = standing(target, agent, &facts, have.as_ref(), &rollouts, env);
            v1::DeviceCompliance {
                agent_id: agent.id.clone(),
                hostname: agent.hostname.clone(),
                site: agent.site.clone(),
                state: state as i32,
                installed: have.map(|(v, _)| v).unwrap_or_default(),
                why,
                presence: agent
                    .presence(env.offline_after, env.cutoff, env.now)
                    .to_owned(),
                last_seen_unix: agent.last_seen(),
            }
        })
        .collect()
}

fn standing(
    target: &Target,
    agent: &AgentRecord,
    facts: &AgentFacts,
    have: Option<&(String, Scheme)>,
    rollouts: &[&PackageRollout],
    env: &Env,
) -> (v1::Compliance, String) {
    use v1::Compliance as C;
    if agent.last_checkin == 0 {
        return (C::NeverReported, "enrolled, never checked in".into());
    }
    if let Some((version, scheme)) = have {
        if compare(*scheme, version, &target.version) != Ordering::Less {
            return (C::Current, String::new());
        }
    }
    let away = match agent.presence(env.offline_after, env.cutoff, env.now) {
        "online" => String::new(),
        presence => format!("; {presence} since {}", day(agent.last_seen())),
    };
    for r in rollouts {
        let action = r.actions.get(&agent.id);
        let member = action.is_some() || r.rollout.is_target(agent, facts.sets());
        if !member {
            continue;
        }
        let id = &r.rollout.id;
        let standing = Standing::in_rollout(r.rollout, agent, action, env);
        let said = |a: &ActionRecord| {
            let mut s = a.detail.clone();
            if let Some(code) = a.exit_code {
                if !s.contains(&code.to_string()) {
                    s = format!("{s} (exit {code})");
                }
            }
            s
        };
        match standing {
            Standing::Failed | Standing::RolledBack => {
                let what = if standing == Standing::Failed {
                    "failed"
                } else {
                    "rolled back"
                };
                let detail = action.map(said).unwrap_or_default();
                return (
                    C::Failed,
                    format!(
                        "rollout {id} ({}) {what}: {detail}{away}",
                        r.rollout.version
                    ),
                );
            }
            Standing::Retrying | Standing::InProgress | Standing::Pending | Standing::Offline => {
                let step = match action {
                    Some(a) if a.state.is_in_progress() || standing == Standing::Retrying => {
                        rollcall_proto::ActionState::name_of(a.state as i32).to_owned()
                    }
                    _ => format!(
                        "waiting for wave {}",
                        r.rollout.wave_for(agent).unwrap_or(0) + 1
                    ),
                };
                let step = if standing == Standing::Retrying {
                    format!("{step}, retry coming")
                } else {
                    step
                };
                if r.rollout.state == RolloutState::Cancelled {
                    continue;
                }
                return (
                    C::Pending,
                    format!(
                        "rollout {id} ({}, {}): {step}{away}",
                        r.rollout.version,
                        r.rollout.state.as_str()
                    ),
                );
            }
            // Done elsewhere (succeeded but since downgraded, skipped, cancelled, excluded): the next one decides.
            _ => continue,
        }
    }
    match have {
        Some((version, _)) => (
            C::Older,
            format!(
                "has {version}; no rollout of {} under way{away}",
                target.version
            ),
        ),
        None => (
            C::Missing,
            format!(
                "not installed; no rollout of {} under way{away}",
                target.version
            ),
        ),
    }
}

fn day(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Counts per site, sites in name order.
pub fn per_site(devices: &[v1::DeviceCompliance]) -> Vec<v1::SiteCompliance> {
    use v1::Compliance as C;
    let mut sites: BTreeMap<&str, v1::SiteCompliance> = BTreeMap::new();
    for d in devices {
        let s = sites.entry(&d.site).or_insert_with(|| v1::SiteCompliance {
            site: d.site.clone(),
            ..Default::default()
        });
        s.endpoints += 1;
        match C::try_from(d.state).unwrap_or(C::Unspecified) {
            C::Current => s.current += 1,
            C::Older => s.older += 1,
            C::Missing => s.missing += 1,
            C::Failed => s.failed += 1,
            C::Pending => s.pending += 1,
            C::NeverReported | C::Unspecified => s.never_reported += 1,
        }
    }
    sites.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstalledRecord;

    fn env() -> Env {
        Env {
            now: 100_000,
            cutoff: 7 * 86400,
            offline_after: 900,
        }
    }

    fn agent(id: &str, site: &str, installed: Option<&str>) -> AgentRecord {
        let mut a = AgentRecord::new(id, id, site, "linux-x86_64", 1_000);
        a.last_checkin = 99_990;
        if let Some(v) = installed {
            a.installed.push(InstalledRecord {
                name: "vpn".into(),
                version: v.into(),
                release_counter: 1,
                installed_at: 5_000,
            });
        }
        a
    }

    fn target() -> Target {
        Target {
            package: "vpn".into(),
            version: "2.0".into(),
            scheme: Scheme::Generic,
            compared_by: "rollcall",
        }
    }

    #[test]
    fn every_endpoint_gets_one_state_with_why() {
        let mut never = agent("never", "north", None);
        never.last_checkin = 0;
        let mut away = agent("away", "south", Some("1.0"));
        away.last_checkin = 100_000 - 3 * 86400;
        let agents = vec![
            agent("current", "north", Some("2.0")),
            agent("newer", "north", Some("2.1")),
            agent("older", "north", Some("1.9")),
            agent("missing", "north", None),
            agent("failed", "south", Some("1.0")),
            never,
            away,
        ];
        let mut rollout = RolloutRecord::for_test("r-7", &["linux"], &[&["south"]]);
        rollout.package = "vpn".into();
        rollout.version = "2.0".into();
        rollout.state = RolloutState::Completed;
        let mut failed = ActionRecord::new(
            &rollout.id,
            "failed",
            "south",
            0,
            crate::model::ActionState::Failed,
            0,
            50_000,
        );
        failed.detail = "verify command exited 3".into();
        failed.exit_code = Some(3);
        let actions = HashMap::from([("failed".to_string(), failed)]);
        let rollouts = vec![PackageRollout {
            rollout: &rollout,
            actions,
        }];
        let out = assess(&target(), &agents, &rollouts, &(), &env());
        let by_id: HashMap<&str, &v1::DeviceCompliance> =
            out.iter().map(|d| (d.agent_id.as_str(), d)).collect();
        use v1::Compliance as C;
        let state = |id: &str| C::try_from(by_id[id].state).unwrap();
        assert_eq!(state("current"), C::Current);
        assert_eq!(state("newer"), C::Current);
        assert_eq!(state("older"), C::Older);
        assert!(
            by_id["older"].why.contains("has 1.9"),
            "{}",
            by_id["older"].why
        );
        assert_eq!(state("missing"), C::Missing);
        assert_eq!(state("failed"), C::Failed);
        assert!(
            by_id["failed"]
                .why
                .contains("rollout r-7 (2.0) failed: verify command exited 3"),
            "{}",
            by_id["failed"].why
        );
        assert_eq!(state("never"), C::NeverReported);
        // A south device the completed rollout still targets, offline for three days: on its way.
        assert_eq!(state("away"), C::Pending);
        assert!(
            by_id["away"].why.contains("offline since"),
            "{}",
            by_id["away"].why
        );

        let sites = per_site(&out);
        assert_eq!(sites.len(), 2);
        let north = &sites[0];
        assert_eq!(
            (
                north.site.as_str(),
                north.endpoints,
                north.current,
                north.older,
                north.missing,
                north.never_reported
            ),
            ("north", 5, 2, 1, 1, 1)
        );
        let south = &sites[1];
        assert_eq!((south.failed, south.pending), (1, 1));
    }
}
