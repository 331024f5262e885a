//! `dvc-exec queue start`: DVC's experiment queue, fanned out over an executor's machines.
//!
//! `dvc exp run --queue` leaves each experiment as an entry of `refs/exps/celery/stash`: a
//! commit whose tree is the workspace to run (params applied) on top of its baseline, with the
//! message `dvc-exp:BASELINE:BRANCH:NAME` and DVC's own arguments (targets, flags) pickled in
//! `.dvc/tmp/repro.dat`. Each entry runs as an ordinary dvc-exec run whose snapshot is that
//! commit, N at a time; a finished one lands as a normal experiment and leaves DVC's queue, a
//! failed one stays queued with its log kept, and one whose machine was lost runs again on
//! another machine.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{Value, json};

use super::git::{Repo, Snapshot};
use super::{Mode, Request, execute};
use crate::config::{Executor, Paths};
use crate::error::{Error, Kind, Result};
use crate::output::Ui;

/// One queued experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The stash entry's commit.
    pub commit: String,
    /// The baseline it was queued on.
    pub baseline: String,
    /// Its name.
    pub name: String,
    /// The `dvc exp run` arguments that reproduce it (name, flags, targets).
    pub dvc_args: Vec<String>,
}

/// The experiments waiting in DVC's queue, oldest first.
pub fn queued(repo: &Repo) -> Result<Vec<Queued>> {
    let Ok(log) = repo.git(&[
        "reflog",
        "show",
        "--format=%H%x00%gs",
        "refs/exps/celery/stash",
    ]) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((commit, subject)) = line.split_once('\0') else {
            continue;
        };
        let Some((baseline, name)) = stash_subject(subject) else {
            continue;
        };
        let args = repro_args(repo, commit)?;
        let mut dvc_args = vec![
            "exp".to_string(),
            "run".into(),
            "-n".into(),
            name.to_string(),
        ];
        dvc_args.extend(args);
        out.push(Queued {
            commit: commit.to_string(),
            baseline: baseline.to_string(),
            name: name.to_string(),
            dvc_args,
        });
    }
    out.reverse();
    Ok(out)
}

/// The baseline and name in a queue entry's reflog subject
/// (`commit: dvc-exp:BASELINE:BRANCH:NAME`).
pub(crate) fn stash_subject(subject: &str) -> Option<(&str, &str)> {
    let msg = subject.trim_start_matches("commit: ").trim();
    let rest = msg.strip_prefix("dvc-exp:")?;
    let parts: Vec<&str> = rest.splitn(3, ':').collect();
    let [baseline, _branch, name] = parts.as_slice() else {
        return None;
    };
    Some((baseline, name))
}

/// DVC's pickled repro arguments of a queued commit, as `dvc exp run` options and targets.
fn repro_args(repo: &Repo, commit: &str) -> Result<Vec<String>> {
    let Some(bytes) = repo.show_file(commit, ".dvc/tmp/repro.dat")? else {
        return Ok(Vec::new());
    };
    let v: Value = serde_pickle::from_slice(
        &bytes,
        serde_pickle::DeOptions::new().replace_unresolved_globals(),
    )
    .map_err(|e| {
        Error::failed(format!("cannot read the queued arguments of {commit}")).source(e)
    })?;
    Ok(args_from_repro(&v))
}

/// The `dvc exp run` options and targets in DVC's pickled repro arguments (`repro.dat`).
pub(crate) fn args_from_pickle(bytes: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_pickle::from_slice(
        bytes,
        serde_pickle::DeOptions::new().replace_unresolved_globals(),
    )
    .ok()?;
    Some(args_from_repro(&v))
}

fn args_from_repro(v: &Value) -> Vec<String> {
    let kw = &v["kwargs"];
    let mut out = Vec::new();
    for (key, flag) in [
        ("force", "--force"),
        ("pull", "--pull"),
        ("downstream", "--downstream"),
        ("single_item", "--single-item"),
        ("recursive", "--recursive"),
        ("pipeline", "--pipeline"),
        ("all_pipelines", "--all-pipelines"),
        ("allow_missing", "--allow-missing"),
        ("force_downstream", "--force-downstream"),
    ] {
        if kw[key] == Value::Bool(true) {
            out.push(flag.to_string());
        }
    }
    if kw["on_error"] == json!("keep-going") {
        out.push("--keep-going".into());
    }
    for t in kw["targets"].as_array().into_iter().flatten() {
        if let Some(t) = t.as_str() {
            out.push(t.to_string());
        }
    }
    out
}

/// Run every queued experiment on `executor`, `jobs` at a time. Returns (done, failed) names.
pub async fn start(
    executor: Executor,
    paths: Paths,
    jobs: usize,
    ui: Ui,
) -> Result<(Vec<String>, Vec<String>)> {
    // From here on a Ctrl-C stops the queue, whenever it comes.
    crate::interrupt::listen();
    let root = paths
        .repo_root()
        .ok_or_else(|| Error::usage("not inside a DVC project"))?
        .to_path_buf();
    let repo = Repo::open(&root)?;
    let entries = queued(&repo)?;
    if entries.is_empty() {
        return Err(Error::usage("DVC's queue is empty")
            .hint("queue experiments with: dvc exp run --queue -S ..."));
    }
    let total = entries.len();
    ui.phase(
        "queue",
        &format!(
            "running {total} queued experiments on {}, {jobs} at a time",
            executor.name
        ),
    );
    let state: Rc<RefCell<BTreeMap<String, String>>> = Rc::new(RefCell::new(
        entries
            .iter()
            .map(|e| (e.name.clone(), "queued".to_string()))
            .collect(),
    ));
    let progress = |state: &BTreeMap<String, String>| {
        let count = |s: &str| state.values().filter(|v| v.starts_with(s)).count();
        let running: Vec<String> = state
            .iter()
            .filter(|(_, v)| v.starts_with("running"))
            .map(|(k, v)| format!("{k}{}", v.trim_start_matches("running")))
            .collect();
        ui.note(&format!(
            "queue: {} queued, {} running{}, {} done, {} failed",
            count("queued"),
            count("running"),
            if running.is_empty() {
                String::new()
            } else {
                format!(" ({})", running.join(", "))
            },
            count("done"),
            count("failed")
        ));
    };
    let sem = Rc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let local = tokio::task::LocalSet::new();
    let run_ui = Ui {
        mute_log: true,
        quiet: true,
        ..ui
    };
    let results = local
        .run_until(async {
            let mut handles = Vec::new();
            let stop = Rc::new(std::cell::Cell::new(false));
            for e in entries {
                let (sem, state, exec, paths, stop) = (
                    sem.clone(),
                    state.clone(),
                    executor.clone(),
                    paths.clone(),
                    stop.clone(),
                );
                handles.push(tokio::task::spawn_local(async move {
                    let _permit = sem.acquire().await.expect("open");
                    if stop.get() || crate::interrupt::seen() {
                        return (
                            e,
                            Err(Error::interrupted("not started: the queue was stopped")),
                        );
                    }
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        state.borrow_mut().insert(e.name.clone(), "running".into());
                        let req = Request {
                            executor: exec.clone(),
                            paths: paths.clone(),
                            dvc_args: e.dvc_args.clone(),
                            mode: Mode::Exp,
                            detach: false,
                            apply: false,
                            snapshot: Some(Snapshot {
                                base: e.baseline.clone(),
                                commit: e.commit.clone(),
                            }),
                        };
                        let r = execute(req, run_ui).await;
                        match r {
                            Ok(o) => {
                                state.borrow_mut().insert(e.name.clone(), "done".into());
                                return (e, Ok(o));
                            }
                            // A machine lost or unreachable (not the experiment failing): run
                            // it again elsewhere.
                            Err(err)
                                if matches!(err.kind(), Kind::Failed | Kind::Unreachable)
                                    && attempt < 3 =>
                            {
                                state.borrow_mut().insert(e.name.clone(), "queued".into());
                                continue;
                            }
                            Err(err) => {
                                if err.kind() == Kind::Interrupted {
                                    // Ctrl-C: running ones were cancelled; start no more.
                                    stop.set(true);
                                    state.borrow_mut().insert(e.name.clone(), "queued".into());
                                } else {
                                    state.borrow_mut().insert(e.name.clone(), "failed".into());
                                }
                                return (e, Err(err));
                            }
                        }
                    }
                }));
            }
            let mut last = String::new();
            let mut results = Vec::new();
            let mut pending = handles;
            while !pending.is_empty() {
                let snapshot = format!("{:?}", state.borrow());
                if snapshot != last {
                    progress(&state.borrow());
                    last = snapshot;
                }
                let (done, rest): (Vec<_>, Vec<_>) =
                    pending.into_iter().partition(|h| h.is_finished());
                pending = rest;
                for h in done {
                    results.push(h.await.expect("a queue task panicked"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            progress(&state.borrow());
            results
        })
        .await;

    let (mut done, mut failed) = (Vec::new(), Vec::new());
    let interrupted = crate::interrupt::seen()
        || results
            .iter()
            .any(|(_, r)| r.as_ref().is_err_and(|e| e.kind() == Kind::Interrupted));
    for (e, r) in results {
        if r.as_ref().is_err_and(|e| e.kind() == Kind::Interrupted) {
            continue;
        }
        match r {
            Ok(_) => {
                // It landed: take it off DVC's queue.
                let out = std::process::Command::new(super::local_dvc())
                    .current_dir(&root)
                    .args(["queue", "remove", &e.name])
                    .stdin(std::process::Stdio::null())
                    .output();
                if !out.as_ref().is_ok_and(|o| o.status.success()) {
                    ui.warn(&format!(
                        "{} is done, but dvc queue remove {} failed; remove it yourself",
                        e.name, e.name
                    ));
                }
                done.push(e.name);
            }
            Err(err) => {
                ui.warn(&format!(
                    "{} failed: {} (it stays in DVC's queue; dvc-exec runs and logs show it)",
                    e.name,
                    err.render()
                ));
                failed.push(e.name);
            }
        }
    }
    if interrupted {
        return Err(Error::interrupted(format!(
            "stopped the queue: {} done, {} failed; the rest stays in DVC's queue",
            done.len(),
            failed.len()
        )));
    }
    Ok((done, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repro_arguments_become_options_and_targets() {
        let v = json!({"args": [], "kwargs": {"targets": ["train"], "force": false, "pull": true, "on_error": "fail"}});
        assert_eq!(args_from_repro(&v), ["--pull", "train"]);
    }

    #[test]
    fn queue_reflog_subjects_and_pickles_are_read_or_skipped() {
        assert_eq!(
            stash_subject("commit: dvc-exp:abc123:refs/heads/main:my-exp"),
            Some(("abc123", "my-exp"))
        );
        assert_eq!(stash_subject("commit: dvc-exp:abc123"), None);
        assert_eq!(stash_subject("checkout: moving"), None);
        assert_eq!(args_from_pickle(b""), None);
        assert_eq!(args_from_pickle(b"\x80\x04garbage"), None);
    }
}
