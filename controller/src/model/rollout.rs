//! A rollout: a package, the targets it selects, and ordered waves with their gates and progress.

use serde::{Deserialize, Serialize};

use super::agent::AgentFacts;
use super::agent::AgentRecord;
use super::filter::{matches_all, Filter};
use super::software::SoftwareSets;
use super::RolloutState;

/// Built-in gate defaults (the brief's): 95% success, 5% errors (1 device in a canary), no soak.
pub const DEFAULT_SUCCESS_PERCENT: f64 = 95.0;
pub const DEFAULT_ERROR_PERCENT: f64 = 5.0;
pub const DEFAULT_CANARY_ERROR_COUNT: u32 = 1;
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_RETRY_DELAY_SECS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub id: String,
    pub name: String,
    pub package: String,
    pub version: String,
    pub target_name: String,
    /// The package's platforms (a device on another platform is skipped).
    pub platforms: Vec<String>,
    /// The package's release counter (a device already at it or newer is skipped).
    #[serde(default)]
    pub release_counter: u64,
    #[serde(default)]
    pub selector: Selector,
    pub waves: Vec<WaveRecord>,
    pub state: RolloutState,
    /// Index of the highest open wave.
    pub current_wave: u32,
    /// At most this many devices of one site download at once (0: no cap).
    #[serde(default)]
    pub max_per_site: u32,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_retry_delay")]
    pub retry_delay_secs: u64,
    /// Install at once, ignoring maintenance windows.
    #[serde(default)]
    pub urgent: bool,
    /// Scheduled start (unix seconds, 0: none).
    #[serde(default)]
    pub start_at: i64,
    /// After this time devices install at once, inside their window or not (0: none).
    #[serde(default)]
    pub deadline: i64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    /// Why the rollout is paused (or how it ended), for people.
    #[serde(default)]
    pub reason: String,
    pub created_by: String,
    /// The newer rollout of the same package that took over this one's desired state.
    #[serde(default)]
    pub superseded_by: String,
}

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

fn default_retry_delay() -> u64 {
    DEFAULT_RETRY_DELAY_SECS
}

/// Narrows the whole rollout: an agent is a target only if it matches every part that is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// One wave: sites, a canary, or the rest — and its gates and progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveRecord {
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default)]
    pub canary: Option<Canary>,
    /// Every target no other wave takes.
    #[serde(default)]
    pub rest: bool,
    #[serde(default)]
    pub gates: Gates,
    /// When the wave opened (0: not yet).
    #[serde(default)]
    pub opened_at: i64,
    /// When the wave first reached its success threshold (0: not yet); the soak time runs from here.
    #[serde(default)]
    pub threshold_met_at: i64,
    /// When the wave stopped holding the next one (gate passed or deadline), 0: not yet.
    #[serde(default)]
    pub passed_at: i64,
    /// Closed by its deadline rather than by its success share.
    #[serde(default)]
    pub closed_by_deadline: bool,
    #[serde(default)]
    pub approved_by: String,
}

/// A canary wave: its size as asked and the devices chosen when the rollout was created (a stable hash of agent
/// id and rollout id, spread over the sites in proportion to their targets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub percent: Option<f64>,
    pub count: Option<u32>,
    pub members: Vec<String>,
}

/// A wave's gates, resolved (wave override, else rollout default, else built-in) when the rollout was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gates {
    pub success_percent: f64,
    pub error: ErrorLimit,
    #[serde(default)]
    pub soak_secs: u64,
    #[serde(default)]
    pub approval: bool,
    /// 0: no deadline.
    #[serde(default)]
    pub deadline_secs: u64,
    #[serde(default)]
    pub overlap: bool,
}

impl Default for Gates {
    fn default() -> Gates {
        Gates {
            success_percent: DEFAULT_SUCCESS_PERCENT,
            error: ErrorLimit::Percent(DEFAULT_ERROR_PERCENT),
            soak_secs: 0,
            approval: false,
            deadline_secs: 0,
            overlap: false,
        }
    }
}

/// How many failed devices pause the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorLimit {
    Percent(f64),
    Count(u32),
}

impl ErrorLimit {
    /// Whether `failed` of `eligible` devices reach the limit.
    pub fn reached(self, failed: u32, eligible: u32) -> bool {
        match self {
            ErrorLimit::Count(n) => failed >= n.max(1),
            ErrorLimit::Percent(p) => {
                failed > 0 && f64::from(failed) * 100.0 >= p * f64::from(eligible)
            }
        }
    }

    pub fn describe(self) -> String {
        match self {
            ErrorLimit::Count(1) => "1 device".into(),
            ErrorLimit::Count(n) => format!("{n} devices"),
            ErrorLimit::Percent(p) => format!("{}%", fmt_percent(p)),
        }
    }
}

/// "5", "2.5": a percentage without a useless ".0".
pub fn fmt_percent(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// Gate values an admin set (per rollout or per wave); `None` falls back to the next level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateOverrides {
    pub success_percent: Option<f64>,
    pub error_percent: Option<f64>,
    pub error_count: Option<u32>,
    pub soak_secs: Option<u64>,
    pub approval: Option<bool>,
    pub deadline_secs: Option<u64>,
    pub overlap: Option<bool>,
}

impl GateOverrides {
    /// Problems with the values, for the admin (thresholds outside 0–100%, both error forms set).
    pub fn problem(&self) -> Option<String> {
        for (name, value) in [
            ("success threshold", self.success_percent),
            ("error threshold", self.error_percent),
        ] {
            if let Some(v) = value {
                if !(0.0..=100.0).contains(&v) || v.is_nan() {
                    return Some(format!("{name} {v}% is outside 0–100%"));
                }
            }
        }
        if self.error_percent.is_some() && self.error_count.is_some() {
            return Some("set the error threshold as a share or a count, not both".into());
        }
        if self.error_count == Some(0) {
            return Some(
                "an error threshold of 0 devices would pause before anything ran; use 1 or more"
                    .into(),
            );
        }
        None
    }

    /// Resolve a wave's gates: this wave's values, else the rollout's, else the built-in defaults (a canary's
    /// built-in error limit is 1 device).
    pub fn resolve(wave: &GateOverrides, rollout: &GateOverrides, canary: bool) -> Gates {
        let pick_error = |g: &GateOverrides| match (g.error_count, g.error_percent) {
            (Some(n), _) => Some(ErrorLimit::Count(n)),
            (None, Some(p)) => Some(ErrorLimit::Percent(p)),
            _ => None,
        };
        Gates {
            success_percent: wave
                .success_percent
                .or(rollout.success_percent)
                .unwrap_or(DEFAULT_SUCCESS_PERCENT),
            error: pick_error(wave)
                .or_else(|| pick_error(rollout))
                .unwrap_or(if canary {
                    ErrorLimit::Count(DEFAULT_CANARY_ERROR_COUNT)
                } else {
                    ErrorLimit::Percent(DEFAULT_ERROR_PERCENT)
                }),
            soak_secs: wave.soak_secs.or(rollout.soak_secs).unwrap_or(0),
            approval: wave.approval.or(rollout.approval).unwrap_or(false),
            deadline_secs: wave.deadline_secs.or(rollout.deadline_secs).unwrap_or(0),
            overlap: wave.overlap.or(rollout.overlap).unwrap_or(false),
        }
    }
}

impl WaveRecord {
    /// "sites", "canary 5%", "canary 20 devices", "rest".
    pub fn kind(&self) -> String {
        match (&self.canary, self.rest) {
            (
                Some(Canary {
                    percent: Some(p), ..
                }),
                _,
            ) => format!("canary {}%", fmt_percent(*p)),
            (Some(Canary { count: Some(n), .. }), _) => format!("canary {n}"),
            (Some(_), _) => "canary".into(),
            (None, true) => "rest".into(),
            (None, false) => "sites".into(),
        }
    }

    /// What the wave selects, for people: its sites, "canary 5%", "rest".
    pub fn label(&self) -> String {
        if self.sites.is_empty() {
            self.kind()
        } else {
            self.sites.join(",")
        }
    }

    pub fn is_open(&self) -> bool {
        self.opened_at > 0
    }
}

impl RolloutRecord {
    /// Whether `agent` is one of this rollout's targets: it matches the selector and some wave takes it.
    pub fn is_target(&self, agent: &AgentRecord, sets: &dyn SoftwareSets) -> bool {
        self.selects(agent, sets) && self.wave_for(agent).is_some()
    }

    /// Whether `agent` matches the selector (sites, platforms, inventory filters; `sets` answer filters on
    /// installed software).
    pub fn selects(&self, agent: &AgentRecord, sets: &dyn SoftwareSets) -> bool {
        let s = &self.selector;
        (s.sites.is_empty() || s.sites.contains(&agent.site))
            && (s.platforms.is_empty()
                || rollcall_packaging::platform::matches(&s.platforms, &agent.platform))
            && matches_all(&s.filters, &AgentFacts::new(agent, sets))
    }

    /// The wave that takes `agent`, if any: a canary that chose it, else the wave naming its site, else `rest`.
    /// (An agent's action records the wave it was offered in; that record wins over this.)
    pub fn wave_for(&self, agent: &AgentRecord) -> Option<u32> {
        let canary = self.waves.iter().position(|w| {
            w.canary
                .as_ref()
                .is_some_and(|c| c.members.contains(&agent.id))
        });
        let by_site = || {
            self.waves
                .iter()
                .position(|w| w.sites.contains(&agent.site))
        };
        let rest = || self.waves.iter().position(|w| w.rest);
        canary.or_else(by_site).or_else(rest).map(|i| i as u32)
    }

    /// Whether this rollout offers its package now (see [`RolloutState::offers`]); a completed rollout stops
    /// once a newer rollout of the same package superseded it.
    pub fn offers(&self) -> bool {
        self.state.offers()
            && (self.state != RolloutState::Completed || self.superseded_by.is_empty())
    }

    /// Every site a sites-wave names.
    pub fn named_sites(&self) -> Vec<String> {
        self.waves
            .iter()
            .flat_map(|w| w.sites.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
impl RolloutRecord {
    /// A running rollout of `app@1.0` (release counter 1) with waves of sites and default gates, for tests.
    pub fn for_test(id: &str, platforms: &[&str], waves: &[&[&str]]) -> RolloutRecord {
        RolloutRecord {
            id: id.into(),
            name: String::new(),
            package: "app".into(),
            version: "1.0".into(),
            target_name: "app_1.0.tar.gz".into(),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            release_counter: 1,
            selector: Selector::default(),
            waves: waves
                .iter()
                .map(|w| WaveRecord::sites(w.iter().map(|s| s.to_string()).collect()))
                .collect(),
            state: RolloutState::Running,
            current_wave: 0,
            max_per_site: 0,
            retries: 0,
            retry_delay_secs: DEFAULT_RETRY_DELAY_SECS,
            urgent: false,
            start_at: 0,
            deadline: 0,
            created_at: 0,
            updated_at: 0,
            started_at: 0,
            finished_at: 0,
            reason: String::new(),
            created_by: "admin".into(),
            superseded_by: String::new(),
        }
    }
}

impl WaveRecord {
    /// A wave of sites with default gates, not open.
    pub fn sites(sites: Vec<String>) -> WaveRecord {
        WaveRecord {
            sites,
            canary: None,
            rest: false,
            gates: Gates::default(),
            opened_at: 0,
            threshold_met_at: 0,
            passed_at: 0,
            closed_by_deadline: false,
            approved_by: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_resolve_wave_then_rollout_then_defaults() {
        let none = GateOverrides::default();
        assert_eq!(
            GateOverrides::resolve(&none, &none, false),
            Gates::default()
        );
        assert_eq!(
            GateOverrides::resolve(&none, &none, true).error,
            ErrorLimit::Count(1),
            "a canary pauses on its first failure by default"
        );
        let rollout = GateOverrides {
            success_percent: Some(90.0),
            error_percent: Some(10.0),
            soak_secs: Some(600),
            ..GateOverrides::default()
        };
        let wave = GateOverrides {
            success_percent: Some(100.0),
            error_count: Some(3),
            approval: Some(true),
            ..GateOverrides::default()
        };
        let g = GateOverrides::resolve(&wave, &rollout, true);
        assert_eq!(g.success_percent, 100.0);
        assert_eq!(g.error, ErrorLimit::Count(3));
        assert_eq!((g.soak_secs, g.approval), (600, true));
        assert_eq!(
            GateOverrides::resolve(&none, &rollout, true).error,
            ErrorLimit::Percent(10.0)
        );
    }

    #[test]
    fn bad_gate_values_are_named() {
        let bad = |g: GateOverrides| g.problem().unwrap_or_default();
        assert!(bad(GateOverrides {
            success_percent: Some(101.0),
            ..Default::default()
        })
        .contains("success threshold 101% is outside 0–100%"));
        assert!(bad(GateOverrides {
            error_percent: Some(-1.0),
            ..Default::default()
        })
        .contains("error threshold -1% is outside"));
        assert!(bad(GateOverrides {
            error_percent: Some(5.0),
            error_count: Some(2),
            ..Default::default()
        })
        .contains("not both"));
        assert!(bad(GateOverrides {
            error_count: Some(0),
            ..Default::default()
        })
        .contains("1 or more"));
        assert_eq!(GateOverrides::default().problem(), None);
    }

    #[test]
    fn error_limits() {
        assert!(ErrorLimit::Count(1).reached(1, 100));
        assert!(!ErrorLimit::Count(2).reached(1, 100));
        assert!(!ErrorLimit::Percent(5.0).reached(4, 100));
        assert!(ErrorLimit::Percent(5.0).reached(5, 100));
        assert!(
            !ErrorLimit::Percent(5.0).reached(0, 0),
            "no failure never pauses"
        );
        assert_eq!(ErrorLimit::Percent(2.5).describe(), "2.5%");
        assert_eq!(ErrorLimit::Count(1).describe(), "1 device");
    }
}
