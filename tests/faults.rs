//! Faults, bad input and security: a network cut, a restarted sshd, a killed client, a full
//! disk, Ctrl-C late in a run, racing clients, the watchdog, and bad input. Each test checks
//! what a user would: the experiment is in `dvc exp show` exactly once, or the error says what
//! happened and where, and nothing local was half-written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{NetNs, Project, Sshd, TestEnv, stderr, stdout, wait_for};

struct Setup {
    env: TestEnv,
    sshd: Sshd,
    project: Project,
    workdir: PathBuf,
}

fn setup_with(env: TestEnv, sshd: Sshd) -> Setup {
    let project = Project::new(&env, "proj");
    let workdir = common::add_ssh_executor(&env, &sshd, &project, true);
    Setup {
        env,
        sshd,
        project,
        workdir,
    }
}

fn setup() -> Setup {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "box");
    setup_with(env, sshd)
}

fn dvc_exec(s: &Setup, args: &[&str]) -> Output {
    s.env.dvc_exec(&s.project.root).args(args).output().unwrap()
}

fn spawn_until(s: &Setup, args: &[&str], needle: &str) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = s.env.dvc_exec(&s.project.root);
    cmd.args(args);
    common::spawn_until(cmd, needle)
}

/// Experiments in `dvc exp show` with this lr: (name, acc).
fn experiments_with_lr(s: &Setup, lr: f64) -> Vec<(String, serde_json::Value)> {
    s.project
        .experiments(&s.env)
        .into_iter()
        .filter(|(_, params, _)| params["lr"] == serde_json::json!(lr))
        .map(|(n, _, m)| (n, m["acc"].clone()))
        .collect()
}

/// Exactly one experiment with this lr, with the metric the pipeline computes.
fn assert_one_experiment(s: &Setup, lr: f64) {
    let found = experiments_with_lr(s, lr);
    assert_eq!(
        found.len(),
        1,
        "want exactly one experiment with lr={lr}: {:?}",
        s.project.experiments(&s.env)
    );
    let acc = (lr * 50.0 * 1000.0).round() / 1000.0;
    assert_eq!(found[0].1, serde_json::json!(acc), "{found:?}");
}

/// The run id of the only run in `dvc-exec runs --json` in this state.
fn run_in_state(s: &Setup, state: &str) -> String {
    let out = dvc_exec(s, &["runs", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let ids: Vec<String> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == state)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "runs in state {state}: {v}");
    ids[0].clone()
}

/// Every file under `dir` (but `.git` and DVC's scratch `.dvc/tmp`) with a hash of its content.
fn tree_hashes(dir: &Path) -> BTreeMap<String, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if rel == ".git" || rel == ".dvc/tmp" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap_or_default().hash(&mut h);
                out.insert(rel, h.finish());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// What must not change when a run fails: the workspace files, the DVC cache, every git ref
/// and the index.
fn local_state(s: &Setup) -> (BTreeMap<String, u64>, String, String) {
    let root = &s.project.root;
    (
        tree_hashes(root),
        s.env.ok("git", &["for-each-ref"], root),
        s.env.ok("git", &["ls-files", "-s"], root),
    )
}

fn assert_fsck_clean(env: &TestEnv, repo: &Path) {
    let out = env
        .cmd("git", repo)
        .args(["fsck", "--no-dangling"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && !stdout(&out).contains("error") && !stderr(&out).contains("error"),
        "git fsck in {}: {}{}",
        repo.display(),
        stdout(&out),
        stderr(&out)
    );
}

/// A process group of its own, as a shell gives a foreground job: Ctrl-C reaches the whole
/// group (dvc-exec and the git, rsync and DVC it runs).
fn spawn_in_group(s: &Setup, args: &[&str], needle: &str) -> (Child, mpsc::Receiver<String>) {
    use std::os::unix::process::CommandExt;
    let mut cmd = s.env.dvc_exec(&s.project.root);
    cmd.args(args).process_group(0);
    common::spawn_until(cmd, needle)
}

fn ctrl_c_group(child: &Child) {
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
}

#[test]
fn a_network_cut_of_30s_mid_run_loses_nothing_and_runs_once() {
    let env = TestEnv::new();
    let ns = NetNs::new();
    let sshd = Sshd::start_in_netns(&env, "far", &ns);
    let s = setup_with(env, sshd);
    let (child, rx) = spawn_until(
        &s,
        &["exp", "run", "-S", "lr=0.5", "-S", "sleep=8"],
        "is running on",
    );
    ns.cut();
    let cut_at = Instant::now();
    // Behind the cut, the run goes on to its end on its own.
    let runs = s.workdir.join("runs");
    wait_for(120, "the run to finish on the host while cut off", || {
        std::fs::read_dir(&runs)
            .map(|rd| rd.flatten().any(|e| e.path().join("exit").exists()))
            .unwrap_or(false)
    });
    // The cable stays out for 30 s in all.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed()));
    ns.restore();
    let out = child.wait_with_output().unwrap();
    let err = common::drain(&rx);
    assert!(out.status.success(), "{}\n{err:?}", stdout(&out));
    // The dead link was noticed (keepalives) and the log followed again over a new login.
    assert!(
        err.contains("lost the connection") && err.contains("reconnecting"),
        "{err}"
    );
    assert!(s.sshd.logins() >= 2, "a new login after the cut");
    assert_one_experiment(&s, 0.5);
    assert_eq!(
        s.project.experiments(&s.env).len(),
        1,
        "one run, one experiment"
    );
    assert!(s.project.read("params.yaml").contains("lr: 0.5"));
    assert_eq!(s.project.read("out/model.txt"), "model lr=0.5 rows=50\n");
    // The stage ran once: one log line of training.
    let run = run_in_state(&s, "collected");
    let log = stdout(&dvc_exec(&s, &["logs", &run]));
    assert_eq!(log.matches("trained with lr").count(), 1, "{log}");
}

#[test]
fn sshd_restarted_mid_run_loses_nothing() {
    let mut s = setup();
    // 1. A restart that keeps the sessions (as `systemctl restart ssh` does).
    let (child, _rx) = spawn_until(
        &s,
        &["exp", "run", "-S", "lr=0.2", "-S", "sleep=3"],
        "is running on",
    );
    s.sshd.restart();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_one_experiment(&s, 0.2);
    // 2. The daemon dies with every session, then comes back: dvc-exec logs in again.
    let logins = s.sshd.logins();
    let (child, rx) = spawn_until(
        &s,
        &["exp", "run", "-S", "lr=0.3", "-S", "sleep=3"],
        "is running on",
    );
    s.sshd.crash();
    s.sshd.restart();
    let out = child.wait_with_output().unwrap();
    let err = common::drain(&rx);
    assert!(out.status.success(), "{err:?}");
    assert_one_experiment(&s, 0.3);
    assert!(s.sshd.logins() > logins, "it logged in again");
}

#[test]
fn a_foreground_client_killed_mid_run_is_collected_from_a_new_process() {
    let s = setup();
    let (mut child, _rx) = spawn_until(
        &s,
        &["exp", "run", "-S", "lr=0.4", "-S", "sleep=4"],
        "is running on",
    );
    child.kill().unwrap(); // SIGKILL: no cleanup of any kind
    child.wait().unwrap();
    let run = run_in_state(&s, "running");
    // While it runs, collect says so and how to follow it.
    let out = dvc_exec(&s, &["collect", &run]);
    if !s.workdir.join("runs").join(&run).join("exit").exists() {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("still running"), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("dvc-exec attach {run}")));
        wait_for(60, "the run to end", || {
            s.workdir.join("runs").join(&run).join("exit").exists()
        });
        let out = dvc_exec(&s, &["collect", &run]);
        assert!(out.status.success(), "{}", stderr(&out));
    } else {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_one_experiment(&s, 0.4);
    assert!(s.project.read("params.yaml").contains("lr: 0.4"));
    assert_eq!(s.project.read("out/model.txt"), "model lr=0.4 rows=50\n");
    assert_eq!(run_in_state(&s, "collected"), run);
    common::kill_ssh_masters(s.sshd.port);
}

/// A small tmpfs mounted as the executor's workdir; unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("`mount` is missing: apt-get install -y mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn assert_disk_full_error(s: &Setup, out: &Output) {
    let err = stderr(out);
    assert!(
        out.status.code().is_some_and(|c| c != 0),
        "exit {:?}: {err}",
        out.status.code()
    );
    assert!(
        err.contains(&format!("127.0.0.1:{}", s.sshd.port)),
        "names the host: {err}"
    );
    assert!(
        err.contains(&s.workdir.display().to_string()),
        "names the path: {err}"
    );
    assert!(
        err.contains("No space left") && err.contains("disk"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_full_disk_on_the_host_is_named_and_changes_nothing_here() {
    let s = setup();
    // During the sync: the data does not fit.
    let big: String = (0..400_000).map(|i| format!("{i:09}\n")).collect();
    s.project.write("data/big.txt", &big);
    s.env
        .ok("dvc", &["add", "-q", "data/big.txt"], &s.project.root);
    s.env.ok("git", &["add", "-A"], &s.project.root);
    s.env
        .ok("git", &["commit", "-qm", "big data"], &s.project.root);
    {
        let _disk = SmallDisk::mount(&s.workdir, "1m");
        let before = local_state(&s);
        let out = dvc_exec(&s, &["exp", "run", "-S", "lr=0.7"]);
        assert_disk_full_error(&s, &out);
        assert!(before == local_state(&s), "local state changed");
        assert!(s.project.experiments(&s.env).is_empty());
    }
    // During the run: the data fits, the stage's output does not.
    {
        let _disk = SmallDisk::mount(&s.workdir, "24m");
        let mut train = s.project.read("train.py");
        train.push_str(
            "with open('out/pad.bin', 'w') as f:\n    f.write('x' * int(p.get('pad', 0)))\n",
        );
        s.project.write("train.py", &train);
        s.project
            .write("params.yaml", "lr: 0.1\nsleep: 0\nfail: false\npad: 0\n");
        let before = local_state(&s);
        let out = dvc_exec(&s, &["exp", "run", "-S", "lr=0.7", "-S", "pad=40000000"]);
        assert_disk_full_error(&s, &out);
        assert!(before == local_state(&s), "local state changed");
        assert!(s.project.experiments(&s.env).is_empty());
    }
    // With room again, the same run works.
    let out = dvc_exec(&s, &["exp", "run", "-S", "lr=0.7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_one_experiment(&s, 0.7);
}

/// Either the results arrived whole (experiment listed, applied, outputs in the local cache) or
/// not at all (no experiment, workspace as before, no temporary ref).
fn assert_whole_or_nothing(
    s: &Setup,
    lr: f64,
    before: &(BTreeMap<String, u64>, String, String),
) -> bool {
    let found = experiments_with_lr(s, lr);
    let refs = s
        .env
        .ok("git", &["for-each-ref", "refs/dvc-exec"], &s.project.root);
    assert!(refs.is_empty(), "temporary refs left: {refs}");
    if found.is_empty() {
        assert!(
            *before == local_state(s),
            "the workspace changed without a result"
        );
        false
    } else {
        assert_one_experiment(s, lr);
        let name = &found[0].0;
        // The outputs are in the local cache: the experiment applies with DVC alone.
        s.env.ok("dvc", &["exp", "apply", name], &s.project.root);
        assert_eq!(
            s.project.read("out/model.txt"),
            format!("model lr={lr} rows=50\n")
        );
        true
    }
}

#[test]
fn ctrl_c_while_fetching_or_applying_leaves_no_half_written_state() {
    let s = setup();
    for (lr, phase) in [
        (0.15, "fetching the results"),
        (0.25, "applying the results"),
    ] {
        let before = local_state(&s);
        let (child, rx) = spawn_in_group(&s, &["exp", "run", "-S", &format!("lr={lr}")], phase);
        ctrl_c_group(&child);
        let out = child.wait_with_output().unwrap();
        let err = common::drain(&rx);
        assert!(!err.contains("panicked"), "{err}");
        let arrived = assert_whole_or_nothing(&s, lr, &before);
        if arrived {
            assert!(
                out.status.success() || out.status.code() == Some(130),
                "{:?}: {err}",
                out.status
            );
        } else {
            assert_eq!(out.status.code(), Some(130), "{err}");
            // The results wait on the host: collect brings them.
            let run = run_in_state(&s, "finished");
            assert!(err.contains(&format!("dvc-exec collect {run}")), "{err}");
            let out = dvc_exec(&s, &["collect", &run]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_one_experiment(&s, lr);
        }
    }
    // A new run afterwards works.
    let out = dvc_exec(&s, &["exp", "run", "-S", "lr=0.35"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_one_experiment(&s, 0.35);
    assert_fsck_clean(&s.env, &s.project.root);
}

#[test]
fn two_clients_racing_on_one_project_and_host_keep_both_repositories_sound() {
    let s = setup();
    // A new commit, so both runs push the same new baseline at once.
    s.project.write("notes.txt", "race\n");
    s.env.ok("git", &["add", "notes.txt"], &s.project.root);
    s.env.ok("git", &["commit", "-qm", "race"], &s.project.root);
    let spawn = |lr: &str, name: &str| {
        let lr = format!("lr={lr}");
        common::spawn_exp_run(
            &s.env,
            &s.project.root,
            &["--no-apply", "-n", name, "-S", &lr],
        )
    };
    let (a, b) = (spawn("0.13", "racer-a"), spawn("0.17", "racer-b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert_one_experiment(&s, 0.13);
    assert_one_experiment(&s, 0.17);
    assert_fsck_clean(&s.env, &s.project.root);
    for e in std::fs::read_dir(s.workdir.join("projects"))
        .unwrap()
        .flatten()
    {
        assert_fsck_clean(&s.env, &e.path().join("repo.git"));
    }
    // Both experiments apply with DVC alone: their outputs arrived.
    for (name, lr) in [("racer-a", "0.13"), ("racer-b", "0.17")] {
        s.env.ok("dvc", &["exp", "apply", name], &s.project.root);
        assert_eq!(
            s.project.read("out/model.txt"),
            format!("model lr={lr} rows=50\n")
        );
    }
}

/// The watchdog as its systemd timer runs it, every second instead of every minute, with a
/// stand-in shutdown that leaves a marker.
struct Watchdog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    marker: PathBuf,
}

impl Watchdog {
    fn start(workdir: &Path, idle: u32, max: u32, marker: PathBuf) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, wd, m) = (stop.clone(), workdir.to_path_buf(), marker.clone());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/provider/watchdog.sh");
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let st = Command::new("bash")
                    .arg(script)
                    .arg(&wd)
                    .args([idle.to_string(), max.to_string()])
                    .arg("touch")
                    .arg(&m)
                    .stdout(Stdio::null())
                    .status()
                    .unwrap();
                assert!(st.success());
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Self {
            stop,
            thread: Some(thread),
            marker,
        }
    }

    fn shut_down(&self) -> bool {
        self.marker.exists()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_watchdog_downs_a_machine_whose_client_vanished_and_one_past_max_runtime() {
    let s = setup();
    // Idle: the client is killed mid-run; the machine stays up while the run goes on, and goes
    // down idle_timeout after it ended.
    let marker = s.env.path().join("shutdown-idle");
    let (mut child, _rx) = spawn_until(
        &s,
        &["exp", "run", "-S", "lr=0.1", "-S", "sleep=6"],
        "is running on",
    );
    let wd = Watchdog::start(&s.workdir, 3, 3600, marker.clone());
    child.kill().unwrap();
    child.wait().unwrap();
    let run = run_in_state(&s, "running");
    let exit = s.workdir.join("runs").join(&run).join("exit");
    wait_for(60, "the orphaned run to end", || exit.exists());
    assert!(!wd.shut_down(), "the watchdog shut down a busy machine");
    wait_for(60, "the watchdog to shut the idle machine down", || {
        wd.shut_down()
    });
    drop(wd);
    let log = std::fs::read_to_string(s.workdir.join("state/watchdog.log")).unwrap();
    assert!(log.contains("past idle_timeout (3s)"), "{log}");
    common::kill_ssh_masters(s.sshd.port);

    // Overdue: a run that would take ten minutes on a machine up longer than max_runtime.
    let out = dvc_exec(&s, &["exp", "run", "--detach", "--json", "-S", "sleep=600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let run = v["run"].as_str().unwrap().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(s.workdir.join("state/created"), format!("{}\n", now - 120)).unwrap();
    let marker = s.env.path().join("shutdown-overdue");
    let wd = Watchdog::start(&s.workdir, 3600, 60, marker);
    wait_for(60, "the watchdog to shut the overdue machine down", || {
        wd.shut_down()
    });
    drop(wd);
    assert!(
        !s.workdir.join("runs").join(&run).join("exit").exists(),
        "the run was still going when the machine went down"
    );
    let log = std::fs::read_to_string(s.workdir.join("state/watchdog.log")).unwrap();
    assert!(log.contains("past max_runtime (60s)"), "{log}");
    let out = dvc_exec(&s, &["cancel", &run]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Run and require exit code 2 with a one-line `error:` and no trace; returns stderr.
fn usage_error(mut cmd: Command, what: &str) -> String {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: ssh's ConnectTimeout, not forever.
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("{what}: dvc-exec hung for 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}{}", stdout(&out));
    assert!(
        err.lines().any(|l| l.starts_with("error: ")),
        "{what}: {err}"
    );
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "internal error",
    ] {
        assert!(!err.contains(bad), "{what}: {err}");
    }
    err
}

fn add_executor(s: &Setup, name: &str, settings: &[String]) {
    let mut args = vec![
        "executor".to_string(),
        "add".into(),
        "-f".into(),
        name.into(),
        "ssh".into(),
    ];
    args.extend(settings.iter().cloned());
    s.env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &s.project.root,
    );
}

/// The test executor's settings with some replaced.
fn settings_with(s: &Setup, replace: &[(&str, String)]) -> Vec<String> {
    let script = common::venv_setup_script(&s.env);
    s.sshd
        .executor_settings(&s.workdir, &script)
        .into_iter()
        .map(|kv| {
            let key = kv.split('=').next().unwrap().to_string();
            replace
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(k, v)| format!("{k}={v}"))
                .unwrap_or(kv)
        })
        .collect()
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let s = setup();
    let run = |args: &[&str]| {
        let mut c = s.env.dvc_exec(&s.project.root);
        c.args(args);
        c
    };
    // An unknown executor.
    let err = usage_error(run(&["exp", "run", "-e", "nosuch"]), "unknown executor");
    assert!(err.contains("unknown executor \"nosuch\""), "{err}");
    // Bad arguments.
    let err = usage_error(run(&["exp", "run", "-e"]), "-e without a value");
    assert!(err.contains("-e"), "{err}");
    usage_error(run(&["runs", "--no-such-flag"]), "an unknown flag");
    usage_error(run(&["collect"]), "collect without a run");
    let err = usage_error(run(&["collect", "no-such-run"]), "an unknown run");
    assert!(err.contains("no-such-run"), "{err}");

    // A closed port: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    add_executor(
        &s,
        "closed",
        &settings_with(&s, &[("port", port.to_string())]),
    );
    let err = usage_error(run(&["exp", "run", "-e", "closed"]), "a closed port");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("Connection refused"),
        "{err}"
    );

    // An address where packets vanish: bounded by ssh's ConnectTimeout.
    let ns = NetNs::new();
    let black = &ns.inner_addr;
    let out = Command::new("ip")
        .args([
            "neigh",
            "replace",
            black,
            "lladdr",
            "02:00:00:00:00:01",
            "nud",
            "permanent",
            "dev",
        ])
        .arg(format!("{}a", ns.name))
        .output()
        .unwrap();
    assert!(out.status.success(), "ip neigh: {}", stderr(&out));
    add_executor(
        &s,
        "void",
        &settings_with(&s, &[("host", black.clone()), ("port", "22".into())]),
    );
    let err = usage_error(run(&["exp", "run", "-e", "void"]), "a non-routable address");
    assert!(
        err.contains(black.as_str()) && err.contains("timed out"),
        "{err}"
    );

    // A client key the host does not accept: the host and the key file are named.
    let wrong = s.env.path().join("wrong_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .unwrap();
    assert!(st.success());
    add_executor(
        &s,
        "badkey",
        &settings_with(&s, &[("keyfile", wrong.display().to_string())]),
    );
    let err = usage_error(run(&["exp", "run", "-e", "badkey"]), "a wrong client key");
    assert!(
        err.contains(&format!("127.0.0.1:{}", s.sshd.port))
            && err.contains(&wrong.display().to_string())
            && err.contains("refused"),
        "{err}"
    );

    // A host whose DVC is too old for this project.
    let fake = s.env.path().join("old-dvc");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("dvc"), "#!/bin/sh\necho 2.0.0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(fake.join("dvc"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let setup_old = s.env.path().join("setup-old.sh");
    std::fs::write(
        &setup_old,
        format!("export PATH={}:$PATH\n", fake.display()),
    )
    .unwrap();
    add_executor(
        &s,
        "olddvc",
        &settings_with(&s, &[("setup_script", setup_old.display().to_string())]),
    );
    let err = usage_error(run(&["exp", "run", "-e", "olddvc"]), "an old DVC");
    assert!(
        err.contains("has DVC 2.0.0") && err.contains("pip install 'dvc==3.*'"),
        "{err}"
    );

    // A rebase in progress.
    let root = &s.project.root;
    s.env.ok("git", &["add", "-A"], root);
    s.env.ok("git", &["commit", "-qm", "executors"], root);
    s.env.ok("git", &["checkout", "-qb", "side"], root);
    s.project
        .write("params.yaml", "lr: 0.2\nsleep: 0\nfail: false\n");
    s.env.ok("git", &["commit", "-qam", "side"], root);
    s.env.ok("git", &["checkout", "-q", "main"], root);
    s.project
        .write("params.yaml", "lr: 0.3\nsleep: 0\nfail: false\n");
    s.env.ok("git", &["commit", "-qam", "main"], root);
    let _ = s
        .env
        .cmd("git", root)
        .args(["rebase", "side"])
        .output()
        .unwrap();
    let err = usage_error(run(&["exp", "run"]), "a rebase in progress");
    assert!(
        err.contains("a rebase is in progress") && err.contains("git rebase --abort"),
        "{err}"
    );
    // Nothing was left running or half-done by any of these.
    assert!(s.project.experiments(&s.env).is_empty());
}
