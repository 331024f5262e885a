//! The benchmark suite in smoke mode (one iteration, small data), so that it cannot rot. It
//! asserts that every case produced its measures, never how fast they were.

mod common;

use common::TestEnv;

#[test]
fn bench_smoke_mode_runs_every_local_case() {
    let env = TestEnv::new();
    let out = env.path().join("bench.json");
    let status = env
        .cmd("python3", env.path())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench"))
        .args(["--smoke", "--cases", "startup,hot,data"])
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_dvc-exec"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        v["startup"]["version"]["peak_rss_kib"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert_eq!(v["hot"]["ssh_connections_per_run"]["median"], 1.0, "{v}");
    assert!(
        v["hot"]["ssh_sessions_per_run"]["median"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(v["hot"]["floor_s"]["median"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["data"]["first_cache_bytes_up"].as_u64().unwrap() >= v["data"]["bytes"].as_u64().unwrap(),
        "{v}"
    );
    assert!(
        v["data"]["second_cache_bytes_up"].as_u64().unwrap() < 4096,
        "{v}"
    );
}
