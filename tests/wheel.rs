//! `pip install dvc-exec`: a wheel of the binary (maturin, `bindings = "bin"`) built from this
//! tree, installed into a fresh venv, runs.

mod common;

use common::{TestEnv, stderr, stdout, venv};

#[test]
fn a_wheel_installs_the_binary_next_to_python() {
    let env = TestEnv::new();
    let maturin = venv().join("bin/maturin");
    assert!(
        maturin.exists(),
        "maturin is missing at {}: run scripts/test, which installs it",
        maturin.display()
    );
    let wheels = env.path().join("wheels");
    let out = env
        .cmd(
            maturin.to_str().unwrap(),
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        )
        .args(["build", "--out", wheels.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "maturin build: {}", stderr(&out));
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("a wheel");
    let fresh = env.path().join("fresh-venv");
    env.ok(
        "python3",
        &["-m", "venv", fresh.to_str().unwrap()],
        env.path(),
    );
    let pip = fresh.join("bin/pip");
    let out = env
        .cmd(pip.to_str().unwrap(), env.path())
        .args([
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            wheel.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pip install: {}", stderr(&out));
    let bin = fresh.join("bin/dvc-exec");
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        format!("dvc-exec {}", env!("CARGO_PKG_VERSION"))
    );
}
