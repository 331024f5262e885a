//! The provider contract, run against every cloud backend: AWS on moto_server, GCP and Azure on
//! fake REST servers (tests/common/fake_*.rs; no offline emulator exists for either). The
//! machines are not real, so SSH reaches the test sshd through `proxy_command`, and that sshd
//! presents the host key dvc-exec generated and pinned for the executor.
//!
//! Each test below runs once per backend (the `conformance!` macro at the end).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::fake_azure::{FakeAzure, TOKEN};
use common::fake_gcp::FakeGcp;
use common::{Project, Sshd, TestEnv, stderr, stdout};

/// A cloud API the suite runs against.
enum Api {
    #[cfg(feature = "aws")]
    Aws(common::Moto),
    Gcp(FakeGcp),
    Azure(FakeAzure),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Aws,
    Gcp,
    Azure,
}

struct Setup {
    env: TestEnv,
    api: Api,
    sshd: Sshd,
    project: Project,
    workdir: PathBuf,
    /// Environment the backend's credentials need.
    vars: Vec<(String, String)>,
}

/// A service-account key file, as `gcloud iam service-accounts keys create` writes it; the
/// client signs its tokens with it, offline.
fn gcp_credentials(env: &TestEnv) -> PathBuf {
    let pem = env.path().join("sa.pem");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed for the GCP tests: apt-get install -y openssl");
    assert!(st.success());
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k3y1d-never-on-an-instance",
        "private_key": std::fs::read_to_string(&pem).unwrap(),
        "client_email": "dvc-exec-test@test-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    });
    let path = env.path().join("gcp-sa.json");
    std::fs::write(&path, key.to_string()).unwrap();
    path
}

/// An `az` that prints the token the fake ARM accepts, as `az account get-access-token` does.
fn fake_az(env: &TestEnv) -> PathBuf {
    let dir = env.path().join("az-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let script = format!(
        "#!/bin/sh\ncase \"$*\" in\n  *get-access-token*) echo '{{\"accessToken\": \"{TOKEN}\", \"expires_on\": {expires}, \"tokenType\": \"Bearer\", \"subscription\": \"00000000-0000-0000-0000-000000000001\", \"tenant\": \"t\"}}' ;;\n  *) echo \"fake az: $*\" >&2; exit 1 ;;\nesac\n"
    );
    let az = dir.join("az");
    std::fs::write(&az, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn setup(kind: Kind, extra: &[&str]) -> Setup {
    let env = TestEnv::new();
    let (sshd, workdir) = common::cloud_machine(&env);
    let project = Project::new(&env, "proj");
    let mut vars = Vec::new();
    let (api, mut args): (Api, Vec<String>) = match kind {
        #[cfg(feature = "aws")]
        Kind::Aws => {
            let moto = common::Moto::start(&env);
            let args = vec![
                "aws".into(),
                "region=us-east-1".into(),
                format!("endpoint_url={}", moto.endpoint()),
                "image=ubuntu".into(),
            ];
            (Api::Aws(moto), args)
        }
        #[cfg(not(feature = "aws"))]
        Kind::Aws => unreachable!("the aws tests need the aws feature"),
        Kind::Gcp => {
            let fake = FakeGcp::start();
            vars.push((
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                gcp_credentials(&env).display().to_string(),
            ));
            let args = vec![
                "gcp".into(),
                "project=test-project".into(),
                "zone=us-central1-a".into(),
                format!("endpoint_url={}", fake.endpoint()),
            ];
            (Api::Gcp(fake), args)
        }
        Kind::Azure => {
            let fake = FakeAzure::start();
            vars.push((
                "PATH".into(),
                format!("{}:{}", fake_az(&env).display(), env.path_var()),
            ));
            let args = vec![
                "azure".into(),
                "subscription=00000000-0000-0000-0000-000000000001".into(),
                "location=westeurope".into(),
                format!("endpoint_url={}", fake.endpoint()),
            ];
            (Api::Azure(fake), args)
        }
    };
    let mut all: Vec<String> = vec!["executor".into(), "add".into(), "-d".into(), "cloud".into()];
    all.append(&mut args);
    if !extra.iter().any(|e| e.starts_with("machine=")) {
        all.push("machine=s".into());
    }
    all.extend(common::cloud_machine_settings(&env, &sshd, &workdir));
    all.extend(extra.iter().map(|s| s.to_string()));
    let s = Setup {
        env,
        api,
        sshd,
        project,
        workdir,
        vars,
    };
    let out = s.run(&all.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    s
}

impl Setup {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.env.dvc_exec(&self.project.root);
        c.args(args);
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn exp_run(&self, args: &[&str]) -> Output {
        let mut all = vec!["exp", "run"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// (id, state) of every machine the cloud knows, gone ones included where it keeps them.
    fn machines(&self) -> Vec<(String, String)> {
        match &self.api {
            #[cfg(feature = "aws")]
            Api::Aws(m) => m.instances(),
            Api::Gcp(f) => f.instances(),
            Api::Azure(f) => f.instances(),
        }
    }

    /// Machines that exist and cost money (not terminated).
    fn live(&self) -> Vec<String> {
        self.machines()
            .into_iter()
            .filter(|(_, s)| s != "terminated")
            .map(|(i, _)| i)
            .collect()
    }

    fn running(&self) -> Vec<String> {
        self.machines()
            .into_iter()
            .filter(|(_, s)| s.eq_ignore_ascii_case("running") || s == "pending")
            .map(|(i, _)| i)
            .collect()
    }

    /// The machine's labels or tags, with dvc-exec's keys as the cloud spells them.
    fn labels(&self, id: &str) -> BTreeMap<String, String> {
        let v: serde_json::Value = match &self.api {
            #[cfg(feature = "aws")]
            Api::Aws(m) => serde_json::from_str(&m.py(&format!(
                "r = ec2.describe_instances(InstanceIds=['{id}'])['Reservations'][0]['Instances'][0]\nprint(json.dumps({{t['Key']: t['Value'] for t in r.get('Tags', [])}}))"
            )))
            .unwrap(),
            Api::Gcp(f) => f.instance(id)["labels"].clone(),
            Api::Azure(f) => f.instance(id)["tags"].clone(),
        };
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                // GCP spells dvc-exec:executor as dvc_exec_executor.
                let k = match k.strip_prefix("dvc_exec_") {
                    Some(rest) => format!("dvc-exec:{rest}"),
                    None => k.clone(),
                };
                (k, v.as_str().unwrap().to_string())
            })
            .collect()
    }

    /// What the machine was given at boot (user data).
    fn boot_data(&self, id: &str) -> String {
        match &self.api {
            #[cfg(feature = "aws")]
            Api::Aws(m) => m.py(&format!(
                "import base64\nr = ec2.describe_instance_attribute(InstanceId='{id}', Attribute='userData')\nprint(base64.b64decode(r['UserData']['Value']).decode())"
            )),
            Api::Gcp(f) => f.instance(id)["metadata"].to_string(),
            Api::Azure(f) => {
                use base64::Engine;
                let data = f.instance(id)["properties"]["osProfile"]["customData"]
                    .as_str()
                    .unwrap()
                    .to_string();
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap(),
                )
                .unwrap()
            }
        }
    }

    /// A spot preemption, seen by the client as its connection dropping.
    fn preempt(&self, id: &str) {
        match &self.api {
            #[cfg(feature = "aws")]
            Api::Aws(m) => {
                m.py(&format!("ec2.terminate_instances(InstanceIds=['{id}'])"));
            }
            Api::Gcp(f) => f.preempt(id),
            Api::Azure(f) => f.preempt(id),
        }
        assert!(common::kill_ssh_masters(self.sshd.port) > 0);
    }

    /// Stop a kept machine the way its watchdog does.
    fn stop(&self, id: &str) {
        match &self.api {
            #[cfg(feature = "aws")]
            Api::Aws(m) => {
                m.py(&format!("ec2.stop_instances(InstanceIds=['{id}'])"));
            }
            // Without the spot termination action, GCP's preemption is a stop.
            Api::Gcp(f) => f.preempt(id),
            Api::Azure(f) => f.power_off(id),
        }
    }
}

fn assert_experiment(s: &Setup, lr: f64, acc: f64) {
    let exps = s.project.experiments(&s.env);
    assert!(
        exps.iter()
            .any(|(_, p, m)| p["lr"] == lr && m["acc"] == acc),
        "no experiment with lr={lr}, acc={acc}: {exps:?}"
    );
}

fn run_launches_labels_and_removes_the_machine(kind: Kind) {
    let s = setup(kind, &["keep=true"]);
    let out = s.exp_run(&["-S", "lr=0.3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_experiment(&s, 0.3, 15.0);
    // Kept, so it can be looked at: labelled, pinned, no credential in what it was given.
    let running = s.running();
    assert_eq!(running.len(), 1, "{:?}", s.machines());
    let labels = s.labels(&running[0]);
    assert_eq!(
        labels.get("dvc-exec:executor").map(String::as_str),
        Some("cloud"),
        "{labels:?}"
    );
    assert!(
        labels
            .get("dvc-exec:project")
            .is_some_and(|p| p.starts_with("proj-")),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("dvc-exec:keep").map(String::as_str),
        Some("true"),
        "{labels:?}"
    );
    assert!(
        labels.contains_key("dvc-exec:owner") && labels.contains_key("dvc-exec:launch"),
        "{labels:?}"
    );
    let boot = s.boot_data(&running[0]);
    let host_pub = std::fs::read_to_string(
        s.env
            .path()
            .join("data/dvc-exec/keys/cloud/ssh_host_ed25519_key.pub"),
    )
    .unwrap();
    let host_pub = host_pub.split_whitespace().nth(1).unwrap();
    assert!(
        boot.contains(host_pub),
        "the host key is pinned in the boot data"
    );
    for secret in [
        "testing-secret-never-on-an-instance",
        "k3y1d-never-on-an-instance",
        "BEGIN PRIVATE KEY",
        TOKEN,
    ] {
        assert!(!boot.contains(secret), "{secret} reached the machine");
    }
    // The next run reuses it; a stopped one is started again.
    let out = s.exp_run(&["-S", "lr=0.4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("reusing the running machine {}", running[0])),
        "{}",
        stderr(&out)
    );
    s.stop(&running[0]);
    let out = s.exp_run(&["-S", "lr=0.5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("starting the kept machine {}", running[0])),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        s.live().len(),
        1,
        "one machine for three runs: {:?}",
        s.machines()
    );
    assert_experiment(&s, 0.5, 25.0);
    // SSH is open to ssh_cidr only.
    let open_to: Vec<String> = match &s.api {
        Api::Gcp(f) => f
            .firewalls()
            .iter()
            .flat_map(|r| r["sourceRanges"].as_array().cloned().unwrap_or_default())
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        Api::Azure(f) => f
            .resource_ids()
            .iter()
            .filter(|id| id.contains("/networksecuritygroups/"))
            .flat_map(|id| {
                let nsg = f.resource(id);
                nsg["properties"]["securityRules"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|r| r["properties"]["sourceAddressPrefix"].as_str().unwrap().to_string())
            .collect(),
        #[cfg(feature = "aws")]
        Api::Aws(m) => m
            .py("for g in ec2.describe_security_groups()['SecurityGroups']:\n    for p in g['IpPermissions']:\n        for r in p.get('IpRanges', []):\n            print(r['CidrIp'])")
            .lines()
            .map(String::from)
            .collect(),
    };
    assert_eq!(open_to, vec!["127.0.0.1/32".to_string()]);
    // machine down removes it; gc then removes what the executor's machines shared.
    let out = s.run(&["machine", "down", "--all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.live().is_empty(), "{:?}", s.machines());
    let out = s.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    match &s.api {
        Api::Gcp(f) => assert!(f.firewalls().is_empty(), "{:?}", f.firewalls()),
        Api::Azure(f) => assert!(f.resource_ids().is_empty(), "{:?}", f.resource_ids()),
        #[cfg(feature = "aws")]
        Api::Aws(m) => {
            let left = m.py("print(len(ec2.describe_key_pairs()['KeyPairs']), len([g for g in ec2.describe_security_groups()['SecurityGroups'] if g['GroupName'].startswith('dvc-exec')]))");
            assert_eq!(left.trim(), "0 0", "key pairs and security groups left");
        }
    }
}

fn an_ephemeral_machine_is_removed_after_the_run(kind: Kind) {
    let s = setup(kind, &["disk_size=80G"]);
    let out = s.exp_run(&["-S", "lr=0.2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_experiment(&s, 0.2, 10.0);
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
    assert_eq!(
        s.machines().len(),
        usize::from(kind == Kind::Aws),
        "{:?}",
        s.machines()
    );
}

fn ctrl_c_during_launch_and_run_leaves_nothing(kind: Kind) {
    let s = setup(kind, &[]);
    // During bootstrap: the machine never reports it is ready.
    std::fs::remove_file(s.workdir.join("bootstrap.done")).unwrap();
    let (child, rx) = common::spawn_until(s.command(&["exp", "run"]), "waiting for");
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
    // During the run.
    std::fs::write(s.workdir.join("bootstrap.done"), "").unwrap();
    let (child, rx) = common::spawn_until(
        s.command(&["exp", "run", "-S", "sleep=60"]),
        "is running on",
    );
    std::thread::sleep(Duration::from_millis(800));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
    // And a new run afterwards works.
    let out = s.exp_run(&["-S", "lr=0.6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
}

fn a_preempted_spot_machine_is_replaced(kind: Kind) {
    let s = setup(kind, &["spot=true"]);
    let (child, rx) = common::spawn_until(
        s.command(&["exp", "run", "-S", "lr=0.7", "-S", "sleep=3"]),
        "is running on",
    );
    let first = s.running();
    assert_eq!(first.len(), 1, "{:?}", s.machines());
    s.preempt(&first[0]);
    let out = child.wait_with_output().unwrap();
    let err: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the machine was lost") && err.contains("starting the run again"),
        "{err}"
    );
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
    assert_experiment(&s, 0.7, 35.0);
}

fn gc_removes_what_a_killed_client_left(kind: Kind) {
    let s = setup(kind, &[]);
    std::fs::remove_file(s.workdir.join("bootstrap.done")).unwrap();
    let (mut child, _rx) = common::spawn_until(s.command(&["exp", "run"]), "to answer on SSH");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.live().len(), 1, "the killed client left its machine");
    let out = s.run(&["gc", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would remove cloud: instance "),
        "{}",
        stdout(&out)
    );
    assert_eq!(s.live().len(), 1, "a dry run removes nothing");
    let out = s.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
}

/// A generic GPU machine becomes the cloud's own GPU shape, on the GPU image.
fn a_gpu_machine_gets_the_clouds_gpu_shape(kind: Kind) {
    let s = setup(kind, &["machine=s+t4", "keep=true"]);
    let out = s.exp_run(&["-S", "lr=0.3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = &s.running()[0];
    match &s.api {
        Api::Gcp(f) => {
            let i = f.instance(id);
            assert!(
                i["machineType"]
                    .as_str()
                    .unwrap()
                    .ends_with("/n1-standard-4"),
                "{i}"
            );
            assert_eq!(i["guestAccelerators"][0]["acceleratorCount"], 1, "{i}");
            assert!(
                i["guestAccelerators"][0]["acceleratorType"]
                    .as_str()
                    .unwrap()
                    .ends_with("/nvidia-tesla-t4"),
                "{i}"
            );
            assert_eq!(i["scheduling"]["onHostMaintenance"], "TERMINATE", "{i}");
            assert!(
                i["disks"][0]["initializeParams"]["sourceImage"]
                    .as_str()
                    .unwrap()
                    .contains("deeplearning-platform-release"),
                "{i}"
            );
        }
        Api::Azure(f) => {
            let v = f.instance(id);
            assert_eq!(
                v["properties"]["hardwareProfile"]["vmSize"], "Standard_NC4as_T4_v3",
                "{v}"
            );
            assert_eq!(
                v["properties"]["storageProfile"]["imageReference"]["offer"], "ubuntu-hpc",
                "{v}"
            );
        }
        #[cfg(feature = "aws")]
        Api::Aws(_) => unreachable!(),
    }
}

/// A client that vanished leaves a machine its watchdog stops; the next run removes it, and a
/// kept one stopped that way stops costing compute (Azure deallocates it).
fn machines_the_watchdog_stopped_are_tidied(kind: Kind) {
    let s = setup(kind, &[]);
    std::fs::remove_file(s.workdir.join("bootstrap.done")).unwrap();
    let (mut child, _rx) = common::spawn_until(s.command(&["exp", "run"]), "to answer on SSH");
    child.kill().unwrap();
    child.wait().unwrap();
    let orphan = s.live();
    assert_eq!(orphan.len(), 1, "{:?}", s.machines());
    s.stop(&orphan[0]);
    std::fs::write(s.workdir.join("bootstrap.done"), "").unwrap();
    let out = s.exp_run(&["-S", "lr=0.9"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("removing {}: its watchdog stopped it", orphan[0])),
        "{err}"
    );
    assert!(s.live().is_empty(), "left: {:?}", s.machines());
    assert_experiment(&s, 0.9, 45.0);
    if let Api::Azure(f) = &s.api {
        let out = s.run(&["machine", "up", "cloud"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let kept = s.live();
        assert_eq!(kept.len(), 1);
        f.power_off(&kept[0]);
        let out = s.run(&["machine", "list"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            f.instances(),
            vec![(kept[0].clone(), "deallocated".to_string())]
        );
    }
}

/// Capacity, quota, permission and image errors, answered by the fakes (moto cannot refuse
/// capacity): each says what to change, exits 2 when the settings must change, 1 otherwise, and
/// leaves nothing behind.
fn launch_errors_name_the_fix_and_leave_nothing(kind: Kind) {
    let s = setup(kind, &[]);
    let cases: &[(&str, &str, i32, &[&str])] = match kind {
        Kind::Gcp => &[
            (
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                "The zone 'projects/test-project/zones/us-central1-a' does not have enough resources available to fulfill the request.",
                1,
                &["no capacity", "try another zone"],
            ),
            (
                "QUOTA_EXCEEDED",
                "Quota 'CPUS' exceeded. Limit: 0.0 in region us-central1.",
                1,
                &["quota is exhausted"],
            ),
            (
                "PERMISSION_DENIED",
                "Required 'compute.instances.create' permission for 'projects/test-project'",
                2,
                &["roles/compute.instanceAdmin.v1"],
            ),
            (
                "RESOURCE_NOT_FOUND",
                "The resource 'projects/ubuntu-os-cloud/global/images/family/nope' was not found",
                2,
                &["image does not exist"],
            ),
        ],
        _ => &[
            (
                "SkuNotAvailable",
                "The requested VM size Standard_D2s_v5 is currently not available in location 'westeurope'.",
                1,
                &["no capacity", "try another location"],
            ),
            (
                "QuotaExceeded",
                "Operation could not be completed as it results in exceeding approved standardDSv5Family Cores quota.",
                1,
                &["quota is exhausted"],
            ),
            (
                "AuthorizationFailed",
                "The client does not have authorization to perform action 'Microsoft.Compute/virtualMachines/write'.",
                2,
                &["Contributor"],
            ),
            (
                "ImageNotFound",
                "The platform image 'Canonical:nope:server:latest' is not available.",
                2,
                &["image does not exist"],
            ),
        ],
    };
    for (code, message, exit, words) in cases {
        match &s.api {
            Api::Gcp(f) => f.fail_next_create(code, message),
            Api::Azure(f) => f.fail_next_create(code, message),
            #[cfg(feature = "aws")]
            Api::Aws(_) => unreachable!(),
        }
        let out = s.exp_run(&[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(*exit), "{code}: {err}");
        for w in *words {
            assert!(err.contains(w), "{code}: {w:?} missing in {err}");
        }
        assert!(
            err.contains(code),
            "{code}: the cloud's own code is shown: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(s.live().is_empty(), "{code} left: {:?}", s.machines());
        if let Api::Gcp(f) = &s.api {
            assert!(
                f.firewalls().is_empty(),
                "the launch's firewall rule is rolled back"
            );
        }
    }
    // The next launch works.
    let out = s.exp_run(&["-S", "lr=0.8"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_experiment(&s, 0.8, 40.0);
}

/// Settings the cloud cannot have are refused before anything is created.
fn impossible_settings_are_refused_up_front(kind: Kind) {
    let gpu = match kind {
        Kind::Gcp => "machine=m+a10g",
        _ => "machine=m+l4",
    };
    let s = setup(kind, &[gpu]);
    let out = s.exp_run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("has no") && err.contains("GPU"), "{err}");
    assert!(s.machines().is_empty(), "{:?}", s.machines());
}

macro_rules! conformance {
    (@one $test:ident Aws) => {
        #[cfg(feature = "aws")]
        #[test]
        #[allow(non_snake_case)]
        fn Aws() {
            super::$test(super::Kind::Aws);
        }
    };
    (@one $test:ident $kind:ident) => {
        #[test]
        #[allow(non_snake_case)]
        fn $kind() {
            super::$test(super::Kind::$kind);
        }
    };
    ($($test:ident: [$($kind:ident),*];)*) => {
        $(
            mod $test {
                $( conformance!(@one $test $kind); )*
            }
        )*
    };
}

conformance! {
    run_launches_labels_and_removes_the_machine: [Aws, Gcp, Azure];
    an_ephemeral_machine_is_removed_after_the_run: [Aws, Gcp, Azure];
    ctrl_c_during_launch_and_run_leaves_nothing: [Aws, Gcp, Azure];
    a_preempted_spot_machine_is_replaced: [Aws, Gcp, Azure];
    gc_removes_what_a_killed_client_left: [Aws, Gcp, Azure];
    launch_errors_name_the_fix_and_leave_nothing: [Gcp, Azure];
    machines_the_watchdog_stopped_are_tidied: [Aws, Gcp, Azure];
    impossible_settings_are_refused_up_front: [Gcp, Azure];
    a_gpu_machine_gets_the_clouds_gpu_shape: [Gcp, Azure];
}
