//! A Run: one experiment execution, end to end.
//!
//! 1. **snapshot** the workspace (HEAD plus uncommitted and untracked files) into a commit,
//!    through a temporary index;
//! 2. **acquire** a machine from the executor's provider and **connect** (one SSH master);
//! 3. **prepare**: check git, rsync and DVC there, create the project's repository;
//! 4. **sync**: push HEAD and the snapshot with git, and copy the DVC cache objects the snapshot
//!    references that the machine lacks (both at once);
//! 5. **start** the run detached on the machine (it survives a dropped connection);
//! 6. **follow** its log live, reconnecting and resuming after a drop;
//! 7. **collect**: fetch the experiment's ref with git and the new cache objects with rsync;
//! 8. **apply** the results to the workspace, unless the user changed the same files meanwhile.

pub mod cache;
pub mod git;
pub mod queue;
pub mod stage;
pub mod state;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use std::os::unix::process::CommandExt as _;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::config::executor::DataMode;
use crate::config::{Config, Executor, Paths};
use crate::error::{Context, Error, Result};
use crate::output::Ui;
use crate::provider::{self, Address, Machine};
use crate::transport::{Reply, Transport};
use git::{Repo, Snapshot};
use state::RunRecord;

/// What kind of DVC command the run executes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `dvc exp run`: the result is an experiment ref.
    Exp,
    /// `dvc repro`: the result is the changed workspace.
    Repro,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Exp => "exp",
            Mode::Repro => "repro",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The executor to run on.
    pub executor: Executor,
    /// The config paths (and so the project).
    pub paths: Paths,
    /// The DVC arguments, starting with the subcommand (`exp run -S x=1`, `repro`).
    pub dvc_args: Vec<String>,
    /// Exp or repro.
    pub mode: Mode,
    /// Return once the run has started.
    pub detach: bool,
    /// Apply the results to the workspace.
    pub apply: bool,
    /// Run this snapshot instead of the workspace (a queued experiment).
    pub snapshot: Option<Snapshot>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run id.
    pub run_id: String,
    /// The experiment's name (exp mode).
    pub name: Option<String>,
    /// The experiment's ref (exp mode).
    pub exp_ref: Option<String>,
    /// Whether the results were applied to the workspace.
    pub applied: bool,
    /// Bytes of cache objects sent and received.
    pub bytes_up: u64,
    /// Bytes of cache objects received.
    pub bytes_down: u64,
    /// Seconds spent sending commits and cache objects.
    pub sync_seconds: f64,
}

/// The project's id on executors: the directory name and the repository's first commit.
pub(crate) fn project_id(repo: &Repo, root: &Path) -> Result<String> {
    let roots = repo.git(&["rev-list", "--max-parents=0", "HEAD"])?;
    let first = roots.lines().last().unwrap_or("0000000000000").trim();
    let dir: String = root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "project".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let mut id = format!("{dir}-{}", &first[..first.len().min(12)]);
    if !repo.subdir.is_empty() {
        id.push_str(&format!("-{:x}", fxhash(&repo.subdir)));
    }
    Ok(id)
}

fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x01000193)
    })
}

/// The local `dvc` command.
pub fn local_dvc() -> String {
    std::env::var("DVC_EXEC_LOCAL_DVC").unwrap_or_else(|_| "dvc".into())
}

/// The local DVC's version; remembered per executable and modification time, since starting
/// DVC takes about half a second.
pub fn local_dvc_version() -> Option<String> {
    let cmd = local_dvc();
    let exe = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(&cmd))
            .find(|p| p.is_file())
    });
    let key = exe.as_ref().and_then(|p| {
        let m = std::fs::metadata(p).ok()?.modified().ok()?;
        let secs = m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        Some(format!("{}|{secs}", p.display()))
    });
    let cache = state::runs_dir()
        .ok()
        .map(|d| d.with_file_name("dvc-version.json"));
    if let (Some(key), Some(cache)) = (&key, &cache)
        && let Ok(text) = std::fs::read_to_string(cache)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && v["key"] == json!(key)
    {
        return v["version"].as_str().map(String::from);
    }
    let out = std::process::Command::new(&cmd)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let version = out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())?;
    if let (Some(key), Some(cache)) = (key, cache) {
        if let Some(dir) = cache.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(cache, json!({"key": key, "version": version}).to_string());
    }
    Some(version)
}

fn major(v: &str) -> Option<&str> {
    v.trim().split('.').next().filter(|m| !m.is_empty())
}

/// Run an experiment (or repro) on the executor, as the user asked: get a machine, run there,
/// bring the results back, and give the machine back (also on errors and Ctrl-C). A spot
/// machine lost mid-run is replaced and the run starts again, when `spot_recovery` allows.
pub async fn execute(req: Request, ui: Ui) -> Result<Outcome> {
    crate::interrupt::listen();
    let root = req
        .paths
        .repo_root()
        .ok_or_else(|| {
            Error::usage("not inside a DVC project").hint("run this in a DVC project (dvc init)")
        })?
        .to_path_buf();
    let repo = Repo::open(&root)?;
    let snapshot = match &req.snapshot {
        Some(s) => s.clone(),
        None => repo.snapshot()?,
    };
    let project = project_id(&repo, &root)?;
    let exec = &req.executor;
    let ctx = provider::Context {
        project: project.clone(),
        owner: provider::cloud::owner(),
        root: root.clone(),
    };
    let provider = provider::for_executor(exec, &ctx)?;
    let recover = exec.cloud.as_ref().is_some_and(|c| {
        c.spot
            && exec
                .raw
                .keys
                .get("spot_recovery")
                .is_none_or(|s| crate::config::units::parse_bool(&s.value).unwrap_or(true))
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        let run_id = state::new_run_id();
        let machine = tokio::select! {
            m = provider.acquire(&run_id, &ui) => match m {
                Ok(m) => m,
                Err(e) => {
                    if let Err(a) = provider.abort(&run_id).await {
                        ui.warn(&format!("could not remove what was launched: {}", a.render()));
                    }
                    return Err(e);
                }
            },
            _ = crate::interrupt::after(0) => {
                ui.note("Ctrl-C: removing what was launched");
                provider.abort(&run_id).await?;
                return Err(Error::interrupted("interrupted while getting a machine; nothing was left running"));
            }
        };
        let mut record = None;
        let result = run_on(
            &req,
            &ui,
            &repo,
            &snapshot,
            &project,
            &run_id,
            &*provider,
            &machine,
            &mut record,
        )
        .await;
        let state = record
            .as_ref()
            .map(|r: &RunRecord| r.state.clone())
            .unwrap_or_default();
        match result {
            Ok(o) if req.detach => return Ok(o),
            Ok(o) => {
                release(&*provider, &machine, &ui).await;
                return Ok(o);
            }
            Err(e) if e.message().starts_with(PREEMPTED) && recover && attempt < 4 => {
                ui.warn(&format!(
                    "{}; starting the run again on a new machine",
                    e.message()
                ));
                release(&*provider, &machine, &ui).await;
                continue;
            }
            Err(e) => {
                // A host that cannot be reached is not leased again by this process.
                if e.message().starts_with("cannot connect")
                    || e.message().starts_with("lost the connection")
                {
                    provider::lease::avoid(&machine.id);
                }
                // Results still on the machine (the run goes on, or finished but did not come
                // back): keep it, and say how to get them and how to remove it.
                if (state == "running" || state == "finished") && machine.owned && !machine.keep {
                    let id = record.as_ref().map(|r| r.id.clone()).unwrap_or_default();
                    let mut hint = format!(
                        "the results are still on {}: dvc-exec collect {id}",
                        machine.id
                    );
                    if let Some(cmd) = provider.cleanup_command(&machine) {
                        hint.push_str(&format!("\nremove the machine afterwards: {cmd}"));
                    }
                    return Err(e.hint(hint));
                }
                release(&*provider, &machine, &ui).await;
                return Err(e);
            }
        }
    }
}

/// The message prefix of a machine lost during a run.
const PREEMPTED: &str = "the machine was lost";

/// Release a machine; a failure is reported with the command that finishes the job.
pub(crate) async fn release(provider: &dyn provider::Provider, machine: &Machine, ui: &Ui) {
    if let Some(note) = provider.cost_note(machine) {
        ui.note(&note);
    }
    if let Err(e) = provider.release(machine).await {
        let cmd = provider
            .cleanup_command(machine)
            .map(|c| format!("; remove it with: {c}"))
            .unwrap_or_default();
        ui.warn(&format!(
            "could not release {}: {}{cmd}",
            machine.id,
            e.render()
        ));
    }
}

/// The first connection to a machine. A host the user configured that cannot be reached or
/// refuses the login is a configuration problem (exit code 2): nothing was started. (A cloud
/// machine dvc-exec made was reachable a moment ago: that stays an operational failure.)
async fn connect_first(machine: &Machine) -> Result<Transport> {
    Transport::connect(&machine.address).await.map_err(|e| {
        if machine.owned {
            e
        } else {
            e.with_kind(crate::error::Kind::Unreachable)
        }
    })
}

/// Everything after a machine is there: connect, check, sync, start, follow, collect.
#[allow(clippy::too_many_arguments)]
async fn run_on(
    req: &Request,
    ui: &Ui,
    repo: &Repo,
    snapshot: &Snapshot,
    project: &str,
    run_id: &str,
    provider: &dyn provider::Provider,
    machine: &Machine,
    record_out: &mut Option<RunRecord>,
) -> Result<Outcome> {
    let exec = &req.executor;
    let root = req.paths.repo_root().expect("checked").to_path_buf();
    ui.phase(
        "connect",
        &format!("connecting to {} ({})", exec.name, machine.id),
    );
    let mut transport = connect_first(machine).await?;
    let workdir_setting = exec.workdir.clone().unwrap_or_else(|| "~/.dvc-exec".into());
    let setup = setup_script_text(exec)?;
    let prep = transport
        .helper_ok(
            "checking the executor",
            &[
                "prepare".into(),
                workdir_setting,
                project.to_string(),
                exec.dvc.clone(),
                setup.clone(),
            ],
        )
        .await?;
    let workdir = prep.get("workdir").unwrap_or_default().to_string();
    check_prerequisites(exec, &transport, &prep)?;

    let record = record_out.insert(RunRecord {
        id: run_id.to_string(),
        executor: exec.name.clone(),
        machine: machine.id.clone(),
        project_root: root,
        workdir: workdir.clone(),
        project: project.to_string(),
        mode: req.mode.as_str().into(),
        dvc_args: req.dvc_args.clone(),
        base: snapshot.base.clone(),
        snapshot: snapshot.commit.clone(),
        apply: req.apply,
        state: "starting".into(),
        started: state::now(),
        exit_code: None,
        name: None,
        ended: None,
    });

    // Ctrl-C before the run has started: nothing remote to stop, only the run directory.
    let started = tokio::select! {
        r = sync_and_start(req, ui, repo, snapshot, &transport, &workdir, project, run_id, setup, machine.slot) => r,
        _ = crate::interrupt::after(0) => {
            let _ = transport.helper(&["cleanup".into(), workdir.clone(), run_id.to_string()]).await;
            transport.close().await;
            return Err(Error::interrupted("interrupted before the run started; nothing was left on the executor"));
        }
    };
    let (bytes_up, sync_seconds) = match started {
        Ok(b) => b,
        Err(e) => {
            let _ = transport
                .helper(&["cleanup".into(), workdir.clone(), run_id.to_string()])
                .await;
            transport.close().await;
            return Err(e);
        }
    };
    record.state = "running".into();
    record.save()?;

    if req.detach {
        ui.result(
            json!({"run": run_id, "executor": exec.name, "machine": machine.id, "state": "running"}),
            &format!(
                "run {run_id} started on {}.\n  follow it:  dvc-exec attach {run_id}\n  collect its results when done:  dvc-exec collect {run_id}",
                exec.name
            ),
        );
        transport.close().await;
        return Ok(Outcome {
            run_id: run_id.to_string(),
            name: None,
            exp_ref: None,
            applied: false,
            bytes_up,
            bytes_down: 0,
            sync_seconds,
        });
    }

    let mut outcome = follow_and_collect(&mut transport, provider, machine, record, ui).await;
    if let Ok(o) = &mut outcome {
        o.bytes_up = bytes_up;
        o.sync_seconds = sync_seconds;
    }
    transport.close().await;
    outcome
}

/// The run's environment: the executor's `env`, and CUDA_VISIBLE_DEVICES for a GPU slot.
pub(crate) fn run_env(exec: &Executor, slot: Option<u32>) -> Vec<String> {
    let mut env: Vec<String> = exec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if let (Some(s), true) = (slot, exec.slot_gpus) {
        env.push(format!("CUDA_VISIBLE_DEVICES={s}"));
    }
    env
}

/// The executor's setup_script, read now: it is sent along with the run.
pub(crate) fn setup_script_text(exec: &Executor) -> Result<String> {
    match &exec.setup_script {
        Some(p) => std::fs::read_to_string(p).map_err(|e| {
            Error::usage(format!("cannot read the setup_script {}", p.display()))
                .source(e)
                .hint(format!(
                    "fix the path: dvc-exec executor modify {} setup_script PATH",
                    exec.name
                ))
        }),
        None => Ok(String::new()),
    }
}

fn check_prerequisites(exec: &Executor, transport: &Transport, prep: &Reply) -> Result<()> {
    let host = transport.describe();
    let missing = prep.get("missing").unwrap_or_default().trim().to_string();
    let remote_dvc = prep
        .get("dvc_version")
        .unwrap_or_default()
        .trim()
        .to_string();
    let fix = if exec.setup_script.is_some() {
        "install it on the host, or make the executor's setup_script provide it".to_string()
    } else {
        format!(
            "install it on the host, or point dvc-exec at it: dvc-exec executor modify {} setup_script PATH (a script that, for example, activates a Python environment)",
            exec.name
        )
    };
    if !missing.is_empty() {
        return Err(Error::usage(format!("{host} lacks what a run needs: {missing}")).hint(fix));
    }
    if remote_dvc.is_empty() {
        return Err(Error::usage(format!(
            "DVC is not installed on {host} (the command `{}` was not found)",
            exec.dvc
        ))
        .hint(format!(
            "install it there (pip install dvc), set the executor's `dvc` key to its path: dvc-exec executor modify {} dvc /path/to/dvc, or give a setup_script that activates its environment",
            exec.name
        )));
    }
    if let (Some(local), false) = (local_dvc_version(), remote_dvc.is_empty())
        && major(&local) != major(&remote_dvc)
    {
        return Err(Error::usage(format!(
            "{host} has DVC {remote_dvc}, which cannot run this project made with DVC {local}"
        ))
        .hint(format!(
            "install DVC {}.x on the host: pip install 'dvc=={}.*'",
            major(&local).unwrap_or("3"),
            major(&local).unwrap_or("3")
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn sync_and_start(
    req: &Request,
    ui: &Ui,
    repo: &Repo,
    snapshot: &Snapshot,
    transport: &Transport,
    workdir: &str,
    project: &str,
    run_id: &str,
    setup: String,
    slot: Option<u32>,
) -> Result<(u64, f64)> {
    let exec = &req.executor;
    let local_cache = cache::local_cache_dir(&req.paths)?;
    let remote_cache = match transport {
        Transport::Local => local_cache.clone(),
        Transport::Ssh(_) => PathBuf::from(format!("{workdir}/cache")),
    };

    ui.phase("sync", &format!("sending the workspace to {}", exec.name));
    let repo_path = PathBuf::from(format!("{workdir}/projects/{project}/repo.git"));
    let push = push_commits(repo, transport, &repo_path, snapshot, run_id);
    let copy = async {
        if exec.data == DataMode::Pull || matches!(transport, Transport::Local) {
            return Ok(0);
        }
        let files = repo.dvc_files(&snapshot.commit)?;
        let mut hashes = cache::hashes_in(&files);
        hashes.extend(cache::dir_entries(&local_cache, &hashes));
        let paths: Vec<String> = hashes.iter().map(|h| cache::object_path(h)).collect();
        transport
            .copy_files(true, &local_cache, &remote_cache, &paths)
            .await
    };
    let sync_started = Instant::now();
    let (pushed, copied) = tokio::join!(push, copy);
    let sync_seconds = sync_started.elapsed().as_secs_f64();
    pushed?;
    let bytes_up = copied?;

    let mut args: Vec<String> = vec![
        "start".into(),
        workdir.into(),
        project.into(),
        run_id.into(),
        snapshot.base.clone(),
        snapshot.commit.clone(),
        remote_cache.display().to_string(),
        match exec.data {
            DataMode::Copy => "copy".into(),
            DataMode::Pull => "pull".into(),
        },
        exec.dvc.clone(),
        setup,
        repo.config("user.name").unwrap_or_default(),
        repo.config("user.email").unwrap_or_default(),
        req.mode.as_str().into(),
        repo.subdir.clone(),
    ];
    let env = run_env(exec, slot);
    args.push(env.len().to_string());
    args.extend(env);
    args.push("--".into());
    args.extend(req.dvc_args.iter().cloned());
    ui.phase(
        "start",
        &format!("starting `dvc {}` on {}", req.dvc_args.join(" "), exec.name),
    );
    transport.helper_ok("starting the run", &args).await?;
    Ok((bytes_up, sync_seconds))
}

async fn push_commits(
    repo: &Repo,
    transport: &Transport,
    repo_path: &Path,
    snapshot: &Snapshot,
    run_id: &str,
) -> Result<()> {
    let (url, ssh) = transport.git_remote(repo_path);
    // Runs pushing the same new baseline at once race on its ref: the loser's push fails with
    // "cannot lock ref", and pushing again finds the ref already there.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut cmd = Command::new("git");
        cmd.current_dir(&repo.top)
            .args(["push", "-q", "--no-verify", "--force", &url])
            .arg(format!(
                "{}:refs/dvc-exec/base/{}",
                snapshot.base, snapshot.base
            ))
            .arg(format!("{}:refs/dvc-exec/snap/{run_id}", snapshot.commit))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(ssh) = &ssh {
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        let out = cmd.output().await.context("cannot run git push")?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let raced = err.contains("cannot lock ref") || err.contains("reference already exists");
        if raced && attempt < 5 {
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            continue;
        }
        let mut e = Error::failed(format!(
            "sending the commits to {} failed",
            transport.describe()
        ));
        if err.contains("No space left") {
            e = disk_full(
                e,
                &transport.describe(),
                &repo_path.display().to_string(),
                None,
            );
        }
        return Err(e.source(std::io::Error::other(err)));
    }
}

/// Keeps the last lines of the log, for the error message of a failed run. Bytes are decoded
/// a whole line at a time: a character split between two reads arrives whole.
#[derive(Default)]
pub(crate) struct LogTail {
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

impl LogTail {
    const KEEP: usize = 20;
    /// The most kept of a line still going (a progress bar redrawn with `\r` for hours).
    const MAX_PARTIAL: usize = 16 * 1024;

    /// Feed bytes; returns the complete lines they finish.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        let mut rest = bytes;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let raw = std::mem::take(&mut self.partial);
            let line = String::from_utf8_lossy(&raw)
                .trim_end_matches('\r')
                .to_string();
            self.lines.push_back(line.clone());
            if self.lines.len() > Self::KEEP {
                self.lines.pop_front();
            }
            done.push(line);
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > Self::MAX_PARTIAL {
            let cut = self.partial.len() - Self::MAX_PARTIAL / 2;
            self.partial.drain(..cut);
        }
        done
    }

    pub(crate) fn text(&self) -> String {
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            v.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        v.join("\n")
    }
}

/// What the follow step learnt when the run ended.
pub(crate) struct Ended {
    pub(crate) code: i32,
    pub(crate) name: Option<String>,
    pub(crate) tail: String,
    /// Free space in the executor's workdir when it ended.
    pub(crate) free_kb: Option<u64>,
}

/// How a run ended, as the helper's `report` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The job wrote this exit code.
    Code(i32),
    /// The job is gone and wrote none.
    Lost,
}

/// The helper's end-of-run report: `DVC-EXEC-EXIT`, `DVC-EXEC-NAME` and `DVC-EXEC-FREE-KB`
/// lines (on the stderr of `follow`, the stdout of `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The exit status, when the report has one.
    pub exit: Option<ExitStatus>,
    /// The experiment's name, when DVC recorded one.
    pub name: Option<String>,
    /// Free space in the workdir, in KiB.
    pub free_kb: Option<u64>,
}

impl Report {
    /// Read the report lines out of a helper's output; other lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut r = Report::default();
        for line in text.lines() {
            if let Some(c) = line.strip_prefix("DVC-EXEC-EXIT ") {
                let c = c.trim();
                r.exit = Some(if c == "lost" {
                    ExitStatus::Lost
                } else {
                    // An exit file cut short (by a full disk) is a failure.
                    ExitStatus::Code(c.parse().unwrap_or(1))
                });
            } else if let Some(n) = line.strip_prefix("DVC-EXEC-NAME ") {
                r.name = Some(n.trim().to_string()).filter(|s| !s.is_empty());
            } else if let Some(k) = line.strip_prefix("DVC-EXEC-FREE-KB ") {
                r.free_kb = k.trim().parse().ok();
            }
        }
        r
    }

    /// Whether the workdir's disk is (all but) full.
    pub fn disk_full(&self) -> bool {
        self.free_kb.is_some_and(low_space)
    }
}

/// Less free space than a run can work with.
fn low_space(kb: u64) -> bool {
    kb < 1024
}

/// Say that the executor's disk is full, where, and what to do.
fn disk_full(e: Error, host: &str, workdir: &str, free_kb: Option<u64>) -> Error {
    let free = free_kb
        .map(|k| format!(", {k} KB free"))
        .unwrap_or_default();
    e.hint(format!(
        "the disk of {host} is full at {workdir} (No space left on device{free}); free space there, or point the executor's `workdir` at a bigger disk"
    ))
}

/// Stream the run's log until it ends; reconnect after a dropped connection.
pub(crate) async fn follow(
    transport: &mut Transport,
    provider: &dyn provider::Provider,
    machine: &Machine,
    record: &RunRecord,
    ui: &Ui,
) -> Result<Ended> {
    let mut offset: u64 = 0;
    let mut tail = LogTail::default();
    // A local copy of the log, written at the same offsets (a resumed follow rewrites, never
    // duplicates).
    let mut local_log = record.log_path().ok().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .ok()
    });
    let mut lost_since: Option<Instant> = None;
    loop {
        let mut cmd = transport.helper_command(&[
            "follow".into(),
            record.workdir.clone(),
            record.id.clone(),
            offset.to_string(),
        ]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot follow the run's log")?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let err_task = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stdout.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            if let Some(f) = local_log.as_mut() {
                use std::io::{Seek, SeekFrom, Write};
                let _ = f
                    .seek(SeekFrom::Start(offset))
                    .and_then(|_| f.write_all(&buf[..n]));
            }
            offset += n as u64;
            lost_since = None;
            let lines = tail.push(&buf[..n]);
            if ui.json && !ui.mute_log {
                for l in lines {
                    ui.event(json!({"event": "log", "line": l}));
                }
            } else {
                ui.log(&buf[..n]);
            }
        }
        let status = child.wait().await.context("cannot follow the run's log")?;
        let err = err_task.await.unwrap_or_default();
        let report = Report::parse(&err);
        match report.exit {
            Some(ExitStatus::Lost) => {
                let mut e = Error::failed(format!(
                    "run {} on {} ended without an exit status (the machine may have rebooted)",
                    record.id, machine.id
                ));
                if report.disk_full() {
                    e = disk_full(e, &transport.describe(), &record.workdir, report.free_kb);
                }
                return Err(e);
            }
            Some(ExitStatus::Code(code)) => {
                return Ok(Ended {
                    code,
                    name: report.name,
                    tail: tail.text(),
                    free_kb: report.free_kb,
                });
            }
            None => {}
        }
        if status.code() == Some(97) {
            return Err(
                Error::failed(format!("run {} is gone from {}", record.id, machine.id))
                    .source(std::io::Error::other(err.trim().to_string())),
            );
        }
        // The connection dropped: reconnect and resume where the log stopped.
        let since = *lost_since.get_or_insert_with(Instant::now);
        if since.elapsed() > reconnect_limit() {
            return Err(Error::failed(format!(
                "lost the connection to {} and could not get it back for {}s",
                machine.id,
                reconnect_limit().as_secs()
            ))
            .hint(format!(
                "the run goes on there; follow it later with: dvc-exec attach {}",
                record.id
            )));
        }
        ui.warn(&format!(
            "lost the connection to {}; reconnecting (the run goes on there)",
            machine.id
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Address::Ssh(_) = machine.address {
            loop {
                // A cloud machine that is gone or stopped was preempted (or stopped by its
                // watchdog): no reconnecting brings it back.
                if machine.owned
                    && let Ok(st @ (provider::MachineState::Gone | provider::MachineState::Stopped)) =
                        provider.state(machine).await
                {
                    return Err(Error::failed(format!(
                        "{PREEMPTED}: {} is {} (preempted?)",
                        machine.id,
                        if st == provider::MachineState::Gone {
                            "gone"
                        } else {
                            "stopped"
                        }
                    )));
                }
                match Transport::connect(&machine.address).await {
                    Ok(t) => {
                        let old = std::mem::replace(transport, t);
                        old.close().await;
                        break;
                    }
                    Err(e) if since.elapsed() > reconnect_limit() => {
                        return Err(e.with_kind(crate::error::Kind::Failed).hint(format!(
                            "the run goes on there; follow it later with: dvc-exec attach {}",
                            record.id
                        )));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
                }
            }
        }
    }
}

fn reconnect_limit() -> Duration {
    std::env::var("DVC_EXEC_RECONNECT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(600))
}

/// Follow a started run to its end, stop it on Ctrl-C, then collect and apply its results.
pub async fn follow_and_collect(
    transport: &mut Transport,
    provider: &dyn provider::Provider,
    machine: &Machine,
    record: &mut RunRecord,
    ui: &Ui,
) -> Result<Outcome> {
    ui.phase(
        "run",
        &format!("run {} is running on {}", record.id, record.executor),
    );
    let ended = tokio::select! {
        r = follow(transport, provider, machine, record, ui) => r?,
        _ = crate::interrupt::after(0) => {
            ui.note("Ctrl-C: stopping the run on the executor (Ctrl-C again to leave it running)");
            let seen = crate::interrupt::count();
            let cancel_args: Vec<String> = vec!["cancel".into(), record.workdir.clone(), record.id.clone(), "10".into()];
            let cancel = transport.helper(&cancel_args);
            let reply = tokio::select! {
                r = cancel => r.ok(),
                _ = crate::interrupt::after(seen) => None,
            };
            match reply {
                Some(r) => {
                    let how = match r.get("state") {
                        Some("killed") => "killed it after it ignored SIGINT for 10 s",
                        Some("gone") => "it had already ended",
                        _ => "it stopped on SIGINT",
                    };
                    let _ = transport.helper(&["cleanup".into(), record.workdir.clone(), record.id.clone()]).await;
                    record.exit_code = Some(130);
                    record.end("cancelled")?;
                    return Err(Error::interrupted(format!(
                        "cancelled run {} on {}: {how}; nothing is left running there",
                        record.id, record.executor
                    )));
                }
                None => {
                    return Err(Error::interrupted(format!(
                        "left run {} running on {}",
                        record.id, record.executor
                    ))
                    .hint(format!("dvc-exec attach {0} follows it; dvc-exec collect {0} fetches its results", record.id)));
                }
            }
        }
    };
    record.exit_code = Some(ended.code);
    record.name = ended.name.clone();
    if ended.code != 0 {
        record.end("failed")?;
        let _ = transport
            .helper(&["cleanup".into(), record.workdir.clone(), record.id.clone()])
            .await;
        let mut e = Error::run_failed(
            ended.code,
            format!(
                "`dvc {}` failed on {} with exit code {}",
                record.dvc_args.join(" "),
                record.executor,
                ended.code
            ),
        );
        if !ended.tail.is_empty() {
            e = e.source(std::io::Error::other(format!(
                "the last lines of its log:\n{}",
                ended.tail
            )));
        }
        if ended.tail.contains("No space left on device") || ended.free_kb.is_some_and(low_space) {
            e = disk_full(e, &transport.describe(), &record.workdir, ended.free_kb);
        }
        return Err(e);
    }
    record.end("finished")?;
    collect(transport, record, ui).await
}

/// Fetch a finished run's results (git objects and cache objects) and apply them.
///
/// Nothing is half-written here, whatever happens: the commit arrives under a temporary ref and
/// becomes the experiment only once every cache object it needs is in the local cache; partial
/// cache files wait in `.dvc/tmp`; a Ctrl-C while fetching drops what was fetched and leaves the
/// results on the executor for `dvc-exec collect`; a Ctrl-C while applying lets the apply finish.
pub async fn collect(transport: &Transport, record: &mut RunRecord, ui: &Ui) -> Result<Outcome> {
    let root = record.project_root.clone();
    let repo = Repo::open(&root)?;
    let paths = Paths::discover(&root);
    let local_cache = cache::local_cache_dir(&paths)?;
    crate::interrupt::listen();
    let fetch_ref = format!("refs/dvc-exec/fetch/{}", record.id);
    let fetched = tokio::select! {
        r = fetch_results(transport, &repo, record, &local_cache, &fetch_ref, ui) => r,
        _ = crate::interrupt::after(0) => Err(Error::interrupted(format!(
            "interrupted while fetching the results of run {}; nothing was changed here",
            record.id
        ))
        .hint(format!(
            "the results wait on {}: dvc-exec collect {}",
            record.executor, record.id
        ))),
    };
    let _ = repo.git(&["update-ref", "-d", &fetch_ref]);
    let fetched = match fetched {
        // A Ctrl-C, seen by us or by the git or rsync we ran.
        Err(e) if crate::interrupt::seen() || e.kind() == crate::error::Kind::Interrupted => {
            Err(Error::interrupted(format!(
                "interrupted while fetching the results of run {}; nothing was changed here",
                record.id
            ))
            .hint(format!(
                "the results wait on {}: dvc-exec collect {}",
                record.executor, record.id
            )))
        }
        r => r,
    };
    let (result, exp_ref, bytes_down) = fetched?;

    // The run's directory is removed on the executor while the results are applied here.
    let mut cleanup =
        transport.helper_command(&["cleanup".into(), record.workdir.clone(), record.id.clone()]);
    let cleanup = cleanup
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();

    let applied = if record.apply && crate::interrupt::seen() {
        ui.note(&format!(
            "Ctrl-C: the results arrived but were not applied to the workspace; {}",
            match &record.name {
                Some(n) if record.mode == "exp" => format!("apply them with: dvc exp apply {n}"),
                _ => "run again to apply them".into(),
            }
        ));
        Ok(false)
    } else if record.apply {
        ui.phase("apply", "applying the results to the workspace");
        let r = apply(&repo, record, &result, ui);
        if crate::interrupt::seen() {
            ui.note("Ctrl-C came while applying the results: finished applying them first");
        }
        r
    } else {
        Ok(false)
    };
    if let Ok(mut c) = cleanup {
        let _ = c.wait().await;
    }
    let applied = applied?;
    record.state = "collected".into();
    record.save()?;

    Ok(Outcome {
        run_id: record.id.clone(),
        name: record.name.clone(),
        exp_ref,
        applied,
        bytes_up: 0,
        bytes_down,
        sync_seconds: 0.0,
    })
}

/// The fetch phase of [`collect`]: the result's commit under `fetch_ref`, then its cache
/// objects, then (exp mode) the experiment's ref. Returns the result commit, the experiment's
/// ref and the bytes received.
async fn fetch_results(
    transport: &Transport,
    repo: &Repo,
    record: &RunRecord,
    local_cache: &Path,
    fetch_ref: &str,
    ui: &Ui,
) -> Result<(String, Option<String>, u64)> {
    let rundir = format!("{}/runs/{}", record.workdir, record.id);
    let wt = PathBuf::from(format!("{rundir}/wt"));
    let remote_cache = match transport {
        Transport::Local => local_cache.to_path_buf(),
        Transport::Ssh(_) => PathBuf::from(format!("{}/cache", record.workdir)),
    };

    ui.phase("fetch", "fetching the results");
    let (remote_ref, exp_ref) = match record.mode.as_str() {
        "exp" => {
            let name = record.name.clone().ok_or_else(|| {
                Error::failed(format!(
                    "run {} finished but DVC recorded no experiment",
                    record.id
                ))
            })?;
            let r = format!(
                "refs/exps/{}/{}/{name}",
                &record.base[..2],
                &record.base[2..]
            );
            (r.clone(), Some(r))
        }
        _ => ("refs/dvc-exec/result".to_string(), None),
    };
    let force = record.dvc_args.iter().any(|a| a == "-f" || a == "--force");
    let exists_hint = "an experiment of that name exists here already; run again with -f to replace it, or pick another name with -n";
    let (url, ssh) = transport.git_remote(&wt);
    let refspec = format!("+{remote_ref}:{fetch_ref}");
    let mut cmd = Command::new("git");
    cmd.current_dir(&repo.top)
        .args([
            "fetch",
            "-q",
            "--no-tags",
            "--no-write-fetch-head",
            &url,
            &refspec,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(ssh) = ssh {
        cmd.env("GIT_SSH_COMMAND", ssh);
    }
    let out = cmd.output().await.context("cannot run git fetch")?;
    if git::interrupted_in_flight(&out.status) {
        return Err(Error::interrupted("git fetch was interrupted"));
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(
            Error::failed(format!("fetching the results of run {} failed", record.id))
                .source(std::io::Error::other(err)),
        );
    }
    let result = repo
        .git(&["rev-parse", "--verify", fetch_ref])?
        .trim()
        .to_string();
    if let Some(r) = &exp_ref
        && !force
        && let Ok(here) = repo.git(&["rev-parse", "--verify", "-q", r])
        && here.trim() != result
    {
        return Err(Error::failed(format!(
            "fetching the results of run {} failed: {r} exists here already",
            record.id
        ))
        .hint(exists_hint));
    }

    // The cache objects the result references, then the files of its directories.
    let mut bytes_down = 0;
    if !matches!(transport, Transport::Local) {
        // Only what this machine lacks is asked for.
        let missing = |hashes: &BTreeSet<String>| -> Vec<String> {
            hashes
                .iter()
                .map(|h| cache::object_path(h))
                .filter(|p| !local_cache.join(p).exists())
                .collect()
        };
        // Partial files wait outside the cache until they are whole.
        let dvc_dir = if repo.subdir.is_empty() {
            repo.top.join(".dvc")
        } else {
            repo.top.join(&repo.subdir).join(".dvc")
        };
        let incoming = dvc_dir
            .join("tmp")
            .join("dvc-exec-incoming")
            .join(&record.id);
        let _ = std::fs::remove_dir_all(&incoming);
        std::fs::create_dir_all(&incoming)
            .with_context(|| format!("cannot create {}", incoming.display()))?;
        let files = repo.dvc_files(&result)?;
        let hashes = cache::hashes_in(&files);
        let paths = missing(&hashes);
        bytes_down += transport
            .download_files(&remote_cache, local_cache, &paths, &incoming)
            .await?;
        let entries = cache::dir_entries(local_cache, &hashes);
        let paths = missing(&entries);
        bytes_down += transport
            .download_files(&remote_cache, local_cache, &paths, &incoming)
            .await?;
        let _ = std::fs::remove_dir_all(&incoming);
    }
    if let Some(r) = &exp_ref {
        // Only now, with everything it needs here, does the experiment appear.
        repo.git(&["update-ref", r, &result])?;
    }
    Ok((result, exp_ref, bytes_down))
}

/// Write the result's changes into the workspace, unless the user changed the same files since
/// the run started; then check out the DVC outputs.
fn apply(repo: &Repo, record: &RunRecord, result: &str, ui: &Ui) -> Result<bool> {
    let now = repo.snapshot()?;
    let by_user = repo.changed_paths(&record.snapshot, &now.commit)?;
    let by_run = repo.changed_paths(&record.snapshot, result)?;
    let clash: BTreeSet<_> = by_user.intersection(&by_run).cloned().collect();
    if !clash.is_empty() {
        let how = match &record.name {
            Some(name) if record.mode == "exp" => {
                format!("apply it when you are ready: dvc exp apply {name}")
            }
            _ => "run it again when the workspace is settled".into(),
        };
        ui.warn(&format!(
            "not applying the results: you changed {} since the run started, and the run changed {} too. Your files are untouched. {how}",
            clash.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if clash.len() == 1 { "it" } else { "them" },
        ));
        return Ok(false);
    }
    if by_run.is_empty() {
        return Ok(true);
    }
    let tmp = tempfile::Builder::new()
        .prefix("dvc-exec-apply")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let index = tmp.path().join("index");
    let index_s = index.to_string_lossy().to_string();
    let env = [("GIT_INDEX_FILE", index_s.as_str())];
    repo.git_env(&["read-tree", result], &env)?;
    let mut present = Vec::new();
    for path in &by_run {
        if repo.show_file(result, path)?.is_some() {
            present.push(path.clone());
        } else if repo.show_file(&record.base, path)?.is_some() {
            // The run deleted a file that HEAD tracks. (Untracked files are never part of a
            // DVC experiment commit: their absence there is no deletion.)
            let p = repo.top.join(path);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    for chunk in present.chunks(200) {
        let mut args = vec!["checkout-index", "-f", "--"];
        args.extend(chunk.iter().map(String::as_str));
        repo.git_env(&args, &env)?;
    }
    // The outputs: DVC checks out what the new dvc.lock and .dvc files name.
    let dvc_root = if repo.subdir.is_empty() {
        repo.top.clone()
    } else {
        repo.top.join(&repo.subdir)
    };
    let mut checkout = std::process::Command::new(local_dvc());
    checkout
        .current_dir(&dvc_root)
        .args(["checkout", "-q"])
        .stdin(Stdio::null())
        .process_group(0);
    let mut out = checkout.output();
    if out
        .as_ref()
        .is_ok_and(|o| git::interrupted_in_flight(&o.status))
    {
        out = checkout.output();
    }
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => ui.warn(&format!(
            "dvc checkout reported a problem: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => ui.warn(&format!(
            "cannot run dvc checkout ({e}); run it yourself to restore the outputs"
        )),
    }
    Ok(true)
}

/// Reconnect to a run's machine from its record.
pub async fn reconnect(
    record: &RunRecord,
) -> Result<(Box<dyn provider::Provider>, Machine, Transport)> {
    let paths = Paths::discover(&record.project_root);
    let config = Config::load(paths)?;
    let exec = config.executor(&record.executor)?;
    let ctx = provider::Context {
        project: record.project.clone(),
        owner: provider::cloud::owner(),
        root: record.project_root.clone(),
    };
    let provider = provider::for_executor(&exec, &ctx)?;
    let machines = provider.list().await?;
    let machine = machines
        .into_iter()
        .find(|m| m.id == record.machine)
        .ok_or_else(|| {
            Error::failed(format!(
                "the machine {} of run {} is gone",
                record.machine, record.id
            ))
        })?;
    let transport = connect_first(&machine).await?;
    Ok((provider, machine, transport))
}

/// `dvc-exec attach RUN`: follow a run again, then collect it.
pub async fn attach(id: &str, ui: Ui) -> Result<Outcome> {
    let mut record = RunRecord::load(id)?;
    if record.state == "collected" {
        return Err(Error::usage(format!(
            "run {} was already collected",
            record.id
        )));
    }
    let (provider, machine, mut transport) = reconnect(&record).await?;
    let r = follow_and_collect(&mut transport, &*provider, &machine, &mut record, &ui).await;
    transport.close().await;
    if record.state == "collected" || record.state == "failed" || record.state == "cancelled" {
        release(&*provider, &machine, &ui).await;
    }
    r
}

/// `dvc-exec collect RUN`: fetch the results of a finished run.
pub async fn collect_run(id: &str, ui: Ui) -> Result<Outcome> {
    let mut record = RunRecord::load(id)?;
    if record.state == "collected" {
        return Err(Error::usage(format!(
            "run {} was already collected",
            record.id
        )));
    }
    let (provider, machine, transport) = reconnect(&record).await?;
    let status = transport
        .helper_ok(
            "asking for the run's state",
            &["status".into(), record.workdir.clone(), record.id.clone()],
        )
        .await?;
    let result = match status.get("state") {
        Some("running") => Err(Error::usage(format!("run {} is still running", record.id))
            .hint(format!("follow it with: dvc-exec attach {}", record.id))),
        Some("finished") => {
            let report = Report::parse(&status.stdout);
            let code = match report.exit {
                Some(ExitStatus::Code(c)) => c,
                _ => 1,
            };
            record.name = report.name;
            record.exit_code = Some(code);
            if code != 0 {
                record.end("failed")?;
                Err(Error::run_failed(
                    code,
                    format!("run {} failed with exit code {code}", record.id),
                ))
            } else {
                collect(&transport, &mut record, &ui).await
            }
        }
        _ => Err(Error::failed(format!(
            "run {} ended without an exit status",
            record.id
        ))),
    };
    transport.close().await;
    if record.state == "collected" || record.state == "failed" {
        release(&*provider, &machine, &ui).await;
    }
    result
}

/// `dvc-exec cancel RUN`: stop a run on its executor, remove its directory there, release its
/// machine.
pub async fn cancel_run(id: &str, ui: Ui) -> Result<String> {
    let mut record = RunRecord::load(id)?;
    if !matches!(record.state.as_str(), "running" | "starting" | "finished") {
        return Err(Error::usage(format!(
            "run {} is {}; there is nothing to cancel",
            record.id, record.state
        )));
    }
    let (provider, machine, transport) = reconnect(&record).await?;
    let reply = transport
        .helper_ok(
            "stopping the run",
            &[
                "cancel".into(),
                record.workdir.clone(),
                record.id.clone(),
                "10".into(),
            ],
        )
        .await?;
    let _ = transport
        .helper(&["cleanup".into(), record.workdir.clone(), record.id.clone()])
        .await;
    transport.close().await;
    record.exit_code.get_or_insert(130);
    record.end("cancelled")?;
    release(&*provider, &machine, &ui).await;
    Ok(match reply.get("state") {
        Some("killed") => format!(
            "cancelled run {}: killed it after it ignored SIGINT for 10 s",
            record.id
        ),
        Some("gone") => format!(
            "run {} had already ended; removed it from {}",
            record.id, record.executor
        ),
        _ => format!("cancelled run {}: it stopped on SIGINT", record.id),
    })
}

/// `dvc-exec logs RUN [--follow]`: the run's log, from the executor while it runs, else the
/// local copy kept when it was followed.
pub async fn logs(id: &str, follow_live: bool, ui: Ui) -> Result<()> {
    let record = RunRecord::load(id)?;
    if record.state == "running" || record.state == "starting" {
        let (provider, machine, mut transport) = reconnect(&record).await?;
        if follow_live {
            let r = follow(&mut transport, &*provider, &machine, &record, &ui).await;
            transport.close().await;
            r?;
        } else {
            let reply = transport
                .helper_ok(
                    "reading the log",
                    &["cat-log".into(), record.workdir.clone(), record.id.clone()],
                )
                .await?;
            transport.close().await;
            ui.log(reply.stdout.as_bytes());
        }
        return Ok(());
    }
    let path = record.log_path()?;
    let text = std::fs::read(&path).map_err(|e| {
        Error::failed(format!("no log is kept for run {}", record.id))
            .source(e)
            .hint("logs are kept for runs this machine followed (foreground runs, attach)")
    })?;
    ui.log(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_run_report_is_read_from_any_output() {
        let r = Report::parse(
            "noise\nDVC-EXEC-EXIT 0\nDVC-EXEC-NAME brisk-lair\nDVC-EXEC-FREE-KB 123456\n",
        );
        assert_eq!(r.exit, Some(ExitStatus::Code(0)));
        assert_eq!(r.name.as_deref(), Some("brisk-lair"));
        assert!(!r.disk_full());
        let r = Report::parse("DVC-EXEC-EXIT lost\nDVC-EXEC-NAME \nDVC-EXEC-FREE-KB 12\n");
        assert_eq!(r.exit, Some(ExitStatus::Lost));
        assert_eq!(r.name, None);
        assert!(r.disk_full());
        // An exit file cut short by a full disk, or garbage: a failure, never success.
        assert_eq!(
            Report::parse("DVC-EXEC-EXIT \n").exit,
            Some(ExitStatus::Code(1))
        );
        assert_eq!(
            Report::parse("DVC-EXEC-EXIT 99999999999\nDVC-EXEC-FREE-KB -1\n"),
            Report {
                exit: Some(ExitStatus::Code(1)),
                name: None,
                free_kb: None
            }
        );
        assert_eq!(Report::parse(""), Report::default());
    }

    #[test]
    fn the_log_tail_keeps_whole_lines_across_chunks() {
        let mut t = LogTail::default();
        assert!(t.push(b"a\xffb").is_empty());
        assert_eq!(t.push(b"c\nd\r\n"), vec!["a\u{fffd}bc", "d"]);
        // A character split between two reads.
        let e = "\u{e9}".as_bytes();
        assert!(t.push(&e[..1]).is_empty());
        assert_eq!(t.push(&[&e[1..], b"\n"].concat()), vec!["\u{e9}"]);
        // A line that never ends is kept bounded.
        t.push(&vec![b'x'; 1 << 20]);
        assert!(t.text().len() < 64 * 1024);
        for i in 0..100 {
            t.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(t.text().lines().count(), LogTail::KEEP);
    }
}
