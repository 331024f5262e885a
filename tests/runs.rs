//! `dvc-exec runs`, `logs` and `cancel`, from another terminal than the one that started the run.

mod common;

use common::{Project, Sshd, TestEnv, stderr, stdout, wait_for};

#[test]
fn runs_logs_and_cancel_from_any_terminal() {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "box");
    let p = Project::new(&env, "proj");
    let workdir = common::add_ssh_executor(&env, &sshd, &p, true);

    // A foreground run: listed as collected, its log kept here.
    let out = env
        .dvc_exec(&p.root)
        .args(["exp", "run", "--json", "-S", "lr=0.2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let done: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let done_id = done["run"].as_str().unwrap().to_string();
    let log = env
        .dvc_exec(&p.root)
        .args(["logs", &done_id])
        .output()
        .unwrap();
    assert!(
        stdout(&log).contains("trained with lr 0.2"),
        "{}{}",
        stdout(&log),
        stderr(&log)
    );

    // A detached run that takes a while.
    let out = env
        .dvc_exec(&p.root)
        .args(["exp", "run", "--detach", "--json", "-S", "sleep=60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let id = v["run"].as_str().unwrap().to_string();

    // From another directory (another terminal).
    let list = env.dvc_exec(env.path()).args(["runs"]).output().unwrap();
    let text = stdout(&list);
    assert!(
        text.lines()
            .any(|l| l.contains(&id) && l.contains("running") && l.contains("box")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(&done_id) && l.contains("collected") && l.contains(" 0")),
        "{text}"
    );
    let json = env
        .dvc_exec(env.path())
        .args(["runs", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);

    wait_for(30, "the stage to start", || {
        std::fs::read_to_string(workdir.join("runs").join(&id).join("log"))
            .unwrap_or_default()
            .contains("Running stage")
    });
    let log = env
        .dvc_exec(env.path())
        .args(["logs", &id])
        .output()
        .unwrap();
    assert!(
        stdout(&log).contains("Running stage 'train'"),
        "{}{}",
        stdout(&log),
        stderr(&log)
    );

    let out = env
        .dvc_exec(env.path())
        .args(["cancel", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("cancelled run"), "{}", stderr(&out));
    assert!(
        !workdir.join("runs").join(&id).exists(),
        "the run's directory is removed"
    );
    let list = stdout(&env.dvc_exec(env.path()).args(["runs"]).output().unwrap());
    assert!(
        list.lines()
            .any(|l| l.contains(&id) && l.contains("cancelled") && l.contains("130")),
        "{list}"
    );
    // Cancelling twice is refused clearly.
    let out = env
        .dvc_exec(env.path())
        .args(["cancel", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nothing to cancel"));
}
