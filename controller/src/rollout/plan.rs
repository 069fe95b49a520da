//! Turning an admin's rollout request into a rollout record: resolve the waves (sites, canary, rest) and their
//! gates, check every part against the sites and agents the controller knows, and choose the canary devices.
//! A request that would make a useless or surprising rollout is refused with the reason and how to fix it.

use crate::model::filter::Filter;
use crate::model::rollout::GateOverrides;
use crate::model::software::SoftwareSets;
use crate::model::{
    AgentRecord, Canary, PackageRecord, RolloutRecord, RolloutState, Selector, SiteRecord,
    WaveRecord,
};

use super::engine::{choose_canary, Env};

/// What one wave selects, as asked.
#[derive(Debug, Clone, PartialEq)]
pub enum WaveTargets {
    Sites(Vec<String>),
    CanaryPercent(f64),
    CanaryCount(u32),
    Rest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WaveRequest {
    pub targets: WaveTargets,
    pub gates: GateOverrides,
}

/// An admin's rollout request, decoded from the wire.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    pub name: String,
    pub waves: Vec<WaveRequest>,
    pub gates: GateOverrides,
    pub sites: Vec<String>,
    pub platforms: Vec<String>,
    pub filters: Vec<String>,
    pub max_per_site: u32,
    pub retries: Option<u32>,
    pub retry_delay_secs: Option<u64>,
    pub urgent: bool,
    pub start_at: i64,
    pub deadline: i64,
}

/// Why a rollout request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// A name the controller does not know (a site).
    #[error("{0}")]
    Unknown(String),
    /// The request contradicts itself or has values out of range.
    #[error("{0}")]
    Invalid(String),
    /// Well-formed, but it would select nothing among today's agents.
    #[error("{0}")]
    SelectsNothing(String),
}

fn invalid(msg: impl Into<String>) -> PlanError {
    PlanError::Invalid(msg.into())
}

/// Build the draft rollout `id` of `package` from `req` against the known `sites` and `agents` at `env`.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    id: &str,
    req: PlanRequest,
    package: &PackageRecord,
    agents: &[AgentRecord],
    sites: &[SiteRecord],
    env: &Env,
    created_by: &str,
    sets: &dyn SoftwareSets,
) -> Result<RolloutRecord, PlanError> {
    if req.waves.is_empty() {
        return Err(invalid(
            "a rollout needs at least one wave (--wave SITE[,SITE…], --canary 5%, or --wave rest)",
        ));
    }
    if let Some(p) = req.gates.problem() {
        return Err(invalid(p));
    }
    let known: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    let unknown_site = |site: &str, place: &str| {
        PlanError::Unknown(format!(
            "{place}: unknown site {site:?} (known sites: {}); check the spelling with `rollcall sites list`",
            if known.is_empty() { "none yet".to_owned() } else { known.join(", ") }
        ))
    };
    for site in &req.sites {
        if !known.contains(&site.as_str()) {
            return Err(unknown_site(site, "--site"));
        }
    }
    let filters = req
        .filters
        .iter()
        .map(|f| Filter::parse(f).map_err(|e| invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if req.start_at > 0 && req.deadline > 0 && req.deadline <= req.start_at {
        return Err(invalid("the deadline must be after the start time"));
    }
    let mut draft = RolloutRecord {
        id: id.to_owned(),
        name: if req.name.is_empty() {
            format!("{}@{}", package.name, package.version)
        } else {
            req.name.clone()
        },
        package: package.name.clone(),
        version: package.version.clone(),
        target_name: package.target_name.clone(),
        platforms: package.platforms.clone(),
        release_counter: package.release_counter,
        selector: Selector {
            sites: req.sites.clone(),
            platforms: req.platforms.clone(),
            filters,
        },
        waves: Vec::new(),
        state: RolloutState::Draft,
        current_wave: 0,
        max_per_site: req.max_per_site,
        retries: req
            .retries
            .unwrap_or(crate::model::rollout::DEFAULT_RETRIES),
        retry_delay_secs: req
            .retry_delay_secs
            .unwrap_or(crate::model::rollout::DEFAULT_RETRY_DELAY_SECS)
            .max(1),
        urgent: req.urgent,
        start_at: req.start_at,
        deadline: req.deadline,
        created_at: env.now,
        updated_at: env.now,
        started_at: 0,
        finished_at: 0,
        reason: String::new(),
        created_by: created_by.to_owned(),
        superseded_by: String::new(),
    };

    let mut named: Vec<&str> = Vec::new();
    let rests = req
        .waves
        .iter()
        .filter(|w| w.targets == WaveTargets::Rest)
        .count();
    if rests > 1 {
        return Err(invalid("only one wave can be `rest`"));
    }
    if rests == 1 && req.waves.last().map(|w| &w.targets) != Some(&WaveTargets::Rest) {
        return Err(invalid(
            "`rest` takes every target no other wave takes, so it must be the last wave",
        ));
    }
    for (i, w) in req.waves.iter().enumerate() {
        let place = format!("wave {}", i + 1);
        if let Some(p) = w.gates.problem() {
            return Err(invalid(format!("{place}: {p}")));
        }
        let mut wave = WaveRecord::sites(Vec::new());
        match &w.targets {
            WaveTargets::Sites(list) => {
                if list.is_empty() {
                    return Err(invalid(format!("{place} names no site")));
                }
                for site in list {
                    if !known.contains(&site.as_str()) {
                        return Err(unknown_site(site, &place));
                    }
                    if !req.sites.is_empty() && !req.sites.contains(site) {
                        return Err(invalid(format!(
                            "{place}: site {site:?} is outside the rollout's --site selection ({})",
                            req.sites.join(", ")
                        )));
                    }
                    if named.contains(&site.as_str()) {
                        return Err(invalid(format!(
                            "site {site:?} is in more than one wave; each site belongs to one wave"
                        )));
                    }
                    named.push(site);
                }
                wave.sites = list.clone();
            }
            WaveTargets::CanaryPercent(p) => {
                if !(*p > 0.0 && *p <= 100.0) {
                    return Err(invalid(format!(
                        "{place}: canary {p}% must be more than 0% and at most 100%"
                    )));
                }
                wave.canary = Some(Canary {
                    percent: Some(*p),
                    count: None,
                    members: Vec::new(),
                });
            }
            WaveTargets::CanaryCount(n) => {
                if *n == 0 {
                    return Err(invalid(format!(
                        "{place}: a canary of 0 devices selects nothing"
                    )));
                }
                wave.canary = Some(Canary {
                    percent: None,
                    count: Some(*n),
                    members: Vec::new(),
                });
            }
            WaveTargets::Rest => wave.rest = true,
        }
        wave.gates = GateOverrides::resolve(&w.gates, &req.gates, wave.canary.is_some());
        draft.waves.push(wave);
    }

    // Targets today: agents the selector picks. Canary candidates are those that could install now.
    let targets: Vec<&AgentRecord> = agents.iter().filter(|a| draft.selects(a, sets)).collect();
    if targets.is_empty() {
        return Err(PlanError::SelectsNothing(
            "the rollout's selection matches no enrolled agent; check --site, --platform and --where".into(),
        ));
    }
    let supported =
        |a: &AgentRecord| rollcall_packaging::platform::matches(&package.platforms, &a.platform);
    if !targets.iter().any(|a| supported(a)) {
        let mut found: Vec<&str> = targets.iter().map(|a| a.platform.as_str()).collect();
        found.sort();
        found.dedup();
        return Err(PlanError::SelectsNothing(format!(
            "package {}@{} supports {} but the selected agents are {}: no agent could install it",
            package.name,
            package.version,
            package.platforms.join(", "),
            found.join(", ")
        )));
    }
    for i in 0..draft.waves.len() {
        let Some(canary) = &draft.waves[i].canary else {
            continue;
        };
        let (percent, count) = (canary.percent, canary.count);
        let taken: Vec<String> = draft
            .waves
            .iter()
            .filter_map(|w| w.canary.as_ref())
            .flat_map(|c| c.members.iter().cloned())
            .collect();
        let candidates: Vec<&AgentRecord> = targets
            .iter()
            .copied()
            .filter(|a| {
                supported(a)
                    // Counted devices (seen, or enrolled, within the cutoff): a just-enrolled agent is one.
                    && env.now - a.last_seen() <= env.cutoff
                    && !taken.contains(&a.id)
                    && a.installed_counter(&package.name)
                        .is_none_or(|p| p.release_counter < package.release_counter)
            })
            .collect();
        let members = choose_canary(id, &candidates, percent, count);
        if let Some(c) = draft.waves[i].canary.as_mut() {
            c.members = members;
        }
    }
    // Every wave must select at least one device today.
    let mut per_wave = vec![0usize; draft.waves.len()];
    for a in &targets {
        if let Some(w) = draft.wave_for(a) {
            per_wave[w as usize] += 1;
        }
    }
    for (i, n) in per_wave.iter().enumerate() {
        if *n == 0 {
            let w = &draft.waves[i];
            let why = if w.canary.is_some() {
                "no selected agent seen within the membership cutoff could install the package"
                    .to_owned()
            } else if w.rest {
                "the waves before it already take every selected agent".to_owned()
            } else {
                format!("no selected agent is at {}", w.sites.join(", "))
            };
            return Err(PlanError::SelectsNothing(format!(
                "wave {} ({}) selects no device: {why}",
                i + 1,
                w.label()
            )));
        }
    }
    Ok(draft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rollout::ErrorLimit;

    fn agent(id: &str, site: &str, platform: &str) -> AgentRecord {
        AgentRecord {
            last_checkin: 100,
            os_name: "Ubuntu".into(),
            os_version: "22.04".into(),
            ..AgentRecord::new(id, id, site, platform, 0)
        }
    }

    fn package() -> PackageRecord {
        PackageRecord {
            name: "app".into(),
            version: "1.0".into(),
            release_counter: 3,
            target_name: "app_1.0.tar.gz".into(),
            sha256: String::new(),
            length: 0,
            platforms: vec!["linux".into()],
            kind: "app".into(),
            published_at: 0,
        }
    }

    fn fleet() -> (Vec<AgentRecord>, Vec<SiteRecord>) {
        let mut agents = Vec::new();
        for (site, n) in [("north", 10), ("south", 10), ("east", 20)] {
            for i in 0..n {
                agents.push(agent(&format!("{site}-{i}"), site, "linux-x86_64"));
            }
        }
        let sites = ["north", "south", "east", "empty"]
            .iter()
            .map(|s| SiteRecord::new(s, 0))
            .collect();
        (agents, sites)
    }

    fn env() -> Env {
        Env {
            now: 200,
            cutoff: 7 * 86400,
            offline_after: 900,
        }
    }

    fn wave(t: WaveTargets) -> WaveRequest {
        WaveRequest {
            targets: t,
            gates: GateOverrides::default(),
        }
    }

    fn sites(list: &[&str]) -> WaveTargets {
        WaveTargets::Sites(list.iter().map(|s| s.to_string()).collect())
    }

    fn try_plan(req: PlanRequest) -> Result<RolloutRecord, PlanError> {
        let (agents, sites) = fleet();
        plan("r1", req, &package(), &agents, &sites, &env(), "admin", &())
    }

    #[test]
    fn canary_then_sites_then_rest() {
        let r = try_plan(PlanRequest {
            waves: vec![
                wave(WaveTargets::CanaryPercent(10.0)),
                wave(sites(&["north"])),
                wave(WaveTargets::Rest),
            ],
            ..PlanRequest::default()
        })
        .unwrap();
        let canary = r.waves[0].canary.as_ref().unwrap();
        assert_eq!(canary.members.len(), 4, "10% of 40, spread over the sites");
        for site in ["north", "south"] {
            assert_eq!(
                canary
                    .members
                    .iter()
                    .filter(|m| m.starts_with(site))
                    .count(),
                1,
                "{site}"
            );
        }
        assert_eq!(
            canary
                .members
                .iter()
                .filter(|m| m.starts_with("east"))
                .count(),
            2
        );
        assert_eq!(
            r.waves[0].gates.error,
            ErrorLimit::Count(1),
            "canary default"
        );
        assert_eq!(r.waves[1].gates.error, ErrorLimit::Percent(5.0));
        assert_eq!((r.state, r.retries), (RolloutState::Draft, 2));
        let again = try_plan(PlanRequest {
            waves: vec![
                wave(WaveTargets::CanaryPercent(10.0)),
                wave(sites(&["north"])),
                wave(WaveTargets::Rest),
            ],
            ..PlanRequest::default()
        })
        .unwrap();
        assert_eq!(
            again.waves[0].canary, r.waves[0].canary,
            "the choice is stable"
        );
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let refused = |req: PlanRequest| try_plan(req).unwrap_err();
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["nroth"]))],
            ..Default::default()
        });
        assert!(
            matches!(&e, PlanError::Unknown(m) if m.contains("unknown site \"nroth\"") && m.contains("north")),
            "{e}"
        );
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["north"])), wave(sites(&["north", "south"]))],
            ..Default::default()
        });
        assert!(
            e.to_string().contains("\"north\" is in more than one wave"),
            "{e}"
        );
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["empty"]))],
            ..Default::default()
        });
        assert!(
            matches!(&e, PlanError::SelectsNothing(m) if m.contains("wave 1 (empty) selects no device")),
            "{e}"
        );
        let e = refused(PlanRequest {
            waves: vec![wave(WaveTargets::Rest), wave(sites(&["north"]))],
            ..Default::default()
        });
        assert!(e.to_string().contains("must be the last wave"), "{e}");
        let e = refused(PlanRequest {
            waves: vec![
                wave(sites(&["north", "south", "east"])),
                wave(WaveTargets::Rest),
            ],
            ..Default::default()
        });
        assert!(
            e.to_string().contains("wave 2 (rest) selects no device"),
            "{e}"
        );
        let e = refused(PlanRequest {
            waves: vec![wave(WaveTargets::CanaryPercent(150.0))],
            ..Default::default()
        });
        assert!(e.to_string().contains("at most 100%"), "{e}");
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["north"]))],
            gates: GateOverrides {
                success_percent: Some(120.0),
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            e.to_string()
                .contains("success threshold 120% is outside 0–100%"),
            "{e}"
        );
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["north"]))],
            platforms: vec!["windows".into()],
            ..Default::default()
        });
        assert!(matches!(e, PlanError::SelectsNothing(_)), "{e}");
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["north"]))],
            filters: vec!["os.nme=Ubuntu".into()],
            ..Default::default()
        });
        assert!(e.to_string().contains("os.nme"), "{e}");
        let e = refused(PlanRequest {
            waves: vec![wave(sites(&["north"]))],
            sites: vec!["south".into()],
            ..Default::default()
        });
        assert!(
            e.to_string()
                .contains("outside the rollout's --site selection"),
            "{e}"
        );
        assert!(refused(PlanRequest::default())
            .to_string()
            .contains("at least one wave"));
    }

    #[test]
    fn a_package_no_target_can_install_is_refused() {
        let (mut agents, sites) = fleet();
        for a in &mut agents {
            a.platform = "windows-x86_64".into();
        }
        let req = PlanRequest {
            waves: vec![wave(sites_of(&["north"]))],
            ..Default::default()
        };
        let e = plan("r1", req, &package(), &agents, &sites, &env(), "admin", &()).unwrap_err();
        assert!(
            e.to_string()
                .contains("supports linux but the selected agents are windows-x86_64"),
            "{e}"
        );
    }

    fn sites_of(list: &[&str]) -> WaveTargets {
        sites(list)
    }

    #[test]
    fn the_filter_narrows_targets() {
        let (mut agents, sites) = fleet();
        agents[0].os_name = "Debian".into();
        let req = PlanRequest {
            waves: vec![wave(sites_of(&["north"]))],
            filters: vec!["os.name=Debian".into()],
            ..Default::default()
        };
        let r = plan("r1", req, &package(), &agents, &sites, &env(), "admin", &()).unwrap();
        assert!(r.is_target(&agents[0], &()));
        assert!(!r.is_target(&agents[1], &()));
    }
}
