//! The command line: parse ([`args`]), resolve settings, dispatch, report.

pub mod args;
mod executor;
mod machine;

use clap::{CommandFactory, Parser};
use serde_json::json;

use crate::config::{Config, Level, Paths};
use crate::error::{Error, Result};
use crate::output::Ui;
use crate::run::{self, Mode};
use args::{Cli, Command, ExpCommand, LevelArgs, RunArgs};

/// Run the program; returns the process exit code. Invoked as `dvc`, it is the shim.
pub fn main() -> i32 {
    // A bug must still end in a clear message, not a stack trace.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!(
            "error: internal error in dvc-exec {}: {what}{at}\n  hint: this is a bug; please report it with the command you ran",
            env!("CARGO_PKG_VERSION")
        );
    }));
    if crate::shim::invoked_as_dvc() {
        return crate::shim::main();
    }
    main_from(std::env::args_os().collect())
}

/// Run with these arguments (the first is the program name).
pub fn main_from(argv: Vec<std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_tracing(cli.verbose, cli.quiet);
    let ui = Ui {
        json: cli.json,
        quiet: cli.quiet,
        mute_log: false,
    };
    match dispatch(cli, ui) {
        Ok(code) => code,
        Err(e) => {
            if ui.json {
                ui.event(json!({
                    "event": "error",
                    "message": e.message(),
                    "causes": e.causes(),
                    "hint": e.hint_text(),
                    "exit_code": e.exit_code(),
                }));
            }
            eprintln!("{}", e.render());
            e.exit_code()
        }
    }
}

fn init_tracing(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DVC_EXEC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("dvc_exec={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// The level chosen by `--system/--global/--project/--local`.
pub fn level_of(l: LevelArgs) -> Option<Level> {
    if l.system {
        Some(Level::System)
    } else if l.global {
        Some(Level::Global)
    } else if l.local {
        Some(Level::Local)
    } else if l.project {
        Some(Level::Repo)
    } else {
        None
    }
}

fn cwd() -> Result<std::path::PathBuf> {
    std::env::current_dir()
        .map_err(|e| Error::failed("cannot read the current directory").source(e))
}

fn dispatch(cli: Cli, ui: Ui) -> Result<i32> {
    if let Command::Stage(a) = cli.command {
        return runtime()?.block_on(run::stage::run_stage(a.executor, a.cmd, ui));
    }
    dispatch_rest(cli, ui).map(|()| 0)
}

fn dispatch_rest(cli: Cli, ui: Ui) -> Result<()> {
    match cli.command {
        Command::Stage(_) => unreachable!("handled in dispatch"),
        Command::Executor(cmd) => executor::run(cmd, ui),
        Command::Exp(ExpCommand::Run(a)) | Command::Run(a) => run_command(a, Mode::Exp, ui),
        Command::Repro(a) => run_command(a, Mode::Repro, ui),
        Command::Attach(a) => {
            let outcome = runtime()?.block_on(run::attach(&a.run, ui))?;
            report_outcome(&outcome, ui);
            Ok(())
        }
        Command::Collect(a) => {
            if a.no_apply {
                let mut rec = run::state::RunRecord::load(&a.run)?;
                rec.apply = false;
                rec.save()?;
            }
            let outcome = runtime()?.block_on(run::collect_run(&a.run, ui))?;
            report_outcome(&outcome, ui);
            Ok(())
        }
        Command::Gc(a) => gc(a, ui),
        Command::Runs => list_runs(ui),
        Command::Logs { run, follow } => runtime()?.block_on(run::logs(&run, follow, ui)),
        Command::Cancel(a) => {
            let msg = runtime()?.block_on(run::cancel_run(&a.run, ui))?;
            ui.result(
                json!({"run": a.run, "state": "cancelled", "message": msg}),
                &msg,
            );
            Ok(())
        }
        Command::Shim(cmd) => shim_command(cmd, ui),
        Command::Machine(cmd) => machine::run(cmd, ui),
        Command::Queue(args::QueueCommand::Start { executor, jobs }) => {
            let paths = Paths::discover(&cwd()?);
            let config = Config::load(paths.clone())?;
            let name = match executor {
                Some(n) => n,
                None => config.default_name()?.to_string(),
            };
            let exec = config.executor(&name)?;
            let jobs = jobs.unwrap_or_else(|| {
                let hosts = exec.ssh_hosts.len().max(1);
                hosts * exec.slots.unwrap_or(1) as usize
            });
            let (done, failed) = runtime()?.block_on(run::queue::start(exec, paths, jobs, ui))?;
            ui.result(
                json!({"done": done, "failed": failed}),
                &format!("queue: {} done, {} failed", done.len(), failed.len()),
            );
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Error::failed(format!(
                    "{} queued experiments failed: {}",
                    failed.len(),
                    failed.join(", ")
                ))
                .hint("dvc-exec runs lists them; dvc-exec logs RUN shows why"))
            }
        }
        Command::Completions(a) => {
            let mut cmd = Cli::command();
            clap_complete::generate(a.shell, &mut cmd, "dvc-exec", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::failed("cannot start the async runtime").source(e))
}

/// Options of `dvc exp run` that take a value (so their value is never read as ours).
const DVC_VALUE_OPTIONS: &[&str] = &[
    "-S",
    "--set-param",
    "-n",
    "--name",
    "-m",
    "--message",
    "-C",
    "--copy-paths",
    "-j",
    "--jobs",
];

/// Options that make no sense for a remote run, with what to do instead.
fn refuse_option(arg: &str, mode: Mode) -> Option<String> {
    let name = arg.split('=').next().unwrap_or(arg);
    match (name, mode) {
        ("--queue", Mode::Exp) => Some("--queue adds to DVC's local queue; queue experiments with `dvc exp run --queue` and run them one by one with `dvc-exec exp run`".into()),
        ("--run-all", Mode::Exp) => Some("--run-all runs DVC's local queue on this machine; run queued experiments one by one with `dvc-exec exp run`".into()),
        ("-j" | "--jobs", Mode::Exp) => Some("-j sets how many queued experiments DVC runs at once locally; start several `dvc-exec exp run --detach` instead".into()),
        ("--temp", Mode::Exp) => Some("--temp asks DVC for a temporary directory here; dvc-exec always runs in a work tree of its own on the executor".into()),
        ("-i" | "--interactive", _) => Some("-i asks questions on a terminal, and the remote run has none; set the values with -S instead".into()),
        _ => None,
    }
}

/// Split our own flags out of the DVC arguments (they may come after DVC's).
fn split_args(mut a: RunArgs, json: &mut bool, mode: Mode) -> Result<RunArgs> {
    let mut rest = Vec::new();
    let mut it = std::mem::take(&mut a.dvc_args).into_iter();
    while let Some(arg) = it.next() {
        if DVC_VALUE_OPTIONS.contains(&arg.as_str()) {
            rest.push(arg);
            if let Some(v) = it.next() {
                rest.push(v);
            }
            continue;
        }
        match arg.as_str() {
            "-e" | "--executor" => {
                a.executor = Some(it.next().ok_or_else(|| {
                    Error::usage(format!("{arg} needs an executor name"))
                        .hint("dvc-exec exp run -e NAME ...")
                })?);
            }
            s if s.starts_with("--executor=") => {
                a.executor = Some(s["--executor=".len()..].to_string())
            }
            "--detach" => a.detach = true,
            "--no-apply" => a.no_apply = true,
            "--json" => *json = true,
            "--" => rest.extend(it.by_ref()),
            _ => {
                if let Some(why) = refuse_option(&arg, mode) {
                    return Err(
                        Error::usage(format!("{arg} cannot be used with dvc-exec")).hint(why)
                    );
                }
                rest.push(arg);
            }
        }
    }
    a.dvc_args = rest;
    Ok(a)
}

fn run_command(a: RunArgs, mode: Mode, mut ui: Ui) -> Result<()> {
    let a = split_args(a, &mut ui.json, mode)?;
    let paths = Paths::discover(&cwd()?);
    if paths.dvc_dir.is_none() {
        return Err(Error::usage("not inside a DVC project").hint(
            "run this in a DVC project (one with a .dvc directory; create it with dvc init)",
        ));
    }
    let config = Config::load(paths.clone())?;
    let name = match &a.executor {
        Some(n) => n.clone(),
        None => config.default_name()?.to_string(),
    };
    let executor = config.executor(&name)?;
    let mut dvc_args: Vec<String> = match mode {
        Mode::Exp => vec!["exp".into(), "run".into()],
        Mode::Repro => vec!["repro".into()],
    };
    dvc_args.extend(a.dvc_args);
    let req = run::Request {
        executor,
        paths,
        dvc_args,
        mode,
        detach: a.detach,
        apply: !a.no_apply,
        snapshot: None,
    };
    let outcome = runtime()?.block_on(run::execute(req, ui))?;
    if !a.detach {
        report_outcome(&outcome, ui);
    }
    Ok(())
}

fn report_outcome(o: &run::Outcome, ui: Ui) {
    let human = match (&o.name, o.applied) {
        (Some(name), true) => format!(
            "experiment {name} is done; its results are in your workspace (dvc exp show lists it)"
        ),
        (Some(name), false) => {
            format!("experiment {name} is done and saved; apply it with: dvc exp apply {name}")
        }
        (None, true) => "done; the results are in your workspace".into(),
        (None, false) => "done".into(),
    };
    ui.result(
        json!({
            "run": o.run_id,
            "name": o.name,
            "ref": o.exp_ref,
            "applied": o.applied,
            "exit_code": 0,
            "bytes_up": o.bytes_up,
            "bytes_down": o.bytes_down,
            "sync_seconds": o.sync_seconds,
        }),
        &human,
    );
}

fn gc(a: args::GcArgs, ui: Ui) -> Result<()> {
    let paths = Paths::discover(&cwd()?);
    let config = Config::load(paths.clone())?;
    let names: Vec<String> = match &a.executor {
        Some(n) => {
            config.executor(n)?;
            vec![n.clone()]
        }
        None => config.executors.keys().cloned().collect(),
    };
    // Machines with a run that has not been collected are busy.
    let busy: Vec<String> = run::state::RunRecord::all()?
        .into_iter()
        .filter(|r| r.state == "running" || r.state == "finished" || r.state == "starting")
        .map(|r| r.machine)
        .collect();
    let root = paths
        .repo_root()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let ctx = crate::provider::Context {
        project: String::new(),
        owner: crate::provider::cloud::owner(),
        root,
    };
    let rt = runtime()?;
    let mut all = Vec::new();
    for name in names {
        let exec = config.executor(&name)?;
        if !exec.kind.is_cloud() {
            continue;
        }
        let provider = crate::provider::for_executor(&exec, &ctx)?;
        let removed = rt.block_on(provider.gc(a.dry_run, &busy, &ui))?;
        for r in &removed {
            if !ui.json {
                println!(
                    "{}{name}: {r}",
                    if a.dry_run {
                        "would remove "
                    } else {
                        "removed "
                    }
                );
            }
        }
        all.extend(
            removed
                .into_iter()
                .map(|r| json!({"executor": name, "resource": r})),
        );
    }
    ui.result(json!({"dry_run": a.dry_run, "removed": all}), "");
    Ok(())
}

fn shim_command(cmd: args::ShimCommand, ui: Ui) -> Result<()> {
    use crate::shim;
    match cmd {
        args::ShimCommand::Install { dir } => {
            let lines = shim::install(dir)?;
            ui.result(
                json!({"installed": true, "message": lines.join("\n")}),
                &lines.join("\n"),
            );
        }
        args::ShimCommand::Uninstall { dir } => {
            let line = shim::uninstall(dir)?;
            ui.result(json!({"installed": false, "message": line}), &line);
        }
        args::ShimCommand::Status { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => shim::shim_dir()?,
            };
            let state = shim::status_of(&dir);
            let real = shim::real_dvc();
            let text = match state {
                shim::ShimState::Missing => format!(
                    "not installed (dvc-exec shim install puts it in {})",
                    dir.display()
                ),
                shim::ShimState::Shadowed => format!(
                    "installed in {}, but another dvc comes first on PATH; add: export PATH=\"{}:$PATH\"",
                    dir.display(),
                    dir.display()
                ),
                shim::ShimState::Active => {
                    format!("active: {} is first on PATH", dir.join("dvc").display())
                }
            };
            let real_text = real
                .as_ref()
                .map(|r| format!("the real dvc: {}", r.display()))
                .unwrap_or_else(|| "the real dvc: not found on PATH".into());
            if ui.json {
                ui.event(json!({
                    "event": "result",
                    "state": format!("{state:?}").to_lowercase(),
                    "dir": dir,
                    "real_dvc": real,
                }));
            } else {
                println!("{text}\n{real_text}");
            }
        }
    }
    Ok(())
}

fn list_runs(ui: Ui) -> Result<()> {
    let runs = run::state::RunRecord::all()?;
    let now = run::state::now();
    if ui.json {
        ui.event(
            json!({"event": "result", "runs": runs.iter().map(|r| json!({
            "id": r.id, "executor": r.executor, "machine": r.machine, "name": r.name,
            "state": r.state, "started": r.started, "ended": r.ended, "exit_code": r.exit_code,
            "project": r.project_root, "mode": r.mode,
        })).collect::<Vec<_>>()}),
        );
        return Ok(());
    }
    let mut rows = vec![
        [
            "RUN",
            "EXECUTOR",
            "MACHINE",
            "EXPERIMENT",
            "STATE",
            "STARTED",
            "DURATION",
            "EXIT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &runs {
        let dur = r.ended.unwrap_or(now).saturating_sub(r.started);
        rows.push(vec![
            r.id.clone(),
            r.executor.clone(),
            r.machine.clone(),
            r.name.clone().unwrap_or_else(|| "-".into()),
            r.state.clone(),
            format!("{} ago", human_secs(now.saturating_sub(r.started))),
            human_secs(dur),
            r.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    print_table(&rows);
    Ok(())
}

fn human_secs(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// Print rows as columns aligned with two spaces (the last column is not padded).
pub(crate) fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map(|r| r.len()).unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
