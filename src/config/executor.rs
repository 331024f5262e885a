//! A typed, checked executor: what the rest of dvc-exec works with.

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{self, ExecutorType};
use super::units::{self, MachineSpec};
use super::{Level, Origin, Paths, RawExecutor, Setting};
use crate::error::{Error, Result};

/// How the DVC-tracked inputs reach the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// Copy the cache objects the run needs from this machine (default).
    Copy,
    /// Run `dvc pull` on the executor.
    Pull,
}

/// How to reach an SSH host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or `~/.ssh/config` alias.
    pub host: String,
    /// Login user.
    pub user: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Private key file.
    pub keyfile: Option<PathBuf>,
    /// known_hosts file to check against instead of OpenSSH's own.
    pub known_hosts: Option<PathBuf>,
    /// `ssh -J` jump hosts.
    pub proxy_jump: Option<String>,
    /// A ProxyCommand.
    pub proxy_command: Option<String>,
}

impl SshTarget {
    /// `user@host:port` for messages.
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

/// The settings shared by the cloud types.
#[derive(Debug, Clone, Default)]
pub struct CloudSettings {
    /// Generic or native region.
    pub region: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Generic machine spec.
    pub machine: Option<MachineSpec>,
    /// Native instance type.
    pub instance_type: Option<String>,
    /// Image alias or id.
    pub image: Option<String>,
    /// Spot capacity.
    pub spot: bool,
    /// Highest spot price.
    pub spot_price: Option<f64>,
    /// Boot disk size in bytes.
    pub disk_size: Option<u64>,
    /// Idle limit enforced on the machine.
    pub idle_timeout: Duration,
    /// Lifetime limit enforced on the machine.
    pub max_runtime: Duration,
    /// Keep the machine after the run.
    pub keep: bool,
    /// Extra tags.
    pub tags: Vec<(String, String)>,
}

impl CloudSettings {
    /// The generic machine asked for, `m` when none is.
    pub fn machine_or_default(&self) -> crate::config::units::MachineSpec {
        self.machine
            .clone()
            .unwrap_or_else(|| crate::config::units::MachineSpec::parse("m").expect("a valid size"))
    }
}

/// A configured executor.
#[derive(Debug, Clone)]
pub struct Executor {
    /// Its name.
    pub name: String,
    /// Its type.
    pub kind: ExecutorType,
    /// Where repositories and runs live on the executor (`~/.dvc-exec` by default).
    pub workdir: Option<String>,
    /// The DVC command on the executor.
    pub dvc: String,
    /// Script sourced before each run.
    pub setup_script: Option<PathBuf>,
    /// Environment for the run.
    pub env: Vec<(String, String)>,
    /// How data reaches the executor.
    pub data: DataMode,
    /// SSH settings, for `ssh` executors (the first host of a pool).
    pub ssh: Option<SshTarget>,
    /// Every host of an `ssh` executor (one, or a `hosts` pool).
    pub ssh_hosts: Vec<SshTarget>,
    /// Runs a host takes at once, when leased (`hosts` or `slots` set).
    pub slots: Option<u32>,
    /// Each slot is a GPU.
    pub slot_gpus: bool,
    /// Cloud settings, for cloud executors.
    pub cloud: Option<CloudSettings>,
    /// The merged raw keys, for display.
    pub raw: RawExecutor,
}

impl Executor {
    /// Type and check a merged executor.
    pub fn from_raw(name: &str, raw: &RawExecutor, paths: &Paths) -> Result<Self> {
        let type_setting = raw.keys.get("type").ok_or_else(|| {
            let at = raw
                .sections
                .last()
                .map(|o| o.to_string())
                .unwrap_or_default();
            Error::usage(format!("{at}: executor {name:?} has no `type`")).hint(format!(
                "set one: dvc-exec executor modify {name} type TYPE (TYPE: {})",
                ExecutorType::ALL.map(|t| t.as_str()).join(", ")
            ))
        })?;
        let def = keys::key("type").expect("type is a key");
        keys::check_value(def, &type_setting.value)
            .map_err(|e| bad_value(name, "type", type_setting, e))?;
        let kind = ExecutorType::parse(&type_setting.value).expect("checked above");

        for (key, setting) in &raw.keys {
            let Some(def) = keys::key(key) else {
                let candidates = keys::KEYS
                    .iter()
                    .filter(|k| k.types.contains(&kind))
                    .map(|k| k.name);
                let mut e = Error::usage(format!(
                    "{}: unknown key `{key}` in executor {name:?}",
                    setting.origin
                ));
                e = match keys::did_you_mean(key, candidates) {
                    Some(s) => e.hint(format!("did you mean `{s}`?")),
                    None => e.hint(format!(
                        "the keys of a {kind} executor are: {}",
                        keys::KEYS
                            .iter()
                            .filter(|k| k.types.contains(&kind))
                            .map(|k| k.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                return Err(e);
            };
            if !def.types.contains(&kind) {
                return Err(Error::usage(format!(
                    "{}: `{key}` does not apply to executor {name:?} of type {kind}",
                    setting.origin
                ))
                .hint(format!(
                    "`{key}` is for executors of type {}",
                    def.types
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            keys::check_value(def, &setting.value).map_err(|e| bad_value(name, key, setting, e))?;
        }

        let get = |k: &str| raw.keys.get(k).map(|s| s.value.clone());
        let path_of = |k: &str| {
            raw.keys
                .get(k)
                .map(|s| resolve_path(&s.value, &s.origin, paths))
        };
        let bool_of = |k: &str, default: bool| {
            get(k)
                .map(|v| units::parse_bool(&v).expect("checked"))
                .unwrap_or(default)
        };

        let hosts: Vec<String> = get("hosts")
            .map(|h| {
                h.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let ssh = if kind == ExecutorType::Ssh {
            let host = get("host")
                .or_else(|| hosts.first().cloned())
                .ok_or_else(|| {
                    let at = type_setting.origin.clone();
                    Error::usage(format!("{at}: ssh executor {name:?} has no `host`")).hint(
                        format!("set it: dvc-exec executor modify {name} host HOSTNAME"),
                    )
                })?;
            Some(SshTarget {
                host,
                user: get("user"),
                port: get("port").map(|p| p.parse().expect("checked")),
                keyfile: path_of("keyfile"),
                known_hosts: path_of("known_hosts"),
                proxy_jump: get("proxy_jump"),
                proxy_command: get("proxy_command"),
            })
        } else {
            None
        };

        let mut ssh_hosts = Vec::new();
        if let Some(base) = &ssh {
            if hosts.is_empty() {
                ssh_hosts.push(base.clone());
            }
            for h in &hosts {
                let (user, rest) = match h.split_once('@') {
                    Some((u, r)) => (Some(u.to_string()), r),
                    None => (base.user.clone(), h.as_str()),
                };
                let (host, port) = match rest.rsplit_once(':') {
                    Some((h2, p)) if !h2.contains(':') => {
                        let port: u16 = p.parse().map_err(|_| {
                            let at = raw
                                .keys
                                .get("hosts")
                                .map(|s| s.origin.to_string())
                                .unwrap_or_default();
                            Error::usage(format!(
                                "{at}: bad port {p:?} in `hosts` of executor {name:?}"
                            ))
                            .hint("write hosts as: a, b:2222, user@c")
                        })?;
                        (h2.to_string(), Some(port))
                    }
                    _ => (rest.to_string(), base.port),
                };
                ssh_hosts.push(SshTarget {
                    host,
                    user,
                    port,
                    ..base.clone()
                });
            }
        }
        let cloud = if kind.is_cloud() {
            Some(CloudSettings {
                region: get("region"),
                zone: get("zone"),
                machine: get("machine").map(|m| MachineSpec::parse(&m).expect("checked")),
                instance_type: get("instance_type"),
                image: get("image"),
                spot: bool_of("spot", false),
                spot_price: get("spot_price").map(|p| p.parse().expect("checked")),
                disk_size: get("disk_size").map(|s| units::parse_size(&s).expect("checked")),
                idle_timeout: get("idle_timeout")
                    .map(|d| units::parse_duration(&d).expect("checked"))
                    .unwrap_or(Duration::from_secs(30 * 60)),
                max_runtime: get("max_runtime")
                    .map(|d| units::parse_duration(&d).expect("checked"))
                    .unwrap_or(Duration::from_secs(24 * 3600)),
                keep: bool_of("keep", false),
                tags: get("tags")
                    .map(|t| keys::parse_pairs(&t).expect("checked"))
                    .unwrap_or_default(),
            })
        } else {
            None
        };

        Ok(Self {
            name: name.to_string(),
            kind,
            workdir: get("workdir"),
            dvc: get("dvc").unwrap_or_else(|| "dvc".into()),
            setup_script: path_of("setup_script"),
            env: get("env")
                .map(|e| keys::parse_pairs(&e).expect("checked"))
                .unwrap_or_default(),
            data: match get("data").as_deref() {
                Some("pull") => DataMode::Pull,
                _ => DataMode::Copy,
            },
            slots: get("slots")
                .map(|n| n.parse().expect("checked"))
                .or_else(|| (!hosts.is_empty()).then_some(1)),
            slot_gpus: bool_of("slot_gpus", false),
            ssh,
            ssh_hosts,
            cloud,
            raw: raw.clone(),
        })
    }

    /// A one-line summary for `executor list`.
    pub fn summary(&self) -> String {
        match (&self.ssh, &self.cloud) {
            (Some(_), _) if self.ssh_hosts.len() > 1 => format!(
                "{} hosts: {}",
                self.ssh_hosts.len(),
                self.ssh_hosts
                    .iter()
                    .map(|h| h.display())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (Some(ssh), _) => ssh.display(),
            (_, Some(c)) => {
                let mut parts = Vec::new();
                if let Some(m) = &c.machine {
                    parts.push(m.to_string());
                }
                if let Some(t) = &c.instance_type {
                    parts.push(t.clone());
                }
                if let Some(r) = &c.region {
                    parts.push(r.clone());
                }
                if c.spot {
                    parts.push("spot".into());
                }
                parts.join(" ")
            }
            _ => "this machine".into(),
        }
    }

    /// Where the executor's definition comes from (the `type` key).
    pub fn origin(&self) -> Option<&Origin> {
        self.raw.keys.get("type").map(|s| &s.origin)
    }
}

fn bad_value(name: &str, key: &str, setting: &Setting, why: String) -> Error {
    Error::usage(format!(
        "{}: bad value for `{key}` in executor {name:?}: {why}",
        setting.origin
    ))
    .hint(format!(
        "fix it in the file, or: dvc-exec executor modify{} {name} {key} VALUE",
        level_flag(setting.origin.level)
    ))
}

/// The command-line flag that selects `level` (empty for the repo level, the default).
pub fn level_flag(level: Level) -> &'static str {
    match level {
        Level::System => " --system",
        Level::Global => " --global",
        Level::Repo => "",
        Level::Local => " --local",
    }
}

/// Resolve a path from a config file: `~` is the home directory; a relative path is relative to
/// the repository root for the repo levels and to the file's directory for the others.
fn resolve_path(value: &str, origin: &Origin, paths: &Paths) -> PathBuf {
    if let Some(rest) = value.strip_prefix("~/")
        && let Some(home) = dirs::home_dir()
    {
        return home.join(rest);
    }
    let p = PathBuf::from(value);
    if p.is_absolute() {
        return p;
    }
    let base = match origin.level {
        Level::Repo | Level::Local => paths.repo_root().map(|r| r.to_path_buf()),
        _ => origin.path.parent().map(|d| d.to_path_buf()),
    };
    base.map(|b| b.join(&p)).unwrap_or(p)
}
