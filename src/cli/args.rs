//! The command line, as clap parses it. Nothing here resolves settings or does work.

use clap::{Args, Parser, Subcommand};

/// Run DVC experiments on remote machines and cloud GPUs, and get them back as ordinary DVC
/// experiments.
#[derive(Debug, Parser)]
#[command(name = "dvc-exec", version, about, long_about = None, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 success, 1 failure, 2 usage or configuration error, \
the remote experiment's own code when it fails, 130 after Ctrl-C."
)]
pub struct Cli {
    /// More output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only errors and the experiment's own output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print one JSON event per line on stdout (for CI and programs).
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configure executors (like `dvc remote`).
    #[command(subcommand)]
    Executor(ExecutorCommand),
    /// Experiments: `dvc-exec exp run`.
    #[command(subcommand)]
    Exp(ExpCommand),
    /// Run an experiment on an executor (the same as `exp run`).
    Run(RunArgs),
    /// Run `dvc repro` on an executor and bring dvc.lock and the outputs back.
    Repro(RunArgs),
    /// Run one stage of a pipeline on an executor: use it as the stage's cmd in dvc.yaml.
    Stage(StageArgs),
    /// Follow a run that was started with --detach (or whose connection was lost), then collect it.
    Attach(RunIdArgs),
    /// Fetch the results of a finished run into the project.
    Collect(CollectArgs),
    /// List runs: detached, running, finished and collected, from any terminal.
    Runs,
    /// Show a run's log (--follow: live, until it ends).
    Logs {
        /// The run id (or a unique prefix).
        run: String,
        /// Keep following until the run ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a run on its executor and release its machine.
    Cancel(RunIdArgs),
    /// Remove cloud machines, key pairs and security groups that dvc-exec created and no run uses.
    Gc(GcArgs),
    /// DVC's experiment queue, run over an executor's machines.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Hot machines: bring them up, list them, take them down, open a shell.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Make `dvc exp run --executor NAME` work in DVC's own command line.
    #[command(subcommand)]
    Shim(ShimCommand),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `queue ...`
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Run every experiment `dvc exp run --queue` queued, N at a time, on the executor.
    Start {
        /// The executor (default: core.executor).
        #[arg(short, long, value_name = "NAME")]
        executor: Option<String>,
        /// How many at once (default: the executor's machines, or 1).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
}

/// `machine ...`
#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Bring N machines of a cloud executor up and keep them (hot).
    Up {
        /// How many.
        #[arg(short = 'n', long = "count", default_value_t = 1)]
        count: usize,
        /// The executor.
        executor: String,
    },
    /// Every machine of the configured executors.
    List,
    /// Terminate the machines of an executor, one machine, or all of them.
    Down {
        /// An executor or a machine id.
        target: Option<String>,
        /// Every machine dvc-exec created.
        #[arg(long)]
        all: bool,
    },
    /// Open a shell (or run a command) on a machine, with its pinned host key.
    Ssh {
        /// An executor or a machine id.
        target: String,
        /// A command to run instead of a shell, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

/// `shim ...`
#[derive(Debug, Subcommand)]
pub enum ShimCommand {
    /// Put a `dvc` link to dvc-exec ahead of the real DVC on PATH.
    Install {
        /// The directory for the link (default ~/.local/share/dvc-exec/bin).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Remove the link.
    Uninstall {
        /// The directory of the link.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Say whether the shim is installed and first on PATH, and which dvc is the real one.
    Status {
        /// The directory of the link.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// Options of `gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this executor (default: every cloud executor).
    #[arg(short, long, value_name = "NAME")]
    pub executor: Option<String>,
}

/// `exp ...`
#[derive(Debug, Subcommand)]
pub enum ExpCommand {
    /// Run an experiment on an executor; it comes back as a normal DVC experiment.
    Run(RunArgs),
}

/// Options of `exp run`, `run` and `repro`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The executor (default: core.executor).
    #[arg(short, long, value_name = "NAME")]
    pub executor: Option<String>,
    /// Return as soon as the run has started; follow it with `dvc-exec attach`.
    #[arg(long)]
    pub detach: bool,
    /// Do not apply the results to the workspace (the experiment is still saved).
    #[arg(long)]
    pub no_apply: bool,
    /// Options and targets for DVC (`-S lr=0.1`, `-n NAME`, `train` ...).
    #[arg(
        allow_hyphen_values = true,
        trailing_var_arg = true,
        value_name = "DVC_ARGS"
    )]
    pub dvc_args: Vec<String>,
}

/// Options of `stage`.
#[derive(Debug, Args)]
#[command(after_help = "In dvc.yaml:  cmd: dvc-exec stage -e gpu -- python train.py")]
pub struct StageArgs {
    /// The executor (default: core.executor).
    #[arg(short, long, value_name = "NAME")]
    pub executor: Option<String>,
    /// The stage's command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// A run id.
#[derive(Debug, Args)]
pub struct RunIdArgs {
    /// The run id (or a unique prefix).
    pub run: String,
}

/// Options of `collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The run id (or a unique prefix).
    pub run: String,
    /// Do not apply the results to the workspace.
    #[arg(long)]
    pub no_apply: bool,
}

/// `completions SHELL`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Which config file to write (default: the repo's `.dvc/exec.config`).
#[derive(Debug, Args, Clone, Copy)]
#[group(multiple = false)]
pub struct LevelArgs {
    /// Use the system file.
    #[arg(long)]
    pub system: bool,
    /// Use the global (per-user) file.
    #[arg(long)]
    pub global: bool,
    /// Use the repo's committed file, .dvc/exec.config (the default).
    #[arg(long)]
    pub project: bool,
    /// Use the repo's git-ignored file, .dvc/exec.config.local.
    #[arg(long)]
    pub local: bool,
}

/// `executor ...`
#[derive(Debug, Subcommand)]
pub enum ExecutorCommand {
    /// Add an executor.
    Add {
        /// Make it the default executor.
        #[arg(short, long)]
        default: bool,
        /// Replace an executor of the same name.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        level: LevelArgs,
        /// Its name.
        name: String,
        /// Its type: local, ssh, aws, gcp or azure.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Settings, as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Set or unset one key of an executor.
    Modify {
        #[command(flatten)]
        level: LevelArgs,
        /// Unset the key.
        #[arg(short, long)]
        unset: bool,
        /// The executor.
        name: String,
        /// The key.
        key: String,
        /// The value (not with --unset).
        value: Option<String>,
    },
    /// List executors.
    List {
        /// Show the file each executor is defined in.
        #[arg(long)]
        show_origin: bool,
    },
    /// Remove an executor (from every level that defines it, unless a level is given).
    Remove {
        #[command(flatten)]
        level: LevelArgs,
        /// The executor.
        name: String,
    },
    /// Rename an executor.
    Rename {
        #[command(flatten)]
        level: LevelArgs,
        /// The current name.
        old: String,
        /// The new name.
        new: String,
    },
    /// Show, set or unset the default executor.
    Default {
        #[command(flatten)]
        level: LevelArgs,
        /// Unset the default.
        #[arg(short, long)]
        unset: bool,
        /// The executor to make the default.
        name: Option<String>,
    },
}
