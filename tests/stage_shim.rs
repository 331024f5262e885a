//! One stage of a pipeline on the SSH executor, and the `dvc` shim.

mod common;

use common::{Project, Sshd, TestEnv, stderr, stdout};

const PIPELINE: &str = "stages:
  prepare:
    cmd: python prep.py
    deps: [prep.py, data/raw.txt]
    outs: [prepared.txt]
  train:
    cmd: dvc-exec stage -e box -- python train2.py
    deps: [train2.py, prepared.txt]
    params: [lr, fail]
    outs: [model]
    metrics:
    - metrics.json:
        cache: false
  evaluate:
    cmd: python evaluate.py
    deps: [evaluate.py, model]
    outs: [eval.txt]
";

#[test]
fn a_middle_stage_runs_on_the_executor() {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "box");
    let p = Project::new(&env, "proj");
    common::add_ssh_executor(&env, &sshd, &p, false);
    p.write("prep.py", "rows = open('data/raw.txt').read().split()\nopen('prepared.txt', 'w').write(' '.join(rows))\n");
    p.write(
        "train2.py",
        "import json, os, sys, yaml\np = yaml.safe_load(open('params.yaml'))\nif p['fail']:\n    print('remote stage failing', flush=True)\n    sys.exit(3)\nn = len(open('prepared.txt').read().split())\nos.makedirs('model', exist_ok=True)\nopen('model/w.txt', 'w').write(f'{p[\"lr\"]} {n} {os.uname().nodename}\\n')\njson.dump({'acc': p['lr'] * n}, open('metrics.json', 'w'))\nprint('remote training done', flush=True)\n",
    );
    p.write(
        "evaluate.py",
        "open('eval.txt', 'w').write('evaluated ' + open('model/w.txt').read())\n",
    );
    p.write("dvc.yaml", PIPELINE);
    env.ok("git", &["add", "-A"], &p.root);
    env.ok("git", &["commit", "-qm", "three stages"], &p.root);

    let out = env.cmd("dvc", &p.root).args(["repro"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("remote training done"),
        "the stage's output streams: {}",
        stdout(&out)
    );
    assert!(
        p.read("eval.txt").starts_with("evaluated 0.1 50"),
        "{}",
        p.read("eval.txt")
    );
    assert!(p.read("metrics.json").contains("5.0"));
    // The stage ran in the executor's workspace, not here.
    assert!(env.path().join("remote-workdir/stages").exists());
    let status = env.ok("dvc", &["status"], &p.root);
    assert!(status.contains("up to date"), "{status}");
    let metrics = env.ok("dvc", &["metrics", "show", "--json"], &p.root);
    assert!(metrics.contains("\"acc\": 5.0"), "{metrics}");
    let exp = p.exp_show(&env);
    assert!(exp.to_string().contains("\"acc\":5.0"), "{exp}");
    // A second repro reruns nothing.
    let out = env.cmd("dvc", &p.root).args(["repro"]).output().unwrap();
    assert!(out.status.success());
    assert!(!stdout(&out).contains("Running stage"), "{}", stdout(&out));
    // A params change reruns the remote stage and what follows it.
    p.write("params.yaml", "lr: 0.2\nsleep: 0\nfail: false\n");
    let out = env.cmd("dvc", &p.root).args(["repro"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        p.read("eval.txt").starts_with("evaluated 0.2 50"),
        "{}",
        p.read("eval.txt")
    );
    // And the run cache: back to lr 0.1 restores without running.
    p.write("params.yaml", "lr: 0.1\nsleep: 0\nfail: false\n");
    let out = env.cmd("dvc", &p.root).args(["repro"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Stage 'train' is cached"),
        "{}",
        stdout(&out)
    );

    // A failing remote stage fails dvc repro with its exit code.
    p.write("params.yaml", "lr: 0.3\nsleep: 0\nfail: true\n");
    let out = env.cmd("dvc", &p.root).args(["repro"]).output().unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("remote stage failing") && all.contains("exited with 3"),
        "{all}"
    );
}

#[test]
fn stage_outside_dvc_is_a_clear_error() {
    let env = TestEnv::new();
    let out = env
        .dvc_exec(env.path())
        .args(["stage", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("runs as a stage's cmd in dvc.yaml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_dvc_shim_passes_everything_through_and_adds_executor() {
    let env = TestEnv::new();
    let sshd = Sshd::start(&env, "box");
    let p = Project::new(&env, "proj");
    common::add_ssh_executor(&env, &sshd, &p, false);
    let shim_dir = env.path().join("shim-bin");
    let out = env
        .dvc_exec(&p.root)
        .args(["shim", "install", "--dir", shim_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("export PATH="), "{}", stderr(&out));
    let path = format!("{}:{}", shim_dir.display(), env.path_var());
    let shim = |args: &[&str]| {
        env.cmd("dvc", &p.root)
            .env("PATH", &path)
            .args(args)
            .output()
            .unwrap()
    };
    let real = |args: &[&str]| env.cmd("dvc", &p.root).args(args).output().unwrap();

    let status = env
        .dvc_exec(&p.root)
        .env("PATH", &path)
        .args(["shim", "status", "--dir", shim_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(stdout(&status).contains("active"), "{}", stdout(&status));

    // The same output and exit code as the real DVC.
    for args in [
        &["--version"][..],
        &["exp", "show", "--json"][..],
        &["status"][..],
        &["status", "no-such-stage"][..],
    ] {
        let (a, b) = (shim(args), real(args));
        assert_eq!(a.status.code(), b.status.code(), "{args:?}");
        assert_eq!(stdout(&a), stdout(&b), "{args:?}");
    }
    assert_ne!(real(&["status", "no-such-stage"]).status.code(), Some(0));

    // stdin, arguments and the exit code reach the real program untouched.
    let fake = env.path().join("fake-dvc");
    std::fs::write(&fake, "#!/bin/sh\nprintf '%s|' \"$@\"\ncat\nexit 7\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = env
        .cmd("dvc", &p.root)
        .env("PATH", &path)
        .env("DVC_EXEC_REAL_DVC", &fake)
        .args(["a b", "$x", "--y"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"from stdin")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(stdout(&out), "a b|$x|--y|from stdin");

    // dvc exp run --executor runs remotely.
    let out = shim(&["exp", "run", "--executor", "box", "-S", "lr=0.3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("running on box"), "{}", stderr(&out));
    let exps = p.experiments(&env);
    assert!(
        exps.iter()
            .any(|(_, params, m)| params["lr"] == 0.3 && m["acc"] == 15.0),
        "{exps:?}"
    );

    let out = env
        .dvc_exec(&p.root)
        .args(["shim", "uninstall", "--dir", shim_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!shim_dir.join("dvc").exists());
}
