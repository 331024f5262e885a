//! Changes to the executor files, as `dvc-exec executor ...` makes them.
//!
//! Each change edits one file with its comments and layout kept, then re-reads every level and
//! checks the executor it touched; a change that would leave it broken is undone and refused.

use std::path::PathBuf;

use super::executor::level_flag;
use super::file::ConfigFile;
use super::keys::{self, ExecutorType};
use super::{Config, Level, Paths, display_path, executor_section};
use crate::error::{Context, Error, Result};

/// Check an executor name: letters, digits, `-`, `_` and `.`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(
            Error::usage(format!("{name:?} is not a valid executor name")).hint(
                "use up to 64 letters, digits, '-', '_' or '.', starting with a letter or digit",
            ),
        )
    }
}

/// An edit session on the file of one level.
struct Edit<'a> {
    paths: &'a Paths,
    level: Level,
    file: ConfigFile,
    original: Option<String>,
}

impl<'a> Edit<'a> {
    fn open(paths: &'a Paths, level: Level) -> Result<Self> {
        let path = level_path(paths, level)?;
        let file = ConfigFile::read(&path)?;
        let original = if file.exists() {
            Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            )
        } else {
            None
        };
        Ok(Self {
            paths,
            level,
            file,
            original,
        })
    }

    /// Save, then check the executors in `check`; undo the save if that fails.
    fn commit(self, check: &[&str]) -> Result<()> {
        self.file.save()?;
        if self.level == Level::Local && self.original.is_none() {
            ensure_gitignored(self.paths)?;
        }
        let verdict = Config::load_unchecked(self.paths.clone()).and_then(|c| {
            for name in check {
                if c.executors.contains_key(*name) {
                    c.executor(name)?;
                }
            }
            Ok(())
        });
        if let Err(e) = verdict {
            let path = self.file.path();
            match &self.original {
                Some(text) => std::fs::write(path, text),
                None => std::fs::remove_file(path),
            }
            .with_context(|| format!("cannot restore {}", path.display()))?;
            return Err(e);
        }
        Ok(())
    }
}

/// The file of `level`, or an error outside a repository.
fn level_path(paths: &Paths, level: Level) -> Result<PathBuf> {
    paths.exec_file(level).ok_or_else(|| {
        Error::usage(format!(
            "not inside a DVC repository, so there is no {} level",
            level.as_str()
        ))
        .hint("run this inside a DVC project (dvc init), or use --global or --system")
    })
}

/// Add `/exec.config.local` to `.dvc/.gitignore`.
fn ensure_gitignored(paths: &Paths) -> Result<()> {
    let Some(dvc_dir) = &paths.dvc_dir else {
        return Ok(());
    };
    let path = dvc_dir.join(".gitignore");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text.lines().any(|l| l.trim() == "/exec.config.local") {
        return Ok(());
    }
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str("/exec.config.local\n");
    std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))
}

fn refuse_secret_at_repo(level: Level, name: &str, key: &str) -> Result<()> {
    if level == Level::Repo && keys::key(key).is_some_and(|k| k.secret) {
        return Err(Error::usage(format!(
            "`{key}` holds a secret and would be committed with .dvc/exec.config"
        ))
        .hint(format!(
            "store it in the git-ignored local file: dvc-exec executor modify --local {name} {key} VALUE"
        )));
    }
    Ok(())
}

/// `executor add`.
pub fn add(
    paths: &Paths,
    level: Level,
    name: &str,
    kind: &str,
    pairs: &[(String, String)],
    default: bool,
    force: bool,
) -> Result<()> {
    check_name(name)?;
    let Some(ty) = ExecutorType::parse(kind) else {
        let mut e = Error::usage(format!("{kind:?} is not an executor type"));
        let names = ExecutorType::ALL.map(|t| t.as_str());
        e = match keys::did_you_mean(kind, names) {
            Some(s) => e.hint(format!(
                "did you mean {s:?}? The types are: {}",
                names.join(", ")
            )),
            None => e.hint(format!("the types are: {}", names.join(", "))),
        };
        return Err(e);
    };
    for (k, _) in pairs {
        refuse_secret_at_repo(level, name, k)?;
    }
    let mut edit = Edit::open(paths, level)?;
    let section = executor_section(name);
    if edit.file.root().section(&section).is_some() && !force {
        let at = edit
            .file
            .line_of(&section, None)
            .map(|l| format!("{}:{l}", display_path(edit.file.path())))
            .unwrap_or_else(|| display_path(edit.file.path()));
        return Err(
            Error::usage(format!("executor {name:?} already exists ({at})")).hint(format!(
                "use -f to replace it, or: dvc-exec executor modify{} {name} KEY VALUE",
                level_flag(level)
            )),
        );
    }
    let mut body = configobj::Section::new();
    body.insert("type", ty.as_str());
    for (k, v) in pairs {
        if k == "type" {
            return Err(
                Error::usage("the type is given as the second argument, not as type=...")
                    .hint(format!("dvc-exec executor add {name} TYPE [KEY=VALUE ...]")),
            );
        }
        body.insert(k.as_str(), v.as_str());
    }
    edit.file.root_mut().insert_section(section, body);
    if default {
        edit.file
            .root_mut()
            .entry_section("core")
            .insert("executor", name);
    }
    edit.commit(&[name])
}

/// `executor modify` (set or, with `value == None`, unset one key).
pub fn modify(
    paths: &Paths,
    level: Level,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> Result<()> {
    let config = Config::load_unchecked(paths.clone())?;
    if !config.executors.contains_key(name) {
        return Err(
            Error::usage(format!("unknown executor {name:?}")).hint(config.known_executors_hint())
        );
    }
    if value.is_some() {
        refuse_secret_at_repo(level, name, key)?;
    }
    let mut edit = Edit::open(paths, level)?;
    let section = executor_section(name);
    match value {
        Some(v) => {
            edit.file.root_mut().entry_section(section).insert(key, v);
        }
        None => {
            let removed = edit
                .file
                .root_mut()
                .section_mut(&section)
                .is_some_and(|s| s.remove(key));
            if !removed {
                return Err(Error::usage(format!(
                    "`{key}` is not set for executor {name:?} in {}",
                    display_path(edit.file.path())
                ))
                .hint("dvc-exec executor list --show-origin shows where each executor is defined; pick that level with --local, --global or --system"));
            }
        }
    }
    edit.commit(&[name])
}

/// The levels whose dvc-exec file defines `name`.
fn levels_defining(paths: &Paths, name: &str) -> Result<Vec<Level>> {
    let section = executor_section(name);
    let mut out = Vec::new();
    for level in Level::ALL {
        if let Some(path) = paths.exec_file(level)
            && ConfigFile::read(&path)?.root().section(&section).is_some()
        {
            out.push(level);
        }
    }
    Ok(out)
}

fn not_in_our_files(config: &Config, name: &str) -> Error {
    match config.executors.get(name) {
        Some(raw) if raw.sections.iter().all(|o| o.legacy) => Error::usage(format!(
            "executor {name:?} is a DVC machine defined in {}",
            raw.sections
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .hint("dvc-exec never edits DVC's own config files; edit that section by hand"),
        _ => Error::usage(format!("unknown executor {name:?}")).hint(config.known_executors_hint()),
    }
}

/// `executor remove`: from the given level, or from every level that defines it; a default
/// that names it is unset at every level.
pub fn remove(paths: &Paths, level: Option<Level>, name: &str) -> Result<Vec<PathBuf>> {
    let config = Config::load_unchecked(paths.clone())?;
    let levels = match level {
        Some(l) => vec![l],
        None => levels_defining(paths, name)?,
    };
    let section = executor_section(name);
    let mut touched = Vec::new();
    for level in levels {
        let mut edit = Edit::open(paths, level)?;
        if !edit.file.root_mut().remove(&section) {
            continue;
        }
        touched.push(edit.file.path().to_path_buf());
        edit.commit(&[])?;
    }
    if touched.is_empty() {
        return Err(not_in_our_files(&config, name));
    }
    if levels_defining(paths, name)?.is_empty() {
        retarget_default(paths, name, None)?;
    }
    Ok(touched)
}

/// Point every `core.executor = old` at `new`, or unset it.
fn retarget_default(paths: &Paths, old: &str, new: Option<&str>) -> Result<()> {
    for level in Level::ALL {
        if paths.exec_file(level).is_none() {
            continue;
        }
        let mut edit = Edit::open(paths, level)?;
        let Some(core) = edit.file.root_mut().section_mut("core") else {
            continue;
        };
        if core.get_str("executor") != Some(old) {
            continue;
        }
        match new {
            Some(n) => core.insert("executor", n),
            None => {
                core.remove("executor");
            }
        }
        edit.commit(&[])?;
    }
    Ok(())
}

/// `executor rename`: at every level that defines it, and in `core.executor`.
pub fn rename(paths: &Paths, level: Option<Level>, old: &str, new: &str) -> Result<()> {
    check_name(new)?;
    let config = Config::load_unchecked(paths.clone())?;
    if config.executors.contains_key(new) {
        return Err(Error::usage(format!("executor {new:?} already exists"))
            .hint(config.known_executors_hint()));
    }
    let levels = match level {
        Some(l) => vec![l],
        None => levels_defining(paths, old)?,
    };
    if levels.is_empty() {
        return Err(not_in_our_files(&config, old));
    }
    for level in levels {
        let mut edit = Edit::open(paths, level)?;
        edit.file
            .root_mut()
            .rename(&executor_section(old), executor_section(new));
        edit.commit(&[new])?;
    }
    if levels_defining(paths, old)?.is_empty() {
        retarget_default(paths, old, Some(new))?;
    }
    Ok(())
}

/// `executor default NAME` / `executor default --unset`.
pub fn set_default(paths: &Paths, level: Level, name: Option<&str>) -> Result<()> {
    let mut edit = Edit::open(paths, level)?;
    match name {
        Some(name) => {
            let config = Config::load_unchecked(paths.clone())?;
            if !config.executors.contains_key(name) {
                return Err(Error::usage(format!("unknown executor {name:?}"))
                    .hint(config.known_executors_hint()));
            }
            edit.file
                .root_mut()
                .entry_section("core")
                .insert("executor", name);
        }
        None => {
            let removed = edit
                .file
                .root_mut()
                .section_mut("core")
                .is_some_and(|c| c.remove("executor"));
            if !removed {
                return Err(Error::usage(format!(
                    "no default executor is set in {}",
                    display_path(edit.file.path())
                ))
                .hint("pick the level that sets it with --local, --global or --system"));
            }
        }
    }
    edit.commit(&[])
}
