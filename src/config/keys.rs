//! The executor keys: one table that says which keys exist, for which executor types, what
//! values they take and whether they hold secrets. Parsing, validation, `did you mean` and the
//! documentation all read this table.

use super::units;

/// The type of an executor (`type = ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutorType {
    /// Runs on this machine, in a work tree of its own; no network.
    Local,
    /// Runs on a host reached with the system's OpenSSH.
    Ssh,
    /// An AWS EC2 instance allocated for the run.
    Aws,
    /// A GCP Compute Engine instance.
    Gcp,
    /// An Azure VM.
    Azure,
}

impl ExecutorType {
    /// All types, in documentation order.
    pub const ALL: [ExecutorType; 5] = [Self::Local, Self::Ssh, Self::Aws, Self::Gcp, Self::Azure];

    /// The name used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ssh => "ssh",
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }

    /// Parse a type name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text.trim())
    }

    /// True for the cloud types, whose machines dvc-exec allocates.
    pub fn is_cloud(self) -> bool {
        matches!(self, Self::Aws | Self::Gcp | Self::Azure)
    }
}

impl std::fmt::Display for ExecutorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a key's value must look like.
#[derive(Debug, Clone, Copy)]
pub enum ValueKind {
    /// Any non-empty text.
    Text,
    /// A TCP port.
    Port,
    /// A whole number of at least 1.
    Count,
    /// true/false.
    Bool,
    /// A size with a unit (`100G`).
    Size,
    /// A duration with a unit (`30m`).
    Duration,
    /// A price in dollars per hour (`0.5`), or -1 for "up to the on-demand price".
    Price,
    /// One of the listed words.
    OneOf(&'static [&'static str]),
    /// `SIZE[+GPU[*COUNT]]`.
    Machine,
    /// A generic region or the cloud's own region name.
    Region,
    /// `NAME=VALUE` pairs separated by commas.
    Pairs,
}

/// One key of the executor table.
#[derive(Debug)]
pub struct KeyDef {
    /// The key as written in the file.
    pub name: &'static str,
    /// The executor types that accept it.
    pub types: &'static [ExecutorType],
    /// What its value must look like.
    pub kind: ValueKind,
    /// Holds a secret: refused at the repo level, never printed.
    pub secret: bool,
    /// One line of documentation.
    pub doc: &'static str,
}

use ExecutorType::{Aws, Azure, Gcp, Local, Ssh};

const ALL: &[ExecutorType] = &[Local, Ssh, Aws, Gcp, Azure];
const REMOTE: &[ExecutorType] = &[Ssh, Aws, Gcp, Azure];
const CLOUD: &[ExecutorType] = &[Aws, Gcp, Azure];

/// Every executor key.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        name: "type",
        types: ALL,
        kind: ValueKind::OneOf(&["local", "ssh", "aws", "gcp", "azure"]),
        secret: false,
        doc: "the kind of executor",
    },
    KeyDef {
        name: "workdir",
        types: ALL,
        kind: ValueKind::Text,
        secret: false,
        doc: "where the repositories and runs live on the executor (default ~/.dvc-exec)",
    },
    KeyDef {
        name: "dvc",
        types: ALL,
        kind: ValueKind::Text,
        secret: false,
        doc: "the DVC command on the executor (default dvc)",
    },
    KeyDef {
        name: "setup_script",
        types: ALL,
        kind: ValueKind::Text,
        secret: false,
        doc: "a local shell script, sent along and sourced before each run",
    },
    KeyDef {
        name: "env",
        types: ALL,
        kind: ValueKind::Pairs,
        secret: false,
        doc: "environment variables for the run: NAME=VALUE, NAME2=VALUE2",
    },
    KeyDef {
        name: "data",
        types: ALL,
        kind: ValueKind::OneOf(&["copy", "pull"]),
        secret: false,
        doc: "copy: send the DVC cache objects the run needs (default); pull: run dvc pull on the executor",
    },
    // SSH
    KeyDef {
        name: "host",
        types: &[Ssh],
        kind: ValueKind::Text,
        secret: false,
        doc: "the host name or ~/.ssh/config alias",
    },
    KeyDef {
        name: "hosts",
        types: &[Ssh],
        kind: ValueKind::Text,
        secret: false,
        doc: "a pool of hosts instead of one: a, b:2222, user@c (each run leases an idle one)",
    },
    KeyDef {
        name: "slots",
        types: &[Ssh],
        kind: ValueKind::Count,
        secret: false,
        doc: "how many runs a host takes at once (leased; default 1 for pools)",
    },
    KeyDef {
        name: "slot_gpus",
        types: &[Ssh],
        kind: ValueKind::Bool,
        secret: false,
        doc: "each slot is a GPU: runs get CUDA_VISIBLE_DEVICES set to their slot",
    },
    KeyDef {
        name: "user",
        types: REMOTE,
        kind: ValueKind::Text,
        secret: false,
        doc: "the login user",
    },
    KeyDef {
        name: "port",
        types: &[Ssh],
        kind: ValueKind::Port,
        secret: false,
        doc: "the SSH port (default 22)",
    },
    KeyDef {
        name: "keyfile",
        types: &[Ssh],
        kind: ValueKind::Text,
        secret: false,
        doc: "the private key file",
    },
    KeyDef {
        name: "known_hosts",
        types: &[Ssh],
        kind: ValueKind::Text,
        secret: false,
        doc: "a known_hosts file to check the host key against (default: OpenSSH's own)",
    },
    KeyDef {
        name: "proxy_jump",
        types: &[Ssh],
        kind: ValueKind::Text,
        secret: false,
        doc: "jump hosts, as ssh -J takes them",
    },
    KeyDef {
        name: "proxy_command",
        types: REMOTE,
        kind: ValueKind::Text,
        secret: false,
        doc: "a command whose stdin/stdout reach the host's sshd (%h and %p are replaced)",
    },
    // Cloud
    KeyDef {
        name: "region",
        types: CLOUD,
        kind: ValueKind::Region,
        secret: false,
        doc: "us-east, us-west, eu-west, eu-north, or the cloud's own region name",
    },
    KeyDef {
        name: "zone",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "the zone within the region",
    },
    KeyDef {
        name: "machine",
        types: CLOUD,
        kind: ValueKind::Machine,
        secret: false,
        doc: "SIZE[+GPU[*COUNT]]: SIZE s, m, l or xl; GPU t4, l4, a10g, a100 or h100",
    },
    KeyDef {
        name: "instance_type",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "the cloud's own instance type (instead of machine)",
    },
    KeyDef {
        name: "image",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "ubuntu, nvidia, or the cloud's own image id",
    },
    KeyDef {
        name: "spot",
        types: CLOUD,
        kind: ValueKind::Bool,
        secret: false,
        doc: "use spot (preemptible) capacity",
    },
    KeyDef {
        name: "spot_price",
        types: CLOUD,
        kind: ValueKind::Price,
        secret: false,
        doc: "the highest hourly price for spot capacity (-1: up to on-demand)",
    },
    KeyDef {
        name: "spot_recovery",
        types: CLOUD,
        kind: ValueKind::Bool,
        secret: false,
        doc: "re-run on a new machine after a preemption (default true with spot)",
    },
    KeyDef {
        name: "disk_size",
        types: CLOUD,
        kind: ValueKind::Size,
        secret: false,
        doc: "the boot disk size, for example 100G",
    },
    KeyDef {
        name: "idle_timeout",
        types: CLOUD,
        kind: ValueKind::Duration,
        secret: false,
        doc: "shut the machine down after this long without a run (default 30m)",
    },
    KeyDef {
        name: "max_runtime",
        types: CLOUD,
        kind: ValueKind::Duration,
        secret: false,
        doc: "shut the machine down after this long in any case (default 24h)",
    },
    KeyDef {
        name: "pool",
        types: CLOUD,
        kind: ValueKind::Count,
        secret: false,
        doc: "up to N kept machines, created on demand and leased one per run",
    },
    KeyDef {
        name: "keep",
        types: CLOUD,
        kind: ValueKind::Bool,
        secret: false,
        doc: "keep the machine running after the run (hot machine)",
    },
    KeyDef {
        name: "tags",
        types: CLOUD,
        kind: ValueKind::Pairs,
        secret: false,
        doc: "extra tags (labels) for every resource: NAME=VALUE, NAME2=VALUE2",
    },
    KeyDef {
        name: "startup_script",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "a local shell script run once when a machine is created",
    },
    KeyDef {
        name: "endpoint_url",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "the API endpoint (for compatible clouds and tests)",
    },
    KeyDef {
        name: "dvc_version",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "the DVC version to install (default: the local one)",
    },
    // AWS
    KeyDef {
        name: "profile",
        types: &[Aws],
        kind: ValueKind::Text,
        secret: false,
        doc: "the AWS profile",
    },
    KeyDef {
        name: "subnet",
        types: &[Aws],
        kind: ValueKind::Text,
        secret: false,
        doc: "the subnet id",
    },
    KeyDef {
        name: "security_group",
        types: &[Aws],
        kind: ValueKind::Text,
        secret: false,
        doc: "an existing security group id (default: one created for SSH from your address)",
    },
    KeyDef {
        name: "instance_profile",
        types: &[Aws],
        kind: ValueKind::Text,
        secret: false,
        doc: "an IAM instance profile for data access",
    },
    KeyDef {
        name: "ssh_cidr",
        types: CLOUD,
        kind: ValueKind::Text,
        secret: false,
        doc: "the addresses allowed to reach SSH (default: your public address)",
    },
    // GCP
    KeyDef {
        name: "project",
        types: &[Gcp],
        kind: ValueKind::Text,
        secret: false,
        doc: "the GCP project id",
    },
    KeyDef {
        name: "service_account",
        types: &[Gcp],
        kind: ValueKind::Text,
        secret: false,
        doc: "the service account the instance runs as (for data = pull)",
    },
    // Azure
    KeyDef {
        name: "subscription",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: false,
        doc: "the Azure subscription id",
    },
    KeyDef {
        name: "resource_group",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: false,
        doc: "the resource group (created and removed by dvc-exec when it owns it)",
    },
    KeyDef {
        name: "location",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: false,
        doc: "the Azure location (or a generic region)",
    },
    KeyDef {
        name: "identity",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: false,
        doc: "the resource id of a user-assigned managed identity the VM runs as (for data = pull)",
    },
    KeyDef {
        name: "tenant_id",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: false,
        doc: "the tenant of the service principal",
    },
    KeyDef {
        name: "client_id",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: false,
        doc: "the service principal's client id",
    },
    KeyDef {
        name: "client_secret",
        types: &[Azure],
        kind: ValueKind::Text,
        secret: true,
        doc: "the service principal's secret (only in --local, --global or --system files)",
    },
];

/// The keys allowed in the `[core]` section.
pub const CORE_KEYS: &[&str] = &["executor"];

/// Look a key up by name.
pub fn key(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// The closest name among `candidates`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Check one value against its key's kind; the error says what is wrong, not where.
pub fn check_value(def: &KeyDef, value: &str) -> Result<(), String> {
    let v = value.trim();
    match def.kind {
        ValueKind::Text => {
            if v.is_empty() {
                return Err("the value is empty".into());
            }
        }
        ValueKind::Port => {
            let p: u32 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a port number"))?;
            if p == 0 || p > 65535 {
                return Err(format!("{v} is not a port number between 1 and 65535"));
            }
        }
        ValueKind::Count => {
            let n: u32 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a whole number"))?;
            if n == 0 {
                return Err("it must be at least 1".into());
            }
        }
        ValueKind::Bool => {
            units::parse_bool(v)?;
        }
        ValueKind::Size => {
            units::parse_size(v)?;
        }
        ValueKind::Duration => {
            units::parse_duration(v)?;
        }
        ValueKind::Price => {
            let p: f64 = v
                .parse()
                .map_err(|_| format!("{v:?} is not a price; write dollars per hour, like 0.45"))?;
            if !(p > 0.0 || p == -1.0) || !p.is_finite() {
                return Err(format!(
                    "{v:?} is not a price; use a positive number, or -1 for up to the on-demand price"
                ));
            }
        }
        ValueKind::OneOf(words) => {
            if !words.contains(&v) {
                let mut msg = format!("{v:?} is not one of {}", words.join(", "));
                if let Some(s) = did_you_mean(v, words.iter().copied()) {
                    msg.push_str(&format!(" (did you mean {s:?}?)"));
                }
                return Err(msg);
            }
        }
        ValueKind::Machine => {
            units::MachineSpec::parse(v)?;
        }
        ValueKind::Region => {
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(format!(
                    "{v:?} is not a region; use {} or the cloud's own region name",
                    units::REGIONS.join(", ")
                ));
            }
        }
        ValueKind::Pairs => {
            parse_pairs(v)?;
        }
    }
    Ok(())
}

/// Parse `NAME=VALUE, NAME2=VALUE2`.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not NAME=VALUE"))?;
        let k = k.trim();
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':' || c == '.')
        {
            return Err(format!("{k:?} is not a valid name in {item:?}"));
        }
        out.push((k.to_string(), v.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_unique_and_documented() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(!k.doc.is_empty(), "{} has no doc", k.name);
            assert!(
                KEYS[i + 1..].iter().all(|o| o.name != k.name),
                "{} twice",
                k.name
            );
        }
    }

    #[test]
    fn did_you_mean_finds_typos() {
        assert_eq!(
            did_you_mean("hots", KEYS.iter().map(|k| k.name)),
            Some("host")
        );
        assert_eq!(
            did_you_mean("instance_tpye", KEYS.iter().map(|k| k.name)),
            Some("instance_type")
        );
        assert_eq!(did_you_mean("zzzzzz", KEYS.iter().map(|k| k.name)), None);
    }

    #[test]
    fn values_are_checked() {
        assert!(check_value(key("port").unwrap(), "70000").is_err());
        assert!(check_value(key("port").unwrap(), "2222").is_ok());
        assert!(check_value(key("spot").unwrap(), "maybe").is_err());
        assert!(check_value(key("spot_price").unwrap(), "-1").is_ok());
        assert!(check_value(key("spot_price").unwrap(), "-3").is_err());
        assert!(check_value(key("env").unwrap(), "A=1, B=two").is_ok());
        assert!(check_value(key("env").unwrap(), "A").is_err());
        let e = check_value(key("data").unwrap(), "pul").unwrap_err();
        assert!(e.contains("did you mean \"pull\""), "{e}");
    }
}

#[cfg(test)]
mod doc_tests {
    #[test]
    fn every_key_is_in_the_configuration_doc() {
        let doc = include_str!("../../docs/configuration.md");
        for k in super::KEYS {
            assert!(
                doc.contains(&format!("| `{}` |", k.name)),
                "docs/configuration.md lacks `{}`",
                k.name
            );
        }
    }
}
