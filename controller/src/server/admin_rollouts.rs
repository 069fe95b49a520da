//! The rollout and site handlers of the admin service. Each checks the caller, converts the request, calls one
//! function of the domain (`rollout::plan`, `rollout::driver`), audits, makes the change durable, wakes the agents
//! it concerns, and converts the answer.

use std::sync::Arc;

use rollcall_proto::v1;
use tonic::{Request, Response, Status};

use super::auth::{caller, internal};
use super::{now, Shared};
use crate::model::rollout::GateOverrides;
use crate::model::{ActionRecord, RolloutRecord};
use crate::rollout::commands::{self, By, CommandError, RetrySelection};
use crate::rollout::driver::Wake;
use crate::rollout::plan::{plan, PlanError, PlanRequest, WaveRequest, WaveTargets};
use crate::rollout::report::rollout_status;
use crate::store::{Store, Table};

fn command_status(e: CommandError) -> Status {
    match e {
        CommandError::NoRollout(_) => {
            Status::not_found(format!("{e}; `rollcall rollout list` shows them"))
        }
        CommandError::Refused { .. } => Status::failed_precondition(e.to_string()),
        CommandError::Store(e) => internal(e),
    }
}

fn plan_status(e: PlanError) -> Status {
    match e {
        PlanError::Unknown(m) => Status::not_found(m),
        PlanError::Invalid(m) => Status::invalid_argument(m),
        PlanError::SelectsNothing(m) => Status::failed_precondition(m),
    }
}

fn gates(spec: Option<&v1::GateSpec>) -> GateOverrides {
    let Some(g) = spec else {
        return GateOverrides::default();
    };
    GateOverrides {
        success_percent: g.success_percent,
        error_percent: g.error_percent,
        error_count: g.error_count,
        soak_secs: g.soak_seconds,
        approval: g.approval,
        deadline_secs: g.deadline_seconds,
        overlap: g.overlap,
    }
}

fn wave_request(i: usize, w: &v1::WaveSpec) -> Result<WaveRequest, Status> {
    let kinds = usize::from(!w.sites.is_empty())
        + usize::from(w.canary_percent != 0.0)
        + usize::from(w.canary_count != 0)
        + usize::from(w.rest);
    if kinds != 1 {
        return Err(Status::invalid_argument(format!(
            "wave {}: give exactly one of sites, a canary share, a canary count, or rest",
            i + 1
        )));
    }
    let targets = if w.rest {
        WaveTargets::Rest
    } else if w.canary_count != 0 {
        WaveTargets::CanaryCount(w.canary_count)
    } else if w.canary_percent != 0.0 {
        WaveTargets::CanaryPercent(w.canary_percent)
    } else {
        WaveTargets::Sites(w.sites.clone())
    };
    Ok(WaveRequest {
        targets,
        gates: gates(w.gates.as_ref()),
    })
}

/// What an admin command did: the rollout after it, the audit line, and the agents to wake.
struct Done {
    rollout: RolloutRecord,
    detail: String,
    wake: Vec<String>,
}

impl Done {
    fn of(rollout: RolloutRecord) -> Done {
        Done {
            detail: rollout.id.clone(),
            rollout,
            wake: Vec::new(),
        }
    }

    fn waking(rollout: RolloutRecord, agents: Vec<String>, what: &str) -> Done {
        Done {
            detail: format!("{} ({} {what})", rollout.id, agents.len()),
            rollout,
            wake: agents,
        }
    }
}

/// The admin service's rollout and site calls.
pub(crate) struct Rollouts {
    pub shared: Arc<Shared>,
}

impl Rollouts {
    fn status(
        &self,
        r: &RolloutRecord,
        devices: bool,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        let env = self.shared.env(now());
        Ok(Response::new(
            rollout_status(&self.shared.store, r, &env, devices).map_err(internal)?,
        ))
    }

    /// Make a command durable, let the engine look at once, and wake the agents it concerns.
    async fn done(&self, wake: Option<Wake>) -> Result<(), Status> {
        self.shared.store.flush().await.map_err(internal)?;
        self.shared.engine_now.notify_one();
        if let Some(w) = wake {
            self.shared.wake(&w);
        }
        Ok(())
    }

    pub async fn create(
        &self,
        req: Request<v1::CreateRolloutRequest>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let store = &self.shared.store;
        let package = store
            .package(&req.package, &req.version)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "package {}@{} is not published; push it first (`rollcall pkg list` shows what is)",
                    req.package, req.version
                ))
            })?;
        let waves = req
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| wave_request(i, w))
            .collect::<Result<Vec<_>, _>>()?;
        let selector = req.selector.clone().unwrap_or_default();
        let request = PlanRequest {
            name: req.name.clone(),
            waves,
            gates: gates(req.gates.as_ref()),
            sites: selector.sites,
            platforms: selector.platforms,
            filters: selector.r#where,
            max_per_site: req.max_concurrent_per_site,
            retries: req.retries,
            retry_delay_secs: req.retry_delay_seconds,
            urgent: req.urgent,
            start_at: req.start_at_unix,
            deadline: req.deadline_unix,
        };
        let now = now();
        let agents = store.agents().map_err(internal)?;
        let sites = store.sites().map_err(internal)?;
        // The id is taken only once the request is accepted, so a refused request changes nothing.
        plan(
            "",
            request.clone(),
            &package,
            &agents,
            &sites,
            &self.shared.env(now),
            &caller.subject,
            store,
        )
        .map_err(plan_status)?;
        let id = format!("r{}", store.next_seq("rollout").map_err(internal)?);
        let mut rollout = plan(
            &id,
            request,
            &package,
            &agents,
            &sites,
            &self.shared.env(now),
            &caller.subject,
            store,
        )
        .map_err(plan_status)?;
        let created = super::audit_entry(
            &caller,
            "rollout create",
            format!("{id} {}@{}", package.name, package.version),
        );
        store
            .put_rollout_audited(&rollout, Some(&created))
            .map_err(internal)?;
        if req.start {
            let started = super::audit_entry(&caller, "rollout start", id.clone());
            rollout =
                commands::start_audited(store, &id, Some(&started), now).map_err(command_status)?;
        }
        self.done(None).await?;
        self.status(&rollout, false)
    }

    /// The shape every rollout command shares: check the caller, apply one driver command with its audit entry
    /// (written in the same transaction as the rollout's change), make it durable, wake the agents it concerns,
    /// answer with the rollout's status.
    async fn command(
        &self,
        req: Request<v1::RolloutRef>,
        action: &str,
        apply: impl FnOnce(&Store, &str, By<'_>, i64) -> Result<Done, CommandError>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        let caller = caller(&req)?;
        let id = &req.get_ref().id;
        let entry = super::audit_entry(&caller, action, id.clone());
        let by = By {
            name: &caller.subject,
            audit: Some(&entry),
        };
        let done = apply(&self.shared.store, id, by, now()).map_err(command_status)?;
        tracing::info!(action, detail = %done.detail, "Rollout command applied.");
        let wake = Wake::agents(done.wake, format!("{action} {}", done.rollout.id));
        self.done(wake).await?;
        self.status(&done.rollout, false)
    }

    pub async fn start(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        // `start` on a paused rollout resumes it, as it always has.
        let paused = self
            .shared
            .store
            .rollout(&req.get_ref().id)
            .map_err(internal)?
            .is_some_and(|r| r.state == crate::model::RolloutState::Paused);
        if paused {
            return self.resume(req).await;
        }
        self.command(req, "rollout start", |store, id, by, now| {
            commands::start_audited(store, id, by.audit, now).map(Done::of)
        })
        .await
    }

    pub async fn pause(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.command(req, "rollout pause", |store, id, by, now| {
            commands::pause(store, id, by, now).map(Done::of)
        })
        .await
    }

    pub async fn resume(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.command(req, "rollout resume", |store, id, by, now| {
            let (r, retried) = commands::resume(store, id, by, now)?;
            Ok(Done::waking(r, retried, "devices retried"))
        })
        .await
    }

    pub async fn cancel(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.command(req, "rollout cancel", |store, id, by, now| {
            let (r, told) = commands::cancel(store, id, by, now)?;
            Ok(Done::waking(r, told, "devices told to stop"))
        })
        .await
    }

    pub async fn approve(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        self.command(req, "rollout approve", |store, id, by, now| {
            let (r, wave) = commands::approve(store, id, by, now)?;
            let detail = format!("{} wave {}", r.id, wave + 1);
            Ok(Done {
                rollout: r,
                detail,
                wake: Vec::new(),
            })
        })
        .await
    }

    pub async fn delete(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::DeleteRolloutResponse>, Status> {
        let caller = caller(&req)?;
        let id = req.get_ref().id.clone();
        let entry = super::audit_entry(&caller, "rollout delete", id.clone());
        commands::delete_draft(&self.shared.store, &id, Some(&entry)).map_err(command_status)?;
        self.done(None).await?;
        Ok(Response::new(v1::DeleteRolloutResponse { id }))
    }

    pub async fn retry(
        &self,
        req: Request<v1::RetryRolloutRequest>,
    ) -> Result<Response<v1::RetryRolloutResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let store = &self.shared.store;
        let chosen = usize::from(!req.agent.is_empty())
            + usize::from(!req.site.is_empty())
            + usize::from(req.failed);
        if chosen != 1 {
            return Err(Status::invalid_argument(
                "say which devices to retry: exactly one of --agent AGENT, --site SITE or --failed",
            ));
        }
        let which = if !req.agent.is_empty() {
            RetrySelection::Agent(self.resolve_agent(&req.rollout_id, &req.agent)?)
        } else if !req.site.is_empty() {
            if store.site(&req.site).map_err(internal)?.is_none() {
                return Err(Status::not_found(format!(
                    "unknown site {:?}; `rollcall sites list` shows them",
                    req.site
                )));
            }
            RetrySelection::Site(req.site.clone())
        } else {
            RetrySelection::Failed
        };
        let entry = super::audit_entry(&caller, "rollout retry", req.rollout_id.clone());
        let by = By {
            name: &caller.subject,
            audit: Some(&entry),
        };
        let retried =
            commands::retry(store, &req.rollout_id, &which, by, now()).map_err(command_status)?;
        let reason = format!("rollout {}: retry requested", req.rollout_id);
        self.done(Wake::agents(retried.clone(), reason)).await?;
        let r = store
            .rollout(&req.rollout_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no rollout {}", req.rollout_id)))?;
        Ok(Response::new(v1::RetryRolloutResponse {
            agent_ids: retried,
            status: Some(self.status(&r, false)?.into_inner()),
        }))
    }

    /// An agent id, or a hostname that names exactly one agent (preferring one in the rollout).
    fn resolve_agent(&self, rollout_id: &str, name: &str) -> Result<String, Status> {
        let store = &self.shared.store;
        if store.agent(name).map_err(internal)?.is_some() {
            return Ok(name.to_owned());
        }
        let matching: Vec<String> = store
            .agents()
            .map_err(internal)?
            .into_iter()
            .filter(|a| a.hostname.eq_ignore_ascii_case(name))
            .map(|a| a.id)
            .collect();
        let in_rollout: Vec<&String> = matching
            .iter()
            .filter(|id| {
                store
                    .action(&ActionRecord::id_for(rollout_id, id))
                    .ok()
                    .flatten()
                    .is_some()
            })
            .collect();
        match (matching.len(), in_rollout.as_slice()) {
            (0, _) => Err(Status::not_found(format!(
                "no agent with id or hostname {name:?}"
            ))),
            (1, _) => Ok(matching[0].clone()),
            (_, [one]) => Ok((*one).clone()),
            _ => Err(Status::invalid_argument(format!(
                "hostname {name:?} names {} agents ({}); pass the agent id",
                matching.len(),
                matching.join(", ")
            ))),
        }
    }

    pub async fn get(
        &self,
        req: Request<v1::RolloutRef>,
    ) -> Result<Response<v1::RolloutStatus>, Status> {
        let id = &req.get_ref().id;
        let r = self
            .shared
            .store
            .rollout(id)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no rollout {id}; `rollcall rollout list` shows them"
                ))
            })?;
        self.status(&r, true)
    }

    pub async fn list(
        &self,
        _req: Request<v1::ListRolloutsRequest>,
    ) -> Result<Response<v1::ListRolloutsResponse>, Status> {
        let store = &self.shared.store;
        let env = self.shared.env(now());
        let agents = store.agents().map_err(internal)?;
        let mut rollouts = Vec::new();
        for r in store.rollouts().map_err(internal)? {
            let actions = store.actions_by_agent(&r.id).map_err(internal)?;
            rollouts.push(crate::rollout::report::build(
                store, &r, &agents, &actions, &env, false,
            ));
        }
        rollouts.sort_by_key(|r| r.created_at_unix);
        Ok(Response::new(v1::ListRolloutsResponse { rollouts }))
    }

    pub async fn update_site(
        &self,
        req: Request<v1::UpdateSiteRequest>,
    ) -> Result<Response<v1::SiteSummary>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let store = &self.shared.store;
        let mut site = store.site(&req.name).map_err(internal)?.ok_or_else(|| {
            Status::not_found(format!(
                "unknown site {:?}; `rollcall sites list` shows them (`rollcall sites add NAME` creates one)",
                req.name
            ))
        })?;
        site.set_windows(&req.windows, &req.time_zone, req.clear_windows)
            .map_err(Status::invalid_argument)?;
        let shown: Vec<String> = site.windows.iter().map(|w| w.to_string()).collect();
        let entry = super::audit_entry(
            &caller,
            "site set",
            format!(
                "{} windows [{}] tz {}",
                site.name,
                shown.join("; "),
                site.time_zone
            ),
        );
        store
            .audited(&entry, |tx| tx.put(Table::Sites, &site.name, &site))
            .map_err(internal)?;
        self.shared.store.flush().await.map_err(internal)?;
        // Agents holding work there get the new windows at once.
        self.shared.wake(&Wake::site(
            &site.name,
            format!("site {} windows changed", site.name),
        ));
        super::admin_api::site_summary(
            &self.shared,
            &site,
            &store.agents().map_err(internal)?,
            now(),
        )
        .map(Response::new)
    }
}
