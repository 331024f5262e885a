//! `dvc-exec machine ...`: hot machines that outlive a run.

use std::os::unix::process::CommandExt;

use serde_json::json;

use super::args::MachineCommand;
use super::{cwd, runtime};
use crate::config::{Config, Executor, Paths};
use crate::error::{Error, Result};
use crate::output::Ui;
use crate::provider::{self, Address, Machine, MachineState};
use crate::run::state::{self, RunRecord};

fn context(paths: &Paths) -> provider::Context {
    let root = paths
        .repo_root()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let project = crate::run::git::Repo::open(&root)
        .ok()
        .and_then(|repo| crate::run::project_id(&repo, &root).ok())
        .unwrap_or_default();
    provider::Context {
        project,
        owner: provider::cloud::owner(),
        root,
    }
}

/// Every machine of every configured executor, with its executor.
async fn all_machines(
    config: &Config,
    ctx: &provider::Context,
) -> Result<Vec<(Executor, Machine)>> {
    let mut out = Vec::new();
    for name in config.executors.keys() {
        let exec = config.executor(name)?;
        if exec.kind == crate::config::ExecutorType::Local {
            continue;
        }
        let Ok(provider) = provider::for_executor(&exec, ctx) else {
            continue;
        };
        for m in provider.list().await? {
            out.push((exec.clone(), m));
        }
    }
    Ok(out)
}

/// The machines a target names: an executor's (all of them) or one machine by id.
async fn find(
    config: &Config,
    ctx: &provider::Context,
    target: &str,
) -> Result<Vec<(Executor, Machine)>> {
    let all = all_machines(config, ctx).await?;
    let hits: Vec<_> = all
        .into_iter()
        .filter(|(e, m)| e.name == target || m.id == target)
        .collect();
    if hits.is_empty() {
        return Err(Error::usage(format!(
            "no machine or executor {target:?} has machines now"
        ))
        .hint("dvc-exec machine list shows the machines"));
    }
    Ok(hits)
}

fn state_name(s: Option<MachineState>) -> &'static str {
    match s {
        Some(MachineState::Running) => "running",
        Some(MachineState::Pending) => "pending",
        Some(MachineState::Stopped) => "stopped",
        Some(MachineState::Gone) => "gone",
        None => "-",
    }
}

fn address(m: &Machine) -> String {
    match &m.address {
        Address::Local => "local".into(),
        Address::Ssh(t) => t.display(),
    }
}

/// Run a machine subcommand.
pub fn run(cmd: MachineCommand, ui: Ui) -> Result<()> {
    let paths = Paths::discover(&cwd()?);
    let config = Config::load(paths.clone())?;
    let ctx = context(&paths);
    let rt = runtime()?;
    match cmd {
        MachineCommand::Up { count, executor } => {
            let mut exec = config.executor(&executor)?;
            let Some(cloud) = exec.cloud.as_mut() else {
                return Err(Error::usage(format!(
                    "executor {executor:?} is of type {}: it has no machines to bring up",
                    exec.kind
                ))
                .hint("machine up is for cloud executors (type aws, gcp or azure)"));
            };
            cloud.keep = true;
            let provider = provider::for_executor(&exec, &ctx)?;
            let machines = rt.block_on(async {
                let existing: Vec<Machine> = provider
                    .list()
                    .await?
                    .into_iter()
                    .filter(|m| m.keep && m.state != Some(MachineState::Gone))
                    .collect();
                let mut up = Vec::new();
                for m in existing.into_iter().take(count) {
                    up.push(provider.start(&m, &ui).await?);
                }
                while up.len() < count {
                    let id = state::new_run_id();
                    match provider.create(&id, &ui).await {
                        Ok(m) => up.push(m),
                        Err(e) => {
                            let _ = provider.abort(&id).await;
                            return Err(e);
                        }
                    }
                }
                Ok::<_, Error>(up)
            })?;
            for m in &machines {
                if !ui.json {
                    println!(
                        "{}  {}  {}",
                        m.id,
                        state_name(Some(MachineState::Running)),
                        address(m)
                    );
                }
            }
            ui.result(
                json!({"executor": executor, "machines": machines.iter().map(|m| &m.id).collect::<Vec<_>>()}),
                &format!("{} machine(s) of {executor} are up and kept; dvc-exec machine down {executor} removes them", machines.len()),
            );
        }
        MachineCommand::List => {
            let all = rt.block_on(all_machines(&config, &ctx))?;
            let runs = RunRecord::all()?;
            let now = state::now();
            let busy = |id: &str| {
                runs.iter()
                    .find(|r| r.machine == id && matches!(r.state.as_str(), "running" | "starting"))
                    .map(|r| r.id.clone())
            };
            if ui.json {
                ui.event(json!({"event": "result", "machines": all.iter().map(|(e, m)| json!({
                    "executor": e.name, "id": m.id, "state": state_name(m.state), "address": address(m),
                    "launched": m.launched, "keep": m.keep, "owned": m.owned, "run": busy(&m.id),
                })).collect::<Vec<_>>()}));
                return Ok(());
            }
            let mut rows = vec![
                [
                    "EXECUTOR", "MACHINE", "STATE", "ADDRESS", "AGE", "KEPT", "RUN",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for (e, m) in &all {
                rows.push(vec![
                    e.name.clone(),
                    m.id.clone(),
                    state_name(m.state).into(),
                    address(m),
                    m.launched
                        .map(|t| super::human_secs(now.saturating_sub(t)))
                        .unwrap_or_else(|| "-".into()),
                    if m.keep { "yes".into() } else { "no".into() },
                    busy(&m.id).unwrap_or_else(|| "-".into()),
                ]);
            }
            super::print_table(&rows);
        }
        MachineCommand::Down { target, all } => {
            let targets = match (target, all) {
                (Some(t), false) => rt.block_on(find(&config, &ctx, &t))?,
                (None, true) => rt.block_on(all_machines(&config, &ctx))?,
                _ => {
                    return Err(Error::usage("name an executor or a machine, or pass --all")
                        .hint("dvc-exec machine down EXECUTOR|ID|--all"));
                }
            };
            let mut removed = Vec::new();
            for (exec, m) in targets.into_iter().filter(|(_, m)| m.owned) {
                let provider = provider::for_executor(&exec, &ctx)?;
                rt.block_on(provider.destroy(&m))?;
                if !ui.json {
                    println!("terminated {} ({})", m.id, exec.name);
                }
                removed.push(m.id);
            }
            ui.result(json!({"terminated": removed}), "");
        }
        MachineCommand::Ssh { target, command } => {
            let hits = rt.block_on(find(&config, &ctx, &target))?;
            let (exec, m) = hits
                .into_iter()
                .find(|(_, m)| m.state.is_none_or(|s| s == MachineState::Running))
                .ok_or_else(|| Error::usage(format!("no running machine for {target:?}")))?;
            let Address::Ssh(t) = &m.address else {
                return Err(Error::usage(format!(
                    "executor {:?} runs on this machine",
                    exec.name
                )));
            };
            let mut c = std::process::Command::new("ssh");
            c.args(["-o", "StrictHostKeyChecking=yes"]);
            if let Some(kh) = &t.known_hosts {
                c.arg("-o")
                    .arg(format!("UserKnownHostsFile={}", kh.display()));
            }
            if let Some(k) = &t.keyfile {
                c.arg("-i").arg(k);
            }
            if let Some(p) = t.port {
                c.arg("-p").arg(p.to_string());
            }
            if let Some(j) = &t.proxy_jump {
                c.arg("-J").arg(j);
            }
            if let Some(pc) = &t.proxy_command {
                c.arg("-o").arg(format!("ProxyCommand={pc}"));
            }
            if let Some(u) = &t.user {
                c.arg("-l").arg(u);
            }
            c.arg(&t.host);
            if !command.is_empty() {
                c.arg("--")
                    .args(command.iter().map(|w| crate::transport::shell_quote(w)));
            }
            let err = c.exec();
            return Err(Error::failed("cannot run ssh").source(err));
        }
    }
    Ok(())
}
