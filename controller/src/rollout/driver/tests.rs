//! The driver against a real sled store in a temp dir: whole rollouts, restarts, caps, windows, cancel, retries,
//! reports the controller does not know, and randomized interleavings of everything (property test).

use super::*;
use crate::model::rollout::ErrorLimit;
use crate::model::window::WindowSpec;
use crate::model::{Canary, SiteRecord};
use crate::rollout::commands::*;
use crate::store::temp_store;

fn agent(id: &str, site: &str) -> AgentRecord {
    AgentRecord {
        last_checkin: 1,
        enforces_windows: true,
        ..AgentRecord::new(id, &format!("host-{id}"), site, "linux-x86_64", 0)
    }
}

fn env(now: i64) -> Env {
    Env {
        now,
        cutoff: 7 * 86400,
        offline_after: 900,
    }
}

fn report(action_id: &str, state: ActionState, attempt: u32) -> v1::ActionReport {
    v1::ActionReport {
        action_id: action_id.into(),
        state: state.to_proto() as i32,
        attempt,
        ..Default::default()
    }
}

fn offered(store: &Store, id: &str, now: i64) -> Vec<v1::Assignment> {
    let a = store.agent(id).unwrap().unwrap();
    assignments_for(store, &a, &env(now)).unwrap().assignments
}

#[test]
fn a_two_wave_rollout_runs_to_completion_and_a_restart_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).unwrap();
        for (id, site) in [("a1", "north"), ("a2", "north"), ("b1", "south")] {
            store.put_agent(&agent(id, site)).unwrap();
        }
        store
            .put_rollout(&RolloutRecord::for_test(
                "r1",
                &["linux"],
                &[&["north"], &["south"]],
            ))
            .unwrap();
        tick(&store, &env(1)).unwrap();
        assert!(offered(&store, "b1", 1).is_empty(), "wave 2 closed");
        for id in ["a1", "a2"] {
            let got = offered(&store, id, 1);
            assert_eq!(got.len(), 1);
            assert_eq!(
                (got[0].action_id.as_str(), got[0].attempt),
                (format!("r1/{id}").as_str(), 1)
            );
        }
        apply_report(&store, "a1", &report("r1/a1", ActionState::Succeeded, 1), 3).unwrap();
        assert_eq!(
            apply_report(&store, "a1", &report("r1/a2", ActionState::Succeeded, 1), 3).unwrap(),
            ReportOutcome::Unknown,
            "an agent cannot report for another"
        );
        tick(&store, &env(4)).unwrap();
        assert!(
            !store.rollout("r1").unwrap().unwrap().waves[1].is_open(),
            "a2 is still working"
        );
        apply_report(&store, "a2", &report("r1/a2", ActionState::Succeeded, 1), 5).unwrap();
        let out = tick(&store, &env(6)).unwrap();
        assert!(
            out.wake
                .iter()
                .any(|w| w.sites == Some(vec!["south".to_string()])),
            "south is woken"
        );
        store.db_flush_for_test();
    }
    // A restart: the same data, the rollout resumes at wave 2.
    let store = crate::store::reopen_for_test(&path);
    let r = store.rollout("r1").unwrap().unwrap();
    assert_eq!(
        (r.state, r.waves[1].is_open()),
        (RolloutState::Running, true)
    );
    assert_eq!(offered(&store, "b1", 7).len(), 1);
    apply_report(&store, "b1", &report("r1/b1", ActionState::Succeeded, 1), 8).unwrap();
    tick(&store, &env(9)).unwrap();
    assert_eq!(
        store.rollout("r1").unwrap().unwrap().state,
        RolloutState::Completed
    );

    // Desired state: a device that joins a site later still gets the package from the completed rollout...
    store.put_agent(&agent("late", "south")).unwrap();
    assert_eq!(offered(&store, "late", 10).len(), 1);
    // ...until a newer rollout of the package supersedes it.
    let mut r2 = RolloutRecord::for_test("r2", &["linux"], &[&["north"], &["south"]]);
    r2.state = RolloutState::Draft;
    store.put_rollout(&r2).unwrap();
    start(&store, "r2", 11).unwrap();
    assert_eq!(store.rollout("r1").unwrap().unwrap().superseded_by, "r2");
    store.put_agent(&agent("later", "south")).unwrap();
    let got = offered(&store, "later", 12);
    assert!(
        got.iter().all(|a| a.rollout_id != "r1"),
        "superseded: {got:?}"
    );
}

#[test]
fn skipped_devices_are_recorded_apart_and_never_succeed() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a1", "north")).unwrap();
    store
        .put_rollout(&RolloutRecord::for_test("r2", &["windows"], &[&["north"]]))
        .unwrap();
    tick(&store, &env(1)).unwrap();
    assert!(
        offered(&store, "a1", 1).is_empty(),
        "wrong platform is skipped, not offered"
    );
    let action = store.action("r2/a1").unwrap().unwrap();
    assert_eq!(action.state, ActionState::Skipped);
    assert!(action
        .detail
        .contains("package supports windows but the device is linux-x86_64"));
    let r = store.rollout("r2").unwrap().unwrap();
    let actions = store.actions_by_agent("r2").unwrap();
    let t = tallies(&r, &store.agents().unwrap(), &actions, &env(2), &store);
    assert_eq!((t[0].succeeded, t[0].skipped), (0, 1));
}

#[test]
fn failed_devices_retry_automatically_and_keep_every_attempt() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a1", "north")).unwrap();
    for i in 0..30 {
        store.put_agent(&agent(&format!("n{i}"), "north")).unwrap();
    }
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    r.retries = 2;
    r.retry_delay_secs = 100;
    store.put_rollout(&r).unwrap();
    tick(&store, &env(1)).unwrap();
    assert_eq!(offered(&store, "a1", 1)[0].attempt, 1);
    let mut failed = report("r1/a1", ActionState::Failed, 1);
    failed.exit_code = Some(3);
    failed.detail = "install command exited 3".into();
    failed.output_tail = "E: dpkg was interrupted".into();
    apply_report(&store, "a1", &failed, 10).unwrap();
    tick(&store, &env(20)).unwrap();
    let r1 = store.rollout("r1").unwrap().unwrap();
    assert_eq!(
        r1.state,
        RolloutState::Running,
        "a failure with retries left does not pause"
    );
    tick(&store, &env(10 + 130)).unwrap();
    let a = store.action("r1/a1").unwrap().unwrap();
    assert_eq!(
        (a.state, a.attempt, a.retries_left),
        (ActionState::Pending, 2, 1)
    );
    assert_eq!(a.history.len(), 1);
    assert_eq!(a.history[0].exit_code, Some(3));
    assert_eq!(a.history[0].output_tail, "E: dpkg was interrupted");
    let again = offered(&store, "a1", 150);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(
        apply_report(
            &store,
            "a1",
            &report("r1/a1", ActionState::Succeeded, 1),
            151
        )
        .unwrap(),
        ReportOutcome::Ignored,
        "a late report of attempt 1 does not count"
    );
    apply_report(
        &store,
        "a1",
        &report("r1/a1", ActionState::Succeeded, 2),
        152,
    )
    .unwrap();
    let a = store.action("r1/a1").unwrap().unwrap();
    assert_eq!((a.state, a.history.len()), (ActionState::Succeeded, 1));
}

#[test]
fn the_error_threshold_pauses_and_resume_gives_failed_devices_a_new_attempt() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a1", "north")).unwrap();
    let mut ghost = agent("ghost", "north");
    ghost.last_checkin = 0;
    ghost.enrolled_at = -8 * 86400;
    store.put_agent(&ghost).unwrap();
    let mut r = RolloutRecord::for_test("r4", &["linux"], &[&["north"]]);
    r.waves[0].gates.error = ErrorLimit::Count(1);
    store.put_rollout(&r).unwrap();
    tick(&store, &env(1)).unwrap();
    offered(&store, "a1", 1);
    apply_report(&store, "a1", &report("r4/a1", ActionState::Failed, 1), 2).unwrap();
    tick(&store, &env(3)).unwrap();
    let paused = store.rollout("r4").unwrap().unwrap();
    assert_eq!(paused.state, RolloutState::Paused);
    assert!(
        paused.reason.contains("1 of 1 devices failed"),
        "{}",
        paused.reason
    );
    let (_, retried) = resume(&store, "r4", "admin", 4).unwrap();
    assert_eq!(retried, ["a1"]);
    tick(&store, &env(5)).unwrap();
    assert_eq!(
        store.rollout("r4").unwrap().unwrap().state,
        RolloutState::Running,
        "not paused again"
    );
    assert_eq!(offered(&store, "a1", 6)[0].attempt, 2);
    apply_report(&store, "a1", &report("r4/a1", ActionState::Succeeded, 2), 8).unwrap();
    tick(&store, &env(9)).unwrap();
    assert_eq!(
        store.rollout("r4").unwrap().unwrap().state,
        RolloutState::Completed,
        "the agent that enrolled a week ago and never checked in does not hold the wave"
    );
}

#[test]
fn the_site_cap_is_never_exceeded_and_frees_as_downloads_finish() {
    let (_dir, store) = temp_store();
    let ids: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    for id in &ids {
        store.put_agent(&agent(id, "north")).unwrap();
    }
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    r.max_per_site = 2;
    store.put_rollout(&r).unwrap();
    tick(&store, &env(1)).unwrap();
    let mut held = 0;
    for id in &ids {
        let a = store.agent(id).unwrap().unwrap();
        let work = assignments_for(&store, &a, &env(2)).unwrap();
        held += usize::from(work.held);
    }
    assert_eq!(
        (
            site_downloads(&store, "r1", "north", &env(2)).unwrap(),
            held
        ),
        (2, 4)
    );
    apply_report(
        &store,
        "a0",
        &report("r1/a0", ActionState::Downloaded, 1),
        3,
    )
    .unwrap();
    assert_eq!(offered(&store, "a5", 4).len(), 1, "a slot freed");
    assert!(offered(&store, "a4", 4).is_empty());
}

#[test]
fn cancel_stops_offers_and_drops_work_that_has_not_started_installing() {
    let (_dir, store) = temp_store();
    for id in ["a", "b", "c", "d"] {
        store.put_agent(&agent(id, "north")).unwrap();
    }
    store
        .put_rollout(&RolloutRecord::for_test("r1", &["linux"], &[&["north"]]))
        .unwrap();
    tick(&store, &env(1)).unwrap();
    for id in ["a", "b", "c"] {
        offered(&store, id, 2);
    }
    apply_report(&store, "b", &report("r1/b", ActionState::Downloading, 1), 3).unwrap();
    apply_report(&store, "c", &report("r1/c", ActionState::Installing, 1), 3).unwrap();
    let (r, told) = cancel(&store, "r1", "admin", 4).unwrap();
    assert_eq!(r.state, RolloutState::Cancelled);
    assert_eq!(told, ["a", "b"], "c is installing: it finishes");
    assert!(offered(&store, "d", 5).is_empty(), "no new offers");
    assert!(offered(&store, "b", 5).is_empty(), "not even re-sends");
    assert_eq!(
        cancelled_for(&store, "b", &["r1/b".into()], 5).unwrap(),
        ["r1/b"],
        "an agent holding it is told to drop it"
    );
    assert!(cancelled_for(&store, "c", &["r1/c".into()], 5)
        .unwrap()
        .is_empty());
    apply_report(&store, "c", &report("r1/c", ActionState::Succeeded, 1), 6).unwrap();
    assert_eq!(
        store.action("r1/c").unwrap().unwrap().state,
        ActionState::Succeeded
    );
    // An install that started before the agent heard of the cancel still records its real outcome.
    apply_report(&store, "a", &report("r1/a", ActionState::Succeeded, 1), 7).unwrap();
    let a = store.action("r1/a").unwrap().unwrap();
    assert_eq!(a.state, ActionState::Succeeded);
    assert!(a.detail.contains("install had started before the cancel"));
    assert!(matches!(
        resume(&store, "r1", "admin", 8),
        Err(CommandError::Refused { .. })
    ));
    assert!(matches!(
        cancel(&store, "r1", "admin", 8),
        Err(CommandError::Refused { .. })
    ));
}

#[test]
fn refused_commands_change_nothing() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    let mut draft = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    draft.state = RolloutState::Draft;
    store.put_rollout(&draft).unwrap();
    let before = store.rollout("r1").unwrap();
    for e in [
        approve(&store, "r1", "admin", 1).map(|_| ()).unwrap_err(),
        resume(&store, "r1", "admin", 1).map(|_| ()).unwrap_err(),
        pause(&store, "r1", "admin", 1).map(|_| ()).unwrap_err(),
        retry(&store, "r1", &RetrySelection::Failed, "tech", 1)
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(matches!(e, CommandError::Refused { .. }), "{e}");
        assert!(e.to_string().contains("rollout r1 is draft"), "{e}");
    }
    assert_eq!(store.rollout("r1").unwrap(), before);
    assert!(matches!(
        start(&store, "nope", 1),
        Err(CommandError::NoRollout(_))
    ));

    start(&store, "r1", 2).unwrap();
    tick(&store, &env(2)).unwrap();
    offered(&store, "a", 3);
    let e = retry(&store, "r1", &RetrySelection::Agent("a".into()), "tech", 4).unwrap_err();
    assert!(
        e.to_string().contains("device a is offered; only failed"),
        "{e}"
    );
    let e = retry(&store, "r1", &RetrySelection::Agent("zz".into()), "tech", 4).unwrap_err();
    assert!(e.to_string().contains("device zz is not in it"), "{e}");
    assert!(matches!(
        delete_draft(&store, "r1", None),
        Err(CommandError::Refused { .. })
    ));
    assert_eq!(
        store.action("r1/a").unwrap().unwrap().attempt,
        1,
        "nothing changed"
    );

    let mut d2 = RolloutRecord::for_test("r2", &["linux"], &[&["north"]]);
    d2.state = RolloutState::Draft;
    store.put_rollout(&d2).unwrap();
    delete_draft(&store, "r2", None).unwrap();
    assert!(store.rollout("r2").unwrap().is_none());
}

#[test]
fn a_technician_retry_keeps_the_history() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    store.put_agent(&agent("b", "north")).unwrap();
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    r.waves[0].gates.error = ErrorLimit::Count(5);
    store.put_rollout(&r).unwrap();
    tick(&store, &env(1)).unwrap();
    offered(&store, "a", 1);
    apply_report(&store, "a", &report("r1/a", ActionState::RolledBack, 1), 2).unwrap();
    let got = retry(&store, "r1", &RetrySelection::Agent("a".into()), "tech1", 3).unwrap();
    assert_eq!(got, ["a"]);
    let a = store.action("r1/a").unwrap().unwrap();
    assert_eq!(
        (a.attempt, a.state, a.history.len()),
        (2, ActionState::Pending, 1)
    );
    assert!(a.detail.contains("retry requested by tech1"));
}

#[test]
fn reports_of_unknown_actions_are_not_dropped_silently() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    assert_eq!(
        apply_report(&store, "a", &report("r9/a", ActionState::Succeeded, 1), 1).unwrap(),
        ReportOutcome::Unknown
    );
    assert_eq!(
        cancelled_for(&store, "a", &["r9/a".into()], 2).unwrap(),
        ["r9/a"]
    );
}

#[test]
fn assignments_carry_the_site_windows_unless_urgent_or_past_the_deadline() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    let mut site = SiteRecord::new("north", 0);
    site.windows = vec!["daily 01:00-03:00".parse::<WindowSpec>().unwrap()];
    site.time_zone = "UTC".into();
    store.put_site(&site).unwrap();
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    store.put_rollout(&r).unwrap();
    tick(&store, &env(1)).unwrap();
    let now = 1_700_000_000 - 1_700_000_000 % 86400 + 12 * 3600; // noon UTC
    let got = offered(&store, "a", now);
    let windows = &got[0].install_windows;
    assert!(
        windows.len() >= 13,
        "two weeks of windows: {}",
        windows.len()
    );
    let first = &windows[0];
    assert_eq!(first.start_unix % 86400, 3600, "01:00 UTC");
    assert_eq!(first.end_unix - first.start_unix, 7200);
    assert!(first.start_unix > now);
    assert_eq!(got[0].install_not_before_unix, first.start_unix);

    r.urgent = true;
    store.put_rollout(&r).unwrap();
    assert!(
        offered(&store, "a", now)[0].install_windows.is_empty(),
        "urgent ignores windows"
    );
    r.urgent = false;
    r.deadline = now + 3 * 86400;
    store.put_rollout(&r).unwrap();
    let w = offered(&store, "a", now)[0].install_windows.clone();
    assert_eq!(
        w.last().unwrap().start_unix,
        r.deadline,
        "from the deadline on, any time"
    );
    assert!(w.iter().all(|x| x.start_unix <= r.deadline));
    assert!(offered(&store, "a", r.deadline)[0]
        .install_windows
        .is_empty());
}

#[test]
fn approval_and_scheduled_start_through_the_driver() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    store.put_agent(&agent("b", "south")).unwrap();
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["north"], &["south"]]);
    r.state = RolloutState::Draft;
    r.start_at = 100;
    r.waves[1].gates.approval = true;
    store.put_rollout(&r).unwrap();
    assert_eq!(
        start(&store, "r1", 50).unwrap().state,
        RolloutState::Scheduled
    );
    tick(&store, &env(60)).unwrap();
    assert!(offered(&store, "a", 60).is_empty(), "not yet");
    tick(&store, &env(100)).unwrap();
    assert_eq!(offered(&store, "a", 100).len(), 1);
    apply_report(&store, "a", &report("r1/a", ActionState::Succeeded, 1), 101).unwrap();
    tick(&store, &env(102)).unwrap();
    assert_eq!(
        store.rollout("r1").unwrap().unwrap().state,
        RolloutState::WaitingApproval
    );
    assert!(offered(&store, "b", 103).is_empty());
    let (_, wave) = approve(&store, "r1", "boss", 104).unwrap();
    assert_eq!(wave, 1);
    let out = tick(&store, &env(105)).unwrap();
    assert!(!out.wake.is_empty());
    assert_eq!(offered(&store, "b", 105).len(), 1);
    assert_eq!(
        store.rollout("r1").unwrap().unwrap().waves[1].approved_by,
        "boss"
    );
}

// === property test: random interleavings ===

/// xorshift64*: a small deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One simulated endpoint: what it holds, the reports it has not delivered, how often it installed.
#[derive(Default)]
struct Sim {
    holding: Option<(String, u32, Vec<v1::TimeRange>, u8)>,
    outbox: Vec<v1::ActionReport>,
    installs: u32,
    succeeded: bool,
    /// Fails the first install of each attempt 1 (retries then succeed).
    flaky: bool,
}

const WINDOW_SITE: &str = "south";

fn in_window(ranges: &[v1::TimeRange], now: i64) -> bool {
    ranges.is_empty()
        || ranges
            .iter()
            .any(|w| now >= w.start_unix && now < w.end_unix)
}

#[test]
fn random_interleavings_never_open_a_wave_early_exceed_a_cap_install_outside_a_window_or_lose_an_action(
) {
    for seed in 1..=16u64 {
        run_interleaving(seed);
    }
}

/// The success share of a wave recomputed from the raw action records (not the engine's tallies): which agents
/// are in which wave is known to the simulation.
fn oracle_share(store: &Store, wave: usize, ids: &[String]) -> (u32, u32) {
    let canary = ["a00", "a01", "a02"];
    let members: Vec<&String> = ids
        .iter()
        .filter(|id| {
            let i: usize = id[1..].parse().unwrap();
            let in_canary = canary.contains(&id.as_str());
            match wave {
                0 => in_canary,
                1 => !in_canary && i % 3 == 0,
                _ => !in_canary && i % 3 != 0,
            }
        })
        .collect();
    let succeeded = members
        .iter()
        .filter(|id| {
            store
                .action(&format!("r1/{id}"))
                .unwrap()
                .is_some_and(|a| a.state == ActionState::Succeeded)
        })
        .count();
    (succeeded as u32, members.len() as u32)
}

fn run_interleaving(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = Store::open(&path).unwrap();
    let sites = ["north", "south", "east"];
    let ids: Vec<String> = (0..18).map(|i| format!("a{i:02}")).collect();
    let mut sims: HashMap<String, Sim> = HashMap::new();
    let start_at = 1_700_000_000 - 1_700_000_000 % 86400; // midnight UTC
    for (i, id) in ids.iter().enumerate() {
        let mut a = agent(id, sites[i % 3]);
        a.last_checkin = start_at;
        store.put_agent(&a).unwrap();
        sims.insert(
            id.clone(),
            Sim {
                flaky: i % 5 == 0,
                ..Sim::default()
            },
        );
    }
    let mut south = SiteRecord::new(WINDOW_SITE, 0);
    south.windows = vec!["daily 01:00-03:00".parse::<WindowSpec>().unwrap()];
    south.time_zone = "UTC".into();
    store.put_site(&south).unwrap();
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&[], &["north"], &[]]);
    r.waves[0].canary = Some(Canary {
        percent: Some(20.0),
        count: None,
        members: vec!["a00".into(), "a01".into(), "a02".into()],
    });
    r.waves[0].gates.error = ErrorLimit::Count(10);
    r.waves[1].gates.error = ErrorLimit::Count(10);
    r.waves[1].gates.soak_secs = 120;
    r.waves[2].rest = true;
    r.waves[2].gates.error = ErrorLimit::Count(10);
    r.waves[2].gates.approval = true;
    r.max_per_site = 2;
    r.retries = 1;
    r.retry_delay_secs = 30;
    r.state = RolloutState::Draft;
    store.put_rollout(&r).unwrap();
    start(&store, "r1", start_at).unwrap();

    let mut now = start_at;
    // Every third seed cancels the rollout part-way.
    let cancel_at = (seed % 3 == 0).then(|| 500 + rng.below(700) as usize);
    let mut was_cancelled = false;
    let mut met = [0i64; 3];
    for step in 0..1500 {
        if Some(step) == cancel_at {
            cancel(&store, "r1", "admin", now).unwrap();
            was_cancelled = true;
        }
        match rng.below(100) {
            // The clock moves.
            0..=14 => now += rng.below(300) as i64 + 1,
            // The engine runs.
            15..=29 => {
                tick(&store, &env(now)).unwrap();
            }
            // An agent checks in: delivers reports, gets assignments and cancels.
            30..=64 => {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let sim = sims.get_mut(id).unwrap();
                let mut a = store.agent(id).unwrap().unwrap();
                a.last_checkin = now;
                store.put_agent(&a).unwrap();
                for rep in sim.outbox.drain(..) {
                    apply_report(&store, id, &rep, now).unwrap();
                }
                let work = assignments_for(&store, &a, &env(now)).unwrap();
                let open: Vec<String> = sim.holding.iter().map(|h| h.0.clone()).collect();
                let cancelled = cancelled_for(&store, id, &open, now).unwrap();
                if !cancelled.is_empty() {
                    sim.holding = None;
                }
                assert!(
                    !(was_cancelled && work.assignments.iter().any(|a| a.rollout_id == "r1")),
                    "seed {seed} step {step}: {id} handed work of a cancelled rollout"
                );
                for asg in work.assignments {
                    let fresh = sim
                        .holding
                        .as_ref()
                        .is_none_or(|h| h.0 != asg.action_id || h.1 != asg.attempt);
                    if fresh {
                        let busy = site_downloads(&store, "r1", &a.site, &env(now)).unwrap();
                        assert!(
                            busy <= 2,
                            "seed {seed} step {step}: offered with {busy} downloading at {}",
                            a.site
                        );
                    }
                    assert!(
                        !sim.succeeded,
                        "seed {seed} step {step}: {id} offered again after it succeeded"
                    );
                    match &mut sim.holding {
                        Some(h) if h.0 == asg.action_id && h.1 == asg.attempt => {
                            h.2 = asg.install_windows
                        }
                        Some(h) if h.0 == asg.action_id && h.1 > asg.attempt => {
                            panic!(
                                "seed {seed}: {id} sent an older attempt {} after {}",
                                asg.attempt, h.1
                            )
                        }
                        _ => {
                            sim.holding = Some((asg.action_id, asg.attempt, asg.install_windows, 0))
                        }
                    }
                }
            }
            // An agent works on what it holds: download, then install inside its window.
            65..=89 => {
                let id = &ids[rng.below(ids.len() as u64) as usize];
                let sim = sims.get_mut(id).unwrap();
                let Some((action, attempt, windows, stage)) = sim.holding.clone() else {
                    continue;
                };
                let mut rep = |state: ActionState| {
                    let mut r = report(&action, state, attempt);
                    r.report_id = format!("{action}#{}", rng.next());
                    r
                };
                match stage {
                    0 => {
                        sim.outbox.push(rep(ActionState::Downloading));
                        sim.holding.as_mut().unwrap().3 = 1;
                    }
                    1 => {
                        sim.outbox.push(rep(ActionState::Downloaded));
                        sim.holding.as_mut().unwrap().3 = 2;
                    }
                    _ if in_window(&windows, now) => {
                        let site = &store.agent(id).unwrap().unwrap().site;
                        if site == WINDOW_SITE {
                            let minute = (now % 86400) / 60;
                            assert!(
                                (60..180).contains(&minute),
                                "seed {seed}: {id} installs outside its window at minute {minute}"
                            );
                        }
                        sim.installs += 1;
                        let ok = !(sim.flaky && attempt == 1);
                        sim.outbox.push(rep(ActionState::Installing));
                        sim.outbox.push(rep(if ok {
                            ActionState::Succeeded
                        } else {
                            ActionState::Failed
                        }));
                        sim.succeeded |= ok;
                        sim.holding = None;
                    }
                    _ => {}
                }
            }
            // An admin pauses, resumes, approves.
            90..=92 => {
                let _ = pause(&store, "r1", "admin", now);
            }
            93..=95 => {
                let _ = resume(&store, "r1", "admin", now);
            }
            96..=97 => {
                let _ = approve(&store, "r1", "admin", now);
            }
            // The controller restarts (same data on disk).
            _ => {
                store.db_flush_for_test();
                drop(store);
                store = crate::store::reopen_for_test(&path);
            }
        }
        // Invariants after every step.
        let r = store.rollout("r1").unwrap().unwrap();
        for (i, w) in r.waves.iter().enumerate() {
            if w.threshold_met_at > 0 && met[i] == 0 {
                // The moment a wave reaches its success share, the raw records agree.
                let (ok, members) = oracle_share(&store, i, &ids);
                assert!(
                    f64::from(ok) * 100.0 >= w.gates.success_percent * f64::from(members),
                    "seed {seed} step {step}: wave {} marked at its threshold with {ok} of {members}",
                    i + 1
                );
                met[i] = w.threshold_met_at;
            }
            if w.passed_at > 0 {
                assert!(
                    w.passed_at >= w.threshold_met_at + w.gates.soak_secs as i64,
                    "seed {seed} step {step}: wave {} passed before its soak ended",
                    i + 1
                );
            }
            if w.is_open() && w.gates.approval {
                assert!(
                    !w.approved_by.is_empty(),
                    "seed {seed}: wave {} opened unapproved",
                    i + 1
                );
            }
        }
        for i in 1..r.waves.len() {
            if r.waves[i].is_open() {
                let prev = &r.waves[i - 1];
                assert!(
                    prev.passed_at > 0 && prev.passed_at <= r.waves[i].opened_at,
                    "seed {seed} step {step}: wave {} opened before wave {} passed",
                    i + 1,
                    i
                );
            }
        }
    }
    // Let everything finish: resume, then many rounds of honest work inside windows.
    let _ = resume(&store, "r1", "admin", now);
    for _ in 0..400 {
        now += 600;
        tick(&store, &env(now)).unwrap();
        let _ = approve(&store, "r1", "admin", now);
        for id in &ids {
            let sim = sims.get_mut(id).unwrap();
            let mut a = store.agent(id).unwrap().unwrap();
            a.last_checkin = now;
            store.put_agent(&a).unwrap();
            for rep in sim.outbox.drain(..) {
                apply_report(&store, id, &rep, now).unwrap();
            }
            for asg in assignments_for(&store, &a, &env(now)).unwrap().assignments {
                assert!(
                    !sim.succeeded,
                    "seed {seed}: {id} offered again after it succeeded"
                );
                if sim
                    .holding
                    .as_ref()
                    .is_none_or(|h| h.0 != asg.action_id || h.1 != asg.attempt)
                {
                    // Download at once (frees the site's slot), then wait for the window.
                    sim.outbox
                        .push(report(&asg.action_id, ActionState::Downloaded, asg.attempt));
                    sim.holding = Some((asg.action_id, asg.attempt, asg.install_windows, 2));
                }
            }
            let open: Vec<String> = sim.holding.iter().map(|h| h.0.clone()).collect();
            if !cancelled_for(&store, id, &open, now).unwrap().is_empty() {
                sim.holding = None;
            }
            if let Some((action, attempt, windows, _)) = sim.holding.clone() {
                if in_window(&windows, now) {
                    sim.installs += 1;
                    let ok = !(sim.flaky && attempt == 1);
                    sim.outbox.push(report(
                        &action,
                        if ok {
                            ActionState::Succeeded
                        } else {
                            ActionState::Failed
                        },
                        attempt,
                    ));
                    sim.succeeded |= ok;
                    sim.holding = None;
                }
            }
        }
        if store.rollout("r1").unwrap().unwrap().state == RolloutState::Completed
            && sims.values().all(|s| s.succeeded)
        {
            break;
        }
        if was_cancelled
            && sims
                .values()
                .all(|s| s.holding.is_none() && s.outbox.is_empty())
        {
            break;
        }
    }
    if was_cancelled {
        // No device is left in a state that needs a human: every action ended, no agent holds work.
        assert_eq!(
            store.rollout("r1").unwrap().unwrap().state,
            RolloutState::Cancelled
        );
        for a in store.actions_of("r1").unwrap() {
            assert!(
                a.state.is_terminal(),
                "seed {seed}: {} left {:?}",
                a.agent_id,
                a.state
            );
        }
        for (id, sim) in &sims {
            assert!(sim.holding.is_none(), "seed {seed}: {id} still holds work");
            assert!(
                sim.installs <= 2,
                "seed {seed}: {id} installed {} times",
                sim.installs
            );
        }
        return;
    }
    let r = store.rollout("r1").unwrap().unwrap();
    if r.state != RolloutState::Completed {
        for a in store.actions_of("r1").unwrap() {
            eprintln!(
                "{} {:?} attempt {} retries {} wave {} sim succeeded {} holding {:?} site {}",
                a.agent_id,
                a.state,
                a.attempt,
                a.retries_left,
                a.wave,
                sims[&a.agent_id].succeeded,
                sims[&a.agent_id].holding.as_ref().map(|h| (
                    h.0.clone(),
                    h.1,
                    h.2.len(),
                    h.2.first().map(|w| (w.start_unix - now, w.end_unix - now)),
                    h.3
                )),
                a.site
            );
        }
        eprintln!("{:#?}", r.waves);
    }
    assert_eq!(
        r.state,
        RolloutState::Completed,
        "seed {seed}: {}",
        r.reason
    );
    for (id, sim) in &sims {
        assert!(sim.succeeded, "seed {seed}: {id} never succeeded");
        let expected = if sim.flaky { 2 } else { 1 };
        assert!(
            sim.installs <= expected,
            "seed {seed}: {id} installed {} times",
            sim.installs
        );
        let action = store.action(&format!("r1/{id}")).unwrap().unwrap();
        assert_eq!(action.state, ActionState::Succeeded, "seed {seed}: {id}");
    }
}

#[test]
fn a_completed_rollout_retries_a_failed_late_joiner_when_it_checks_in() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    let mut r = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    r.retries = 1;
    r.retry_delay_secs = 10;
    store.put_rollout(&r).unwrap();
    tick(&store, &env(1)).unwrap();
    offered(&store, "a", 1);
    apply_report(&store, "a", &report("r1/a", ActionState::Succeeded, 1), 2).unwrap();
    tick(&store, &env(3)).unwrap();
    assert_eq!(
        store.rollout("r1").unwrap().unwrap().state,
        RolloutState::Completed
    );
    store.put_agent(&agent("late", "north")).unwrap();
    offered(&store, "late", 4);
    apply_report(
        &store,
        "late",
        &report("r1/late", ActionState::Failed, 1),
        5,
    )
    .unwrap();
    tick(&store, &env(100)).unwrap();
    assert_eq!(
        store.action("r1/late").unwrap().unwrap().attempt,
        1,
        "the engine leaves completed rollouts alone"
    );
    let got = offered(&store, "late", 100);
    assert_eq!(got[0].attempt, 2, "retried at its check-in");
    let a = store.action("r1/late").unwrap().unwrap();
    assert_eq!((a.retries_left, a.history.len()), (0, 1));
}

#[test]
fn a_cancel_left_half_done_or_a_superseded_rollout_is_finished_when_the_agent_checks_in() {
    let (_dir, store) = temp_store();
    for id in ["a", "b", "c"] {
        store.put_agent(&agent(id, "north")).unwrap();
    }
    store
        .put_rollout(&RolloutRecord::for_test("r1", &["linux"], &[&["north"]]))
        .unwrap();
    tick(&store, &env(1)).unwrap();
    for id in ["a", "b", "c"] {
        offered(&store, id, 2);
    }
    apply_report(&store, "a", &report("r1/a", ActionState::Downloaded, 1), 3).unwrap();
    apply_report(&store, "c", &report("r1/c", ActionState::Installing, 1), 3).unwrap();
    // A controller killed right after the rollout record said cancelled, before its actions were.
    store
        .update_rollout("r1", |mut r| {
            r.state = RolloutState::Cancelled;
            Some(r)
        })
        .unwrap();
    assert_eq!(
        cancelled_for(&store, "a", &["r1/a".into()], 4).unwrap(),
        ["r1/a"],
        "the downloaded action is dropped at the agent's next check-in"
    );
    let a = store.action("r1/a").unwrap().unwrap();
    assert_eq!(a.state, ActionState::Cancelled);
    assert!(
        a.detail.contains("rollout r1 was cancelled"),
        "{}",
        a.detail
    );
    assert!(
        cancelled_for(&store, "c", &["r1/c".into()], 4)
            .unwrap()
            .is_empty(),
        "an install that started finishes"
    );
    // A report of `installing` after the cancel cannot revive a cancelled action.
    assert_eq!(
        apply_report(&store, "a", &report("r1/a", ActionState::Installing, 1), 5).unwrap(),
        ReportOutcome::Ignored
    );
    assert_eq!(
        cancelled_for(&store, "a", &["r1/a".into()], 5).unwrap(),
        ["r1/a"]
    );

    // Superseded: a completed rollout's unfinished work is dropped too.
    let mut old = RolloutRecord::for_test("r2", &["linux"], &[&["north"]]);
    old.state = RolloutState::Completed;
    old.waves[0].opened_at = 1;
    store.put_rollout(&old).unwrap();
    offered(&store, "b", 6);
    store
        .update_rollout("r2", |mut r| {
            r.superseded_by = "r3".into();
            Some(r)
        })
        .unwrap();
    assert_eq!(
        cancelled_for(&store, "b", &["r2/b".into()], 7).unwrap(),
        ["r2/b"]
    );
    assert!(store
        .action("r2/b")
        .unwrap()
        .unwrap()
        .detail
        .contains("superseded by r3"));
}

#[test]
fn a_rollout_completing_after_a_newer_one_started_is_superseded_at_once() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    let mut old = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    old.started_at = 1;
    store.put_rollout(&old).unwrap();
    tick(&store, &env(1)).unwrap();
    offered(&store, "a", 1);
    let mut newer = RolloutRecord::for_test("r2", &["linux"], &[&["north"]]);
    newer.state = RolloutState::Draft;
    newer.version = "2.0".into();
    store.put_rollout(&newer).unwrap();
    start(&store, "r2", 2).unwrap();
    assert_eq!(
        store.rollout("r1").unwrap().unwrap().superseded_by,
        "",
        "r1 was still running"
    );
    apply_report(&store, "a", &report("r1/a", ActionState::Succeeded, 1), 3).unwrap();
    tick(&store, &env(4)).unwrap();
    let r1 = store.rollout("r1").unwrap().unwrap();
    assert_eq!(
        (r1.state, r1.superseded_by.as_str()),
        (RolloutState::Completed, "r2")
    );
}

#[test]
fn windows_that_cannot_be_read_hold_everything_and_older_agents_install_only_inside_them() {
    let (_dir, store) = temp_store();
    let mut older = agent("old", "north");
    older.enforces_windows = false;
    store.put_agent(&older).unwrap();
    store.put_agent(&agent("new", "north")).unwrap();
    let mut site = SiteRecord::new("north", 0);
    site.windows = vec!["daily 01:00-03:00".parse::<WindowSpec>().unwrap()];
    site.time_zone = "UTC".into();
    store.put_site(&site).unwrap();
    store
        .put_rollout(&RolloutRecord::for_test("r1", &["linux"], &[&["north"]]))
        .unwrap();
    tick(&store, &env(1)).unwrap();
    let noon = 1_700_000_000 - 1_700_000_000 % 86400 + 12 * 3600;
    assert_eq!(
        offered(&store, "new", noon).len(),
        1,
        "downloads any time, installs in the window"
    );
    assert!(
        offered(&store, "old", noon).is_empty(),
        "an agent that does not enforce windows waits"
    );
    assert_eq!(
        offered(&store, "old", noon + 14 * 3600).len(),
        1,
        "02:00: inside the window"
    );
    // A time zone this controller cannot resolve: nothing is handed out (fail closed).
    site.time_zone = "Mars/Olympus_Mons".into();
    store.put_site(&site).unwrap();
    assert!(offered(&store, "new", noon).is_empty());
}

#[test]
fn a_command_and_its_audit_entry_land_together_or_not_at_all() {
    let (_dir, store) = temp_store();
    store.put_agent(&agent("a", "north")).unwrap();
    let mut draft = RolloutRecord::for_test("r1", &["linux"], &[&["north"]]);
    draft.state = RolloutState::Draft;
    let entry = |action: &str| crate::store::AuditEntry {
        at: 1,
        actor: "jdoe".into(),
        action: action.into(),
        detail: "r1".into(),
        from: "127.0.0.1:1".into(),
        result: "ok".into(),
    };
    store
        .put_rollout_audited(&draft, Some(&entry("rollout create")))
        .unwrap();
    // Refused: neither the change nor the entry.
    let paused = entry("rollout pause");
    let by = By {
        name: "jdoe",
        audit: Some(&paused),
    };
    pause(&store, "r1", by, 1).unwrap_err();
    let actions = |store: &crate::store::Store| -> Vec<String> {
        store
            .audit_log()
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    };
    assert_eq!(actions(&store), ["rollout create"]);
    // Applied: both.
    start_audited(&store, "r1", Some(&entry("rollout start")), 2).unwrap();
    pause(&store, "r1", by, 3).unwrap();
    assert_eq!(
        actions(&store),
        ["rollout create", "rollout start", "rollout pause"]
    );
    assert_eq!(
        store.rollout("r1").unwrap().unwrap().state,
        RolloutState::Paused
    );
    cancel(
        &store,
        "r1",
        By {
            name: "jdoe",
            audit: Some(&entry("rollout cancel")),
        },
        4,
    )
    .unwrap();
    let mut other = RolloutRecord::for_test("r2", &["linux"], &[&["north"]]);
    other.state = RolloutState::Draft;
    store.put_rollout(&other).unwrap();
    delete_draft(&store, "r2", Some(&entry("rollout delete"))).unwrap();
    assert!(store.rollout("r2").unwrap().is_none());
    assert_eq!(
        actions(&store),
        [
            "rollout create",
            "rollout start",
            "rollout pause",
            "rollout cancel",
            "rollout delete"
        ]
    );
}

#[test]
fn a_retry_writes_one_entry_per_device_with_its_new_attempt() {
    let (_dir, store) = temp_store();
    for id in ["a", "b"] {
        store.put_agent(&agent(id, "north")).unwrap();
    }
    store
        .put_rollout(&RolloutRecord::for_test("r1", &["linux"], &[&["north"]]))
        .unwrap();
    tick(&store, &env(1)).unwrap();
    for id in ["a", "b"] {
        offered(&store, id, 2);
        let failed = report(&format!("r1/{id}"), ActionState::Failed, 1);
        apply_report(&store, id, &failed, 3).unwrap();
    }
    let entry = crate::store::AuditEntry {
        at: 4,
        actor: "jdoe".into(),
        action: "rollout retry".into(),
        detail: "r1".into(),
        from: String::new(),
        result: "ok".into(),
    };
    let by = By {
        name: "jdoe",
        audit: Some(&entry),
    };
    let mut retried = retry(&store, "r1", &RetrySelection::Failed, by, 4).unwrap();
    retried.sort();
    assert_eq!(retried, ["a", "b"]);
    let mut details: Vec<String> = store
        .audit_log()
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    details.sort();
    assert_eq!(details, ["r1 a", "r1 b"]);
    // Nothing left to retry: refused, and no entry.
    retry(&store, "r1", &RetrySelection::Failed, by, 5).unwrap_err();
    assert_eq!(store.audit_log().unwrap().len(), 2);
}
