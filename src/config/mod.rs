//! Executor configuration at DVC's four levels.
//!
//! Executors live in files of their own, in `.dvc/config`'s syntax, because DVC rejects unknown
//! sections in its own files:
//!
//! | level  | file |
//! |--------|------|
//! | system | `$DVC_SYSTEM_CONFIG_DIR/exec.config` (default `/etc/xdg/dvc/exec.config`) |
//! | global | `$DVC_GLOBAL_CONFIG_DIR/exec.config` (default `~/.config/dvc/exec.config`) |
//! | repo   | `.dvc/exec.config` (committed) |
//! | local  | `.dvc/exec.config.local` (git-ignored) |
//!
//! They merge key by key, system < global < repo < local. DVC's own legacy
//! `['machine "NAME"']` sections (and `core.machine`) in DVC's config files at the same levels are
//! read as executors too, beneath dvc-exec's file of that level. dvc-exec never writes DVC's files.

pub mod edit;
pub mod executor;
pub mod file;
pub mod keys;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use executor::Executor;
use file::ConfigFile;
pub use keys::ExecutorType;

/// A configuration level, lowest precedence first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Machine-wide.
    System,
    /// The user's.
    Global,
    /// The repository's, committed.
    Repo,
    /// The repository's, not committed.
    Local,
}

impl Level {
    /// All levels, lowest precedence first.
    pub const ALL: [Level; 4] = [Level::System, Level::Global, Level::Repo, Level::Local];

    /// The level's name as in `--local`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::System => "system",
            Level::Global => "global",
            Level::Repo => "repo",
            Level::Local => "local",
        }
    }
}

/// Where the config files are.
#[derive(Debug, Clone)]
pub struct Paths {
    /// DVC's system config directory.
    pub system_dir: PathBuf,
    /// DVC's global config directory.
    pub global_dir: PathBuf,
    /// The repository's `.dvc` directory, when inside a DVC repository.
    pub dvc_dir: Option<PathBuf>,
}

impl Paths {
    /// Resolve the directories as DVC does (honouring `DVC_SYSTEM_CONFIG_DIR` and
    /// `DVC_GLOBAL_CONFIG_DIR`), with the repository found from `cwd` upwards.
    pub fn discover(cwd: &Path) -> Self {
        let system_dir = std::env::var_os("DVC_SYSTEM_CONFIG_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_system_dir);
        let global_dir = std::env::var_os("DVC_GLOBAL_CONFIG_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                dirs::config_dir()
                    .unwrap_or_else(|| PathBuf::from(".config"))
                    .join("dvc")
            });
        let dvc_dir = find_dvc_root(cwd).map(|root| root.join(".dvc"));
        Self {
            system_dir,
            global_dir,
            dvc_dir,
        }
    }

    /// dvc-exec's file at `level`; `None` for the repo levels outside a repository.
    pub fn exec_file(&self, level: Level) -> Option<PathBuf> {
        match level {
            Level::System => Some(self.system_dir.join("exec.config")),
            Level::Global => Some(self.global_dir.join("exec.config")),
            Level::Repo => self.dvc_dir.as_ref().map(|d| d.join("exec.config")),
            Level::Local => self.dvc_dir.as_ref().map(|d| d.join("exec.config.local")),
        }
    }

    /// DVC's own file at `level` (read for legacy machines only).
    pub fn dvc_file(&self, level: Level) -> Option<PathBuf> {
        match level {
            Level::System => Some(self.system_dir.join("config")),
            Level::Global => Some(self.global_dir.join("config")),
            Level::Repo => self.dvc_dir.as_ref().map(|d| d.join("config")),
            Level::Local => self.dvc_dir.as_ref().map(|d| d.join("config.local")),
        }
    }

    /// The repository root (the parent of `.dvc`).
    pub fn repo_root(&self) -> Option<&Path> {
        self.dvc_dir.as_deref().and_then(Path::parent)
    }
}

fn default_system_dir() -> PathBuf {
    if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/dvc")
    } else {
        std::env::var("XDG_CONFIG_DIRS")
            .ok()
            .and_then(|v| v.split(':').find(|s| !s.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc/xdg"))
            .join("dvc")
    }
}

/// The nearest directory from `start` upwards that holds a `.dvc` directory.
pub fn find_dvc_root(start: &Path) -> Option<PathBuf> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        if d.join(".dvc").is_dir() {
            return Some(d.to_path_buf());
        }
        dir = d.parent();
    }
    None
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The level of the file.
    pub level: Level,
    /// The file.
    pub path: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// True when read from a legacy `machine` section of DVC's own config.
    pub legacy: bool,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", display_path(&self.path))?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        Ok(())
    }
}

/// A path shown relative to the current directory when it is below it.
pub fn display_path(path: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = path.strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    path.display().to_string()
}

/// One key's value and where it was set.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The raw value.
    pub value: String,
    /// Where it was set.
    pub origin: Origin,
}

/// An executor's merged keys, before they are typed.
#[derive(Debug, Clone, Default)]
pub struct RawExecutor {
    /// key -> setting, merged over the levels.
    pub keys: BTreeMap<String, Setting>,
    /// Every place where a section of this executor appears.
    pub sections: Vec<Origin>,
}

/// The merged configuration.
#[derive(Debug)]
pub struct Config {
    /// The paths it was read from.
    pub paths: Paths,
    /// Executors by name.
    pub executors: BTreeMap<String, RawExecutor>,
    /// `core.executor` (or DVC's legacy `core.machine`).
    pub default: Option<Setting>,
}

/// The section name of executor `name`.
pub fn executor_section(name: &str) -> String {
    format!("executor \"{name}\"")
}

/// Parse a section name `executor "NAME"` (or `machine "NAME"` for legacy files).
fn section_executor_name<'a>(section: &'a str, prefix: &str) -> Option<Option<&'a str>> {
    let rest = section.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(None);
    }
    let rest = rest.strip_prefix(' ')?.trim();
    if rest.len() >= 2 && rest.starts_with('"') && rest.ends_with('"') {
        let name = &rest[1..rest.len() - 1];
        if !name.is_empty() && !name.contains('"') {
            return Some(Some(name));
        }
    }
    Some(None)
}

impl Config {
    /// Read and merge every level, and check every executor.
    pub fn load(paths: Paths) -> Result<Self> {
        let config = Self::load_unchecked(paths)?;
        for name in config.executors.keys() {
            config.executor(name)?;
        }
        if let Some(default) = &config.default
            && !config.executors.contains_key(&default.value)
        {
            return Err(Error::usage(format!(
                "{}: the default executor {:?} is not defined",
                default.origin, default.value
            ))
            .hint(config.known_executors_hint()));
        }
        Ok(config)
    }

    /// Read and merge every level; checks the files' structure but not the executors' values.
    pub fn load_unchecked(paths: Paths) -> Result<Self> {
        let mut config = Config {
            paths,
            executors: BTreeMap::new(),
            default: None,
        };
        for level in Level::ALL {
            if let Some(path) = config.paths.dvc_file(level) {
                let file = ConfigFile::read(&path)?;
                config.merge_legacy(level, &file);
            }
            if let Some(path) = config.paths.exec_file(level) {
                let file = ConfigFile::read(&path)?;
                config.merge_exec(level, &file)?;
            }
        }
        Ok(config)
    }

    fn merge_exec(&mut self, level: Level, file: &ConfigFile) -> Result<()> {
        let origin = |line: Option<usize>| Origin {
            level,
            path: file.path().to_path_buf(),
            line,
            legacy: false,
        };
        let root = file.root();
        if let Some((key, _)) = root.iter().next() {
            return Err(Error::usage(format!(
                "{}: `{key}` is outside any section",
                origin(find_root_key_line(file, key))
            ))
            .hint("put executor keys under an ['executor \"NAME\"'] section header"));
        }
        for (section, body) in root.sections() {
            let header = origin(file.line_of(section, None));
            if section == "core" {
                for (key, value) in body.iter() {
                    let at = origin(file.line_of(section, Some(key)));
                    if !keys::CORE_KEYS.contains(&key) {
                        let mut e = Error::usage(format!("{at}: unknown key `{key}` in [core]"));
                        if let Some(s) = keys::did_you_mean(key, keys::CORE_KEYS.iter().copied()) {
                            e = e.hint(format!("did you mean `{s}`?"));
                        } else {
                            e = e.hint("[core] takes only `executor = NAME`, the default executor");
                        }
                        return Err(e);
                    }
                    let value = scalar(value, &at, key)?;
                    self.default = Some(Setting { value, origin: at });
                }
                if let Some((sub, _)) = body.sections().next() {
                    return Err(Error::usage(format!(
                        "{header}: unexpected subsection [[{sub}]] in [core]"
                    )));
                }
                continue;
            }
            let name = match section_executor_name(section, "executor") {
                Some(Some(name)) => name,
                Some(None) => {
                    return Err(Error::usage(format!(
                        "{header}: the section [{section}] does not name an executor"
                    ))
                    .hint(
                        "write the header as ['executor \"NAME\"'], with the name in double quotes",
                    ));
                }
                None => {
                    let mut e = Error::usage(format!("{header}: unknown section [{section}]"));
                    let first = section.split_whitespace().next().unwrap_or(section);
                    if keys::did_you_mean(first, ["executor"]).is_some() {
                        e = e.hint("did you mean ['executor \"NAME\"']?");
                    } else {
                        e = e
                            .hint("this file holds only [core] and ['executor \"NAME\"'] sections");
                    }
                    return Err(e);
                }
            };
            if let Some((sub, _)) = body.sections().next() {
                return Err(Error::usage(format!(
                    "{header}: unexpected subsection [[{sub}]] in executor {name:?}"
                )));
            }
            let entry = self.executors.entry(name.to_string()).or_default();
            entry.sections.push(header.clone());
            for (key, value) in body.iter() {
                let at = origin(file.line_of(section, Some(key)));
                let value = scalar(value, &at, key)?;
                if let Some(def) = keys::key(key)
                    && def.secret
                    && level == Level::Repo
                {
                    return Err(Error::usage(format!(
                            "{at}: `{key}` holds a secret and must not be in {}, which is committed",
                            display_path(file.path())
                        ))
                        .hint(format!(
                            "move it to .dvc/exec.config.local: dvc-exec executor modify --local {name} {key} VALUE"
                        )));
                }
                entry
                    .keys
                    .insert(key.to_string(), Setting { value, origin: at });
            }
        }
        Ok(())
    }

    fn merge_legacy(&mut self, level: Level, file: &ConfigFile) {
        let origin = |line: Option<usize>| Origin {
            level,
            path: file.path().to_path_buf(),
            line,
            legacy: true,
        };
        let root = file.root();
        for (section, body) in root.sections() {
            if section == "core" {
                if let Some(m) = body.get("machine").and_then(|v| v.as_str()) {
                    self.default = Some(Setting {
                        value: m.trim().to_string(),
                        origin: origin(file.line_of(section, Some("machine"))),
                    });
                }
                continue;
            }
            let Some(Some(name)) = section_executor_name(section, "machine") else {
                continue;
            };
            let entry = self.executors.entry(name.to_string()).or_default();
            entry.sections.push(origin(file.line_of(section, None)));
            let header_line = file.line_of(section, None);
            let cloud = body.get_str("cloud").unwrap_or("aws").trim();
            let ty = match cloud {
                "azure" => "azure",
                _ => "aws",
            };
            entry.keys.insert(
                "type".into(),
                Setting {
                    value: ty.into(),
                    origin: origin(file.line_of(section, Some("cloud")).or(header_line)),
                },
            );
            for (key, value) in body.iter() {
                let value = match value.as_str() {
                    Some(v) => v.trim().to_string(),
                    None => value.as_list().join(", "),
                };
                let at = origin(file.line_of(section, Some(key)));
                let (new_key, new_value) = match key {
                    "cloud" => continue,
                    "region" | "image" | "spot" | "spot_price" | "startup_script"
                    | "setup_script" => (key.to_string(), value),
                    "instance_hdd_size" => ("disk_size".into(), format!("{value}G")),
                    "instance_type" => {
                        if units::SIZES.contains(&value.as_str()) {
                            ("machine".into(), value)
                        } else {
                            ("instance_type".into(), value)
                        }
                    }
                    "instance_gpu" => {
                        // DVC's machine took a GPU family (tesla, k80, ...); the closest generic
                        // GPU is a T4. Documented in docs/configuration.md.
                        let size = entry
                            .keys
                            .get("machine")
                            .map(|s| s.value.clone())
                            .unwrap_or_else(|| "m".into());
                        ("machine".into(), format!("{size}+t4"))
                    }
                    "ssh_private" => ("keyfile_legacy".into(), value),
                    // Other keys of DVC's machine schema have no meaning here.
                    _ => continue,
                };
                entry.keys.insert(
                    new_key,
                    Setting {
                        value: new_value,
                        origin: at,
                    },
                );
            }
            // ssh_private held the key's text in DVC; it is not used to connect to machines
            // dvc-exec creates (they get a generated key), so it is dropped.
            entry.keys.remove("keyfile_legacy");
        }
    }

    /// The typed, checked executor `name`.
    pub fn executor(&self, name: &str) -> Result<Executor> {
        let raw = self.executors.get(name).ok_or_else(|| {
            Error::usage(format!("unknown executor {name:?}")).hint(self.known_executors_hint())
        })?;
        Executor::from_raw(name, raw, &self.paths)
    }

    /// The default executor's name, or an error that says how to set one.
    pub fn default_name(&self) -> Result<&str> {
        match &self.default {
            Some(s) => Ok(&s.value),
            None => Err(Error::usage("no executor given and no default executor set").hint(
                "pass -e NAME, or set a default: dvc-exec executor default NAME\n(a new project can start with: dvc-exec executor add -d here local)",
            )),
        }
    }

    /// A hint listing the executors that exist and where each is defined.
    pub fn known_executors_hint(&self) -> String {
        if self.executors.is_empty() {
            return "no executors are defined; add one with: dvc-exec executor add NAME TYPE [KEY=VALUE ...]".into();
        }
        let mut s = String::from("the executors defined are:");
        for (name, raw) in &self.executors {
            let origin = raw
                .keys
                .get("type")
                .map(|t| t.origin.to_string())
                .or_else(|| raw.sections.first().map(|o| o.to_string()))
                .unwrap_or_default();
            s.push_str(&format!("\n  {name} ({origin})"));
        }
        s
    }
}

fn find_root_key_line(file: &ConfigFile, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(file.path()).unwrap_or_default();
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// A value as one string: lists (`a, b`) are joined back with `, `.
fn scalar(value: &configobj::Value, _at: &Origin, _key: &str) -> Result<String> {
    Ok(match value.as_str() {
        Some(v) => v.trim().to_string(),
        None => value.as_list().join(", "),
    })
}
