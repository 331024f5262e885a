//! The `local` executor: the same protocol in a work tree on this machine, no SSH. Also what
//! happens to the user's edits made while a run goes on, and `dvc-exec repro`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Project, TestEnv, stderr, stdout};

fn setup() -> (TestEnv, Project) {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    let workdir = env.path().join("local-workdir");
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &[
            "executor",
            "add",
            "-d",
            "here",
            "local",
            &format!("workdir={}", workdir.display()),
        ],
        &p.root,
    );
    (env, p)
}

/// Run dvc-exec, and call `during` once the run is running on the executor.
fn run_with(env: &TestEnv, p: &Project, args: &[&str], during: impl FnOnce()) -> (i32, String) {
    let mut child = env
        .dvc_exec(&p.root)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("is running on") {
            break;
        }
    }
    during();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    (child.wait().unwrap().code().unwrap_or(-1), seen)
}

#[test]
fn local_executor_runs_an_experiment() {
    let (env, p) = setup();
    let out = env
        .dvc_exec(&p.root)
        .args(["run", "-S", "lr=0.2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("trained with lr 0.2"),
        "the stage's output streams to stdout"
    );
    let exps = p.experiments(&env);
    assert!(
        exps.iter()
            .any(|(_, params, m)| params["lr"] == 0.2 && m["acc"] == 10.0),
        "{exps:?}"
    );
    assert_eq!(p.read("out/model.txt"), "model lr=0.2 rows=50\n");
    env.ok("dvc", &["status"], &p.root);
}

#[test]
fn edits_made_during_the_run_are_never_overwritten() {
    let (env, p) = setup();
    // The user edits the very file the experiment changes: the results stay unapplied.
    let (code, err) = run_with(
        &env,
        &p,
        &["exp", "run", "-S", "lr=0.3", "-S", "sleep=2"],
        || {
            std::thread::sleep(Duration::from_millis(300));
            p.write("params.yaml", "lr: 0.9  # my edit\nsleep: 0\nfail: false\n");
        },
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("not applying the results") && err.contains("params.yaml"),
        "{err}"
    );
    assert!(err.contains("dvc exp apply"), "{err}");
    assert_eq!(
        p.read("params.yaml"),
        "lr: 0.9  # my edit\nsleep: 0\nfail: false\n"
    );
    let exps = p.experiments(&env);
    assert!(
        exps.iter().any(|(_, params, _)| params["lr"] == 0.3),
        "the experiment is saved: {exps:?}"
    );

    // An edit to another file: the results are applied and the edit is kept.
    env.ok("git", &["checkout", "--", "params.yaml"], &p.root);
    let (code, err) = run_with(
        &env,
        &p,
        &["exp", "run", "-S", "lr=0.4", "-S", "sleep=2"],
        || {
            std::thread::sleep(Duration::from_millis(300));
            p.write("NOTES.md", "written while the run went on\n");
            let mut t = p.read("train.py");
            t.push_str("# edited while the run went on\n");
            p.write("train.py", &t);
        },
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("not applying"), "{err}");
    assert!(p.read("params.yaml").contains("lr: 0.4"));
    assert_eq!(p.read("NOTES.md"), "written while the run went on\n");
    assert!(
        p.read("train.py")
            .ends_with("# edited while the run went on\n")
    );
}

#[test]
fn no_apply_keeps_the_workspace_as_it_is() {
    let (env, p) = setup();
    let out = env
        .dvc_exec(&p.root)
        .args(["exp", "run", "--no-apply", "-S", "lr=0.7"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("apply it with: dvc exp apply"),
        "{}",
        stderr(&out)
    );
    assert!(p.read("params.yaml").contains("lr: 0.1"));
    let exps = p.experiments(&env);
    assert!(
        exps.iter().any(|(_, params, _)| params["lr"] == 0.7),
        "{exps:?}"
    );
}

#[test]
fn repro_brings_back_the_lock_file_and_outputs() {
    let (env, p) = setup();
    p.write("params.yaml", "lr: 0.5\nsleep: 0\nfail: false\n");
    let out = env.dvc_exec(&p.root).args(["repro"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        p.read("dvc.lock").contains("lr: 0.5"),
        "{}",
        p.read("dvc.lock")
    );
    assert_eq!(p.read("out/model.txt"), "model lr=0.5 rows=50\n");
    assert!(p.read("metrics.json").contains("25.0"));
    // As after a local dvc repro: everything is up to date, and no experiment was made.
    let status = env.ok("dvc", &["status"], &p.root);
    assert!(status.contains("up to date"), "{status}");
    assert!(p.experiments(&env).is_empty());
    let refs = env.ok("git", &["for-each-ref", "refs/dvc-exec"], &p.root);
    assert!(refs.is_empty(), "temporary refs left: {refs}");
}

#[test]
fn a_repo_that_cannot_run_gets_a_clear_error() {
    let env = TestEnv::new();
    // No commits.
    let root = env.path().join("empty");
    std::fs::create_dir_all(&root).unwrap();
    env.ok("git", &["init", "-q"], &root);
    env.ok("dvc", &["init", "-q"], &root);
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &["executor", "add", "-d", "here", "local"],
        &root,
    );
    let out = env.dvc_exec(&root).args(["exp", "run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the repository has no commits yet"),
        "{}",
        stderr(&out)
    );
    // Not a DVC project.
    let out = env
        .dvc_exec(env.path())
        .args(["exp", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not inside a DVC project"),
        "{}",
        stderr(&out)
    );
    // A merge in progress.
    let p = Project::new(&env, "merging");
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &["executor", "add", "-d", "here", "local"],
        &p.root,
    );
    env.ok("git", &["add", "-A"], &p.root);
    env.ok("git", &["commit", "-qm", "exec config"], &p.root);
    env.ok("git", &["checkout", "-qb", "other"], &p.root);
    p.write("params.yaml", "lr: 0.2\nsleep: 0\nfail: false\n");
    env.ok("git", &["commit", "-qam", "other"], &p.root);
    env.ok("git", &["checkout", "-q", "main"], &p.root);
    p.write("params.yaml", "lr: 0.3\nsleep: 0\nfail: false\n");
    env.ok("git", &["commit", "-qam", "main"], &p.root);
    let _ = env
        .cmd("git", &p.root)
        .args(["merge", "other"])
        .output()
        .unwrap();
    let out = env.dvc_exec(&p.root).args(["exp", "run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("a merge is in progress"),
        "{}",
        stderr(&out)
    );
}
