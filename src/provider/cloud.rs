//! What every cloud provider shares: the executor's SSH keys, the pinned host key, the cloud-init
//! user data that bootstraps a machine and installs its watchdog, the tags, and waiting for a new
//! machine to be ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Executor;
use crate::config::executor::SshTarget;
use crate::error::{Context, Error, Result};
use crate::output::Ui;
use crate::transport::Transport;

/// The watchdog script installed on cloud machines.
pub const WATCHDOG: &str = include_str!("watchdog.sh");

/// Tag keys on every resource dvc-exec creates.
pub const TAG_EXECUTOR: &str = "dvc-exec:executor";
/// The project a resource serves.
pub const TAG_PROJECT: &str = "dvc-exec:project";
/// Who created it (user@host).
pub const TAG_OWNER: &str = "dvc-exec:owner";
/// The run that launched it (used to roll back an interrupted launch).
pub const TAG_LAUNCH: &str = "dvc-exec:launch";
/// `true` on machines kept between runs.
pub const TAG_KEEP: &str = "dvc-exec:keep";

/// Who is running dvc-exec, for the owner tag.
pub fn owner() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// The key pair dvc-exec uses to log in to an executor's machines, and the host key those
/// machines present; both generated here and kept in the user's data directory.
#[derive(Debug, Clone)]
pub struct ExecutorKeys {
    /// The directory (mode 0700).
    pub dir: PathBuf,
    /// The client private key (mode 0600).
    pub client_key: PathBuf,
    /// The client public key, OpenSSH format.
    pub client_public: String,
    /// The host private key, OpenSSH format (sent to machines in their user data).
    pub host_private: String,
    /// The host public key, OpenSSH format.
    pub host_public: String,
    /// A known_hosts file that pins the host key for every machine of the executor.
    pub known_hosts: PathBuf,
}

impl ExecutorKeys {
    /// Load or create the keys of `executor`.
    pub fn load_or_create(executor: &str) -> Result<Self> {
        let base = dirs::data_dir().ok_or_else(|| {
            Error::failed("cannot find the user's data directory").hint("set XDG_DATA_HOME or HOME")
        })?;
        Self::load_or_create_in(&base.join("dvc-exec").join("keys").join(executor))
    }

    /// Load or create the keys in `dir`.
    pub fn load_or_create_in(dir: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot protect {}", dir.display()))?;
        let client_key = dir.join("id_ed25519");
        let host_key = dir.join("ssh_host_ed25519_key");
        for path in [&client_key, &host_key] {
            if !path.exists() {
                let (private, public) = generate_ed25519(&format!("dvc-exec {}", dir.display()))?;
                write_private(path, &private)?;
                std::fs::write(path.with_extension("pub"), format!("{public}\n"))
                    .with_context(|| format!("cannot write {}.pub", path.display()))?;
            }
            // Keep the mode right even if someone loosened it.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot protect {}", path.display()))?;
        }
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("cannot read {}", p.display()))
        };
        let host_public = read(&host_key.with_extension("pub"))?;
        let known_hosts = dir.join("known_hosts");
        // Every machine of this executor presents this one host key, whatever its address.
        let pin = format!("* {}\n", public_key_body(&host_public));
        if std::fs::read_to_string(&known_hosts).ok().as_deref() != Some(pin.as_str()) {
            std::fs::write(&known_hosts, &pin)
                .with_context(|| format!("cannot write {}", known_hosts.display()))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            client_public: read(&client_key.with_extension("pub"))?,
            client_key,
            host_private: read(&host_key)?,
            host_public,
            known_hosts,
        })
    }

    /// A short fingerprint of the client key, for naming the cloud key pair.
    pub fn client_fingerprint(&self) -> String {
        key_fingerprint(&self.client_public)
    }
}

/// A short fingerprint of a public key (FNV-1a of its body), for naming cloud key pairs.
pub fn key_fingerprint(public: &str) -> String {
    let body = public_key_body(public);
    format!(
        "{:08x}",
        body.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32)
            .wrapping_mul(0x01000193))
    )
}

/// `ssh-ed25519 AAAA...` without the comment.
fn public_key_body(public: &str) -> String {
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
fn generate_ed25519(comment: &str) -> Result<(String, String)> {
    use ssh_key::{Algorithm, LineEnding, PrivateKey, rand_core::OsRng};
    let mut key = PrivateKey::random(&mut OsRng, Algorithm::Ed25519).map_err(|e| {
        Error::failed("cannot generate an SSH key").source(std::io::Error::other(e.to_string()))
    })?;
    key.set_comment(comment);
    let private = key.to_openssh(LineEnding::LF).map_err(|e| {
        Error::failed("cannot encode an SSH key").source(std::io::Error::other(e.to_string()))
    })?;
    let public = key.public_key().to_openssh().map_err(|e| {
        Error::failed("cannot encode an SSH key").source(std::io::Error::other(e.to_string()))
    })?;
    Ok((private.to_string(), public))
}

#[cfg(not(any(feature = "aws", feature = "gcp", feature = "azure")))]
fn generate_ed25519(_comment: &str) -> Result<(String, String)> {
    Err(Error::usage("this build of dvc-exec has no cloud support")
        .hint("build it with the aws, gcp or azure feature"))
}

/// What a new machine needs to know at first boot.
pub struct Bootstrap<'a> {
    /// The executor.
    pub executor: &'a Executor,
    /// The login user.
    pub user: &'a str,
    /// The keys.
    pub keys: &'a ExecutorKeys,
    /// The DVC version to install.
    pub dvc_version: &'a str,
    /// The startup script's text.
    pub startup_script: &'a str,
    /// Whether the machine is kept between runs (the watchdog then stops it when idle instead
    /// of terminating it; the instance's shutdown behaviour decides which).
    pub keep: bool,
}

/// The remote workdir as an absolute path for `user`.
pub fn remote_workdir(executor: &Executor, user: &str) -> String {
    let w = executor
        .workdir
        .clone()
        .unwrap_or_else(|| "~/.dvc-exec".into());
    let home = if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    };
    match w.strip_prefix("~/") {
        Some(rest) => format!("{home}/{rest}"),
        None if w == "~" => home,
        None if w.starts_with('/') => w,
        None => format!("{home}/{w}"),
    }
}

fn block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}

/// The cloud-init user data (`#cloud-config`): the pinned host key, the login key, the
/// watchdog with its timer, and the bootstrap script (git, rsync, DVC, the startup script).
/// It holds no cloud credential.
pub fn user_data(b: &Bootstrap) -> String {
    let cloud = b.executor.cloud.clone().unwrap_or_default();
    let workdir = remote_workdir(b.executor, b.user);
    let idle = cloud.idle_timeout.as_secs();
    let max = cloud.max_runtime.as_secs();
    let bootstrap = format!(
        r#"#!/bin/bash
# dvc-exec bootstrap: git, rsync, DVC {dvc}, then the executor's startup_script.
WORKDIR={workdir}
mkdir -p "$WORKDIR/state"
exec >"$WORKDIR/bootstrap.log" 2>&1
set -x
fail() {{ echo "bootstrap failed: $*"; touch "$WORKDIR/bootstrap.failed"; chown -R {user}: "$WORKDIR"; exit 1; }}
date +%s > "$WORKDIR/state/created"
systemctl enable --now dvc-exec-watchdog.timer || fail "cannot start the watchdog"
export DEBIAN_FRONTEND=noninteractive
if command -v apt-get >/dev/null; then
  apt-get update -q || fail "apt-get update"
  apt-get install -y -q git rsync python3-venv || fail "installing git, rsync and python3-venv"
elif command -v dnf >/dev/null; then
  dnf install -y git rsync python3 || fail "installing git, rsync and python3"
fi
python3 -m venv /opt/dvc-exec/venv || fail "creating a Python environment"
/opt/dvc-exec/venv/bin/pip install -q "dvc=={dvc}" || fail "installing DVC {dvc}"
echo 'export PATH=/opt/dvc-exec/venv/bin:$PATH' > "$WORKDIR/env.sh"
cat > /usr/local/lib/dvc-exec/startup.sh <<'DVC_EXEC_STARTUP'
{startup}
DVC_EXEC_STARTUP
if [ -s /usr/local/lib/dvc-exec/startup.sh ]; then
  (cd "$WORKDIR" && PATH=/opt/dvc-exec/venv/bin:$PATH bash /usr/local/lib/dvc-exec/startup.sh) || fail "the startup_script"
fi
chown -R {user}: "$WORKDIR"
touch "$WORKDIR/bootstrap.done"
"#,
        dvc = b.dvc_version,
        workdir = workdir,
        user = b.user,
        startup = b.startup_script.trim_end(),
    );
    let mut out = String::from("#cloud-config\n");
    out.push_str("ssh_deletekeys: true\nssh_genkeytypes: []\nssh_keys:\n  ed25519_private: |\n");
    out.push_str(&block(&b.keys.host_private, 4));
    out.push_str(&format!("  ed25519_public: {}\n", b.keys.host_public));
    out.push_str(&format!(
        "ssh_authorized_keys:\n  - {}\n",
        b.keys.client_public
    ));
    if b.user == "root" {
        // Log in as root: cloud-init then gives root the login key too.
        out.push_str("disable_root: false\n");
    }
    out.push_str("write_files:\n");
    out.push_str(
        "  - path: /usr/local/bin/dvc-exec-watchdog\n    permissions: '0755'\n    content: |\n",
    );
    out.push_str(&block(WATCHDOG, 6));
    out.push_str("  - path: /etc/systemd/system/dvc-exec-watchdog.service\n    content: |\n");
    out.push_str(&block(
        &format!("[Unit]\nDescription=dvc-exec watchdog\n[Service]\nType=oneshot\nExecStart=/usr/local/bin/dvc-exec-watchdog {workdir} {idle} {max}\n"),
        6,
    ));
    out.push_str("  - path: /etc/systemd/system/dvc-exec-watchdog.timer\n    content: |\n");
    out.push_str(&block(
        "[Unit]\nDescription=dvc-exec watchdog\n[Timer]\nOnBootSec=1min\nOnUnitActiveSec=1min\n[Install]\nWantedBy=timers.target\n",
        6,
    ));
    out.push_str(
        "  - path: /usr/local/lib/dvc-exec/bootstrap.sh\n    permissions: '0755'\n    content: |\n",
    );
    out.push_str(&block(&bootstrap, 6));
    out.push_str("runcmd:\n  - [bash, /usr/local/lib/dvc-exec/bootstrap.sh]\n");
    let _ = b.keep;
    out
}

/// The user data for a new machine of `executor`: the DVC version (`dvc_version`, else the
/// local one) and the `startup_script` (relative to the project) resolved.
pub fn launch_user_data(
    executor: &Executor,
    project_root: &Path,
    keys: &ExecutorKeys,
    user: &str,
    keep: bool,
) -> Result<String> {
    let setting = |k: &str| executor.raw.keys.get(k).map(|s| s.value.clone());
    let dvc_version = match setting("dvc_version") {
        Some(v) => v,
        None => crate::run::local_dvc_version()
            .map(|v| v.trim().to_string())
            .ok_or_else(|| {
                Error::usage("cannot tell which DVC version to install on the machine: dvc was not found here")
                    .hint(format!("set it: dvc-exec executor modify {} dvc_version 3.67.1", executor.name))
            })?,
    };
    let startup = match setting("startup_script") {
        Some(s) => {
            let p = PathBuf::from(&s);
            let p = if p.is_absolute() {
                p
            } else {
                project_root.join(p)
            };
            std::fs::read_to_string(&p).map_err(|e| {
                Error::usage(format!("cannot read the startup_script {}", p.display())).source(e)
            })?
        }
        None => String::new(),
    };
    Ok(user_data(&Bootstrap {
        executor,
        user,
        keys,
        dvc_version: &dvc_version,
        startup_script: &startup,
        keep,
    }))
}

/// This machine's public IPv4 address, as AWS's checkip service sees it.
pub async fn public_address() -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect("checkip.amazonaws.com:80").await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: checkip.amazonaws.com\r\n\r\n")
            .await?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| std::io::Error::other("timed out"))
        .and_then(|r| r)
        .map_err(|e| {
            Error::failed("cannot find this machine's public address to open SSH to it")
                .source(e)
                .hint("set the addresses allowed to reach SSH: dvc-exec executor modify NAME ssh_cidr 203.0.113.7/32")
        })?;
    let ip = text
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(
            Error::failed("cannot find this machine's public address to open SSH to it")
                .hint("set ssh_cidr, for example 203.0.113.7/32"),
        );
    }
    Ok(ip)
}

/// The addresses allowed to reach SSH: the `ssh_cidr` setting, else this machine's public
/// address as a /32.
pub async fn ssh_cidr(executor: &Executor) -> Result<String> {
    match executor.raw.keys.get("ssh_cidr") {
        Some(c) => Ok(c.value.clone()),
        None => Ok(format!("{}/32", public_address().await?)),
    }
}

/// The SSH target for a machine at `address`.
pub fn ssh_target(
    executor: &Executor,
    keys: &ExecutorKeys,
    address: &str,
    user: &str,
    proxy_command: Option<String>,
) -> SshTarget {
    SshTarget {
        host: address.to_string(),
        user: Some(user.to_string()),
        port: None,
        keyfile: Some(keys.client_key.clone()),
        known_hosts: Some(keys.known_hosts.clone()),
        proxy_jump: None,
        proxy_command: proxy_command.or_else(|| {
            executor
                .raw
                .keys
                .get("proxy_command")
                .map(|s| s.value.clone())
        }),
    }
}

/// Wait until a new machine answers on SSH and its bootstrap has finished; show progress, and
/// on failure the bootstrap log's last lines.
pub async fn wait_until_ready(
    target: &SshTarget,
    workdir: &str,
    ui: &Ui,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let address = crate::provider::Address::Ssh(target.clone());
    ui.phase(
        "bootstrap",
        &format!("waiting for {} to answer on SSH", target.host),
    );
    let transport = loop {
        match Transport::connect(&address).await {
            Ok(t) => break t,
            Err(e) if started.elapsed() > timeout => {
                return Err(e.hint("the machine did not become reachable on SSH in time; check the security group, ssh_cidr or proxy_command"));
            }
            Err(e) if e.kind() == crate::error::Kind::Usage => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_secs(3)).await,
        }
    };
    let mut last_line = String::new();
    let result = loop {
        let reply = transport
            .helper(&["bootstrap-status".into(), workdir.into()])
            .await?;
        match reply.get("state") {
            Some("done") => break Ok(()),
            Some("failed") => {
                break Err(Error::failed(format!("the machine's bootstrap failed ({})", target.host))
                    .source(std::io::Error::other(reply.stdout.lines().filter(|l| l.starts_with("  ")).map(|l| l.trim()).collect::<Vec<_>>().join("\n")))
                    .hint("check the executor's startup_script and dvc_version; the machine is being removed"));
            }
            _ => {
                if let Some(line) = reply.get("last")
                    && !line.is_empty()
                    && line != last_line
                {
                    ui.note(&format!("bootstrap: {line}"));
                    last_line = line.to_string();
                }
            }
        }
        if started.elapsed() > timeout {
            break Err(Error::failed(format!(
                "the machine's bootstrap did not finish in {}s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    transport.close().await;
    result
}
