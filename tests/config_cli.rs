//! `dvc-exec executor ...` at DVC's four levels, run as a user would, with the real DVC checking
//! that its own commands still work after every change.

mod common;

use common::{Project, TestEnv, stderr, stdout};
use std::path::Path;

fn dvc_still_works(env: &TestEnv, root: &Path) {
    env.ok("dvc", &["config", "-l"], root);
    env.ok("dvc", &["status"], root);
    env.ok("dvc", &["exp", "show", "--json"], root);
}

fn run_ok(env: &TestEnv, root: &Path, args: &[&str]) -> String {
    let out = env.dvc_exec(root).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dvc-exec {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn run_fail(env: &TestEnv, root: &Path, args: &[&str]) -> String {
    let out = env.dvc_exec(root).args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "dvc-exec {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn add_modify_list_remove_at_every_level() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    let root = &p.root;

    run_ok(&env, root, &["executor", "add", "-d", "here", "local"]);
    run_ok(
        &env,
        root,
        &[
            "executor",
            "add",
            "--local",
            "box",
            "ssh",
            "host=gpu-box",
            "port=2222",
        ],
    );
    run_ok(
        &env,
        root,
        &[
            "executor",
            "add",
            "--global",
            "cloud",
            "aws",
            "machine=l+a100*2",
            "region=us-east",
            "spot=true",
        ],
    );
    run_ok(
        &env,
        root,
        &[
            "executor",
            "add",
            "--system",
            "shared",
            "ssh",
            "host=shared.example.com",
        ],
    );
    dvc_still_works(&env, root);

    // Files at each level, in DVC's syntax.
    let repo = p.read(".dvc/exec.config");
    assert!(
        repo.contains("['executor \"here\"']\n    type = local"),
        "{repo}"
    );
    assert!(repo.contains("[core]\n    executor = here"), "{repo}");
    let local = p.read(".dvc/exec.config.local");
    assert!(local.contains("    host = gpu-box"), "{local}");
    assert!(p.read(".dvc/.gitignore").contains("/exec.config.local"));
    let global = std::fs::read_to_string(env.global_dir().join("exec.config")).unwrap();
    assert!(global.contains("machine = l+a100*2"), "{global}");
    assert!(env.system_dir().join("exec.config").exists());
    // The local file is ignored by git, the repo file is not.
    let status = env.ok("git", &["status", "--porcelain"], root);
    assert!(status.contains(".dvc/exec.config"), "{status}");
    assert!(!status.contains("exec.config.local"), "{status}");

    let list = run_ok(&env, root, &["executor", "list", "--show-origin"]);
    assert!(
        list.contains(".dvc/exec.config:2") && list.contains("here") && list.contains("(default)"),
        "{list}"
    );
    assert!(
        list.contains(".dvc/exec.config.local:2") && list.contains("gpu-box:2222"),
        "{list}"
    );
    assert!(
        list.contains("global/exec.config:2") && list.contains("l+a100*2 us-east spot"),
        "{list}"
    );
    assert!(
        list.contains("system/exec.config:2") && list.contains("shared.example.com"),
        "{list}"
    );

    // Key-by-key merge: a repo-level key overrides a global one for the same executor.
    run_ok(
        &env,
        root,
        &["executor", "modify", "cloud", "region", "eu-west"],
    );
    let list = run_ok(&env, root, &["executor", "list"]);
    assert!(list.contains("l+a100*2 eu-west spot"), "{list}");
    run_ok(
        &env,
        root,
        &["executor", "modify", "--unset", "cloud", "region"],
    );
    let list = run_ok(&env, root, &["executor", "list"]);
    assert!(list.contains("l+a100*2 us-east spot"), "{list}");
    dvc_still_works(&env, root);

    // JSON for programs.
    let json = run_ok(&env, root, &["executor", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let names: Vec<&str> = v["executors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["box", "cloud", "here", "shared"]);

    // Default, rename, remove.
    assert_eq!(run_ok(&env, root, &["executor", "default"]).trim(), "here");
    run_ok(&env, root, &["executor", "rename", "here", "laptop"]);
    assert_eq!(
        run_ok(&env, root, &["executor", "default"]).trim(),
        "laptop"
    );
    run_ok(&env, root, &["executor", "default", "box"]);
    assert_eq!(run_ok(&env, root, &["executor", "default"]).trim(), "box");
    run_ok(&env, root, &["executor", "remove", "box"]);
    let list = run_ok(&env, root, &["executor", "list"]);
    assert!(!list.contains("gpu-box"), "{list}");
    // Removing the default executor unsets the default.
    let err = run_fail(&env, root, &["executor", "default"]);
    assert!(err.contains("no default executor is set"), "{err}");
    run_ok(&env, root, &["executor", "remove", "--global", "cloud"]);
    run_ok(&env, root, &["executor", "remove", "shared"]);
    dvc_still_works(&env, root);
}

#[test]
fn comments_and_layout_survive_edits() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    p.write(
        ".dvc/exec.config",
        "# Our team's executors\n['executor \"gpu\"']\n    # the big box\n    type = ssh\n    host = gpu-box  # in the lab\n",
    );
    run_ok(
        &env,
        &p.root,
        &["executor", "modify", "gpu", "port", "2200"],
    );
    let text = p.read(".dvc/exec.config");
    assert_eq!(
        text,
        "# Our team's executors\n['executor \"gpu\"']\n    # the big box\n    type = ssh\n    host = gpu-box # in the lab\n    port = 2200\n"
    );
    dvc_still_works(&env, &p.root);
}

#[test]
fn legacy_dvc_machines_are_executors() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    let mut config = p.read(".dvc/config");
    config.push_str("[core]\n    machine = oldbox\n['machine \"oldbox\"']\n    cloud = aws\n    region = us-west\n    instance_type = l\n    instance_hdd_size = 100\n    spot = true\n");
    p.write(".dvc/config", &config);
    // DVC itself accepts its legacy section.
    dvc_still_works(&env, &p.root);
    let list = run_ok(&env, &p.root, &["executor", "list", "--show-origin"]);
    assert!(list.contains(".dvc/config:"), "{list}");
    assert!(
        list.contains("oldbox")
            && list.contains("aws")
            && list.contains("l us-west spot (DVC machine) (default)"),
        "{list}"
    );
    // dvc-exec never edits DVC's own file.
    let before = p.read(".dvc/config");
    let err = run_fail(&env, &p.root, &["executor", "remove", "oldbox"]);
    assert!(
        err.contains("is a DVC machine defined in .dvc/config"),
        "{err}"
    );
    assert_eq!(p.read(".dvc/config"), before);
}

#[test]
fn secrets_are_refused_at_repo_level() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    let err = run_fail(
        &env,
        &p.root,
        &["executor", "add", "az", "azure", "client_secret=hunter2"],
    );
    assert!(err.contains("holds a secret"), "{err}");
    assert!(err.contains("--local"), "{err}");
    assert!(!p.read(".dvc/exec.config").contains("hunter2"));
    run_ok(
        &env,
        &p.root,
        &["executor", "add", "az", "azure", "client_id=abc"],
    );
    run_ok(
        &env,
        &p.root,
        &[
            "executor",
            "modify",
            "--local",
            "az",
            "client_secret",
            "hunter2",
        ],
    );
    let list = run_ok(&env, &p.root, &["executor", "list", "--json"]);
    assert!(!list.contains("hunter2"), "{list}");
    assert!(list.contains("\"client_secret\":\"***\""), "{list}");
}

#[test]
fn bad_commands_get_clear_errors_and_change_nothing() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    run_ok(
        &env,
        &p.root,
        &["executor", "add", "gpu", "ssh", "host=gpu-box"],
    );
    let before = p.read(".dvc/exec.config");

    let err = run_fail(
        &env,
        &p.root,
        &["executor", "add", "gpu", "ssh", "host=other"],
    );
    assert!(
        err.contains("executor \"gpu\" already exists (.dvc/exec.config:1)") && err.contains("-f"),
        "{err}"
    );
    let err = run_fail(&env, &p.root, &["executor", "add", "x", "kubernetes"]);
    assert!(
        err.contains("is not an executor type") && err.contains("local, ssh, aws, gcp, azure"),
        "{err}"
    );
    let err = run_fail(&env, &p.root, &["executor", "modify", "gpu", "prot", "22"]);
    assert!(
        err.contains("unknown key `prot`") && err.contains("did you mean `port`?"),
        "{err}"
    );
    let err = run_fail(
        &env,
        &p.root,
        &["executor", "modify", "gpu", "port", "huge"],
    );
    assert!(err.contains("\"huge\" is not a port number"), "{err}");
    let err = run_fail(
        &env,
        &p.root,
        &["executor", "modify", "nosuch", "port", "22"],
    );
    assert!(
        err.contains("unknown executor \"nosuch\"") && err.contains("gpu (.dvc/exec.config:2)"),
        "{err}"
    );
    let err = run_fail(&env, &p.root, &["executor", "add", "bad name", "local"]);
    assert!(err.contains("not a valid executor name"), "{err}");
    let err = run_fail(&env, &p.root, &["executor", "add", "y", "ssh", "hostgpu"]);
    assert!(err.contains("is not KEY=VALUE"), "{err}");
    let err = run_fail(&env, &p.root, &["executor", "add", "z", "ssh"]);
    assert!(err.contains("has no `host`"), "{err}");
    let err = run_fail(&env, &p.root, &["exp", "run", "-e", "nosuch"]);
    assert!(
        err.contains("unknown executor \"nosuch\"") && err.contains("the executors defined are:"),
        "{err}"
    );
    let err = run_fail(&env, &p.root, &["exp", "run", "-e", "gpu", "--queue"]);
    assert!(err.contains("--queue cannot be used"), "{err}");
    let err = run_fail(&env, &p.root, &["exp", "run"]);
    assert!(err.contains("no default executor set"), "{err}");
    let err = run_fail(&env, &p.root, &["no-such-command"]);
    assert!(err.contains("unrecognized subcommand"), "{err}");
    // Nothing was written by the failures.
    assert_eq!(p.read(".dvc/exec.config"), before);
    dvc_still_works(&env, &p.root);
}

#[test]
fn broken_config_corpus() {
    let env = TestEnv::new();
    let p = Project::new(&env, "proj");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );
        p.write(".dvc/exec.config", &text);
        for args in [&["executor", "list"][..], &["exp", "run"][..]] {
            let err = run_fail(&env, &p.root, args);
            for e in &expects {
                assert!(
                    err.contains(e),
                    "{}: {args:?}: expected {e:?} in:\n{err}",
                    path.display()
                );
            }
        }
        n += 1;
    }
    assert!(n >= 20, "the corpus has {n} files");

    // Not text at all.
    std::fs::write(p.root.join(".dvc/exec.config"), b"\xff\xfe\x00garbage").unwrap();
    let err = run_fail(&env, &p.root, &["executor", "list"]);
    assert!(err.contains("exec.config is not UTF-8 text"), "{err}");
    // A directory where the file should be.
    std::fs::remove_file(p.root.join(".dvc/exec.config")).unwrap();
    std::fs::create_dir(p.root.join(".dvc/exec.config")).unwrap();
    let err = run_fail(&env, &p.root, &["executor", "list"]);
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn help_version_and_completions() {
    let env = TestEnv::new();
    let out = env.dvc_exec(env.path()).arg("--version").output().unwrap();
    assert!(stdout(&out).starts_with("dvc-exec "), "{}", stdout(&out));
    let help = stdout(&env.dvc_exec(env.path()).arg("--help").output().unwrap());
    for cmd in [
        "executor",
        "exp",
        "run",
        "repro",
        "attach",
        "collect",
        "completions",
    ] {
        assert!(help.contains(cmd), "{help}");
    }
    assert!(help.contains("Exit codes"), "{help}");
    let out = env
        .dvc_exec(env.path())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && stdout(&out).contains("_dvc__exec()"),
        "{}",
        stderr(&out)
    );
    // Outside a DVC project, repo-level writes are refused clearly; global ones work.
    let err = run_fail(&env, env.path(), &["executor", "add", "x", "local"]);
    assert!(err.contains("not inside a DVC repository"), "{err}");
    run_ok(
        &env,
        env.path(),
        &["executor", "add", "--global", "x", "local"],
    );
}
