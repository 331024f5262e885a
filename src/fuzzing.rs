//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run TARGET`). Not a stable API:
//! each function feeds untrusted text to one parser the way dvc-exec does, and must never panic
//! or hang, whatever the input.

use std::path::Path;

use crate::config::file::ConfigFile;
use crate::config::{Config, Paths};

/// A config file's text: parsed as a file, then as the repository's `.dvc/exec.config`, merged
/// and every executor in it resolved to its typed settings.
pub fn config_text(text: &str) {
    let _ = ConfigFile::parse(Path::new("exec.config"), text.to_string(), true);
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temporary directory");
    }
    DIR.with(|dir| {
        let root = dir.path();
        let dvc_dir = root.join("repo/.dvc");
        let _ = std::fs::create_dir_all(&dvc_dir);
        let _ = std::fs::create_dir_all(root.join("system"));
        let _ = std::fs::create_dir_all(root.join("global"));
        if std::fs::write(dvc_dir.join("exec.config"), text).is_err() {
            return;
        }
        let paths = Paths {
            system_dir: root.join("system"),
            global_dir: root.join("global"),
            dvc_dir: Some(dvc_dir),
        };
        let _ = Config::load(paths.clone());
        if let Ok(config) = Config::load_unchecked(paths) {
            for name in config.executors.keys() {
                if let Ok(exec) = config.executor(name) {
                    let _ = exec.summary();
                }
            }
            let _ = config.default_name();
            let _ = config.known_executors_hint();
        }
    });
}

/// A reply of the remote helper: its `key=value` lines, its end-of-run report, and rsync's
/// statistics.
pub fn helper_reply(text: &str) {
    let reply = crate::transport::Reply {
        code: Some(0),
        stdout: text.to_string(),
        stderr: text.to_string(),
    };
    for key in [
        "workdir",
        "dvc_version",
        "missing",
        "free_kb",
        "state",
        "pid",
        "log_size",
        "last",
    ] {
        let _ = reply.get(key);
    }
    let report = crate::run::Report::parse(text);
    let _ = report.disk_full();
    let _ = crate::transport::parse_rsync_bytes(text, true);
    let _ = crate::transport::parse_rsync_bytes(text, false);
}

/// The live log stream, in chunks split anywhere (the first byte of `data` picks the chunk
/// size).
pub fn log_stream(data: &[u8]) {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let mut tail = crate::run::LogTail::default();
    for chunk in rest.chunks(usize::from(size).max(1)) {
        let _ = tail.push(chunk);
    }
    let _ = tail.text();
}

/// What git and DVC hand back about refs and queued experiments: a reflog subject of DVC's
/// queue, its pickled arguments, and the DVC files whose hashes name cache objects.
pub fn git_refs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some((commit, subject)) = line.split_once('\0') {
            let _ = (commit, crate::run::queue::stash_subject(subject));
        }
        let _ = crate::run::queue::stash_subject(line);
    }
    let _ = crate::run::queue::args_from_pickle(data);
    let hashes = crate::run::cache::hashes_in(&[("dvc.lock".into(), text.to_string())]);
    for h in &hashes {
        let _ = crate::run::cache::object_path(h);
    }
}
