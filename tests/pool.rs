//! A pool of SSH hosts: each run leases an idle host, across processes started at once.

mod common;

use common::{Project, TestEnv, ssh_pool, stderr};

#[test]
fn runs_started_at_once_never_share_a_host() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    let hosts = ssh_pool(&env, &p, 2);
    let (a, b) = (&hosts[0], &hosts[1]);
    let list = env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &["executor", "list"],
        &p.root,
    );
    assert!(list.contains("2 hosts"), "{list}");

    // Three runs at once on two hosts: two run side by side, the third waits for a free host.
    let spawn = |lr: &str| {
        let lr = format!("lr={lr}");
        common::spawn_exp_run(&env, &p.root, &["--no-apply", "-S", &lr, "-S", "sleep=2"])
    };
    let children = vec![spawn("0.1"), spawn("0.2"), spawn("0.3")];
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut hosts = Vec::new();
    let mut waited = 0;
    for o in &outs {
        let err = stderr(o);
        assert!(o.status.success(), "{err}");
        let line = err
            .lines()
            .find(|l| l.contains("connecting to pool"))
            .unwrap()
            .to_string();
        hosts.push(line);
        if err.contains("busy; waiting") {
            waited += 1;
        }
    }
    assert_eq!(
        waited, 1,
        "exactly one run waited for a free host: {hosts:?}"
    );
    assert!(
        hosts.iter().any(|h| h.contains(&a.port.to_string())),
        "{hosts:?}"
    );
    assert!(
        hosts.iter().any(|h| h.contains(&b.port.to_string())),
        "{hosts:?}"
    );
    // Each host's log shows runs one after another, never two at once: the two that ran at
    // once were on different hosts.
    let first_two: Vec<&String> = hosts
        .iter()
        .zip(&outs)
        .filter(|(_, o)| !stderr(o).contains("busy; waiting"))
        .map(|(h, _)| h)
        .collect();
    assert_ne!(
        first_two[0], first_two[1],
        "two runs shared a host: {hosts:?}"
    );
    let exps = p.experiments(&env);
    for lr in [0.1, 0.2, 0.3] {
        assert!(
            exps.iter().any(|(_, params, _)| params["lr"] == lr),
            "{exps:?}"
        );
    }
}
