//! Applying one version of a profile, all or nothing: a first version, a newer one replacing an older (items it
//! no longer manages put back when the older said `restore_on_remove`), the same version again (a drift re-check),
//! or a removal. Each is a plan of steps (undo an item, apply an item); the state of every target is saved
//! before the first step, and a failing step puts back every target already touched, in reverse order.

use std::path::Path;

use super::enforce::{differences, repair, undo};
use super::item::{clash, count, Item, Profile, Target};
use super::snapshot::{restore, Saved, Snapshot};
use super::store::Store;
use super::{drift, validate, Applied, Device, InstalledProfile, ProfileError};

/// One step of a plan.
enum Step<'a> {
    Apply(&'a Item),
    /// Put back an item no longer managed, from the state before rollcall touched it.
    Undo(&'a Item, &'a Saved),
}

impl Step<'_> {
    fn item(&self) -> &Item {
        match self {
            Step::Apply(item) | Step::Undo(item, _) => item,
        }
    }
}

/// What the steps did.
#[derive(Debug, Default)]
struct Counts {
    changed: usize,
    in_place: usize,
    undone: usize,
}

/// The installed version of a profile, as stored.
struct Old {
    profile: Result<Profile, ProfileError>,
    before: Snapshot,
}

impl Old {
    fn load(store: &Store, device: &Device, name: &str) -> Old {
        let before = store.before(name).unwrap_or_else(|e| {
            tracing::warn!(profile = %name, error = %e, "Saved state unreadable; its items cannot be put back.");
            Snapshot::default()
        });
        let profile = validate::profile(name, &store.payload(name), device);
        if let Err(e) = &profile {
            tracing::warn!(profile = %name, error = %e, "Installed profile unreadable; its items cannot be put back.");
        }
        Old { profile, before }
    }
}

/// `Profiles::apply`.
pub(crate) fn apply(
    store: &Store,
    device: &Device,
    name: &str,
    version: &str,
    payload: &Path,
    now: i64,
) -> Result<Applied, ProfileError> {
    check_name(name)?;
    if let Some((_, why)) = store.recover(device).into_iter().find(|(n, _)| n == name) {
        let reason = format!("an interrupted change could not be put back: {why}");
        return Err(ProfileError::store(name, &store.staging(name), reason));
    }
    let new = validate::profile(name, payload, device)?;
    let record = store.record(name)?;
    if new.remove {
        return remove(store, device, name, record, &new);
    }
    if let Some(record) = record.as_ref().filter(|r| r.version == version) {
        return Ok(recheck(store, device, record, now));
    }
    validate::check_folders(name, &new)?;
    refuse_conflicts(store, device, name, &new)?;
    let old = record.map(|_| Old::load(store, device, name));
    let (steps, left) = plan(old.as_ref(), &new);
    let txn = capture(name, &steps, device)?;
    let before = originals(&new, old.as_ref().map(|o| &o.before), &txn);
    store.stage(name, Some((payload, &new, &before)), &txn)?;
    let counts = run(store, device, name, &steps, &txn)?;
    let record = InstalledProfile {
        name: name.to_owned(),
        version: version.to_owned(),
        applied_at: now,
        items: new.items.len(),
    };
    commit(store, device, name, &txn, || store.commit(name, &record))?;

    let detail = describe(name, version, &counts, steps.len() - new.items.len(), left);
    Ok(Applied {
        changed: counts.changed + counts.undone,
        detail,
    })
}

/// The steps from the installed version to `new`: items it no longer manages put back first (when the installed
/// version said `restore_on_remove`), then every item of `new`. Also how many dropped items are left as they are.
fn plan<'a>(old: Option<&'a Old>, new: &'a Profile) -> (Vec<Step<'a>>, usize) {
    let Some((old, profile)) = old.and_then(|o| Some((o, o.profile.as_ref().ok()?))) else {
        return (new.items.iter().map(Step::Apply).collect(), 0);
    };
    let dropped: Vec<&Item> = profile
        .items
        .iter()
        .filter(|i| !new.items.iter().any(|n| n.label() == i.label()))
        .collect();
    let mut steps: Vec<Step> = Vec::new();
    if profile.restore_on_remove {
        let saved = |i: &&'a Item| old.before.get(&i.target()).map(|s| Step::Undo(i, s));
        steps.extend(dropped.iter().rev().filter_map(saved));
    }
    let left = dropped.len() - steps.len();
    steps.extend(new.items.iter().map(Step::Apply));
    (steps, left)
}

/// `profile vpn 2: 3 items changed, 2 already in place, 1 item no longer managed put back`.
fn describe(name: &str, version: &str, counts: &Counts, undone: usize, left: usize) -> String {
    let mut detail = format!(
        "profile {name} {version}: {} changed, {} already in place",
        count(counts.changed, "item"),
        counts.in_place
    );
    if undone > 0 {
        detail += &format!(", {} no longer managed put back", count(undone, "item"));
    }
    if left > 0 {
        detail += &format!(
            ", {} no longer managed {}",
            count(left, "item"),
            left_as_is(left)
        );
    }
    detail
}

/// A removal: every item put back from the state before rollcall (with `restore_on_remove`), then forgotten.
fn remove(
    store: &Store,
    device: &Device,
    name: &str,
    record: Option<InstalledProfile>,
    removal: &Profile,
) -> Result<Applied, ProfileError> {
    let Some(record) = record else {
        let detail = format!("profile {name} is not installed: nothing to remove");
        return Ok(Applied { changed: 0, detail });
    };
    let was = format!("profile {name} {} removed", record.version);
    if !removal.restore_on_remove {
        store.forget(name)?;
        let detail = format!(
            "{was}: {} {}",
            count(record.items, "item"),
            left_as_is(record.items)
        );
        return Ok(Applied { changed: 0, detail });
    }
    let old = Old::load(store, device, name);
    let profile = old.profile.map_err(|e| {
        let why = format!("its items cannot be put back ({e}); a removal with restore_on_remove = false forgets it");
        ProfileError::invalid(name, "profile.toml", why)
    })?;
    let steps: Vec<Step> = profile
        .items
        .iter()
        .rev()
        .filter_map(|i| old.before.get(&i.target()).map(|s| Step::Undo(i, s)))
        .collect();
    let txn = capture(name, &steps, device)?;
    store.stage(name, None, &txn)?;
    let counts = run(store, device, name, &steps, &txn)?;
    commit(store, device, name, &txn, || store.forget(name))?;
    let detail = format!(
        "{was}: {} put back, {} already as before",
        count(counts.undone, "item"),
        profile.items.len() - counts.undone
    );
    Ok(Applied {
        changed: counts.undone,
        detail,
    })
}

/// The same version again: nothing to install, but what drifted is repaired.
fn recheck(store: &Store, device: &Device, record: &InstalledProfile, now: i64) -> Applied {
    let events = drift::check_profile(store, device, &record.name, now);
    let repaired = events.iter().filter(|e| e.repaired).count();
    let mut detail = format!(
        "profile {} {} is already applied: {} repaired, {} in place",
        record.name,
        record.version,
        count(repaired, "item"),
        record.items.saturating_sub(events.len())
    );
    for failed in events.iter().filter(|e| !e.repaired) {
        detail += &format!("; {} {}: {}", failed.item, failed.what, failed.error);
    }
    Applied {
        changed: repaired,
        detail,
    }
}

fn left_as_is(n: usize) -> &'static str {
    if n == 1 {
        "left as it is"
    } else {
        "left as they are"
    }
}

fn check_name(name: &str) -> Result<(), ProfileError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ProfileError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Two profiles managing the same thing would undo each other at every drift check.
fn refuse_conflicts(
    store: &Store,
    device: &Device,
    name: &str,
    new: &Profile,
) -> Result<(), ProfileError> {
    for other in store.names().into_iter().filter(|o| o != name) {
        let Ok(installed) = validate::profile(&other, &store.payload(&other), device) else {
            continue;
        };
        for item in &new.items {
            if installed.items.iter().any(|i| clash(i, item).is_some()) {
                return Err(ProfileError::Conflict {
                    profile: name.to_owned(),
                    item: item.label(),
                    other,
                });
            }
        }
    }
    Ok(())
}

/// The state of every target the steps touch, right before the first.
fn capture(name: &str, steps: &[Step], device: &Device) -> Result<Snapshot, ProfileError> {
    let targets = steps.iter().map(|s| s.item().target()).collect();
    Snapshot::capture(targets, device).map_err(|(target, e)| {
        ProfileError::invalid(
            name,
            &target.to_string(),
            format!("cannot save it before changing it: {e}"),
        )
    })
}

/// The state before rollcall of each target the new version manages: kept from the installed version where it
/// had one, else as it is now.
fn originals(new: &Profile, old: Option<&Snapshot>, txn: &Snapshot) -> Snapshot {
    let targets: Vec<Target> = new.items.iter().map(Item::target).collect();
    let mut before = Snapshot::default();
    for target in targets {
        let saved = old
            .and_then(|o| o.get(&target))
            .or_else(|| txn.get(&target));
        if let (None, Some(saved)) = (before.get(&target), saved) {
            before.entries.push(super::snapshot::Entry {
                target,
                saved: saved.clone(),
            });
        }
    }
    before
}

/// Runs the steps; on the first failure every target touched is put back and the staged state dropped.
fn run(
    store: &Store,
    device: &Device,
    name: &str,
    steps: &[Step],
    txn: &Snapshot,
) -> Result<Counts, ProfileError> {
    let mut counts = Counts::default();
    let mut touched: Vec<Target> = Vec::new();
    for step in steps {
        let item = step.item();
        touched.push(item.target());
        let done = match step {
            Step::Apply(item) => apply_item(item, device).map(|changed| {
                let n = if changed {
                    &mut counts.changed
                } else {
                    &mut counts.in_place
                };
                *n += 1;
            }),
            Step::Undo(item, saved) => {
                undo(item, saved, device).map(|changed| counts.undone += usize::from(changed))
            }
        };
        if let Err(reason) = done {
            let partial = Snapshot {
                entries: txn
                    .entries
                    .iter()
                    .filter(|e| touched.contains(&e.target))
                    .cloned()
                    .collect(),
            };
            let rollback = rollback(&partial, device);
            store.discard(name);
            return Err(failure(name, &item.label(), reason, rollback));
        }
    }
    Ok(counts)
}

fn apply_item(item: &Item, device: &Device) -> Result<bool, String> {
    if differences(item, device)?.is_empty() {
        return Ok(false);
    }
    repair(item, device).map(|()| true)
}

/// Writes the record of a change; if that fails, the device is put back too, so it never runs a profile the
/// agent does not know it has.
fn commit(
    store: &Store,
    device: &Device,
    name: &str,
    txn: &Snapshot,
    write: impl FnOnce() -> Result<(), ProfileError>,
) -> Result<(), ProfileError> {
    let Err(e) = write() else {
        return Ok(());
    };
    let rollback = rollback(txn, device);
    store.discard(name);
    Err(failure(
        name,
        "recording the profile",
        e.to_string(),
        rollback,
    ))
}

fn failure(name: &str, item: &str, reason: String, rollback: Result<(), String>) -> ProfileError {
    match rollback {
        Ok(()) => ProfileError::Failed {
            profile: name.to_owned(),
            item: item.to_owned(),
            reason,
        },
        Err(rollback) => ProfileError::RollbackFailed {
            profile: name.to_owned(),
            item: item.to_owned(),
            reason,
            rollback,
        },
    }
}

/// Puts every target of `txn` back, last first; goes on past a failure and tells them all.
pub(crate) fn rollback(txn: &Snapshot, device: &Device) -> Result<(), String> {
    let errors: Vec<String> = txn
        .entries
        .iter()
        .rev()
        .filter_map(|e| {
            restore(&e.target, &e.saved, device)
                .err()
                .map(|why| format!("{}: {why}", e.target))
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use crate::profile::fixture::{is_root, Fixture};
    use crate::profile::InstalledProfile;

    const VPN: &str = "[[directory]]\npath = \"$ETC/vpn\"\nmode = \"0750\"\n\
        [[file]]\npath = \"$ETC/vpn/client.conf\"\ncontent = \"server = vpn.nss.local\\n\"\nmode = \"0640\"\nformat = \"ini\"\n\
        [[setting]]\nfile = \"$ETC/agent.ini\"\nsection = \"network\"\nkey = \"dns\"\nvalue = \"10.0.0.53\"\n\
        [[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n\
        [[service]]\nunit = \"cups.service\"\nenabled = false\n";

    fn original(fx: &Fixture) {
        std::fs::write(fx.etc.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(fx.etc.join("agent.ini"), "[network]\ndns = 1.1.1.1\n").unwrap();
        fx.enable("cups.service");
    }

    #[test]
    fn applies_every_item_and_keeps_what_was_there_before() {
        let fx = Fixture::new();
        original(&fx);
        let applied = fx.apply("vpn", "1", VPN).unwrap();
        assert_eq!(
            applied.detail,
            "profile vpn 1: 5 items changed, 0 already in place"
        );
        assert_eq!(applied.changed, 5);
        assert_eq!(fx.read("vpn/client.conf"), "server = vpn.nss.local\n");
        assert_eq!(fx.read("agent.ini"), "[network]\ndns = 10.0.0.53\n");
        assert_eq!(
            fx.read("hosts"),
            "127.0.0.1 localhost\n10.1.2.3 records.nss.local\n"
        );
        assert_eq!(fx.units(), "");
        let tree = fx.tree();
        assert_eq!(tree["etc/vpn"], format!("dir 750 {}", owner(&fx)));
        assert!(tree["etc/vpn/client.conf"].starts_with("file 640 "));
        assert!(
            !tree.keys().any(|k| k.contains(".rollcall-tmp-")),
            "no temp file left"
        );
        assert!(fx.root().join("vpn/before/index.json").is_file());
        assert!(fx.root().join("vpn/payload/profile.toml").is_file());
        assert_eq!(
            fx.profiles.installed(),
            vec![InstalledProfile {
                name: "vpn".into(),
                version: "1".into(),
                applied_at: 100,
                items: 5
            }]
        );
    }

    #[test]
    fn owners_are_set_by_name_or_number() {
        let fx = Fixture::new();
        if !is_root() {
            eprintln!("not root: chown not checked");
            return;
        }
        let toml = "[[directory]]\npath = \"$ETC/certs\"\nowner = 4321\ngroup = \"4322\"\n\
                    [[file]]\npath = \"$ETC/certs/ca.pem\"\ncontent = \"pem\"\nowner = \"daemon\"\ngroup = \"root\"\nmode = \"0600\"\n";
        fx.apply("vpn", "1", toml).unwrap();
        let tree = fx.tree();
        assert_eq!(tree["etc/certs"].split(' ').nth(2), Some("4321:4322"));
        assert_eq!(tree["etc/certs/ca.pem"], "file 600 1:0 pem");
    }

    #[test]
    fn a_failing_item_puts_back_every_item_before_it() {
        let fx = Fixture::new();
        original(&fx);
        std::fs::create_dir(fx.etc.join("in-the-way")).unwrap();
        std::fs::write(fx.etc.join("in-the-way/keep"), "").unwrap();
        let before = fx.tree();
        let broken = format!("{VPN}[[service]]\nunit = \"broken.service\"\nenabled = true\n");
        let e = fx.apply("vpn", "1", &broken).unwrap_err().to_string();
        assert!(
            e.starts_with("profile vpn: service broken.service failed: ")
                && e.contains("enable broken.service exited with 1")
                && e.ends_with("; everything the profile changed before it was put back"),
            "{e}"
        );
        assert_eq!(
            fx.tree(),
            before,
            "the device is exactly as before, and no profile is recorded"
        );

        let in_the_way = format!("{VPN}[[file]]\npath = \"$ETC/in-the-way\"\ncontent = \"x\"\n");
        let e = fx.apply("vpn", "1", &in_the_way).unwrap_err().to_string();
        assert!(
            e.starts_with(&fx.expand("profile vpn: file $ETC/in-the-way failed: ")),
            "{e}"
        );
        assert_eq!(fx.tree(), before);
        assert!(fx.profiles.installed().is_empty());
    }

    #[test]
    fn a_newer_version_keeps_the_original_state_and_puts_back_what_it_drops() {
        let fx = Fixture::new();
        original(&fx);
        std::fs::write(fx.etc.join("old.conf"), "original\n").unwrap();
        let untouched = fx.tree();
        let v1 = "[[file]]\npath = \"$ETC/old.conf\"\ncontent = \"v1\\n\"\n\
                  [[file]]\npath = \"$ETC/new.conf\"\ncontent = \"new\\n\"\n\
                  [[setting]]\nfile = \"$ETC/agent.ini\"\nsection = \"network\"\nkey = \"dns\"\nvalue = \"10.0.0.53\"\n\
                  [[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n";
        fx.apply("vpn", "1", v1).unwrap();
        let v2 = "[[file]]\npath = \"$ETC/old.conf\"\ncontent = \"v2\\n\"\n\
                  [[setting]]\nfile = \"$ETC/agent.ini\"\nsection = \"network\"\nkey = \"dns\"\nvalue = \"10.0.0.54\"\n";
        let applied = fx.apply("vpn", "2", v2).unwrap();
        assert_eq!(
            applied.detail,
            "profile vpn 2: 2 items changed, 0 already in place, 2 items no longer managed put back"
        );
        assert_eq!(
            fx.read("hosts"),
            "127.0.0.1 localhost\n",
            "the dropped line is gone"
        );
        assert!(
            !fx.etc.join("new.conf").exists(),
            "the dropped file did not exist before"
        );
        assert_eq!(fx.read("old.conf"), "v2\n");
        assert_eq!(fx.profiles.installed()[0].version, "2");

        let removed = fx.apply("vpn", "3", "[profile]\nremove = true\n").unwrap();
        assert_eq!(
            removed.detail,
            "profile vpn 2 removed: 2 items put back, 0 already as before"
        );
        assert_eq!(
            fx.read("old.conf"),
            "original\n",
            "the state from before version 1 was kept"
        );
        assert_eq!(fx.read("agent.ini"), "[network]\ndns = 1.1.1.1\n");
        assert!(!fx.root().join("vpn").exists());
        assert!(fx.profiles.installed().is_empty());
        assert_eq!(
            fx.tree(),
            untouched,
            "the device as it was before version 1"
        );
    }

    #[test]
    fn without_restore_on_remove_items_stay_and_are_forgotten() {
        let fx = Fixture::new();
        original(&fx);
        let v1 = "[profile]\nrestore_on_remove = false\n\
                  [[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n\
                  [[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.4 cad.nss.local\"\n";
        fx.apply("vpn", "1", v1).unwrap();
        let v2 = "[[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.4 cad.nss.local\"\n";
        let applied = fx.apply("vpn", "2", v2).unwrap();
        assert_eq!(
            applied.detail,
            "profile vpn 2: 0 items changed, 1 already in place, 1 item no longer managed left as it is"
        );
        let both = "127.0.0.1 localhost\n10.1.2.3 records.nss.local\n10.1.2.4 cad.nss.local\n";
        assert_eq!(fx.read("hosts"), both);
        let removed = fx
            .apply(
                "vpn",
                "3",
                "[profile]\nremove = true\nrestore_on_remove = false\n",
            )
            .unwrap();
        assert_eq!(
            removed.detail,
            "profile vpn 2 removed: 1 item left as it is"
        );
        assert_eq!(fx.read("hosts"), both);
        assert!(!fx.root().join("vpn").exists());
        let again = fx.apply("vpn", "4", "[profile]\nremove = true\n").unwrap();
        assert_eq!(
            again.detail,
            "profile vpn is not installed: nothing to remove"
        );
    }

    #[test]
    fn a_failing_upgrade_leaves_the_installed_version_as_it_was() {
        let fx = Fixture::new();
        original(&fx);
        fx.apply("vpn", "1", VPN).unwrap();
        let before = fx.tree();
        let v2 = "[[file]]\npath = \"$ETC/agent.ini\"\ncontent = \"x\"\n\
                  [[service]]\nunit = \"broken.service\"\nenabled = true\n";
        let e = fx.apply("vpn", "2", v2).unwrap_err().to_string();
        assert!(e.contains("service broken.service failed"), "{e}");
        assert_eq!(fx.tree(), before, "version 1 and its records untouched");
        assert_eq!(fx.profiles.installed()[0].version, "1");
    }

    #[test]
    fn the_same_version_again_only_repairs_drift() {
        let fx = Fixture::new();
        original(&fx);
        fx.apply("vpn", "1", VPN).unwrap();
        std::fs::write(fx.etc.join("vpn/client.conf"), "server = evil\n").unwrap();
        let again = fx
            .apply(
                "vpn",
                "1",
                "[[file]]\npath = \"$ETC/ignored\"\ncontent = \"x\"\n",
            )
            .unwrap();
        assert_eq!(
            again.detail,
            "profile vpn 1 is already applied: 1 item repaired, 4 in place"
        );
        assert_eq!(again.changed, 1);
        assert_eq!(fx.read("vpn/client.conf"), "server = vpn.nss.local\n");
        assert!(
            !fx.etc.join("ignored").exists(),
            "the package of the same version is not applied"
        );
    }

    #[test]
    fn two_profiles_never_manage_the_same_item() {
        let fx = Fixture::new();
        original(&fx);
        fx.apply(
            "dns",
            "1",
            "[[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n",
        )
        .unwrap();
        let e = fx.refused("vpn", VPN);
        assert_eq!(
            e,
            fx.expand("profile vpn: line \"10.1.2.3 records.nss.local\" in $ETC/hosts is already managed by profile dns")
        );
        let other_line = "[[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.4 cad.nss.local\"\n";
        fx.apply("cad", "1", other_line)
            .expect("another line in the same file is fine");
    }

    fn owner(fx: &Fixture) -> String {
        let tree = fx.tree();
        tree["etc"].split(' ').nth(2).unwrap_or("").to_owned()
    }
}
