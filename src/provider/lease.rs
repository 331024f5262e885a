//! Leases: which run has which machine (or slot of one), across every dvc-exec process of this
//! user. A lease is a file naming the process that holds it; it is taken under an exclusive
//! lock, so two processes started at once never take the same machine. A machine is busy while
//! its lease's process lives, or while a run recorded on it has not ended (a detached run whose
//! client has exited).

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use super::Machine;
use crate::error::{Context, Error, Result};
use crate::output::Ui;
use crate::run::state::RunRecord;

/// A held lease; dropping it gives the machine back.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    /// The machine it is for.
    pub machine_id: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .map(|t| t.trim() == std::process::id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn dir(executor: &str) -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| {
        Error::failed("cannot find the user's data directory").hint("set XDG_DATA_HOME or HOME")
    })?;
    Ok(base.join("dvc-exec").join("leases").join(executor))
}

fn file_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Machines found unreachable by this process: not leased again by it.
static AVOID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Do not lease this machine again in this process (it was lost).
pub fn avoid(machine_id: &str) {
    if let Ok(mut a) = AVOID.lock() {
        a.push(machine_id.to_string());
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for the process.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Take the first free machine among `candidates`, waiting while all are busy.
pub async fn acquire(executor: &str, candidates: &[Machine], ui: &Ui) -> Result<(Machine, Lease)> {
    let mut said = false;
    loop {
        if let Some(got) = try_acquire(executor, candidates)? {
            return Ok(got);
        }
        if !said {
            ui.note(&format!(
                "all {} machines of {executor} are busy; waiting for one",
                candidates.len()
            ));
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Take the first free machine among `candidates`, or None when all are busy.
pub fn try_acquire(executor: &str, candidates: &[Machine]) -> Result<Option<(Machine, Lease)>> {
    let dir = dir(executor)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::failed(format!(
            "cannot lock {}",
            lock_path.display()
        )));
    }
    let runs = RunRecord::all().unwrap_or_default();
    let avoid = AVOID.lock().map(|a| a.clone()).unwrap_or_default();
    let mut order: Vec<&Machine> = candidates
        .iter()
        .filter(|m| {
            !avoid
                .iter()
                .any(|a| *a == m.id || m.id.starts_with(&format!("{a}#")))
        })
        .collect();
    if order.is_empty() && !candidates.is_empty() {
        return Err(Error::failed(format!(
            "every machine of {executor} was lost"
        )));
    }
    // Spread runs: start from the machine with the fewest recorded runs.
    order.sort_by_key(|m| runs.iter().filter(|r| r.machine == m.id).count());
    for m in order {
        let path = dir.join(file_name(&m.id));
        let holder = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        if holder.is_some_and(pid_alive) {
            continue;
        }
        let busy = runs
            .iter()
            .any(|r| r.machine == m.id && matches!(r.state.as_str(), "starting" | "running"));
        if busy {
            continue;
        }
        std::fs::write(&path, std::process::id().to_string())
            .with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(Some((
            m.clone(),
            Lease {
                path,
                machine_id: m.id.clone(),
            },
        )));
    }
    Ok(None)
}

/// Lease a machine that was just created for this process.
pub fn take_new(executor: &str, machine: &Machine) -> Result<Lease> {
    let dir = dir(executor)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(file_name(&machine.id));
    std::fs::write(&path, std::process::id().to_string())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Lease {
        path,
        machine_id: machine.id.clone(),
    })
}

/// A per-executor lock held while deciding to create a pool machine, so that processes started
/// at once never create more than the pool's size.
pub struct CreateLock {
    _file: std::fs::File,
}

impl CreateLock {
    /// Wait for the lock (polling, so Ctrl-C is still heard).
    pub async fn take(executor: &str) -> Result<Self> {
        let dir = dir(executor)?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(".create.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        loop {
            // SAFETY: flock on a file descriptor we own; released when it is closed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _file: file });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
