//! Configuration profiles through real rollouts to a real agent: applied all or nothing inside the allowed
//! folders, drift repaired and reported (`agents show`), refused outside the allow-list with nothing written, a
//! newer version replacing an older one, and a removal version giving back what the profile replaced. The device
//! is a folder of the test's; a shell script stands in for systemctl.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rollcall_controller::cli::local::LocalAgent;
use rollcall_proto::v1;
use rollcall_tests::Cluster;

const SYSTEMCTL: &str = r#"state="$(dirname "$0")/units"
touch "$state"
case "$1" in
  is-enabled) grep -qx "$2" "$state" ;;
  enable) grep -qx "$2" "$state" || echo "$2" >> "$state" ;;
  disable) grep -vx "$2" "$state" > "$state.new"; mv "$state.new" "$state" ;;
  *) echo "unknown command $1" >&2; exit 2 ;;
esac
"#;

/// The test's device: `etc/` (the allowed folder, with a hosts file) and `srv/` (outside it), and the units
/// the systemctl stand-in keeps (cups enabled).
struct Device {
    root: PathBuf,
}

impl Device {
    fn new(root: PathBuf) -> Device {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::write(root.join("systemctl"), SYSTEMCTL).unwrap();
        std::fs::write(root.join("units"), "cups.service\n").unwrap();
        Device { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    fn settings(&self, agent: &LocalAgent) {
        std::fs::write(
            agent.data.with_extension("toml"),
            format!(
                "profile_paths = [{:?}]\nservice_manager = [\"sh\", {:?}]\nprofile_check_interval_secs = 1\n",
                self.path("etc").to_str().unwrap(),
                self.path("systemctl").to_str().unwrap()
            ),
        )
        .unwrap();
    }
}

fn profile_v1(d: &Device) -> String {
    format!(
        r#"[[directory]]
path = "{etc}/vpn"
mode = "0750"

[[file]]
path = "{etc}/vpn/client.conf"
source = "files/client.conf"
mode = "0640"
format = "ini"

[[setting]]
file = "{etc}/vpn/agent.ini"
section = "network"
key = "dns"
value = "10.0.0.53"

[[line]]
file = "{etc}/hosts"
line = "10.1.2.3 records.nss.local"

[[service]]
unit = "cups.service"
enabled = false
"#,
        etc = d.path("etc").display()
    )
}

const CLIENT_CONF: &str = "[vpn]\nserver = vpn.nss.local\n";

async fn roll(c: &Cluster, package: &str, version: &str) -> v1::RolloutStatus {
    let id = c.rollout(package, version, &[&["north"]]).await.unwrap();
    c.settle(&id).await.unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_applied_kept_applied_replaced_and_removed() {
    let mut c = Cluster::start().await.unwrap();
    let d = Device::new(c.path("device"));
    let mut agent = c.enroll("north", "mdc-01").await.unwrap();
    d.settings(&agent);
    agent.start().unwrap();

    // Applied: every item in place.
    c.publish_profile(
        "vpn",
        "1",
        1,
        &profile_v1(&d),
        &[("files/client.conf", CLIENT_CONF)],
    )
    .await
    .unwrap();
    let s = roll(&c, "vpn", "1").await;
    assert_eq!(s.state, v1::RolloutState::Completed as i32, "{s:?}");
    assert!(
        s.devices[0].detail.contains("profile vpn 1"),
        "{}",
        s.devices[0].detail
    );
    assert_eq!(d.read("etc/vpn/client.conf").as_deref(), Some(CLIENT_CONF));
    assert_eq!(mode(&d.path("etc/vpn/client.conf")), 0o640);
    assert_eq!(mode(&d.path("etc/vpn")), 0o750);
    assert!(d
        .read("etc/vpn/agent.ini")
        .unwrap()
        .contains("dns = 10.0.0.53"));
    assert_eq!(
        d.read("etc/hosts").as_deref(),
        Some("127.0.0.1 localhost\n10.1.2.3 records.nss.local\n")
    );
    assert_eq!(d.read("units").as_deref(), Some(""), "cups disabled");

    // Drift behind the agent's back: repaired within its check interval, and reported.
    std::fs::write(
        d.path("etc/vpn/client.conf"),
        "[vpn]\nserver = evil.example\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let drift = loop {
        let (code, out, err) = c
            .cli(&["--json", "agents", "show", "mdc-01"])
            .await
            .unwrap();
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let events = v["drift"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() {
            break events;
        }
        assert!(Instant::now() < deadline, "no drift reported: {out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        d.read("etc/vpn/client.conf").as_deref(),
        Some(CLIENT_CONF),
        "repaired"
    );
    assert_eq!(drift[0]["profile"], "vpn");
    assert!(
        drift[0]["item"].as_str().unwrap().contains("client.conf"),
        "{drift:?}"
    );
    assert_eq!(drift[0]["repaired"], true);
    let (_, out, _) = c.cli(&["agents", "show", "mdc-01"]).await.unwrap();
    assert!(
        out.contains("Configuration drift") && out.contains("repaired"),
        "{out}"
    );

    // Outside the allowed folders: refused on the device before anything is written.
    let outside = format!(
        "[[file]]\npath = \"{}\"\ncontent = \"x\"\n",
        d.path("srv/x.conf").display()
    );
    c.publish_profile("evil", "1", 1, &outside, &[])
        .await
        .unwrap();
    let s = roll(&c, "evil", "1").await;
    assert_eq!(s.devices[0].state, v1::ActionState::Failed as i32, "{s:?}");
    assert!(
        s.devices[0].detail.contains("outside the allowed folders"),
        "{}",
        s.devices[0].detail
    );
    assert!(!d.path("srv/x.conf").exists(), "nothing written");

    // A newer version without the hosts line: the line the profile added goes again.
    let v2 = profile_v1(&d).replace(
        &format!(
            "[[line]]\nfile = \"{}/hosts\"\nline = \"10.1.2.3 records.nss.local\"\n",
            d.path("etc").display()
        ),
        "",
    );
    c.publish_profile("vpn", "2", 2, &v2, &[("files/client.conf", CLIENT_CONF)])
        .await
        .unwrap();
    let s = roll(&c, "vpn", "2").await;
    assert_eq!(s.state, v1::RolloutState::Completed as i32, "{s:?}");
    assert_eq!(
        d.read("etc/hosts").as_deref(),
        Some("127.0.0.1 localhost\n")
    );
    assert_eq!(d.read("etc/vpn/client.conf").as_deref(), Some(CLIENT_CONF));

    // The removal version: the device is as it was before the profile.
    c.publish_profile("vpn", "3", 3, "[profile]\nremove = true\n", &[])
        .await
        .unwrap();
    let s = roll(&c, "vpn", "3").await;
    assert_eq!(s.state, v1::RolloutState::Completed as i32, "{s:?}");
    assert!(!d.path("etc/vpn").exists(), "the folder it made is gone");
    assert_eq!(
        d.read("etc/hosts").as_deref(),
        Some("127.0.0.1 localhost\n")
    );
    assert_eq!(
        d.read("units").as_deref(),
        Some("cups.service\n"),
        "cups enabled again"
    );

    agent.stop().await;
    c.agents.push(agent);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_package_without_a_valid_profile_is_refused_at_build() {
    let c = Cluster::start().await.unwrap();
    let e = c
        .publish_profile("bad", "1", 1, "[[file]\npath = 1\n", &[])
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("is not valid TOML"), "{e:#}");
    c.stop().await;
}
