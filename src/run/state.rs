//! Local records of runs, so that `attach` and `collect` work from any terminal and after a crash.
//!
//! One JSON file per run in `$XDG_DATA_HOME/dvc-exec/runs/` (`~/.local/share/dvc-exec/runs/`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// What is known locally about one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    /// The run id (also its directory name on the executor).
    pub id: String,
    /// The executor's name.
    pub executor: String,
    /// The machine's id.
    pub machine: String,
    /// The DVC project root on this machine.
    pub project_root: PathBuf,
    /// The executor's workdir, absolute, on the machine.
    pub workdir: String,
    /// The project id on the executor.
    pub project: String,
    /// `exp` or `repro`.
    pub mode: String,
    /// The DVC arguments (`exp run ...`).
    pub dvc_args: Vec<String>,
    /// HEAD when the run started.
    pub base: String,
    /// The workspace snapshot.
    pub snapshot: String,
    /// Whether results are applied to the workspace when collected.
    pub apply: bool,
    /// `running`, `finished`, `collected`, `cancelled`, `failed`.
    pub state: String,
    /// Unix seconds at start.
    pub started: u64,
    /// The exit code, once known.
    pub exit_code: Option<i32>,
    /// The experiment's name, once known.
    pub name: Option<String>,
    /// Unix seconds when it ended, once known.
    #[serde(default)]
    pub ended: Option<u64>,
}

/// The directory of run records.
pub fn runs_dir() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| {
        Error::failed("cannot find the user's data directory").hint("set XDG_DATA_HOME or HOME")
    })?;
    Ok(base.join("dvc-exec").join("runs"))
}

impl RunRecord {
    /// Save (atomically).
    pub fn save(&self) -> Result<()> {
        let dir = runs_dir()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{}.json", self.id));
        let tmp = dir.join(format!(".{}.json.tmp", self.id));
        let text = serde_json::to_string_pretty(self).expect("a run record serializes");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The local copy of the run's log (kept after the run's directory on the executor is gone).
    pub fn log_path(&self) -> Result<PathBuf> {
        Ok(runs_dir()?.join(format!("{}.log", self.id)))
    }

    /// Mark the run as ended in `state` and save it.
    pub fn end(&mut self, state: &str) -> Result<()> {
        self.state = state.into();
        if self.ended.is_none() {
            self.ended = Some(now());
        }
        self.save()
    }

    /// Load one run by id (or a unique prefix of it).
    pub fn load(id: &str) -> Result<Self> {
        let all = Self::all()?;
        let matches: Vec<_> = all.into_iter().filter(|r| r.id.starts_with(id)).collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one")),
            0 => Err(Error::usage(format!("no run {id:?} is known on this machine"))
                .hint("dvc-exec attach and collect take a run id printed by dvc-exec exp run --detach")),
            _ => Err(Error::usage(format!("{id:?} names more than one run"))
                .hint(format!("use more of the id: {}", matches.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")))),
        }
    }

    /// Every known run, oldest first.
    pub fn all() -> Result<Vec<Self>> {
        let dir = runs_dir()?;
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(out);
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && let Ok(text) = std::fs::read_to_string(&p)
                && let Ok(r) = serde_json::from_str::<RunRecord>(&text)
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        Ok(out)
    }
}

/// A new run id: the UTC time and a random suffix, for example `20261204-201500-3fa9`.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = civil(now);
    format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}-{:04x}",
        fastrand::u16(..)
    )
}

/// Unix seconds to UTC date and time.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_796_400_000), (2026, 12, 4, 16, 0, 0));
        assert!(new_run_id().len() == 20);
    }
}
