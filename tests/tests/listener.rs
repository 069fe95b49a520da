//! The controller's listener asks the kernel for the accept queue its configuration says (`listen_backlog`),
//! not tokio's 1,024, so a reconnect storm of thousands of agents is queued instead of dropped.

use rollcall_tests::Cluster;

/// The accept queue of the listening socket on `port`, as `ss` reports it (Send-Q of a listener).
fn accept_queue(port: &str) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_has_the_configured_accept_queue() {
    if std::process::Command::new("ss").arg("-V").output().is_err() {
        eprintln!("ss (iproute2) is not installed: skipped");
        return;
    }
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = 3000.min(somaxconn);
    let c = Cluster::start_with_config(&format!("listen_backlog = {want}\n"))
        .await
        .unwrap();
    let port = c.controller().addr().rsplit(':').next().unwrap().to_owned();
    assert_eq!(accept_queue(&port), Some(want));
    c.stop().await;

    // The default asks for more than tokio's 1,024 (the kernel caps it at somaxconn).
    let c = Cluster::start().await.unwrap();
    let port = c.controller().addr().rsplit(':').next().unwrap().to_owned();
    assert_eq!(accept_queue(&port), Some(65535.min(somaxconn)));
    assert!(somaxconn <= 1024 || accept_queue(&port) > Some(1024));
    c.stop().await;
}
