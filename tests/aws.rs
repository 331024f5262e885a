//! AWS executors against moto_server (instance type, image and key pair validation on): what is
//! EC2's own; the contract every cloud keeps is in tests/conformance.rs. moto's
//! instances are not machines, so the instance's SSH is reached through `proxy_command` to the
//! test sshd, which presents the host key dvc-exec generated for the executor.
#![cfg(feature = "aws")]

mod common;

use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use common::{Moto, Project, Sshd, TestEnv, stderr, stdout, wait_for};

struct Setup {
    env: TestEnv,
    moto: Moto,
    /// Kept alive for the test (stopped when dropped).
    _sshd: Sshd,
    project: Project,
    workdir: PathBuf,
}

fn setup(extra: &[&str]) -> Setup {
    let env = TestEnv::new();
    let moto = Moto::start(&env);
    let (sshd, workdir) = common::cloud_machine(&env);
    let project = Project::new(&env, "proj");
    let mut args: Vec<String> = vec![
        "executor".into(),
        "add".into(),
        "-d".into(),
        "cloud".into(),
        "aws".into(),
        "region=us-east-1".into(),
        format!("endpoint_url={}", moto.endpoint()),
        "machine=s".into(),
        "image=ubuntu".into(),
    ];
    args.extend(common::cloud_machine_settings(&env, &sshd, &workdir));
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = env.dvc_exec(&project.root).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    Setup {
        env,
        moto,
        _sshd: sshd,
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

fn spawn_until(s: &Setup, args: &[&str], needle: &str) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = s.env.dvc_exec(&s.project.root);
    cmd.args(["exp", "run"]).args(args);
    common::spawn_until(cmd, needle)
}

fn interrupt(child: Child, rx: mpsc::Receiver<String>) -> (Option<i32>, String) {
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    (
        out.status.code(),
        rx.try_iter().collect::<Vec<_>>().join("\n"),
    )
}

fn tags_of(s: &Setup, id: &str) -> String {
    s.moto.py(&format!(
        "r = ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]\nprint(json.dumps({{t['Key']: t['Value'] for t in r.get('Tags', [])}}))"
    ))
}

#[test]
fn a_run_on_an_instance_then_terminates_it() {
    let s = setup(&[]);
    let out = exp_run(&s, &["-S", "lr=0.3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("launching a t3.large in us-east-1 (ami-0a1b2c3d4e5f60002)"),
        "the newest Ubuntu image: {err}"
    );
    // The experiment came back.
    let exps = s.project.experiments(&s.env);
    assert!(
        exps.iter()
            .any(|(_, p, m)| p["lr"] == 0.3 && m["acc"] == 15.0),
        "{exps:?}"
    );
    // The instance is gone, and it was tagged.
    let all = s.moto.instances();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].1, "terminated", "{all:?}");
    let tags = tags_of(&s, &all[0].0);
    for t in [
        "\"dvc-exec:executor\": \"cloud\"",
        "\"dvc-exec:project\": \"proj-",
        "\"dvc-exec:owner\":",
        "\"dvc-exec:launch\":",
    ] {
        assert!(tags.contains(t), "{t} missing in {tags}");
    }
    // The user data pins the host key, and carries no cloud credential.
    let data = s.moto.py(&format!(
        "a = ec2.describe_instance_attribute(InstanceId='{}', Attribute='userData')\nprint(base64.b64decode(a['UserData']['Value']).decode())",
        all[0].0
    ));
    assert!(data.starts_with("#cloud-config"), "{data}");
    assert!(data.contains("ed25519_public: ssh-ed25519 "), "{data}");
    assert!(data.contains("dvc-exec-watchdog"), "{data}");
    assert!(
        !data.contains("testing-secret-never-on-an-instance") && !data.contains("AWS_"),
        "credentials in user data: {data}"
    );
    // The key pair and security group exist, tagged, SSH only from the given address.
    let groups = s.moto.py("print(json.dumps([g['IpPermissions'] for g in ec2.describe_security_groups(Filters=[{'Name': 'tag:dvc-exec:executor', 'Values': ['cloud']}])['SecurityGroups']]))");
    assert!(
        groups.contains("127.0.0.1/32") && groups.contains("\"FromPort\": 22"),
        "{groups}"
    );
    assert!(!groups.contains("0.0.0.0/0"), "{groups}");
    let keys = s.moto.py("print(len(ec2.describe_key_pairs(Filters=[{'Name': 'tag:dvc-exec:executor', 'Values': ['cloud']}])['KeyPairs']))");
    assert_eq!(keys.trim(), "1");
    // The private keys are 0600 in a 0700 directory.
    use std::os::unix::fs::PermissionsExt;
    let dir = s.env.path().join("data/dvc-exec/keys/cloud");
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for k in ["id_ed25519", "ssh_host_ed25519_key"] {
        assert_eq!(
            std::fs::metadata(dir.join(k)).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn ctrl_c_in_each_phase_leaves_no_instance_running() {
    // During bootstrap (the machine never reports it is ready).
    let s = setup(&[]);
    std::fs::remove_file(s.workdir.join("bootstrap.done")).unwrap();
    let (child, rx) = spawn_until(&s, &[], "waiting for");
    std::thread::sleep(Duration::from_millis(500));
    let (code, err) = interrupt(child, rx);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        s.moto.running().is_empty(),
        "left running: {:?}",
        s.moto.instances()
    );
    assert_eq!(s.moto.instances().len(), 1);

    // During the run.
    std::fs::write(s.workdir.join("bootstrap.done"), "").unwrap();
    let (child, rx) = spawn_until(&s, &["-S", "sleep=60"], "is running on");
    std::thread::sleep(Duration::from_millis(800));
    let (code, err) = interrupt(child, rx);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        s.moto.running().is_empty(),
        "left running: {:?}",
        s.moto.instances()
    );

    // During the sync (a large file takes a moment to send).
    let big: String = (0..400_000).map(|i| format!("{i:09}\n")).collect();
    s.project.write("data/raw.txt", &big);
    s.env
        .ok("dvc", &["add", "-q", "data/raw.txt"], &s.project.root);
    let (child, rx) = spawn_until(&s, &[], "sending the workspace");
    let (code, err) = interrupt(child, rx);
    assert!(code == Some(130) || code == Some(0), "{err}");
    assert!(
        s.moto.running().is_empty(),
        "left running: {:?}",
        s.moto.instances()
    );

    // And a new run afterwards works.
    let out = exp_run(&s, &["-S", "lr=0.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.moto.running().is_empty());
}

#[test]
fn ctrl_c_while_fetching_or_applying_keeps_the_results_then_removes_the_instance() {
    let s = setup(&[]);
    for (lr, phase) in [
        (0.15, "fetching the results"),
        (0.25, "applying the results"),
    ] {
        let (child, rx) = spawn_until(&s, &["-S", &format!("lr={lr}")], phase);
        let (code, err) = interrupt(child, rx);
        assert!(!err.contains("panicked"), "{err}");
        if code == Some(130) {
            // Stopped while fetching: nothing changed here, and the instance keeps the results
            // until they are collected.
            assert!(err.contains("dvc-exec collect"), "{err}");
            let runs = s
                .env
                .dvc_exec(&s.project.root)
                .args(["runs", "--json"])
                .output()
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_str(stdout(&runs).lines().last().unwrap()).unwrap();
            let run = v["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["state"] == "finished")
                .unwrap_or_else(|| panic!("no finished run: {v}"))["id"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(s.moto.running().len(), 1, "{:?}", s.moto.instances());
            let out = s
                .env
                .dvc_exec(&s.project.root)
                .args(["collect", &run])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        } else {
            // The results had arrived: the apply finished before the Ctrl-C was acted on.
            assert_eq!(code, Some(0), "{err}");
        }
        let found: Vec<_> = s
            .project
            .experiments(&s.env)
            .into_iter()
            .filter(|(_, p, _)| p["lr"] == serde_json::json!(lr))
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            s.moto.running().is_empty(),
            "left running: {:?}",
            s.moto.instances()
        );
    }
    // And a new run afterwards works.
    let out = exp_run(&s, &["-S", "lr=0.35"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.moto.running().is_empty());
}

#[test]
fn bad_launch_settings_get_clear_errors_and_leave_nothing() {
    let s = setup(&["instance_type=p3.2xlarge"]);
    let out = exp_run(&s, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("launching the instance failed"), "{err}");
    assert!(
        err.contains("InvalidInstanceType.NotFound") && err.contains("fix instance_type"),
        "{err}"
    );
    assert!(s.moto.running().is_empty());
    // The key pair and security group this launch created were rolled back.
    let left = s.moto.py("print(len(ec2.describe_key_pairs()['KeyPairs']), len([g for g in ec2.describe_security_groups()['SecurityGroups'] if g['GroupName'].startswith('dvc-exec')]))");
    assert_eq!(left.trim(), "0 0", "{err}");

    s.env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &["executor", "modify", "--unset", "cloud", "instance_type"],
        &s.project.root,
    );
    s.env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &[
            "executor",
            "modify",
            "cloud",
            "image",
            "ami-00000000000000000",
        ],
        &s.project.root,
    );
    let out = exp_run(&s, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("InvalidAMIID.NotFound")
            && err.contains("set image = ubuntu, nvidia, or an AMI id"),
        "{err}"
    );
    assert!(s.moto.running().is_empty());
}

#[test]
fn the_watchdog_shuts_down_idle_and_overdue_machines() {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "watchdog");
    let wd = env.path().join("wd");
    let marker = env.path().join("shutdown-called");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/provider/watchdog.sh");
    let run = |idle: u32, max: u32| -> bool {
        let _ = std::fs::remove_file(&marker);
        let st = std::process::Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
            .arg("-i")
            .arg(&sshd.key)
            .args([
                "-p",
                &sshd.port.to_string(),
                "root@127.0.0.1",
                "bash",
                "-s",
                "--",
            ])
            .arg(wd.to_str().unwrap())
            .arg(idle.to_string())
            .arg(max.to_string())
            .args(["touch", marker.to_str().unwrap()])
            .stdin(std::fs::File::open(script).unwrap())
            .status()
            .unwrap();
        assert!(st.success());
        marker.exists()
    };
    // A fresh machine with recent activity stays up.
    assert!(!run(600, 3600));
    // Idle for longer than idle_timeout: down.
    let old = std::time::SystemTime::now() - Duration::from_secs(1200);
    let f = std::fs::File::options()
        .write(true)
        .open(wd.join("state/last-activity"))
        .unwrap();
    f.set_modified(old).unwrap();
    assert!(run(600, 3600));
    // Busy with a run: stays up even though the last activity is old.
    let rundir = wd.join("runs/r1");
    std::fs::create_dir_all(&rundir).unwrap();
    let mut busy = std::process::Command::new("setsid")
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(rundir.join("pid"), busy.id().to_string()).unwrap();
    f.set_modified(old).unwrap();
    assert!(!run(600, 3600), "a busy machine must stay up");
    // Past max_runtime: down, busy or not.
    std::fs::write(wd.join("state/created"), "1000000000").unwrap();
    assert!(run(600, 3600));
    let _ = busy.kill();
    let _ = busy.wait();
    wait_for(5, "the log", || wd.join("state/watchdog.log").exists());
    let log = std::fs::read_to_string(wd.join("state/watchdog.log")).unwrap();
    assert!(
        log.contains("past idle_timeout") && log.contains("past max_runtime"),
        "{log}"
    );
}

#[test]
fn machine_up_list_ssh_and_down() {
    let s = setup(&[]);
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args(["machine", "up", "-n", "2", "cloud"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let running = s.moto.running();
    assert_eq!(running.len(), 2, "{:?}", s.moto.instances());
    for id in &running {
        assert!(tags_of(&s, id).contains("\"dvc-exec:keep\": \"true\""));
    }
    let list = stdout(
        &s.env
            .dvc_exec(&s.project.root)
            .args(["machine", "list"])
            .output()
            .unwrap(),
    );
    for id in &running {
        assert!(
            list.lines()
                .any(|l| l.contains(id) && l.contains("running") && l.contains("cloud")),
            "{list}"
        );
    }
    // A run uses a hot machine and leaves it up.
    let out = exp_run(&s, &["-S", "lr=0.9"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reusing the running machine"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.moto.running().len(), 2);
    // A shell command on it, with the pinned host key.
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args([
            "machine",
            "ssh",
            &running[0],
            "--",
            "echo",
            "hello from the machine",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello from the machine");
    // Down: all of the executor's machines.
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args(["machine", "down", "cloud"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.moto.running().is_empty(), "{:?}", s.moto.instances());
}

#[test]
fn a_pool_creates_machines_on_demand_up_to_its_size() {
    let s = setup(&["pool=2"]);
    let spawn = |lr: &str| {
        let lr = format!("lr={lr}");
        common::spawn_exp_run(
            &s.env,
            &s.project.root,
            &["--no-apply", "-S", &lr, "-S", "sleep=2"],
        )
    };
    let children = vec![spawn("0.1"), spawn("0.2"), spawn("0.3")];
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(
        s.moto.instances().len(),
        2,
        "never more than the pool: {:?}",
        s.moto.instances()
    );
    assert_eq!(s.moto.running().len(), 2, "pool machines are kept");
    // A later run reuses a pool machine.
    let out = exp_run(&s, &["--no-apply", "-S", "lr=0.4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("from the pool of cloud"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.moto.instances().len(), 2);
    assert_eq!(s.project.experiments(&s.env).len(), 4);
    let out = s
        .env
        .dvc_exec(&s.project.root)
        .args(["machine", "down", "cloud"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.moto.running().is_empty());
}
