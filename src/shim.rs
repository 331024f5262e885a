//! The `dvc` shim: `dvc exp run --executor NAME` in DVC's own command line.
//!
//! DVC has no plugin hook for a new option, so `dvc-exec shim install` puts a link named `dvc`
//! to this binary in a directory of its own, ahead of the real DVC on PATH. Invoked as `dvc`,
//! dvc-exec handles `exp run --executor NAME ...` and `repro --executor NAME ...` itself and
//! hands every other invocation to the real `dvc` with `exec`: same arguments, stdin, stdout,
//! stderr, exit code and signals, at the cost of one PATH search. The real `dvc` is the first
//! one on PATH that is not this binary, so the shim never finds itself.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};

/// The directory the shim goes in: `~/.local/share/dvc-exec/bin`.
pub fn shim_dir() -> Result<PathBuf> {
    let base = dirs::data_dir().ok_or_else(|| {
        Error::failed("cannot find the user's data directory").hint("set XDG_DATA_HOME or HOME")
    })?;
    Ok(base.join("dvc-exec").join("bin"))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The real `dvc`: `DVC_EXEC_REAL_DVC`, or the first `dvc` on PATH that is not this binary.
pub fn real_dvc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DVC_EXEC_REAL_DVC").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe().ok()?;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("dvc"))
        .find(|p| is_executable(p) && !same_file(p, &me))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process was invoked as `dvc`.
pub fn invoked_as_dvc() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "dvc"))
        .unwrap_or(false)
}

/// What the shim does with a command line (the arguments after `dvc`).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `exp run --executor NAME ...` / `repro --executor NAME ...`: dvc-exec's own arguments.
    Ours(Vec<OsString>),
    /// Anything else: the real DVC.
    Dvc,
}

/// Decide where a `dvc ...` command line goes.
pub fn route(args: &[OsString]) -> Route {
    let strs: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    let has_executor = strs
        .iter()
        .any(|a| matches!(a, Some(s) if *s == "--executor" || s.starts_with("--executor=")));
    if !has_executor {
        return Route::Dvc;
    }
    // The subcommand is the first word that is not an option (DVC's global options are flags).
    let words: Vec<&str> = strs
        .iter()
        .flatten()
        .copied()
        .filter(|s| !s.starts_with('-'))
        .take(2)
        .collect();
    match words.as_slice() {
        ["exp", "run", ..] | ["repro", ..] | ["queue", "start", ..] => Route::Ours(args.to_vec()),
        _ => Route::Dvc,
    }
}

/// Run as the `dvc` shim; returns an exit code only when dvc-exec handled the command itself.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let real = real_dvc();
    if let Some(r) = &real {
        // Whatever dvc-exec runs as "dvc" from here on is the real one.
        // SAFETY: single-threaded at this point; nothing else reads the environment yet.
        unsafe { std::env::set_var("DVC_EXEC_LOCAL_DVC", r) };
    }
    match route(&args) {
        Route::Ours(a) => {
            let mut argv = vec![OsString::from("dvc-exec")];
            argv.extend(a);
            crate::cli::main_from(argv)
        }
        Route::Dvc => {
            let Some(real) = real else {
                eprintln!(
                    "error: the real dvc was not found on PATH (the dvc-exec shim only handles --executor)\n  hint: install DVC (pip install dvc), or remove the shim: dvc-exec shim uninstall"
                );
                return 127;
            };
            let err = std::process::Command::new(&real).args(&args).exec();
            eprintln!("error: cannot run {}: {err}", real.display());
            126
        }
    }
}

/// `dvc-exec shim install`: returns the lines to tell the user.
pub fn install(dir: Option<PathBuf>) -> Result<Vec<String>> {
    let dir = match dir {
        Some(d) => d,
        None => shim_dir()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let me = std::env::current_exe().context("cannot find the dvc-exec binary")?;
    let me = std::fs::canonicalize(&me).unwrap_or(me);
    let link = dir.join("dvc");
    if link.symlink_metadata().is_ok() {
        if !same_file(&link, &me) {
            return Err(Error::usage(format!(
                "{} exists and is not the dvc-exec shim",
                link.display()
            ))
            .hint("remove it, or install the shim elsewhere with --dir DIR"));
        }
        std::fs::remove_file(&link)
            .with_context(|| format!("cannot replace {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&me, &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    let mut lines = vec![format!(
        "installed the dvc shim: {} -> {}",
        link.display(),
        me.display()
    )];
    match status_of(&dir) {
        ShimState::Active => lines.push("it is ahead of the real dvc on PATH: `dvc exp run --executor NAME` works now".into()),
        _ => lines.push(format!(
            "put it ahead of the real dvc on PATH; add this line to your shell profile (~/.bashrc, ~/.zshrc):\n  export PATH=\"{}:$PATH\"",
            dir.display()
        )),
    }
    Ok(lines)
}

/// `dvc-exec shim uninstall`.
pub fn uninstall(dir: Option<PathBuf>) -> Result<String> {
    let dir = match dir {
        Some(d) => d,
        None => shim_dir()?,
    };
    let link = dir.join("dvc");
    let me = std::env::current_exe().context("cannot find the dvc-exec binary")?;
    if link.symlink_metadata().is_err() {
        return Ok(format!("no shim at {}", link.display()));
    }
    if !same_file(&link, &me) && std::fs::read_link(&link).is_err() {
        return Err(Error::usage(format!(
            "{} is not the dvc-exec shim; leaving it",
            link.display()
        )));
    }
    std::fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
    Ok(format!("removed the dvc shim {}", link.display()))
}

/// Where the shim stands.
#[derive(Debug, PartialEq, Eq)]
pub enum ShimState {
    /// Not installed.
    Missing,
    /// Installed, but another dvc comes first on PATH.
    Shadowed,
    /// Installed and first on PATH.
    Active,
}

/// The shim's state for `dir`.
pub fn status_of(dir: &Path) -> ShimState {
    let link = dir.join("dvc");
    if link.symlink_metadata().is_err() {
        return ShimState::Missing;
    }
    let first = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("dvc"))
            .find(|p| is_executable(p))
    });
    match first {
        Some(f) if same_file(&f, &link) => ShimState::Active,
        _ => ShimState::Shadowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn routes() {
        assert_eq!(route(&v(&["--version"])), Route::Dvc);
        assert_eq!(route(&v(&["exp", "show"])), Route::Dvc);
        assert_eq!(route(&v(&["exp", "run", "-S", "a=1"])), Route::Dvc);
        assert_eq!(
            route(&v(&["exp", "run", "--executor", "gpu", "-S", "a=1"])),
            Route::Ours(v(&["exp", "run", "--executor", "gpu", "-S", "a=1"]))
        );
        assert_eq!(
            route(&v(&["repro", "--executor=gpu"])),
            Route::Ours(v(&["repro", "--executor=gpu"]))
        );
        assert_eq!(route(&v(&["status", "--executor", "x"])), Route::Dvc);
    }
}
