//! The audit trail: every change by a person, and every refusal of one, with who, what, when and from where,
//! readable with `rollcall audit` and streamed with the security events to a SIEM (JSON lines and RFC 5424
//! syslog over UDP, received here on 127.0.0.1).

use std::time::{Duration, Instant};

use rollcall_proto::v1;
use rollcall_tests::{agent_channel, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_refusals_are_audited_and_streamed_to_the_siem() {
    let syslog = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = syslog.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("security.jsonl");
    let c = Cluster::start_with_config(&format!(
        "security_log = {:?}\nsecurity_syslog = \"127.0.0.1:{port}\"\n",
        file.to_str().unwrap()
    ))
    .await
    .unwrap();

    let agent = c.enroll("north", "desk-1").await.unwrap();
    let id = rollcall_tests::agent_id(&agent.data).unwrap();
    let tech = c.path("jdoe");
    let (code, _, err) = c
        .cli(&[
            "users",
            "add",
            "jdoe",
            "--role",
            "tech",
            "--out",
            tech.to_str().unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    // Refused for the role, by the gate.
    let out = std::process::Command::new(rollcall_tests::bin("rollcall").unwrap())
        .arg("--creds")
        .arg(&tech)
        .args(["token", "create", "--site", "north"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Refused by the service, for the input.
    let (code, _, _) = c
        .cli(&["token", "create", "--site", "nowhere"])
        .await
        .unwrap();
    assert_eq!(code, 1);
    let (code, _, err) = c.cli(&["agents", "revoke", &id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    // A refused enrollment is a security event.
    let mut anon =
        v1::agent_service_client::AgentServiceClient::new(agent_channel(&c, None).await.unwrap());
    anon.enroll(v1::EnrollRequest {
        token: "rollcall1.forged".into(),
        hostname: "intruder".into(),
        platform: "linux-x86_64".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();

    let (code, out, err) = c.cli(&["audit", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let audit: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let find = |actor: &str, action: &str| {
        entries
            .iter()
            .find(|e| e["actor"] == actor && e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} by {actor} in {out}"))
    };
    assert_eq!(find("admin", "site add")["result"], "ok");
    assert_eq!(find("admin", "token create")["result"], "ok");
    assert_eq!(find("admin", "user add")["result"], "ok");
    assert_eq!(find("admin", "agent revoke")["result"], "ok");
    assert!(find("admin", "agent revoke")["detail"]
        .as_str()
        .unwrap()
        .contains(&id));
    let refused = find("jdoe", "CreateToken");
    assert!(
        refused["result"]
            .as_str()
            .unwrap()
            .contains("jdoe has the tech role; CreateToken needs admin"),
        "{refused}"
    );
    assert!(refused["from"].as_str().unwrap().starts_with("127.0.0.1:"));
    let refused = find("admin", "CreateToken");
    assert!(
        refused["result"]
            .as_str()
            .unwrap()
            .contains("no site nowhere"),
        "{refused}"
    );
    // Filters.
    let (_, out, _) = c.cli(&["audit", "--who", "jdoe", "--json"]).await.unwrap();
    let only: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(only["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "jdoe"));
    let (code, out, _) = c.cli(&["audit", "--since", "1h"]).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("agent revoke"), "{out}");
    let (code, _, err) = c.cli(&["audit", "--since", "yesterday"]).await.unwrap();
    assert_eq!(code, 64);
    assert!(err.contains("--since \"yesterday\""), "{err}");

    // The SIEM file: one JSON object per line, audit entries and security events.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        let seen = |kind: &str, event: &str| {
            lines
                .iter()
                .any(|l| l["kind"] == kind && l["event"] == event)
        };
        if seen("audit", "agent revoke")
            && seen("audit", "CreateToken")
            && seen("security", "enrollment refused")
        {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "missing from the SIEM file: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let enroll = lines
        .iter()
        .find(|l| l["event"] == "enrollment refused")
        .unwrap();
    assert_eq!(enroll["actor"], "intruder");
    assert!(enroll["result"]
        .as_str()
        .unwrap()
        .contains("unknown enrollment token"));

    // Syslog: RFC 5424, facility authpriv, warning for refusals.
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got
        .iter()
        .any(|m: &String| m.contains("enrollment refused"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, syslog.recv(&mut buf))
            .await
            .expect("no syslog message")
            .unwrap();
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let line = got
        .iter()
        .find(|m| m.contains("enrollment refused"))
        .unwrap();
    assert!(line.starts_with("<84>1 "), "{line}");
    assert!(line.contains(" rollcall-controller "), "{line}");
    assert!(
        got.iter()
            .any(|m| m.starts_with("<85>1 ") && m.contains("\"site add\"")),
        "{got:?}"
    );
    c.stop().await;
}
