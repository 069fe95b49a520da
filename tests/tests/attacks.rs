//! The attack suite: one test per attack, each against a real controller (and real agents where an agent is
//! the target), asserting the refusal, what the caller is told, and that nothing changed.
//!
//! Transport probes use a raw HTTP/2 client (`rollcall_tests::h2probe`), not the gRPC client, so they can do what
//! a well-behaved client never does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rollcall_proto::v1;
use rollcall_proto::v1::admin_service_client::AdminServiceClient;
use rollcall_proto::v1::agent_service_client::AgentServiceClient;
use rollcall_tests::h2probe::{call, grpc_frame, h2, tls};
use rollcall_tests::{agent_channel, agent_id, agent_identity, Cluster};
use tonic::Code;

fn addr(c: &Cluster) -> SocketAddr {
    c.controller().addr().parse().unwrap()
}

fn ca(c: &Cluster) -> std::path::PathBuf {
    c.controller().admin_creds().join("ca.crt")
}

fn admin_identity(c: &Cluster) -> rollcall_proto::tls::ClientIdentity {
    let creds = c.controller().admin_creds();
    rollcall_proto::tls::ClientIdentity::from_pem_files(
        &creds.join("client.crt"),
        &creds.join("client.key"),
    )
    .unwrap()
}

/// A `/proc/PID/status` memory figure (VmRSS, VmHWM), in MiB.
fn proc_mib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// The controller's resident memory now.
fn rss_mib(c: &Cluster) -> u64 {
    proc_mib(c.controller().pid().unwrap(), "VmRSS")
}

/// A process's peak resident memory.
fn peak_rss_mib(pid: u32) -> u64 {
    proc_mib(pid, "VmHWM")
}

fn log_of(c: &Cluster) -> String {
    std::fs::read_to_string(&c.controller().log).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_certificate_are_refused_before_their_body_is_read() {
    let c = Cluster::start().await.unwrap();
    let before = rss_mib(&c);
    let (send, _conn) = h2(addr(&c), &ca(&c), None).await.unwrap();
    // Sixteen streams on one connection, each announcing a 64 MiB message and sending 4 MiB of it.
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut send = send.clone();
        calls.push(tokio::spawn(async move {
            let mut frame = Vec::with_capacity(4 << 20);
            frame.push(0);
            frame.extend_from_slice(&(64u32 << 20).to_be_bytes());
            frame.resize(4 << 20, 7);
            call(
                &mut send,
                "/rollcall.v1.AdminService/PushMetadata",
                Bytes::from(frame),
                false,
                Duration::from_secs(10),
            )
            .await
        }));
    }
    for call in calls {
        let (code, message) = call.await.unwrap().unwrap();
        assert_eq!(code, Code::Unauthenticated as i32, "{message}");
        assert!(
            message.contains("PushMetadata needs a client certificate"),
            "{message}"
        );
    }
    let after = rss_mib(&c);
    assert!(
        after < before + 64,
        "controller grew from {before} MiB to {after} MiB"
    );
    // Nothing was published.
    assert!(c.published().await.unwrap().is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_send_nothing_are_closed() {
    let c = Cluster::start_with_config("idle_timeout = \"3s\"\nanonymous_idle_timeout = \"1s\"\n")
        .await
        .unwrap();
    // Without a certificate: after the HTTP/2 handshake, nothing.
    let started = Instant::now();
    let (_send, conn) = h2(addr(&c), &ca(&c), None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("an idle connection without a certificate stays open")
        .unwrap()
        .ok();
    let anonymous = started.elapsed();
    // With a valid certificate: closed too, later.
    let started = Instant::now();
    let (_send, conn) = h2(addr(&c), &ca(&c), Some(admin_identity(&c)))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), conn)
        .await
        .expect("an idle connection with a certificate stays open")
        .unwrap()
        .ok();
    let certified = started.elapsed();
    assert!(
        anonymous < Duration::from_secs(5) && certified >= Duration::from_secs(3),
        "closed after {anonymous:?} (anonymous) and {certified:?} (admin)"
    );
    // A connection with a call open (an agent's wake-up stream) is not idle.
    let (mut send, conn) = h2(addr(&c), &ca(&c), Some(admin_identity(&c)))
        .await
        .unwrap();
    let mut ready = send.clone().ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri("https://127.0.0.1/rollcall.v1.AdminService/ListAgents")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    // The request body is never finished: the call stays open.
    let (_resp, _stream) = ready.send_request(req, false).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !conn.is_finished(),
        "a connection with an open call was closed as idle"
    );
    let _ = &mut send;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_hold_every_connection_and_admins_still_get_in() {
    let c = Cluster::start_with_config("anonymous_connections_per_source = 8\n")
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..30 {
        if let Ok(stream) = tls(addr(&c), &ca(&c), None).await {
            held.push(stream);
        }
    }
    // The controller closes every connection past the eighth: an HTTP/2 handshake on them fails.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0;
    for stream in held.drain(..) {
        if let Ok(Ok((send, conn))) =
            tokio::time::timeout(Duration::from_secs(2), h2::client::handshake(stream)).await
        {
            let task = tokio::spawn(conn);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !task.is_finished() {
                open += 1;
                std::mem::forget((send, task));
            }
        }
    }
    assert!(
        open <= 8,
        "{open} connections without a certificate held open"
    );
    let (code, out, err) = c.cli(&["agents", "list"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_flood_is_rate_limited_and_cannot_forge_log_lines() {
    let c = Cluster::start_with_config("anonymous_calls_per_second = 5\n")
        .await
        .unwrap();
    let log_before = log_of(&c).len();
    let mut client = AgentServiceClient::new(agent_channel(&c, None).await.unwrap());
    let forged = format!(
        "desk\n2026-11-23T00:00:00Z ERROR rollcall_controller: forged \u{1b}[31mred{}",
        "x".repeat(40_000)
    );
    let (mut refused, mut limited) = (0, 0);
    for _ in 0..300 {
        let err = client
            .enroll(v1::EnrollRequest {
                token: "rollcall1.nope".into(),
                hostname: forged.clone(),
                platform: "linux-x86_64".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        match err.code() {
            Code::Unauthenticated => refused += 1,
            Code::ResourceExhausted => {
                assert!(
                    err.message().contains("too many calls"),
                    "{}",
                    err.message()
                );
                limited += 1
            }
            other => panic!("unexpected {other:?}: {}", err.message()),
        }
    }
    assert!(
        refused <= 60 && limited >= 240,
        "{refused} refused, {limited} limited"
    );
    let log = log_of(&c);
    let added = &log[log_before..];
    assert!(added.len() < 64 * 1024, "{} bytes logged", added.len());
    assert!(!added.contains('\u{1b}'), "an escape code reached the log");
    assert!(
        !added.lines().any(|l| l.starts_with("2026-11-23T00:00:00Z")),
        "a forged line reached the log"
    );
    assert!(added.contains("over the rate limit"), "{added}");
    // Nothing was enrolled.
    let agents = c.agents().await.unwrap();
    assert!(agents.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_and_oversized_ones_exhaust() {
    let c = Cluster::start().await.unwrap();
    let (mut send, _conn) = h2(addr(&c), &ca(&c), Some(admin_identity(&c)))
        .await
        .unwrap();
    let garbage = grpc_frame(&[0xff, 0xff, 0xff, 0xff]);
    let (code, message) = call(
        &mut send,
        "/rollcall.v1.AdminService/CreateToken",
        garbage,
        true,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    // CreateToken takes at most 64 KiB.
    let big = grpc_frame(&vec![0u8; 2 << 20]);
    let (code, message) = call(
        &mut send,
        "/rollcall.v1.AdminService/CreateToken",
        big,
        true,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(code, Code::ResourceExhausted as i32, "{message}");
    // A method that does not exist.
    let (code, _) = call(
        &mut send,
        "/rollcall.v1.AdminService/DropEverything",
        grpc_frame(&[]),
        true,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(code, Code::Unimplemented as i32);
    // No token was made.
    let (code, out, err) = c.cli(&["sites", "list"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("north"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_cannot_call_the_admin_service() {
    let c = Cluster::start().await.unwrap();
    let agent = c.enroll("north", "desk-1").await.unwrap();
    let mut admin = AdminServiceClient::new(agent_channel(&c, Some(&agent.data)).await.unwrap());
    let err = admin
        .list_agents(v1::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("has the agent role; ListAgents needs admin or tech"),
        "{}",
        err.message()
    );
    let err = admin
        .create_token(v1::CreateTokenRequest {
            site: "north".into(),
            uses: 1,
            ttl_seconds: 60,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("CreateToken needs admin"),
        "{}",
        err.message()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agent_is_refused_at_once_and_its_stream_is_closed() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    let id = agent_id(&dirs[0]).unwrap();
    // Wait for its first check-in; its wake-up stream opens right after.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.agents().await.unwrap()[0].last_checkin_unix == 0 {
        assert!(Instant::now() < deadline, "the agent never checked in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, out, err) = c.cli(&["agents", "revoke", &id]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 certificate(s) revoked"), "{out}");
    assert!(!out.contains(" 0 open connection(s) closed"), "{out}");
    // Its own certificate is refused, naming why.
    let mut client = AgentServiceClient::new(agent_channel(&c, Some(&dirs[0])).await.unwrap());
    let err = client
        .check_in(v1::CheckInRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("revoked"), "{}", err.message());
    let (_, out, _) = c.cli(&["agents", "list", "--json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        list["agents"][0]["revoked_at"].as_i64().unwrap() > 0,
        "{out}"
    );
    // The audit log holds who did it.
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_host_cannot_enroll_again_until_unbanned() {
    let c = Cluster::start().await.unwrap();
    let agent = c.enroll("north", "mdc-7").await.unwrap();
    let id = agent_id(&agent.data).unwrap();
    let (code, out, err) = c.cli(&["agents", "ban", &id]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("revoked and banned"), "{out}");
    // The same host (in other case) with a fresh token is refused, and nothing is enrolled or spent.
    let err = c.enroll("north", "MDC-7").await.unwrap_err().to_string();
    assert!(
        err.contains("host mdc-7 is banned") && err.contains("agents unban mdc-7"),
        "{err}"
    );
    let (code, _, err) = c.cli(&["agents", "unban", "nobody"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("host nobody is not banned"), "{err}");
    let (code, out, err) = c.cli(&["agents", "unban", "mdc-7"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let token = c.token("north", 1, 600).await.unwrap();
    let again = rollcall_controller::cli::local::LocalAgent::enroll(
        &c.path("agents/mdc-7-again"),
        &c.controller().url,
        &token,
        "mdc-7",
    )
    .await
    .unwrap();
    // It takes over its old record: one agent, the same id.
    assert_eq!(agent_id(&again.data).unwrap(), id);
    let (_, out, _) = c.cli(&["agents", "list", "--json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["agents"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(list["agents"][0]["revoked_at"], 0, "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_a_host_again_replaces_its_record_and_revokes_the_old_certificate() {
    let c = Cluster::start().await.unwrap();
    let first = c.enroll("north", "desk-9").await.unwrap();
    let old = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(old.path().join("identity")).unwrap();
    std::fs::copy(
        first.data.join("identity/client.pem"),
        old.path().join("identity/client.pem"),
    )
    .unwrap();
    // A token for another site cannot take the host over (or knock it off by naming it).
    let other = c.token("south", 1, 600).await.unwrap();
    let err = rollcall_controller::cli::local::LocalAgent::enroll(
        &c.path("agents/desk-9-south"),
        &c.controller().url,
        &other,
        "desk-9",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("host desk-9 is enrolled at site north") && err.contains("agents retire"),
        "{err}"
    );
    // Reinstalled: enrolled again into a fresh data dir, with a token for its site.
    let token = c.token("north", 1, 600).await.unwrap();
    let second = rollcall_controller::cli::local::LocalAgent::enroll(
        &c.path("agents/desk-9-again"),
        &c.controller().url,
        &token,
        "desk-9",
    )
    .await
    .unwrap();
    assert_eq!(
        agent_id(&second.data).unwrap(),
        agent_id(&first.data).unwrap()
    );
    let (_, out, _) = c.cli(&["agents", "list", "--json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["agents"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(list["agents"][0]["site"], "north", "{out}");
    let mut ghost = AgentServiceClient::new(agent_channel(&c, Some(old.path())).await.unwrap());
    let err = ghost
        .check_in(v1::CheckInRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(err.message().contains("revoked"), "{}", err.message());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_agent_leaves_the_fleet_its_counts_and_its_targeting() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 2).await.unwrap();
    let retired = agent_id(&dirs[1]).unwrap();
    let (code, out, err) = c.cli(&["agents", "retire", &retired]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = c.cli(&["agents", "retire", &retired]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("already retired"), "{err}");
    let (_, out, _) = c.cli(&["agents", "list", "--json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["agents"].as_array().unwrap().len(), 1, "{out}");
    let (_, out, _) = c
        .cli(&["agents", "list", "--retired", "--json"])
        .await
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["agents"][0]["id"], retired.as_str(), "{out}");
    assert!(list["agents"][0]["retired_at"].as_i64().unwrap() > 0);
    // Still readable for history.
    let (code, out, _) = c.cli(&["agents", "show", &retired]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    // Out of the site's counts and of a new rollout's devices.
    let (_, out, _) = c.cli(&["sites", "list", "--json"]).await.unwrap();
    let sites: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sites["sites"][0]["agents"], 1, "{out}");
    c.publish(&rollcall_tests::PackageSpec::marker("tool", "1.0", 1))
        .await
        .unwrap();
    let id = c.rollout("tool", "1.0", &[&["north"]]).await.unwrap();
    let status = c.settle(&id).await.unwrap();
    let devices: Vec<_> = status.devices.iter().map(|d| d.agent_id.clone()).collect();
    assert_eq!(devices, [agent_id(&dirs[0]).unwrap()]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_renewal_is_refused_and_a_certificate_renews_once() {
    let c = Cluster::start_with_config("agent_cert_validity = \"4s\"\n")
        .await
        .unwrap();
    let agent = c.enroll("north", "desk-2").await.unwrap();
    let id = agent_id(&agent.data).unwrap();
    let mut client = AgentServiceClient::new(agent_channel(&c, Some(&agent.data)).await.unwrap());
    let renew = |client: &mut AgentServiceClient<tonic::transport::Channel>| {
        let (_, csr_der) = rollcall_agent::enroll::key_and_csr(&id).unwrap();
        let mut client = client.clone();
        async move { client.renew(v1::RenewRequest { csr_der }).await }
    };
    let err = renew(&mut client).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("is not due until"),
        "{}",
        err.message()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    renew(&mut client).await.unwrap();
    let err = renew(&mut client).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("already renewed"),
        "{}",
        err.message()
    );
    let _ = agent_identity(&agent.data).unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_offline_past_its_certificate_enrolls_again_and_keeps_its_record() {
    let c = Cluster::start_with_config("agent_cert_validity = \"3s\"\n")
        .await
        .unwrap();
    let mut agent = c.enroll("north", "mdc-3").await.unwrap();
    let id = agent_id(&agent.data).unwrap();
    // Offline past its certificate's expiry.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut client = AgentServiceClient::new(agent_channel(&c, Some(&agent.data)).await.unwrap());
    // Refused at the TLS handshake, or by the gate if the handshake let it through.
    client
        .check_in(v1::CheckInRequest::default())
        .await
        .unwrap_err();
    // Started as it is, it says what to do.
    agent.start().unwrap();
    let log = agent.data.with_extension("log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("enroll it again")
    {
        assert!(
            Instant::now() < deadline,
            "the agent never said to enroll again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await;
    // Enrolling again without --again is refused and names the way out.
    let token = c.token("north", 1, 600).await.unwrap();
    let err = rollcall_controller::cli::local::LocalAgent::enroll(
        &agent.data,
        &c.controller().url,
        &token,
        "mdc-3",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--again"), "{err}");
    agent
        .enroll_again(&c.controller().url, &token)
        .await
        .unwrap();
    assert_eq!(agent_id(&agent.data).unwrap(), id);
    agent.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let agents = c.agents().await.unwrap();
        assert_eq!(agents.len(), 1);
        if agents[0].last_checkin_unix > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never checked in after enrolling again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_site_that_does_not_exist_is_refused_with_the_known_names() {
    let c = Cluster::start().await.unwrap();
    let (code, _, err) = c.cli(&["sites", "add", "north"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.cli(&["sites", "add", "north"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("site north exists"), "{err}");
    let (code, out, err) = c
        .cli(&["token", "create", "--site", "nroth"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("no site nroth; known sites: north")
            && err.contains("rollcall sites add NAME"),
        "{err}"
    );
    let (_, out, _) = c.cli(&["token", "list", "--json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(list["tokens"].as_array().unwrap().is_empty(), "{out}");
    let (_, out, _) = c.cli(&["sites", "list", "--json"]).await.unwrap();
    assert!(!out.contains("nroth"), "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_revoked_token_is_refused() {
    let c = Cluster::start().await.unwrap();
    let token = c.token("north", 1, 600).await.unwrap();
    let enroll = |name: &str, token: String| {
        let data = c.path(&format!("agents/{name}"));
        let url = c.controller().url.clone();
        let name = name.to_owned();
        async move {
            rollcall_controller::cli::local::LocalAgent::enroll(&data, &url, &token, &name)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    };
    enroll("desk-1", token.clone()).await.unwrap();
    let err = enroll("desk-2", token).await.unwrap_err();
    assert!(err.contains("no uses left"), "{err}");

    let (code, out, err) = c
        .cli(&[
            "token", "create", "--site", "north", "--uses", "5", "--json",
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(!id.is_empty() && !created["token"].as_str().unwrap().contains(id));
    let (code, out, err) = c.cli(&["token", "revoke", id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let err = enroll("desk-3", created["token"].as_str().unwrap().to_owned())
        .await
        .unwrap_err();
    assert!(err.contains("enrollment token was revoked"), "{err}");
    let (code, _, err) = c.cli(&["token", "revoke", "zz"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("at least 8 hex digits"), "{err}");
    let (_, out, _) = c.cli(&["token", "list"]).await.unwrap();
    assert!(out.contains("revoked") && out.contains("used up"), "{out}");
    // Only the first enrollment happened.
    let (_, out, _) = c.cli(&["agents", "list", "--json"]).await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["agents"].as_array().unwrap().len(), 1, "{out}");
    c.stop().await;
}

/// `rollcall` with another person's credentials folder.
fn as_person(creds: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(rollcall_tests::bin("rollcall").unwrap())
        .arg("--creds")
        .arg(creds)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_reads_but_cannot_create_rollouts_tokens_or_people() {
    let mut c = Cluster::start().await.unwrap();
    c.add_agents("north", 1).await.unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("tool", "1.0", 1))
        .await
        .unwrap();
    let creds = c.path("jdoe");
    let (code, out, err) = c
        .cli(&[
            "users",
            "add",
            "jdoe",
            "--role",
            "tech",
            "--out",
            creds.to_str().unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(creds.join("client.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key is readable by others");
    // Reads work.
    let (code, out, err) = as_person(&creds, &["agents", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("north-01"), "{out}");
    // Changes do not, and say which role is needed.
    for (args, method) in [
        (
            &[
                "rollout", "create", "tool@1.0", "--wave", "north", "--start",
            ][..],
            "CreateRollout",
        ),
        (&["token", "create", "--site", "north"][..], "CreateToken"),
        (&["sites", "add", "south"][..], "AddSite"),
    ] {
        let (code, _, err) = as_person(&creds, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("jdoe has the tech role; {method} needs admin")),
            "{err}"
        );
    }
    let out = c.path("mallory");
    let (code, _, err) = as_person(
        &creds,
        &[
            "users",
            "add",
            "mallory",
            "--role",
            "admin",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("AddUser needs admin"), "{err}");
    // Nothing changed.
    let list = c
        .admin
        .rpc
        .clone()
        .list_rollouts(v1::ListRolloutsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.rollouts.is_empty());
    let (_, out, _) = c.cli(&["users", "list", "--json"]).await.unwrap();
    let users: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "jdoe"], "{out}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_person_is_refused_and_the_last_admin_cannot_be_revoked() {
    let c = Cluster::start().await.unwrap();
    let creds = c.path("asmith");
    let (code, _, err) = c
        .cli(&[
            "users",
            "add",
            "asmith",
            "--role",
            "admin",
            "--out",
            creds.to_str().unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c
        .cli(&[
            "users",
            "add",
            "asmith",
            "--role",
            "tech",
            "--out",
            c.path("again").to_str().unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("user asmith exists (role admin)"), "{err}");
    let (code, _, err) = c
        .cli(&[
            "users",
            "add",
            "ag-1",
            "--role",
            "tech",
            "--out",
            c.path("x").to_str().unwrap(),
        ])
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not a valid user name"), "{err}");
    let (code, _, err) = as_person(&creds, &["users", "revoke", "admin"]);
    assert_eq!(code, 0, "{err}");
    // The original admin is out.
    let (code, _, err) = c.cli(&["agents", "list"]).await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("revoked"), "{err}");
    // asmith is the last admin.
    let (code, _, err) = as_person(&creds, &["users", "revoke", "asmith"]);
    assert_eq!(code, 1);
    assert!(err.contains("would leave no admin"), "{err}");
    let (code, _, err) = as_person(&creds, &["agents", "list"]);
    assert_eq!(code, 0, "{err}");
    c.stop().await;
}

/// Copy a folder tree (the offline image repository) as it is now.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_with_a_published_release_counter_is_refused_at_push() {
    let c = Cluster::start().await.unwrap();
    // A second signer works from a copy of the offline repository taken before anything was signed.
    let other = c.path("repo-copy");
    copy_tree(&c.repo, &other);
    c.publish(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    // In the copy, app 1.0 does not exist, so signing app 1.1 with counter 1 passes there.
    let pkg = rollcall_controller::cli::pkg::sign;
    let build = |name: &'static str, version: &'static str| {
        c.build(&rollcall_tests::PackageSpec::marker(name, version, 1))
            .unwrap()
    };
    pkg(
        &other,
        &c.keys,
        &build("filler", "1.0"),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    pkg(
        &other,
        &c.keys,
        &build("app", "1.1"),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let err = rollcall_controller::cli::pkg::push(&c.admin, &other)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("app 1.1 has release counter 1, the same as app 1.0"),
        "{err}"
    );
    // Nothing was published.
    assert_eq!(c.published().await.unwrap(), ["app@1.0"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_corrupted_on_the_controller_is_caught_set_aside_and_restored_by_pushing_again() {
    let mut c = Cluster::start().await.unwrap();
    let pushed = c
        .publish(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let sha = pushed.new_packages[0].sha256.clone();
    let blob = c.controller().data.join("blobs").join(&sha);
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();

    let dirs = c.add_agents("north", 1).await.unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    // The agent refused the bytes itself, as it would from a compromised controller…
    assert!(
        s.devices[0].detail.contains("failed verification")
            && s.devices[0].detail.contains("not a network problem"),
        "{}",
        s.devices[0].detail
    );
    assert!(!dirs[0].join("app.marker").exists());
    // …and the controller caught its own disk: reported, and the blob set aside.
    let log = log_of(&c);
    assert!(log.contains("no longer matches its sha256"), "{log}");
    assert!(!blob.exists() && blob.with_extension("corrupt").exists());

    // Resumed (a new attempt) before anyone pushed again: refused by the controller, saying what to do.
    let (code, _, err) = c.cli(&["rollout", "resume", &id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let s = c
        .wait_for(&id, "the new attempt failed", |s| {
            s.devices[0].detail.contains("corrupt on the controller")
        })
        .await
        .unwrap();
    assert!(
        s.devices[0].detail.contains("rollcall pkg push"),
        "{}",
        s.devices[0].detail
    );
    // Pushing the same repository again restores the payload; the next retry installs.
    rollcall_controller::cli::pkg::push(&c.admin, &c.repo)
        .await
        .unwrap();
    assert!(blob.exists());
    c.wait_for(&id, "paused again", |s| {
        s.state == v1::RolloutState::Paused as i32
    })
    .await
    .unwrap();
    let (code, _, err) = c.cli(&["rollout", "resume", &id]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    c.wait_for(&id, "the desk installed", |s| {
        s.devices[0].state == v1::ActionState::Succeeded as i32
    })
    .await
    .unwrap();
    assert!(dirs[0].join("app.marker").exists());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_swapped_for_another_signed_payload_is_refused() {
    let mut c = Cluster::start().await.unwrap();
    let a = c
        .publish(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let mut evil = rollcall_tests::PackageSpec::marker("tool", "1.0", 1);
    evil.install = "touch \"$ROLLCALL_DATA_DIR/swapped\"";
    let b = c.publish(&evil).await.unwrap();
    // Whoever holds the controller's disk serves tool's (validly signed) payload under app's name.
    let blobs = c.controller().data.join("blobs");
    std::fs::copy(
        blobs.join(&b.new_packages[0].sha256),
        blobs.join(&a.new_packages[0].sha256),
    )
    .unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(s.devices[0].state, v1::ActionState::Failed as i32);
    assert!(
        s.devices[0].detail.contains("package failure")
            && s.devices[0].detail.contains("altered or replaced"),
        "{}",
        s.devices[0].detail
    );
    assert!(!dirs[0].join("swapped").exists() && !dirs[0].join("app.marker").exists());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_duplicated_to_fake_a_threshold_is_refused_at_push() {
    let c = Cluster::start().await.unwrap();
    let package = c
        .build(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .unwrap();
    rollcall_controller::cli::pkg::sign(&c.repo, &c.keys, &package, Duration::from_secs(3600))
        .await
        .unwrap();
    let file = c.repo.join("metadata/targets.json");
    let file = if file.exists() {
        file
    } else {
        c.repo.join("targets.json")
    };
    let mut targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let sig = targets["signatures"][0].clone();
    let keyid = sig["keyid"].as_str().unwrap().to_owned();
    targets["signatures"].as_array_mut().unwrap().push(sig);
    std::fs::write(&file, serde_json::to_vec(&targets).unwrap()).unwrap();
    let err = rollcall_controller::cli::pkg::push(&c.admin, &c.repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("Duplicate key ID: {keyid}")) && !err.contains("Decoded"),
        "{err}"
    );
    assert!(c.published().await.unwrap().is_empty());
    c.stop().await;
}

/// A payload archive written byte by byte, holding what `pkg build` never would.
fn raw_payload(path: &std::path::Path, name: &str, kind: tar::EntryType) {
    let gz = flate2::GzBuilder::new().write(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        if kind == tar::EntryType::Symlink {
            header.set_link_name("/etc").unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    };
    add("install.sh", tar::EntryType::Regular, b"true\n");
    add("verify.sh", tar::EntryType::Regular, b"true\n");
    add(name, kind, b"escaped\n");
    builder.into_inner().unwrap().finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_entries_escaping_the_package_folder_are_refused_and_nothing_is_written() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    let outside = c.path("outside");
    let absolute = format!("{}/abs", outside.display());
    let cases = [
        ("dots", "../../../escaped", tar::EntryType::Regular),
        ("abs", absolute.as_str(), tar::EntryType::Regular),
        ("link", "etc", tar::EntryType::Symlink),
    ];
    for (i, (name, entry, kind)) in cases.into_iter().enumerate() {
        // A real package's manifest, beside a crafted payload, signed with the real targets key.
        let real = c
            .build(&rollcall_tests::PackageSpec::marker(name, "1.0", 1))
            .unwrap();
        raw_payload(&real, entry, kind);
        rollcall_controller::cli::pkg::sign(&c.repo, &c.keys, &real, Duration::from_secs(3600))
            .await
            .unwrap();
        rollcall_controller::cli::pkg::push(&c.admin, &c.repo)
            .await
            .unwrap();
        let id = c.rollout(name, "1.0", &[&["north"]]).await.unwrap();
        let s = c.settle(&id).await.unwrap();
        assert_eq!(s.devices[0].state, v1::ActionState::Failed as i32, "{i}");
        assert!(
            s.devices[0].detail.contains("refusing archive entry"),
            "{}",
            s.devices[0].detail
        );
        let cancelled = c.cli(&["rollout", "cancel", &id]).await.unwrap();
        assert_eq!(cancelled.0, 0);
    }
    assert!(!outside.exists(), "an absolute path was written");
    let found = std::process::Command::new("find")
        .arg(c.dir.path())
        .args(["-name", "escaped", "-o", "-name", "abs"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&found.stdout).trim().is_empty(),
        "written outside: {}",
        String::from_utf8_lossy(&found.stdout)
    );
    assert!(rollcall_tests::files_in(&dirs[0].join("work")).is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_text_in_rpc_fields_never_reaches_a_command() {
    let c = Cluster::start().await.unwrap();
    let pwned = c.path("pwned");
    let p = pwned.display().to_string();
    // Whatever the controller sends (names, hostnames) is data; only the signed manifest says what runs.
    let token = c.token("north", 1, 600).await.unwrap();
    let mut agent = rollcall_controller::cli::local::LocalAgent::enroll(
        &c.path("agents/desk"),
        &c.controller().url,
        &token,
        &format!("desk;touch {p};$(touch {p})`touch {p}`"),
    )
    .await
    .unwrap();
    agent.start().unwrap();
    let mut spec = rollcall_tests::PackageSpec::marker("app", "1.0", 1);
    spec.install = "env > \"$ROLLCALL_DATA_DIR/install.env\"\necho \"$ROLLCALL_VERSION\" > \"$ROLLCALL_DATA_DIR/$ROLLCALL_PACKAGE.marker\"";
    c.publish(&spec).await.unwrap();
    let id = c
        .rollout_with(v1::CreateRolloutRequest {
            package: "app".into(),
            version: "1.0".into(),
            name: format!("$(touch {p}); touch {p}"),
            waves: vec![rollcall_tests::sites_wave(&["north"])],
            ..Default::default()
        })
        .await
        .unwrap();
    let s = c.settle(&id).await.unwrap();
    assert_eq!(
        s.devices[0].state,
        v1::ActionState::Succeeded as i32,
        "{s:?}"
    );
    assert!(!pwned.exists(), "a command ran from an RPC field");
    let env = std::fs::read_to_string(agent.data.join("install.env")).unwrap();
    assert!(!env.contains("touch"), "{env}");
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_not_signed_by_the_previous_root_keys_is_refused_at_push() {
    let c = Cluster::start().await.unwrap();
    let stranger = c.path("stranger-keys");
    rollcall_controller::cli::pkg::keygen_n(&stranger, 1).unwrap();
    // A legitimate rotation, then its old-key signatures removed: a root only the new keys vouch for.
    rollcall_controller::cli::pkg::rotate_root(
        &c.repo,
        &c.keys,
        &stranger,
        1,
        true,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let path = c.repo.join("root.json");
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let new_ids: Vec<String> = root["signed"]["roles"]["root"]["keyids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    root["signatures"]
        .as_array_mut()
        .unwrap()
        .retain(|s| new_ids.contains(&s["keyid"].as_str().unwrap().to_owned()));
    let bytes = serde_json::to_vec_pretty(&root).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(c.repo.join("roots/2.root.json"), &bytes).unwrap();
    let err = rollcall_controller::cli::pkg::push(&c.admin, &c.repo)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not signed by the keys of root version 1"),
        "{err}"
    );
    let info = c
        .admin
        .rpc
        .clone()
        .get_repository(v1::GetRepositoryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.root_version, 1, "the published root did not change");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restored_from_an_old_backup_cannot_roll_agents_back() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("tool", "1.0", 1))
        .await
        .unwrap();
    // A backup taken now holds older metadata (and app 1.0 only)…
    let backup = c.path("store-backup");
    let to = backup.clone();
    c.restart_controller_with(|data| async move { copy_tree(&data.join("store"), &to) })
        .await
        .unwrap();
    // …then app 2.0 is published and installed: the agent has seen the newer metadata.
    c.publish(&rollcall_tests::PackageSpec::marker("app", "2.0", 2))
        .await
        .unwrap();
    let id = c.rollout("app", "2.0", &[&["north"]]).await.unwrap();
    c.settle(&id).await.unwrap();
    // The old store comes back (a careless restore, or an attacker replaying old metadata).
    c.restart_controller_with(|data| async move {
        std::fs::remove_dir_all(data.join("store")).unwrap();
        copy_tree(&backup, &data.join("store"));
    })
    .await
    .unwrap();
    // The controller itself skips app 1.0 (the agent reports 2.0 installed); a package the agent does not have
    // reaches its own check. (A draft first, so the restored controller's next rollout id is new to the agent.)
    let draft = v1::CreateRolloutRequest {
        package: "tool".into(),
        version: "1.0".into(),
        waves: vec![rollcall_tests::sites_wave(&["north"])],
        retries: Some(0),
        ..Default::default()
    };
    c.admin
        .rpc
        .clone()
        .create_rollout(draft.clone())
        .await
        .unwrap();
    let id = c.rollout_with(draft).await.unwrap();
    let s = c
        .wait_for(&id, "the device failed", |s| {
            s.devices[0].state == v1::ActionState::Failed as i32
        })
        .await
        .unwrap();
    let detail = &s.devices[0].detail;
    assert!(
        detail.contains("package failure: TUF metadata refused")
            && detail.contains("of timestamp metadata when we had previously fetched version"),
        "{}",
        s.devices[0].detail
    );
    assert!(!dirs[0].join("tool.marker").exists());
    assert_eq!(
        std::fs::read_to_string(dirs[0].join("app.marker"))
            .unwrap()
            .trim(),
        "2.0",
        "still the newer version"
    );
    c.stop().await;
}

/// What a compromised controller can serve: it holds the online snapshot and timestamp keys. Stop it, replace
/// served files in its store with what `forge` returns (it gets the store, the published root and the timestamp
/// key), and start it again. The published state is left as it was, so the controller does not re-sign.
async fn serve_forged<F, Fut>(c: &mut Cluster, forge: F)
where
    F: FnOnce(
        rollcall_controller::store::Store,
        tough::schema::Signed<tough::schema::Root>,
        rollcall_packaging::keys::FileKey,
    ) -> Fut,
    Fut: std::future::Future<Output = Vec<(String, Vec<u8>)>>,
{
    c.restart_controller_with(|data| async move {
        let dir = rollcall_controller::datadir::DataDir::new(&data);
        let store = rollcall_controller::store::Store::open(&dir.store()).unwrap();
        let state = store.tuf_state().unwrap();
        let root = store
            .tuf_file(&format!("{}.root.json", state.root_version))
            .unwrap()
            .unwrap();
        let root = rollcall_packaging::online::verify_root(&root).unwrap();
        let key = rollcall_packaging::keys::key_source(&dir.timestamp_key());
        let files = forge(store.clone(), root, key).await;
        store
            .publish_tuf(
                &rollcall_controller::store::TufFiles { files },
                &state,
                &[],
                None,
            )
            .unwrap();
        store.flush().await.unwrap();
    })
    .await
    .unwrap();
}

/// The served snapshot of `version`, as signed.
fn snapshot_of(
    store: &rollcall_controller::store::Store,
    version: u64,
) -> rollcall_packaging::online::SignedFile {
    let bytes = store
        .tuf_file(&format!("{version}.snapshot.json"))
        .unwrap()
        .unwrap();
    rollcall_packaging::online::SignedFile::from_bytes(bytes, version)
}

/// A rollout of a package the agent does not have, failing at once (no retries); the device's detail.
async fn refused_detail(c: &Cluster, package: &str) -> String {
    let id = c
        .rollout_with(v1::CreateRolloutRequest {
            package: package.into(),
            version: "1.0".into(),
            waves: vec![rollcall_tests::sites_wave(&["north"])],
            retries: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = c
        .wait_for(&id, "the device failed", |s| {
            s.devices[0].state == v1::ActionState::Failed as i32
        })
        .await
        .unwrap();
    s.devices[0].detail.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_timestamp_is_refused() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("tool", "1.0", 1))
        .await
        .unwrap();
    // A frozen (or compromised) controller serves a correctly signed timestamp that has expired.
    serve_forged(&mut c, |store, root, key| async move {
        let state = store.tuf_state().unwrap();
        let expired = rollcall_packaging::online::sign_timestamp(
            &root,
            &snapshot_of(&store, state.snapshot_version),
            state.timestamp_version + 1,
            &key,
            chrono::Utc::now() - chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
        vec![("timestamp.json".into(), expired.bytes)]
    })
    .await;
    let detail = refused_detail(&c, "tool").await;
    assert!(
        detail.contains("package failure: TUF metadata refused") && detail.contains("expired"),
        "{detail}"
    );
    assert!(!dirs[0].join("tool.marker").exists());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_pointing_at_an_older_snapshot_is_refused() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("tool", "1.0", 1))
        .await
        .unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    c.settle(&id).await.unwrap();
    // Mix and match: a fresh, validly signed timestamp that names the snapshot of an earlier publication.
    serve_forged(&mut c, |store, root, key| async move {
        let state = store.tuf_state().unwrap();
        let mixed = rollcall_packaging::online::sign_timestamp(
            &root,
            &snapshot_of(&store, state.snapshot_version - 1),
            state.timestamp_version + 1,
            &key,
            chrono::Utc::now() + chrono::Duration::days(1),
        )
        .await
        .unwrap();
        vec![("timestamp.json".into(), mixed.bytes)]
    })
    .await;
    let detail = refused_detail(&c, "tool").await;
    assert!(
        detail.contains("package failure: TUF metadata refused"),
        "{detail}"
    );
    assert!(!dirs[0].join("tool.marker").exists());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_metadata_is_cut_off_with_bounded_memory() {
    let mut c = Cluster::start().await.unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    c.publish(&rollcall_tests::PackageSpec::marker("tool", "1.0", 1))
        .await
        .unwrap();
    // 48 MiB where a timestamp of a few hundred bytes belongs.
    serve_forged(&mut c, |_, _, _| async move {
        vec![("timestamp.json".into(), vec![b' '; 48 << 20])]
    })
    .await;
    let detail = refused_detail(&c, "tool").await;
    assert!(
        detail.contains("package failure") && detail.contains("not a network problem"),
        "{detail}"
    );
    assert!(!dirs[0].join("tool.marker").exists());
    // The agent never held the whole file.
    let peak = peak_rss_mib(c.agents[0].pid().unwrap());
    assert!(peak < 40, "agent peak RSS {peak} MiB");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_payload_is_cut_off_at_its_signed_length_with_bounded_memory() {
    let mut c = Cluster::start().await.unwrap();
    let pushed = c
        .publish(&rollcall_tests::PackageSpec::marker("app", "1.0", 1))
        .await
        .unwrap();
    // 64 MiB where a payload of a few hundred bytes was signed.
    let blob = c
        .controller()
        .data
        .join("blobs")
        .join(&pushed.new_packages[0].sha256);
    std::fs::write(&blob, vec![0u8; 64 << 20]).unwrap();
    let dirs = c.add_agents("north", 1).await.unwrap();
    let id = c.rollout("app", "1.0", &[&["north"]]).await.unwrap();
    let s = c.settle(&id).await.unwrap();
    let detail = &s.devices[0].detail;
    assert!(
        detail.contains("package failure") && detail.contains("were served where"),
        "{detail}"
    );
    assert!(!dirs[0].join("app.marker").exists());
    assert!(rollcall_tests::files_in(&dirs[0].join("downloads")).is_empty());
    let peak = peak_rss_mib(c.agents[0].pid().unwrap());
    assert!(peak < 40, "agent peak RSS {peak} MiB");
    c.stop().await;
}
