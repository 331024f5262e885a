//! No secret reaches any output: a recognisable secret planted in the environment and in the
//! local config file is searched for in everything dvc-exec prints, verbose and JSON included.

mod common;

use common::{Project, Sshd, TestEnv, stderr, stdout};

const IN_ENV: &str = "canary-env-7f3a9c";
const IN_FILE: &str = "canary-file-2b8d41";

#[test]
fn planted_secrets_never_appear_in_any_output() {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "box");
    let p = Project::new(&env, "proj");
    common::add_ssh_executor(&env, &sshd, &p, true);
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &["executor", "add", "az", "azure", "client_id=abc"],
        &p.root,
    );
    env.ok(
        env!("CARGO_BIN_EXE_dvc-exec"),
        &[
            "executor",
            "modify",
            "--local",
            "az",
            "client_secret",
            IN_FILE,
        ],
        &p.root,
    );
    let run = |args: &[&str]| {
        let out = env
            .dvc_exec(&p.root)
            .env("AWS_SECRET_ACCESS_KEY", IN_ENV)
            .env("DVC_EXEC_TEST_TOKEN", IN_ENV)
            .args(args)
            .output()
            .unwrap();
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let mut all = String::new();
    for args in [
        &["executor", "list"][..],
        &["executor", "list", "--show-origin", "--json"][..],
        &["-vv", "exp", "run", "-S", "lr=0.3"][..],
        &["-vv", "--json", "exp", "run", "-S", "lr=0.4"][..],
        &["runs", "--json"][..],
        &["--json", "exp", "run", "-e", "az"][..],
    ] {
        all.push_str(&run(args));
    }
    assert!(all.contains("trained with lr 0.4"), "the runs ran: {all}");
    assert!(all.contains("\"client_secret\":\"***\""), "{all}");
    assert!(
        !all.contains(IN_ENV),
        "the environment's secret leaked:\n{all}"
    );
    assert!(!all.contains(IN_FILE), "the config's secret leaked:\n{all}");
    assert!(!all.contains("PRIVATE KEY"), "a private key leaked:\n{all}");
}
