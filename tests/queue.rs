//! DVC's experiment queue fanned out over a pool of SSH hosts.

mod common;

use common::{Project, Sshd, TestEnv, ssh_pool, stderr, stdout};

/// A project on a pool of `hosts` SSH hosts, with `count` experiments queued in DVC (`q1`,
/// `q2`, ... with lr 0.1, 0.2, ...), each sleeping `sleep` seconds.
fn queued_on_pool(env: &TestEnv, hosts: usize, count: usize, sleep: u32) -> (Vec<Sshd>, Project) {
    let p = Project::new(env, "proj");
    let pool = ssh_pool(env, &p, hosts);
    env.ok("git", &["add", "-A"], &p.root);
    env.ok("git", &["commit", "-qm", "pool executor"], &p.root);
    for i in 1..=count {
        let (lr, s, n) = (
            format!("lr=0.{i}"),
            format!("sleep={sleep}"),
            format!("q{i}"),
        );
        env.ok(
            "dvc",
            &["exp", "run", "--queue", "-S", &lr, "-S", &s, "-n", &n],
            &p.root,
        );
    }
    (pool, p)
}

#[test]
fn a_queue_of_six_runs_three_at_a_time_over_the_pool() {
    let env = TestEnv::new();
    let (hosts, p) = queued_on_pool(&env, 3, 6, 1);
    let out = env
        .dvc_exec(&p.root)
        .args(["queue", "start", "-j", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("queue: 6 queued, 0 running, 0 done, 0 failed")
            || err.contains("running 6 queued experiments"),
        "{err}"
    );
    assert!(
        err.contains("queue: 0 queued, 0 running, 6 done, 0 failed"),
        "{err}"
    );

    // All six are ordinary experiments with their own params and metrics.
    let exps = p.experiments(&env);
    for i in 1..=6 {
        let lr = format!("0.{i}").parse::<f64>().unwrap();
        let (_, params, metrics) = exps
            .iter()
            .find(|(n, _, _)| *n == format!("q{i}"))
            .unwrap_or_else(|| panic!("q{i} missing: {exps:?}"));
        assert_eq!(params["lr"], serde_json::json!(lr));
        assert_eq!(
            metrics["acc"],
            serde_json::json!((lr * 50.0 * 1000.0).round() / 1000.0)
        );
    }
    // The queue is empty.
    let status = env.ok("dvc", &["queue", "status"], &p.root);
    assert!(!status.contains("Queued"), "{status}");
    // The runs were spread over the hosts.
    let runs: serde_json::Value = serde_json::from_str(
        stdout(
            &env.dvc_exec(&p.root)
                .args(["runs", "--json"])
                .output()
                .unwrap(),
        )
        .trim(),
    )
    .unwrap();
    let machines: std::collections::BTreeSet<String> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["machine"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(machines.len(), hosts.len(), "{machines:?}");
    // The workspace was not touched: queued experiments are not applied.
    assert!(p.read("params.yaml").contains("lr: 0.1\n"));
}

#[test]
fn a_host_lost_mid_queue_loses_no_experiment() {
    let env = TestEnv::new();
    let (mut hosts, p) = queued_on_pool(&env, 2, 4, 3);
    let mut cmd = env.dvc_exec(&p.root);
    cmd.env("DVC_EXEC_RECONNECT_SECONDS", "3")
        .args(["queue", "start", "-j", "2"]);
    let (child, rx) = common::spawn_until(cmd, "2 running");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    hosts[1].crash();
    let out = child.wait_with_output().unwrap();
    let err: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("0 queued, 0 running, 4 done, 0 failed"),
        "{err}"
    );
    let exps = p.experiments(&env);
    for i in 1..=4 {
        assert!(
            exps.iter().any(|(n, _, _)| *n == format!("q{i}")),
            "q{i} missing: {exps:?}"
        );
    }
    let status = env.ok("dvc", &["queue", "status"], &p.root);
    assert!(!status.contains("Queued"), "{status}");
}

#[test]
fn ctrl_c_stops_the_queue_and_loses_nothing() {
    let env = TestEnv::new();
    let (_hosts, p) = queued_on_pool(&env, 1, 3, 30);
    // At once, before any run has started.
    let mut cmd = env.dvc_exec(&p.root);
    cmd.args(["queue", "start"]);
    let (child, rx) = common::spawn_until(cmd, "queued experiments on");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(out.status.code(), Some(130), "{err}");
    let status = env.ok("dvc", &["queue", "status"], &p.root);
    assert_eq!(status.matches("Queued").count(), 3, "{status}");
    // While one runs.
    let mut cmd = env.dvc_exec(&p.root);
    cmd.args(["queue", "start"]);
    let (child, rx) = common::spawn_until(cmd, "1 running");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped the queue"), "{err}");
    // All three are still queued in DVC.
    let status = env.ok("dvc", &["queue", "status"], &p.root);
    assert_eq!(status.matches("Queued").count(), 3, "{status}");
}
