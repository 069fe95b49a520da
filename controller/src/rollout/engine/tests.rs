//! Table tests of every gate and transition of `advance`, and of `offer`, `retry_due` and `choose_canary`.

use super::*;
use crate::model::rollout::{Canary, ErrorLimit, Gates};
use crate::model::InstalledRecord;

fn rollout(state: RolloutState, waves: usize) -> RolloutRecord {
    let names: Vec<String> = (0..waves).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let lists: Vec<&[&str]> = refs.iter().map(std::slice::from_ref).collect();
    let mut r = RolloutRecord::for_test("r1", &["linux"], &lists);
    r.state = state;
    r
}

/// A tally of `ok` succeeded, `failed` failed for good, `busy` in progress, `pending` pending.
fn t(ok: u32, failed: u32, busy: u32, pending: u32) -> Tally {
    let mut t = Tally::default();
    for (n, s) in [
        (ok, Standing::Succeeded),
        (failed, Standing::Failed),
        (busy, Standing::InProgress),
        (pending, Standing::Pending),
    ] {
        for _ in 0..n {
            t.add(s);
        }
    }
    t
}

fn open(r: &mut RolloutRecord, wave: usize, at: i64) {
    r.waves[wave].opened_at = at;
    r.current_wave = wave as u32;
}

/// Apply `advance` until it stops (bounded), returning every note.
fn settle(r: &mut RolloutRecord, tallies: &[Tally], now: i64) -> Vec<String> {
    let mut notes = Vec::new();
    for _ in 0..20 {
        match advance(r, tallies, now) {
            Some(step) => {
                notes.push(step.note);
                *r = step.record;
            }
            None => break,
        }
    }
    notes
}

#[test]
fn a_running_rollout_opens_its_first_wave() {
    let r = rollout(RolloutState::Running, 2);
    let step = advance(&r, &[t(0, 0, 0, 3), t(0, 0, 0, 3)], 10).unwrap();
    assert_eq!(step.opened, Some(0));
    assert_eq!(step.record.waves[0].opened_at, 10);
    assert_eq!(step.record.waves[1].opened_at, 0);
}

#[test]
fn success_threshold_table() {
    // (succeeded, failed-for-good, in progress, pending, threshold %, next wave opens)
    let cases = [
        (19, 0, 1, 0, 95.0, true),  // 95% of 20
        (18, 0, 2, 0, 95.0, false), // 90%
        (9, 0, 1, 0, 90.0, true),   // 90% of 10
        (10, 0, 0, 0, 100.0, true), // all
        (9, 0, 0, 1, 100.0, false), // one offline/pending holds a 100% gate
        (0, 0, 0, 0, 95.0, true),   // an empty wave passes
        (1, 0, 0, 99, 1.0, true),   // 1%
    ];
    for (ok, failed, busy, pending, needed, opens) in cases {
        let mut r = rollout(RolloutState::Running, 2);
        r.waves[0].gates.success_percent = needed;
        r.waves[0].gates.error = ErrorLimit::Count(1000);
        open(&mut r, 0, 1);
        settle(&mut r, &[t(ok, failed, busy, pending), t(0, 0, 0, 5)], 5);
        assert_eq!(
            r.waves[1].is_open(),
            opens,
            "{ok} ok {failed} failed {busy} busy {pending} pending at {needed}%"
        );
    }
}

#[test]
fn skipped_and_cancelled_devices_do_not_count_against_the_success_share() {
    let mut tally = t(19, 0, 0, 0);
    for _ in 0..5 {
        tally.add(Standing::Skipped);
    }
    tally.add(Standing::Cancelled);
    assert_eq!((tally.total, tally.eligible()), (25, 19));
    assert_eq!(tally.success_percent(), 100.0);
    assert_eq!(
        tally.succeeded, 19,
        "skipped devices are never counted as succeeded"
    );
}

#[test]
fn error_threshold_table() {
    // (failed for good, retrying, eligible total, limit, pauses)
    let cases = [
        (1, 0, 20, ErrorLimit::Count(1), true),
        (0, 3, 20, ErrorLimit::Count(1), false), // retries pending do not count yet
        (1, 0, 20, ErrorLimit::Percent(5.0), true), // 5%
        (1, 0, 40, ErrorLimit::Percent(5.0), false), // 2.5%
        (2, 0, 40, ErrorLimit::Percent(5.0), true),
        (2, 0, 40, ErrorLimit::Count(3), false),
    ];
    for (failed, retrying, total, limit, pauses) in cases {
        let mut r = rollout(RolloutState::Running, 2);
        r.waves[0].gates.error = limit;
        open(&mut r, 0, 1);
        let mut tally = t(0, failed, 0, total - failed - retrying);
        for _ in 0..retrying {
            tally.add(Standing::Retrying);
        }
        let next = advance(&r, &[tally, t(0, 0, 0, 1)], 5).map(|s| s.record);
        let paused = next
            .as_ref()
            .is_some_and(|n| n.state == RolloutState::Paused);
        assert_eq!(
            paused, pauses,
            "{failed} failed, {retrying} retrying of {total}, limit {limit:?}"
        );
        if let Some(n) = next.filter(|n| n.state == RolloutState::Paused) {
            assert!(
                n.reason.contains("wave 1 reached its error threshold"),
                "{}",
                n.reason
            );
            assert!(
                n.reason.contains("rollcall rollout resume r1"),
                "{}",
                n.reason
            );
            assert!(!n.waves[1].is_open(), "never opens the next wave");
        }
    }
}

#[test]
fn a_failure_in_an_earlier_open_wave_still_pauses() {
    let mut r = rollout(RolloutState::Running, 2);
    r.waves[0].gates.error = ErrorLimit::Count(1);
    open(&mut r, 0, 1);
    r.waves[0].threshold_met_at = 2;
    r.waves[0].passed_at = 2;
    open(&mut r, 1, 2);
    let step = advance(&r, &[t(9, 1, 0, 0), t(3, 0, 0, 0)], 5).unwrap();
    assert_eq!(step.record.state, RolloutState::Paused);
}

#[test]
fn soak_time_runs_from_the_threshold() {
    let mut r = rollout(RolloutState::Running, 2);
    r.waves[0].gates.soak_secs = 100;
    open(&mut r, 0, 1);
    let tallies = [t(10, 0, 0, 0), t(0, 0, 0, 5)];
    settle(&mut r, &tallies, 50);
    assert_eq!(r.waves[0].threshold_met_at, 50);
    assert!(!r.waves[1].is_open(), "soaking");
    settle(&mut r, &tallies, 149);
    assert!(!r.waves[1].is_open(), "1 s of soak left");
    settle(&mut r, &tallies, 150);
    assert!(r.waves[1].is_open());
    assert_eq!(r.waves[1].opened_at, 150);
    // A success share that drops later (a late joiner) does not restart the soak.
    assert_eq!(r.waves[0].threshold_met_at, 50);
}

#[test]
fn a_wave_deadline_stops_an_offline_device_holding_the_next_wave() {
    let mut r = rollout(RolloutState::Running, 2);
    r.waves[0].gates.deadline_secs = 86400;
    open(&mut r, 0, 1000);
    let tallies = [t(9, 0, 0, 1), t(0, 0, 0, 5)]; // 90% < 95%
    settle(&mut r, &tallies, 1000 + 86399);
    assert!(!r.waves[1].is_open());
    settle(&mut r, &tallies, 1000 + 86400);
    assert!(r.waves[1].is_open());
    assert!(r.waves[0].closed_by_deadline);
}

#[test]
fn approval_holds_the_next_wave_until_approved() {
    let mut r = rollout(RolloutState::Running, 2);
    r.waves[1].gates.approval = true;
    open(&mut r, 0, 1);
    let tallies = [t(5, 0, 0, 0), t(0, 0, 0, 5)];
    settle(&mut r, &tallies, 10);
    assert_eq!(r.state, RolloutState::WaitingApproval);
    assert!(
        r.reason.contains("rollcall rollout approve r1"),
        "{}",
        r.reason
    );
    assert!(!r.waves[1].is_open());
    assert!(settle(&mut r, &tallies, 20).is_empty(), "waits");
    // What `approve` does.
    r.waves[1].approved_by = "admin".into();
    r.state = r.state.on(RolloutEvent::Approve).unwrap();
    settle(&mut r, &tallies, 30);
    assert!(r.waves[1].is_open());
    assert_eq!(r.state, RolloutState::Running);
}

#[test]
fn overlap_opens_the_next_wave_after_the_soak_without_waiting_for_success() {
    let mut r = rollout(RolloutState::Running, 2);
    r.waves[0].gates.overlap = true;
    r.waves[0].gates.soak_secs = 60;
    open(&mut r, 0, 100);
    let tallies = [t(1, 0, 9, 0), t(0, 0, 0, 5)];
    settle(&mut r, &tallies, 159);
    assert!(!r.waves[1].is_open());
    settle(&mut r, &tallies, 160);
    assert!(r.waves[1].is_open(), "overlapping");
    assert_eq!(
        r.state,
        RolloutState::Running,
        "not complete: wave 1 has not passed"
    );
    let done = [t(10, 0, 0, 0), t(5, 0, 0, 0)];
    settle(&mut r, &done, 170);
    assert_eq!(
        r.state,
        RolloutState::Running,
        "wave 1 soaks from its threshold"
    );
    settle(&mut r, &done, 230);
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn waves_do_not_overlap_unless_asked() {
    let mut r = rollout(RolloutState::Running, 3);
    open(&mut r, 0, 1);
    let tallies = [t(1, 0, 9, 0), t(0, 0, 0, 5), t(0, 0, 0, 5)];
    for now in [2, 1000, 1_000_000] {
        settle(&mut r, &tallies, now);
        assert!(!r.waves[1].is_open(), "at {now}");
    }
}

#[test]
fn completion_needs_every_wave_to_pass() {
    let mut r = rollout(RolloutState::Running, 2);
    open(&mut r, 0, 1);
    let notes = settle(&mut r, &[t(5, 0, 0, 0), t(5, 0, 0, 0)], 10);
    assert_eq!(r.state, RolloutState::Completed, "{notes:?}");
    assert_eq!(r.finished_at, 10);
    assert!(
        advance(&r, &[t(5, 0, 0, 0), t(5, 0, 0, 0)], 11).is_none(),
        "completed is final for the engine"
    );
}

#[test]
fn a_rollout_is_not_complete_while_an_automatic_retry_is_coming() {
    let mut r = rollout(RolloutState::Running, 1);
    open(&mut r, 0, 1);
    let mut tally = t(19, 0, 0, 0);
    tally.add(Standing::Retrying);
    settle(&mut r, &[tally], 10);
    assert!(r.waves[0].passed_at > 0, "95% passed the gate");
    assert_eq!(r.state, RolloutState::Running, "one device still retries");
    settle(&mut r, &[t(20, 0, 0, 0)], 20);
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn a_scheduled_rollout_starts_at_its_time() {
    let mut r = rollout(RolloutState::Scheduled, 1);
    r.start_at = 100;
    assert!(advance(&r, &[t(0, 0, 0, 1)], 99).is_none());
    settle(&mut r, &[t(0, 0, 0, 1)], 100);
    assert_eq!(r.state, RolloutState::Running);
    assert_eq!((r.started_at, r.waves[0].opened_at), (100, 100));
}

#[test]
fn nothing_moves_in_other_states() {
    for state in [
        RolloutState::Draft,
        RolloutState::Paused,
        RolloutState::Completed,
        RolloutState::Cancelled,
    ] {
        let mut r = rollout(state, 2);
        open(&mut r, 0, 1);
        assert!(
            advance(&r, &[t(5, 0, 0, 0), t(5, 0, 0, 0)], 10).is_none(),
            "{state:?}"
        );
    }
}

fn agent(id: &str, site: &str) -> AgentRecord {
    AgentRecord {
        last_checkin: 1,
        ..AgentRecord::new(id, id, site, "linux-x86_64", 0)
    }
}

fn action(state: ActionState) -> ActionRecord {
    let mut a = ActionRecord::new("r1", "x", "s0", 0, state, 0, 0);
    a.state = state;
    a
}

#[test]
fn offer_table() {
    let mut r = rollout(RolloutState::Running, 2);
    open(&mut r, 0, 1);
    let a = agent("x", "s0");
    let b = agent("y", "s1");
    let free = || 0;
    assert_eq!(offer(&r, &a, None, true, &(), free), Offer::New { wave: 0 });
    assert_eq!(
        offer(&r, &b, None, true, &(), free),
        Offer::Nothing,
        "wave 2 not open"
    );
    assert_eq!(
        offer(&r, &agent("z", "elsewhere"), None, true, &(), free),
        Offer::Nothing,
        "not a target"
    );
    assert!(
        matches!(
            offer(&r, &a, None, false, &(), free),
            Offer::Skip { wave: 0, .. }
        ),
        "wrong platform"
    );
    let mut newer = a.clone();
    newer.installed.push(InstalledRecord {
        name: "app".into(),
        version: "2.0".into(),
        release_counter: 1,
        installed_at: 0,
    });
    match offer(&r, &newer, None, true, &(), free) {
        Offer::Skip { reason, .. } => assert!(reason.contains("already at app 2.0"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        offer(
            &r,
            &a,
            Some(&action(ActionState::Downloading)),
            true,
            &(),
            free
        ),
        Offer::Resend
    );
    assert_eq!(
        offer(&r, &a, Some(&action(ActionState::Pending)), true, &(), free),
        Offer::New { wave: 0 }
    );
    for done in [
        ActionState::Succeeded,
        ActionState::Failed,
        ActionState::Skipped,
        ActionState::Cancelled,
    ] {
        assert_eq!(
            offer(&r, &a, Some(&action(done)), true, &(), free),
            Offer::Nothing,
            "{done:?}"
        );
    }
    // The cap: new offers wait, devices already downloading keep going.
    r.max_per_site = 2;
    assert_eq!(offer(&r, &a, None, true, &(), || 2), Offer::Held);
    assert_eq!(offer(&r, &a, None, true, &(), || 1), Offer::New { wave: 0 });
    assert_eq!(
        offer(
            &r,
            &a,
            Some(&action(ActionState::Downloading)),
            true,
            &(),
            || 5
        ),
        Offer::Resend
    );
    // Paused: no new device starts; those working finish. Cancelled: nothing.
    r.state = RolloutState::Paused;
    assert_eq!(offer(&r, &a, None, true, &(), free), Offer::Nothing);
    assert_eq!(
        offer(
            &r,
            &a,
            Some(&action(ActionState::Downloaded)),
            true,
            &(),
            free
        ),
        Offer::Resend
    );
    r.state = RolloutState::Cancelled;
    assert_eq!(
        offer(
            &r,
            &a,
            Some(&action(ActionState::Downloaded)),
            true,
            &(),
            free
        ),
        Offer::Nothing
    );
    // Completed: late joiners still get it, until superseded.
    r.state = RolloutState::Completed;
    assert_eq!(offer(&r, &a, None, true, &(), free), Offer::New { wave: 0 });
    r.superseded_by = "r2".into();
    assert_eq!(offer(&r, &a, None, true, &(), free), Offer::Nothing);
}

#[test]
fn standing_table() {
    let env = Env {
        now: 10_000,
        cutoff: 7 * 86400,
        offline_after: 900,
    };
    let mut online = agent("x", "s0");
    online.last_checkin = 9_500;
    let mut offline = online.clone();
    offline.last_checkin = 10_000 - 1000;
    let mut gone = online.clone();
    gone.last_checkin = 10_000 - 8 * 86400;
    gone.enrolled_at = gone.last_checkin - 86400;
    let mut never = online.clone();
    never.last_checkin = 0;
    never.enrolled_at = 10_000 - 8 * 86400;
    let mut just_enrolled = never.clone();
    just_enrolled.enrolled_at = 9_990;
    let mut retrying = action(ActionState::Failed);
    retrying.retries_left = 1;
    let cases: &[(&AgentRecord, Option<ActionRecord>, Standing)] = &[
        (&online, None, Standing::Pending),
        (&offline, None, Standing::Offline),
        (&gone, None, Standing::Excluded),
        (&never, None, Standing::Excluded),
        (&just_enrolled, None, Standing::Offline),
        (
            &online,
            Some(action(ActionState::Downloading)),
            Standing::InProgress,
        ),
        (
            &offline,
            Some(action(ActionState::Downloading)),
            Standing::Offline,
        ),
        (
            &gone,
            Some(action(ActionState::Succeeded)),
            Standing::Succeeded,
        ),
        (&online, Some(action(ActionState::Failed)), Standing::Failed),
        (
            &online,
            Some(action(ActionState::RolledBack)),
            Standing::RolledBack,
        ),
        (&online, Some(retrying), Standing::Retrying),
        (
            &online,
            Some(action(ActionState::Skipped)),
            Standing::Skipped,
        ),
        (
            &online,
            Some(action(ActionState::Cancelled)),
            Standing::Cancelled,
        ),
    ];
    for (agent, action, expected) in cases {
        assert_eq!(
            Standing::of(agent, action.as_ref(), &env),
            *expected,
            "{:?}",
            action.as_ref().map(|a| a.state)
        );
    }
}

#[test]
fn retries_back_off_exponentially_with_a_little_spread() {
    let mut r = rollout(RolloutState::Running, 1);
    r.retry_delay_secs = 100;
    let mut a = action(ActionState::Failed);
    a.retries_left = 2;
    a.updated_at = 1000;
    let first = retry_delay(&a, &r);
    assert!((100..=120).contains(&first), "{first}");
    assert!(!retry_due(&a, &r, 1000 + first - 1));
    assert!(retry_due(&a, &r, 1000 + first));
    a.attempt = 2;
    let second = retry_delay(&a, &r);
    assert!((200..=240).contains(&second), "{second}");
    a.retries_left = 0;
    assert!(!retry_due(&a, &r, i64::MAX / 2), "no retries left");
    a.retries_left = 1;
    r.state = RolloutState::Completed;
    assert!(
        retry_due(&a, &r, i64::MAX / 2),
        "a late joiner of a completed rollout is retried (when it checks in)"
    );
    for state in [
        RolloutState::Cancelled,
        RolloutState::Paused,
        RolloutState::Draft,
    ] {
        r.state = state;
        assert!(
            !retry_due(&a, &r, i64::MAX / 2),
            "a {state} rollout retries nothing"
        );
    }
}

#[test]
fn the_canary_is_stable_spread_and_sized() {
    let agents: Vec<AgentRecord> = (0..40)
        .map(|i| agent(&format!("a{i:02}"), if i < 30 { "big" } else { "small" }))
        .collect();
    let refs: Vec<&AgentRecord> = agents.iter().collect();
    let c = choose_canary("r1", &refs, Some(10.0), None);
    assert_eq!(c.len(), 4);
    assert_eq!(
        c.iter()
            .filter(|id| agents.iter().any(|a| a.id == **id && a.site == "small"))
            .count(),
        1
    );
    assert_eq!(c, choose_canary("r1", &refs, Some(10.0), None), "stable");
    assert_ne!(
        c,
        choose_canary("r2", &refs, Some(10.0), None),
        "another rollout, another canary"
    );
    assert_eq!(
        choose_canary("r1", &refs, None, Some(100)).len(),
        40,
        "at most every candidate"
    );
    assert_eq!(
        choose_canary("r1", &refs, Some(0.1), None).len(),
        1,
        "rounded up"
    );
    assert!(choose_canary("r1", &[], Some(10.0), None).is_empty());
    let mut r = rollout(RolloutState::Running, 1);
    r.waves.insert(0, crate::model::WaveRecord::sites(vec![]));
    r.waves[0].canary = Some(Canary {
        percent: Some(10.0),
        count: None,
        members: c.clone(),
    });
    r.waves[0].gates = Gates {
        error: ErrorLimit::Count(1),
        ..Gates::default()
    };
    let member = agents.iter().find(|a| a.id == c[0]).unwrap();
    let mut member = member.clone();
    member.site = "s0".into();
    assert_eq!(
        r.wave_for(&member),
        Some(0),
        "the canary takes its members before their site's wave"
    );
}
