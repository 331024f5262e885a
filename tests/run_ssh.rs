//! End to end on a real sshd on loopback: the experiment runs there and comes back as a native
//! DVC experiment.

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use common::{Project, Sshd, TestEnv, stderr, stdout, wait_for};

struct Setup {
    env: TestEnv,
    sshd: Sshd,
    project: Project,
    workdir: std::path::PathBuf,
}

fn setup() -> Setup {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "box");
    let project = Project::new(&env, "proj");
    let workdir = common::add_ssh_executor(&env, &sshd, &project, true);
    Setup {
        env,
        sshd,
        project,
        workdir,
    }
}

fn exp_run(s: &Setup, args: &[&str]) -> std::process::Output {
    s.env
        .dvc_exec(&s.project.root)
        .args(["exp", "run"])
        .args(args)
        .output()
        .unwrap()
}

/// Start dvc-exec and wait until its stderr says the run is running.
fn spawn_until_running(s: &Setup, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = s.env.dvc_exec(&s.project.root);
    cmd.args(["exp", "run"]).args(args);
    common::spawn_until(cmd, "is running on")
}

fn assert_experiment(s: &Setup, lr: f64, acc: f64) {
    let exps = s.project.experiments(&s.env);
    assert!(
        exps.iter()
            .any(|(_, params, metrics)| params["lr"] == serde_json::json!(lr)
                && metrics["acc"] == serde_json::json!(acc)),
        "no experiment with lr={lr} acc={acc} in dvc exp show: {exps:?}"
    );
}

/// Processes whose working directory is under `dir`.
fn processes_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd"))
            && cwd.starts_with(dir)
        {
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
            out.push(cmd.replace('\0', " "));
        }
    }
    out
}

#[test]
fn round_trip_brings_back_a_native_experiment() {
    let s = setup();
    let p = &s.project;
    // An uncommitted change that reads an untracked file: both must reach the remote.
    let mut train = p.read("train.py");
    train = train.replace(
        "print(\"trained with lr\"",
        "json.dump({\"acc\": round(p[\"lr\"] * len(rows), 3), \"bonus\": open(\"bonus.txt\").read().strip()}, open(\"metrics.json\", \"w\"))\nprint(\"trained with lr\"",
    );
    p.write("train.py", &train);
    p.write("bonus.txt", "from-an-untracked-file\n");
    let head_before = s.env.ok("git", &["rev-parse", "HEAD"], &p.root);
    s.env.ok("git", &["add", "params.yaml"], &p.root); // something staged: the index must survive as it is
    let index_before = s
        .env
        .ok("git", &["diff", "--cached", "--name-only"], &p.root);
    let logins_before = s.sshd.logins();

    let out = exp_run(&s, &["-S", "lr=0.3", "--json"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // JSON events, one per line, ending with the result.
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "phase" && e["phase"] == "sync")
    );
    assert!(events.iter().any(|e| {
        e["event"] == "log"
            && e["line"]
                .as_str()
                .unwrap_or("")
                .contains("trained with lr 0.3")
    }));
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result", "{events:?}");
    let name = result["name"].as_str().unwrap().to_string();
    let base = head_before.trim();
    assert_eq!(
        result["ref"],
        format!("refs/exps/{}/{}/{name}", &base[..2], &base[2..])
    );
    assert_eq!(result["applied"], true);

    // One SSH login for the whole run.
    assert_eq!(
        s.sshd.logins() - logins_before,
        1,
        "SSH logins during one run"
    );

    // dvc exp show lists it with its params and metrics.
    let exps = p.experiments(&s.env);
    let exp = exps
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} not in {exps:?}"));
    assert_eq!(exp.1["lr"], serde_json::json!(0.3));
    assert_eq!(exp.2["acc"], serde_json::json!(15.0));
    assert_eq!(exp.2["bonus"], serde_json::json!("from-an-untracked-file"));

    // The workspace holds the results, as after a local dvc exp run.
    assert!(p.read("params.yaml").contains("lr: 0.3"));
    assert!(
        p.read("metrics.json")
            .contains("\"bonus\": \"from-an-untracked-file\""),
        "{}",
        p.read("metrics.json")
    );
    assert_eq!(p.read("out/model.txt"), "model lr=0.3 rows=50\n");
    // The user's HEAD, index and uncommitted edit are as they were.
    assert_eq!(
        s.env.ok("git", &["rev-parse", "HEAD"], &p.root),
        head_before
    );
    assert_eq!(
        s.env
            .ok("git", &["diff", "--cached", "--name-only"], &p.root),
        index_before
    );
    assert!(p.read("train.py").contains("bonus.txt"));
    assert_eq!(
        p.read("bonus.txt"),
        "from-an-untracked-file\n",
        "the untracked file survives"
    );
    // And DVC's own commands work on it.
    s.env
        .ok("dvc", &["exp", "branch", &name, "from-remote"], &p.root);
    s.env.ok("dvc", &["exp", "remove", &name], &p.root);
    // Nothing is left of the run on the host.
    let runs = std::fs::read_dir(s.workdir.join("runs")).unwrap().count();
    assert_eq!(runs, 0, "run directories left on the host");
}

#[test]
fn second_run_sends_only_the_delta() {
    let s = setup();
    let p = &s.project;
    // 2 MB of DVC-tracked data.
    let big: String = (0..200_000)
        .map(|i| format!("{:09}\n", i * 7919 % 1_000_003))
        .collect();
    p.write("data/raw.txt", &big);
    s.env.ok("dvc", &["add", "-q", "data/raw.txt"], &p.root);
    s.env.ok("git", &["commit", "-qam", "more data"], &p.root);

    let result = |out: &std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
        serde_json::from_str(stdout(out).lines().last().unwrap()).unwrap()
    };
    let first = result(&exp_run(&s, &["--json", "-S", "lr=0.2"]));
    let up = first["bytes_up"].as_u64().unwrap();
    assert!(
        up >= 2_000_000,
        "first run sent {up} bytes of cache objects"
    );
    // The outputs came back into the local cache.
    assert!(first["bytes_down"].as_u64().unwrap() > 0);

    // A one-line code change: no cache object needs to travel.
    let mut train = p.read("train.py");
    train.push_str("# a one-line change\n");
    p.write("train.py", &train);
    let second = result(&exp_run(&s, &["--json", "-S", "lr=0.25"]));
    // rsync's protocol overhead only: its file list, no object.
    assert!(second["bytes_up"].as_u64().unwrap() < 4096, "{second}");
    assert!(second["bytes_down"].as_u64().unwrap() < 10_000, "{second}");
    assert_experiment(&s, 0.25, 50_000.0);
}

#[test]
fn failing_stage_returns_its_exit_code_and_log_tail() {
    let s = setup();
    // What the same failures return when DVC runs them here.
    let local_code = |args: &[&str]| {
        let tmp = s.env.path().join("local-copy");
        if !tmp.exists() {
            s.env.ok(
                "cp",
                &[
                    "-a",
                    s.project.root.to_str().unwrap(),
                    tmp.to_str().unwrap(),
                ],
                s.env.path(),
            );
        }
        s.env
            .cmd("dvc", &tmp)
            .args(["exp", "run"])
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    let expected = local_code(&["-S", "fail=true"]);
    assert!(matches!(expected, Some(c) if c != 0));
    let out = exp_run(&s, &["-S", "fail=true"]);
    assert_eq!(out.status.code(), expected, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "failed on box with exit code {}",
            expected.unwrap()
        )),
        "{err}"
    );
    assert!(
        err.contains("training failed on purpose"),
        "the log tail is shown: {err}"
    );
    // A failure of DVC itself (bad arguments) carries DVC's own exit code too.
    let expected = local_code(&["--no-such-dvc-option"]);
    let out = exp_run(&s, &["--no-such-dvc-option"]);
    assert_eq!(out.status.code(), expected, "{}", stderr(&out));
    // The workspace is untouched.
    assert!(s.project.read("params.yaml").contains("fail: false"));
}

#[test]
fn detach_then_collect_matches_a_foreground_run() {
    let s = setup();
    let out = exp_run(&s, &["--detach", "-S", "lr=0.4", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let run = v["run"].as_str().unwrap().to_string();
    assert_eq!(v["state"], "running");
    // Until it is collected, the workspace has not changed.
    assert!(s.project.read("params.yaml").contains("lr: 0.1"));
    wait_for(60, "the detached run to finish", || {
        std::fs::read_dir(s.workdir.join("runs").join(&run)).is_ok()
            && s.workdir.join("runs").join(&run).join("exit").exists()
    });
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args(["collect", &run])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_experiment(&s, 0.4, 20.0);
    assert!(s.project.read("params.yaml").contains("lr: 0.4"));
    assert_eq!(s.project.read("out/model.txt"), "model lr=0.4 rows=50\n");
    // Collecting twice is refused clearly.
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args(["collect", &run])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already collected"));
}

#[test]
fn killing_the_ssh_master_mid_run_loses_nothing() {
    let s = setup();
    let (child, _rx) = spawn_until_running(&s, &["-S", "lr=0.5", "-S", "sleep=4"]);
    // Kill every ssh master this test's client started (the control sockets carry its pid dir).
    std::thread::sleep(Duration::from_millis(500));
    let killed = common::kill_ssh_masters(s.sshd.port);
    assert!(killed > 0, "no ssh master found to kill");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_experiment(&s, 0.5, 25.0);
    // It reconnected: a second login.
    assert!(s.sshd.logins() >= 2);
}

#[test]
fn ctrl_c_stops_the_remote_run_and_leaves_nothing() {
    let s = setup();
    let (child, _rx) = spawn_until_running(&s, &["-S", "sleep=60"]);
    wait_for(30, "the stage to start on the host", || {
        processes_under(&s.workdir)
            .iter()
            .any(|c| c.contains("train.py"))
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = common::drain(&_rx);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("cancelled run") && err.contains("nothing is left running"),
        "{err}"
    );
    assert!(
        processes_under(&s.workdir).is_empty(),
        "left behind: {:?}",
        processes_under(&s.workdir)
    );
    // The workspace is untouched and a new run works.
    assert!(s.project.read("params.yaml").contains("sleep: 0"));
    let out = exp_run(&s, &["-S", "lr=0.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_experiment(&s, 0.6, 30.0);
}

#[test]
fn arguments_with_shell_metacharacters_arrive_intact() {
    let s = setup();
    let marker = s.env.path().join("pwned");
    // The value as DVC sees it, and as it is written on DVC's command line (a quoted string in
    // DVC's override grammar).
    let tricky = format!(
        "a b; $(touch {m}) `touch {m}` \"dq\" $HOME",
        m = marker.display()
    );
    let quoted = format!("'{tricky}'");
    let mut params = s.project.read("params.yaml");
    params.push_str("note: plain\n");
    s.project.write("params.yaml", &params);
    let mut yaml = s.project.read("dvc.yaml");
    yaml = yaml.replace(
        "params: [lr, sleep, fail]",
        "params: [lr, sleep, fail, note]",
    );
    s.project.write("dvc.yaml", &yaml);
    let out = exp_run(&s, &["-S", &format!("note={quoted}"), "-n", "tricky-name"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!marker.exists(), "a shell ran part of an argument");
    let exps = s.project.experiments(&s.env);
    let exp = exps
        .iter()
        .find(|(n, _, _)| n == "tricky-name")
        .unwrap_or_else(|| panic!("{exps:?}"));
    assert_eq!(exp.1["note"], serde_json::json!(tricky));
}

#[test]
fn a_wrong_host_key_is_refused() {
    let s = setup();
    // Pin some other key for the host.
    let other = s.env.path().join("other_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&other)
        .status()
        .unwrap();
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut parts = pubkey.split_whitespace();
    std::fs::write(
        &s.sshd.known_hosts,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            s.sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    )
    .unwrap();
    let out = exp_run(&s, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("host key of root@127.0.0.1"), "{err}");
    assert!(
        err.contains(&s.sshd.known_hosts.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn two_runs_at_once_on_one_host_do_not_interfere() {
    let s = setup();
    let (a, _ra) = spawn_until_running(&s, &["-S", "lr=0.11", "-S", "sleep=2", "-n", "first"]);
    let (b, _rb) = spawn_until_running(
        &s,
        &[
            "-S",
            "lr=0.12",
            "-S",
            "sleep=2",
            "-n",
            "second",
            "--no-apply",
        ],
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let exps = s.project.experiments(&s.env);
    let find = |n: &str| {
        exps.iter()
            .find(|(name, _, _)| name == n)
            .unwrap_or_else(|| panic!("{n} missing: {exps:?}"))
            .clone()
    };
    assert_eq!(find("first").1["lr"], serde_json::json!(0.11));
    assert_eq!(find("first").2["acc"], serde_json::json!(5.5));
    assert_eq!(find("second").1["lr"], serde_json::json!(0.12));
    assert_eq!(find("second").2["acc"], serde_json::json!(6.0));
}

#[test]
fn attach_follows_a_detached_run_to_its_end() {
    let s = setup();
    let out = exp_run(&s, &["--detach", "-S", "lr=0.8", "-S", "sleep=2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let run = v["run"].as_str().unwrap().to_string();
    // A unique prefix of the id is enough.
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args(["attach", &run[..run.len() - 2]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("trained with lr 0.8"),
        "the log streams: {}",
        stdout(&out)
    );
    assert_experiment(&s, 0.8, 40.0);
    assert!(s.project.read("params.yaml").contains("lr: 0.8"));
}

#[test]
fn a_host_without_dvc_is_named_with_the_fix() {
    let s = setup();
    // An executor on the same host with no setup_script: dvc is not on the remote PATH.
    let mut args = vec![
        "executor".to_string(),
        "add".into(),
        "bare".into(),
        "ssh".into(),
    ];
    args.extend(
        s.sshd
            .executor_settings(&s.workdir, Path::new("/dev/null"))
            .into_iter()
            .filter(|a| !a.starts_with("setup_script")),
    );
    s.env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &s.project.root,
    );
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .env("PATH", "/usr/bin:/bin")
        .env("DVC_EXEC_LOCAL_DVC", common::venv().join("bin/dvc"))
        .args(["exp", "run", "-e", "bare"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("DVC is not installed on root@127.0.0.1"),
        "{err}"
    );
    assert!(err.contains("setup_script"), "{err}");
}
