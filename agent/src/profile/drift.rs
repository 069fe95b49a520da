//! Drift: an installed profile's items compared with the device, from the profile's stored copy (no package
//! needed), each difference repaired with the same writes an apply uses and reported as one `DriftEvent`
//! (repaired, or not and why). Nothing differs, no event. A profile whose stored copy no longer passes its checks
//! (a symlink now leading outside the allow-list, an owner deleted) is not touched: one event says why.

use super::enforce::{differences, repair};
use super::item::Item;
use super::store::Store;
use super::{validate, Device, DriftEvent};

/// `Profiles::check`.
pub(crate) fn check_all(store: &Store, device: &Device, now: i64) -> Vec<DriftEvent> {
    let mut events: Vec<DriftEvent> = store
        .recover(device)
        .into_iter()
        .map(|(name, error)| DriftEvent {
            item: format!("profile {name}"),
            profile: name,
            what: "an interrupted change was not put back".to_owned(),
            at: now,
            repaired: false,
            error,
        })
        .collect();
    for name in store.names() {
        events.extend(check_profile(store, device, &name, now));
    }
    events
}

/// The drift events of one installed profile.
pub(crate) fn check_profile(
    store: &Store,
    device: &Device,
    name: &str,
    now: i64,
) -> Vec<DriftEvent> {
    match validate::profile(name, &store.payload(name), device) {
        Ok(profile) => profile
            .items
            .iter()
            .filter_map(|item| check_item(name, item, device, now))
            .collect(),
        Err(e) => vec![DriftEvent {
            profile: name.to_owned(),
            item: format!("profile {name}"),
            what: "cannot be checked".to_owned(),
            at: now,
            repaired: false,
            error: e.to_string(),
        }],
    }
}

fn check_item(name: &str, item: &Item, device: &Device, now: i64) -> Option<DriftEvent> {
    let (what, repaired) = match differences(item, device) {
        Ok(found) if found.is_empty() => return None,
        Ok(found) => (found.join(", "), repair(item, device)),
        Err(e) => ("cannot be checked".to_owned(), Err(e)),
    };
    Some(DriftEvent {
        profile: name.to_owned(),
        item: item.label(),
        what,
        at: now,
        repaired: repaired.is_ok(),
        error: repaired.err().unwrap_or_default(),
    })
}

/// Unix only: symlinks, modes and the fake systemctl.
#[cfg(all(test, unix))]
mod tests {
    use crate::profile::fixture::Fixture;
    use crate::profile::DriftEvent;

    const PROFILE: &str = "[[directory]]\npath = \"$ETC/vpn\"\nmode = \"0750\"\n\
        [[file]]\npath = \"$ETC/vpn/client.conf\"\nsource = \"files/client.conf\"\nmode = \"0644\"\n\
        [[setting]]\nfile = \"$ETC/agent.ini\"\nsection = \"network\"\nkey = \"dns\"\nvalue = \"10.0.0.53\"\n\
        [[line]]\nfile = \"$ETC/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n\
        [[service]]\nunit = \"cups.service\"\nenabled = false\n";

    fn installed() -> Fixture {
        let fx = Fixture::new();
        std::fs::create_dir(fx.payload.join("files")).unwrap();
        std::fs::write(
            fx.payload.join("files/client.conf"),
            "server = vpn.nss.local\n",
        )
        .unwrap();
        fx.apply("vpn", "1", PROFILE).unwrap();
        // Drift repair works from the stored copy: the package is gone.
        std::fs::remove_dir_all(&fx.payload).unwrap();
        std::fs::create_dir(&fx.payload).unwrap();
        fx
    }

    fn event(fx: &Fixture, item: &str, what: &str) -> DriftEvent {
        DriftEvent {
            profile: "vpn".into(),
            item: fx.expand(item),
            what: what.into(),
            at: 200,
            repaired: true,
            error: String::new(),
        }
    }

    #[test]
    fn every_drifted_item_is_repaired_and_reported_once() {
        let fx = installed();
        assert_eq!(fx.profiles.check(150), vec![], "no difference, no event");
        let clean = fx.tree();

        std::fs::write(fx.etc.join("vpn/client.conf"), "server = evil\n").unwrap();
        crate::platform::profile::set_mode(&fx.etc.join("vpn/client.conf"), 0o600).unwrap();
        crate::platform::profile::set_mode(&fx.etc.join("vpn"), 0o755).unwrap();
        std::fs::write(fx.etc.join("agent.ini"), "[network]\ndns = 1.1.1.1\n").unwrap();
        std::fs::remove_file(fx.etc.join("hosts")).unwrap();
        fx.enable("cups.service");

        assert_eq!(
            fx.profiles.check(200),
            vec![
                event(&fx, "directory $ETC/vpn", "mode 0755, wanted 0750"),
                event(
                    &fx,
                    "file $ETC/vpn/client.conf",
                    "content changed, mode 0600, wanted 0644"
                ),
                event(
                    &fx,
                    "setting dns in [network] of $ETC/agent.ini",
                    "value \"1.1.1.1\", wanted \"10.0.0.53\""
                ),
                event(
                    &fx,
                    "line \"10.1.2.3 records.nss.local\" in $ETC/hosts",
                    "missing"
                ),
                event(
                    &fx,
                    "service cups.service",
                    "unit cups.service is enabled, wanted disabled"
                ),
            ]
        );
        assert_eq!(
            fx.tree(),
            clean,
            "the device is as the profile wants it again"
        );
        assert_eq!(fx.profiles.check(300), vec![]);
    }

    #[test]
    fn a_repair_that_fails_is_reported_with_why() {
        let fx = installed();
        std::fs::remove_file(fx.etc.join("vpn/client.conf")).unwrap();
        std::fs::create_dir_all(fx.etc.join("vpn/client.conf/sub")).unwrap();
        let events = fx.profiles.check(200);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].what, "is a folder, wanted a file");
        assert!(!events[0].repaired);
        assert!(
            events[0]
                .error
                .starts_with(&fx.expand("cannot rename a temp file to $ETC/vpn/client.conf: ")),
            "{}",
            events[0].error
        );
    }

    #[test]
    fn a_symlink_that_now_leads_outside_stops_the_check_before_any_write() {
        let fx = Fixture::new();
        std::fs::create_dir(fx.etc.join("real")).unwrap();
        std::os::unix::fs::symlink(fx.etc.join("real"), fx.etc.join("link")).unwrap();
        fx.apply(
            "vpn",
            "1",
            "[[file]]\npath = \"$ETC/link/x.conf\"\ncontent = \"x\"\n",
        )
        .unwrap();
        assert_eq!(fx.read("real/x.conf"), "x");
        std::fs::remove_file(fx.etc.join("link")).unwrap();
        std::os::unix::fs::symlink(&fx.outside, fx.etc.join("link")).unwrap();
        let events = fx.profiles.check(200);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].item.as_str(), events[0].what.as_str()),
            ("profile vpn", "cannot be checked")
        );
        assert!(
            events[0]
                .error
                .contains("through a symlink, outside the allowed folders"),
            "{}",
            events[0].error
        );
        assert!(
            !fx.outside.join("x.conf").exists(),
            "nothing written outside"
        );
    }
}
