//! Test support: a throwaway git+DVC project, a throwaway sshd on loopback, and the dvc-exec
//! binary run as a user would, in an isolated environment.
//!
//! Prerequisites (git, rsync, sshd, a venv with DVC) are checked loudly: a missing one fails the
//! test with the command that installs it. `scripts/test` installs them all.
#![allow(dead_code)]

pub mod fake_azure;
pub mod fake_gcp;
pub mod http;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The venv with DVC and moto that scripts/test creates.
pub fn venv() -> PathBuf {
    if let Ok(v) = std::env::var("DVC_EXEC_TEST_VENV") {
        return PathBuf::from(v);
    }
    let home = std::env::var("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/dvc-exec/test-venv")
}

const INSTALL: &str = "run scripts/test, which installs everything the tests need \
(or by hand: apt-get install -y openssh-server rsync git && python3 -m venv ~/.cache/dvc-exec/test-venv \
&& ~/.cache/dvc-exec/test-venv/bin/pip install dvc 'moto[server]')";

/// Fail loudly unless every prerequisite is there.
pub fn require_prerequisites() {
    let dvc = venv().join("bin/dvc");
    assert!(
        dvc.exists(),
        "DVC is missing at {}: {INSTALL}",
        dvc.display()
    );
    for tool in ["git", "rsync", "ssh", "ssh-keygen"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "`{tool}` is missing: {INSTALL}");
    }
    assert!(
        Path::new(&sshd_path()).exists(),
        "sshd is missing: {INSTALL}"
    );
}

fn sshd_path() -> String {
    std::env::var("DVC_EXEC_TEST_SSHD").unwrap_or_else(|_| "/usr/sbin/sshd".into())
}

/// An isolated environment: its own global/system DVC config dirs, data dir and PATH.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        require_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("dvc-exec-test")
            .tempdir()
            .unwrap();
        for d in ["global", "system", "data"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn global_dir(&self) -> PathBuf {
        self.path().join("global")
    }

    pub fn system_dir(&self) -> PathBuf {
        self.path().join("system")
    }

    /// PATH with the test venv first, and the dvc-exec binary's directory (stages call it).
    pub fn path_var(&self) -> String {
        format!(
            "{}:{}:{}",
            venv().join("bin").display(),
            Path::new(env!("CARGO_BIN_EXE_dvc-exec"))
                .parent()
                .unwrap()
                .display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn apply(&self, c: &mut Command) {
        c.env("PATH", self.path_var())
            .env("DVC_GLOBAL_CONFIG_DIR", self.global_dir())
            .env("DVC_SYSTEM_CONFIG_DIR", self.system_dir())
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("DVC_NO_ANALYTICS", "1")
            .env("DVC_EXEC_RECONNECT_SECONDS", "60")
            .env("GIT_AUTHOR_NAME", "Test User")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test User")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "testing-secret-never-on-an-instance",
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.path().join("aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("DVC_EXEC_LOG");
    }

    /// The dvc-exec binary, to run in `cwd`.
    pub fn dvc_exec(&self, cwd: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dvc-exec"));
        c.current_dir(cwd).stdin(Stdio::null());
        self.apply(&mut c);
        c
    }

    /// Any other program, in the same environment.
    pub fn cmd(&self, program: &str, cwd: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(cwd).stdin(Stdio::null());
        self.apply(&mut c);
        c
    }

    /// Run a program and require success; returns stdout.
    pub fn ok(&self, program: &str, args: &[&str], cwd: &Path) -> String {
        let out = self.cmd(program, cwd).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed in {}:\nstdout: {}\nstderr: {}",
            cwd.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Output helpers.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A throwaway git+DVC project with a small pipeline: DVC-tracked data, params, a metric and
/// an output.
pub struct Project {
    pub root: PathBuf,
}

pub const TRAIN_PY: &str = r#"import json, os, sys, time
import yaml
p = yaml.safe_load(open("params.yaml"))
rows = open("data/raw.txt").read().split()
time.sleep(float(p.get("sleep", 0)))
if p.get("fail"):
    print("training failed on purpose", flush=True)
    sys.exit(3)
os.makedirs("out", exist_ok=True)
with open("out/model.txt", "w") as f:
    f.write(f"model lr={p['lr']} rows={len(rows)}\n")
with open("metrics.json", "w") as f:
    json.dump({"acc": round(p["lr"] * len(rows), 3)}, f)
print("trained with lr", p["lr"], flush=True)
"#;

impl Project {
    /// Create it in `env`'s temp dir, under `name`.
    pub fn new(env: &TestEnv, name: &str) -> Self {
        let root = env.path().join(name);
        std::fs::create_dir_all(root.join("data")).unwrap();
        env.ok("git", &["init", "-q", "-b", "main"], &root);
        env.ok("dvc", &["init", "-q"], &root);
        let raw: String = (1..=50).map(|i| format!("{i}\n")).collect();
        std::fs::write(root.join("data/raw.txt"), raw).unwrap();
        env.ok("dvc", &["add", "-q", "data/raw.txt"], &root);
        std::fs::write(root.join("params.yaml"), "lr: 0.1\nsleep: 0\nfail: false\n").unwrap();
        std::fs::write(root.join("train.py"), TRAIN_PY).unwrap();
        std::fs::write(
            root.join("dvc.yaml"),
            "stages:\n  train:\n    cmd: python train.py\n    deps: [train.py, data/raw.txt]\n    params: [lr, sleep, fail]\n    outs: [out]\n    metrics:\n    - metrics.json:\n        cache: false\n",
        )
        .unwrap();
        env.ok("git", &["add", "-A"], &root);
        env.ok("git", &["commit", "-q", "-m", "initial pipeline"], &root);
        Self { root }
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_default()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, text).unwrap();
    }

    /// `dvc exp show --json`, parsed.
    pub fn exp_show(&self, env: &TestEnv) -> serde_json::Value {
        let out = env.ok("dvc", &["exp", "show", "--json"], &self.root);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("dvc exp show --json: {e}: {out}"))
    }

    /// Names of the experiments `dvc exp show --json` lists, with their params and metrics.
    pub fn experiments(
        &self,
        env: &TestEnv,
    ) -> Vec<(String, serde_json::Value, serde_json::Value)> {
        let v = self.exp_show(env);
        let mut out = Vec::new();
        for baseline in v.as_array().into_iter().flatten() {
            for exp in baseline["experiments"].as_array().into_iter().flatten() {
                let name = exp["name"].as_str().unwrap_or_default().to_string();
                for rev in exp["revs"].as_array().into_iter().flatten() {
                    let data = &rev["data"];
                    out.push((
                        name.clone(),
                        data["params"]["params.yaml"]["data"].clone(),
                        data["metrics"]["metrics.json"]["data"].clone(),
                    ));
                }
            }
        }
        out
    }
}

/// A throwaway sshd on a free loopback port, with a key pair and a pinned host key.
pub struct Sshd {
    pub dir: PathBuf,
    /// The address it listens on (127.0.0.1, or an address inside a network namespace).
    pub addr: String,
    pub port: u16,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    config: PathBuf,
    netns: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}

impl Sshd {
    pub fn start(env: &TestEnv, name: &str) -> Self {
        Self::start_with_keys(env, name, None)
    }

    /// Start with a given host key and client key (private key paths; `.pub` beside them),
    /// for example the ones dvc-exec keeps for a cloud executor.
    pub fn start_with_keys(env: &TestEnv, name: &str, keys: Option<(&Path, &Path)>) -> Self {
        Self::start_at(env, name, keys, None)
    }

    /// Start inside a network namespace, listening on its address (see [`NetNs`]).
    pub fn start_in_netns(env: &TestEnv, name: &str, ns: &NetNs) -> Self {
        Self::start_at(env, name, None, Some(ns))
    }

    fn start_at(
        env: &TestEnv,
        name: &str,
        keys: Option<(&Path, &Path)>,
        ns: Option<&NetNs>,
    ) -> Self {
        let addr = ns
            .map(|n| n.inner_addr.clone())
            .unwrap_or_else(|| "127.0.0.1".into());
        let dir = env.path().join(format!("sshd-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (host_key, key) = match keys {
            Some((h, k)) => (h.to_path_buf(), k.to_path_buf()),
            None => {
                let h = dir.join("host_key");
                let k = dir.join("id_ed25519");
                keygen(&h);
                keygen(&k);
                (h, k)
            }
        };
        std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let known_hosts = dir.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!(
                "[{addr}]:{port} {} {}\n",
                parts.next().unwrap(),
                parts.next().unwrap()
            ),
        )
        .unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {addr}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nMaxSessions 50\nMaxStartups 50\n\
                 LogLevel VERBOSE\nAcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").ok();
        let log = dir.join("sshd.log");
        let mut s = Self {
            dir,
            addr,
            port,
            key,
            known_hosts,
            log,
            child: None,
            config,
            netns: ns.map(|n| n.name.clone()),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &sshd_path()]);
                c
            }
            None => Command::new(sshd_path()),
        };
        let child = cmd
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((self.addr.as_str(), self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the daemon (existing sessions keep running, as with a real sshd restart).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host goes down: the daemon and every session it serves are killed.
    pub fn crash(&mut self) {
        if let Some(c) = &self.child {
            let listener = c.id();
            for e in std::fs::read_dir("/proc").unwrap().flatten() {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(listener) {
                    let pid: i32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        self.stop();
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// How many logins sshd accepted so far.
    pub fn logins(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    /// Settings for `dvc-exec executor add NAME ssh ...`.
    pub fn executor_settings(&self, workdir: &Path, setup_script: &Path) -> Vec<String> {
        vec![
            format!("host={}", self.addr),
            format!("port={}", self.port),
            "user=root".into(),
            format!("keyfile={}", self.key.display()),
            format!("known_hosts={}", self.known_hosts.display()),
            format!("workdir={}", workdir.display()),
            format!("setup_script={}", setup_script.display()),
        ]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A setup_script that puts the test venv (DVC, PyYAML) on the remote PATH.
pub fn venv_setup_script(env: &TestEnv) -> PathBuf {
    let p = env.path().join("setup-venv.sh");
    std::fs::write(&p, format!(". {}/bin/activate\n", venv().display())).unwrap();
    p
}

/// Wait until `cond` holds, or panic with `what` after `secs`.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A moto_server (the EC2 emulator) on a free loopback port, with instance type, image and key
/// pair validation on and the image fixtures in tests/fixtures/amis.json.
pub struct Moto {
    pub port: u16,
    child: Child,
}

impl Moto {
    pub fn start(env: &TestEnv) -> Self {
        let port = free_port();
        let bin = venv().join("bin/moto_server");
        assert!(
            bin.exists(),
            "moto_server is missing at {}: {INSTALL}",
            bin.display()
        );
        let log = std::fs::File::create(env.path().join("moto.log")).unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "1")
            .env("MOTO_ENABLE_AMI_VALIDATION", "1")
            .env("MOTO_ENABLE_KEYPAIR_VALIDATION", "1")
            .env(
                "MOTO_AMIS_PATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/amis.json"),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Run a Python snippet with `ec2` bound to a boto3 client of this server; returns stdout.
    pub fn py(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json, base64\nec2 = boto3.client('ec2', region_name='us-east-1', endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing')\n{code}\n",
            self.endpoint()
        );
        let out = Command::new(venv().join("bin/python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (instance id, state) of every instance.
    pub fn instances(&self) -> Vec<(String, String)> {
        let out = self.py(
            "for r in ec2.describe_instances()['Reservations']:\n    for i in r['Instances']:\n        print(i['InstanceId'], i['State']['Name'])",
        );
        out.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    pub fn running(&self) -> Vec<String> {
        self.instances()
            .into_iter()
            .filter(|(_, s)| s == "running" || s == "pending")
            .map(|(i, _)| i)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `cmd` with stderr piped and wait until a line contains `needle`; the rest of stderr
/// arrives on the returned channel.
pub fn spawn_until(mut cmd: Command, needle: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("never saw {needle:?}; stderr so far: {seen:?}");
        };
        let hit = line.contains(needle);
        seen.push(line);
        if hit {
            return (child, rx);
        }
    }
}

/// Kill the SSH master connections that reach `port` (directly, or through a ProxyCommand in a
/// generated ssh_config); returns how many.
pub fn kill_ssh_masters(port: u16) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmd = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&str> = cmd.split('\0').collect();
        if args.first() != Some(&"ssh") || !args.contains(&"-M") {
            continue;
        }
        let port_s = port.to_string();
        let via_config = args
            .windows(2)
            .find(|w| w[0] == "-F")
            .and_then(|w| std::fs::read_to_string(w[1]).ok())
            .is_some_and(|c| c.contains(&format!(" {port_s}")));
        if args.contains(&port_s.as_str()) || via_config {
            let pid: i32 = e.file_name().to_string_lossy().parse().unwrap();
            unsafe { libc::kill(pid, libc::SIGKILL) };
            n += 1;
        }
    }
    n
}

/// A pool of `n` test sshd hosts sharing one host key and one login key, added to the project
/// as the default executor `pool` (`hosts = ...`).
pub fn ssh_pool(env: &TestEnv, p: &Project, n: usize) -> Vec<Sshd> {
    let keys = env.path().join("pool-keys");
    std::fs::create_dir_all(&keys).unwrap();
    for k in ["host", "client"] {
        if !keys.join(k).exists() {
            keygen(&keys.join(k));
        }
    }
    let hosts: Vec<Sshd> = (0..n)
        .map(|i| {
            Sshd::start_with_keys(
                env,
                &format!("pool{i}"),
                Some((&keys.join("host"), &keys.join("client"))),
            )
        })
        .collect();
    let known = env.path().join("pool_known_hosts");
    let text: String = hosts
        .iter()
        .map(|h| std::fs::read_to_string(&h.known_hosts).unwrap())
        .collect();
    std::fs::write(&known, text).unwrap();
    let list: Vec<String> = hosts
        .iter()
        .map(|h| format!("127.0.0.1:{}", h.port))
        .collect();
    let script = venv_setup_script(env);
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &[
            "executor",
            "add",
            "-d",
            "pool",
            "ssh",
            &format!("hosts={}", list.join(", ")),
            "user=root",
            &format!("keyfile={}", keys.join("client").display()),
            &format!("known_hosts={}", known.display()),
            &format!("workdir={}", env.path().join("pool-workdir").display()),
            &format!("setup_script={}", script.display()),
        ],
        &p.root,
    );
    hosts
}

/// Add `sshd` to the project as the ssh executor `box` (the default when `default`), with the
/// venv setup script; returns the executor's workdir.
pub fn add_ssh_executor(env: &TestEnv, sshd: &Sshd, p: &Project, default: bool) -> PathBuf {
    let workdir = env.path().join("remote-workdir");
    let script = venv_setup_script(env);
    let mut args = vec!["executor".to_string(), "add".into()];
    if default {
        args.push("-d".into());
    }
    args.extend(["box".into(), "ssh".into()]);
    args.extend(sshd.executor_settings(&workdir, &script));
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &p.root,
    );
    workdir
}

/// What stands in for a cloud machine of executor `cloud`: the test sshd presenting the host key
/// dvc-exec pins (made here first, where dvc-exec keeps its keys) and a workdir where
/// cloud-init's bootstrap is done. The executor reaches it with `proxy_command`.
pub fn cloud_machine(env: &TestEnv) -> (Sshd, PathBuf) {
    let keys = env.path().join("data/dvc-exec/keys/cloud");
    std::fs::create_dir_all(&keys).unwrap();
    keygen(&keys.join("ssh_host_ed25519_key"));
    keygen(&keys.join("id_ed25519"));
    let sshd = Sshd::start_with_keys(
        env,
        "cloud",
        Some((&keys.join("ssh_host_ed25519_key"), &keys.join("id_ed25519"))),
    );
    let workdir = env.path().join("instance-workdir");
    std::fs::create_dir_all(&workdir).unwrap();
    // What cloud-init's bootstrap leaves when it is done.
    std::fs::write(workdir.join("bootstrap.done"), "").unwrap();
    (sshd, workdir)
}

/// The executor settings that reach [`cloud_machine`]: root login, its workdir, SSH through
/// `proxy_command`, the test venv's DVC.
pub fn cloud_machine_settings(env: &TestEnv, sshd: &Sshd, workdir: &Path) -> Vec<String> {
    vec![
        "user=root".into(),
        format!("workdir={}", workdir.display()),
        "ssh_cidr=127.0.0.1/32".into(),
        format!("proxy_command=nc 127.0.0.1 {}", sshd.port),
        format!("setup_script={}", venv_setup_script(env).display()),
        "dvc_version=3.67.1".into(),
    ]
}

/// A network namespace reached from here over a veth pair: `outer_addr` here, `inner_addr`
/// inside. `cut` and `restore` take the link down and up (a cable pulled: packets are lost,
/// nothing is refused). Needs root and iproute2; fails loudly without them.
pub struct NetNs {
    pub name: String,
    pub outer_addr: String,
    pub inner_addr: String,
    inner_if: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "`ip` is missing ({e}): this test needs iproute2 and root: apt-get install -y iproute2"
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}\nthis test needs root (CAP_NET_ADMIN) and network namespaces \
         (`ip netns add`) with veth pairs; run it as root on a kernel with CONFIG_NET_NS and CONFIG_VETH",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl NetNs {
    pub fn new() -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = (std::process::id() % 10000) * 10 + n;
        let name = format!("dvcx{tag}");
        let (outer_if, inner_if) = (format!("dvcx{tag}a"), format!("dvcx{tag}b"));
        let net = format!("10.{}.{}", 200 + (tag / 250) % 50, tag % 250);
        let (outer_addr, inner_addr) = (format!("{net}.1"), format!("{net}.2"));
        ip(&["netns", "add", &name]);
        let ns = Self {
            name: name.clone(),
            outer_addr: outer_addr.clone(),
            inner_addr: inner_addr.clone(),
            inner_if: inner_if.clone(),
        };
        ip(&[
            "link", "add", &outer_if, "type", "veth", "peer", "name", &inner_if,
        ]);
        ip(&["link", "set", &inner_if, "netns", &name]);
        ip(&["addr", "add", &format!("{outer_addr}/24"), "dev", &outer_if]);
        ip(&["link", "set", &outer_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{inner_addr}/24"),
            "dev",
            &inner_if,
        ]);
        ip(&["-n", &name, "link", "set", &inner_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }

    /// Pull the cable: the namespace's side of the link goes down.
    pub fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "down"]);
    }

    /// Plug it back in.
    pub fn restore(&self) {
        ip(&["-n", &self.name, "link", "set", &self.inner_if, "up"]);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The rest of a child's stderr from [`spawn_until`]'s channel, once the child has exited: waits
/// for the reader to reach the end of the pipe (or for 5 s of silence, should a process the
/// child left behind hold the pipe open).
pub fn drain(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let mut out = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        out.push(line);
    }
    out.join("\n")
}

/// `dvc-exec exp run ARGS` started in the background in `root`, stderr piped for
/// `wait_with_output`.
pub fn spawn_exp_run(env: &TestEnv, root: &Path, args: &[&str]) -> Child {
    env.dvc_exec(root)
        .args(["exp", "run"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
