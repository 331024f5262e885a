//! One multiplexed OpenSSH connection to a host.
//!
//! The master connection is made by the openssh crate with the system's `ssh`, so the user's
//! `~/.ssh/config`, agent, ProxyJump and known_hosts all apply. Host keys are always checked
//! strictly and `BatchMode` is on: nothing can stop at a prompt. Every later command, rsync and
//! git go through the master's control socket: one login per run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, SessionBuilder};
use tokio::process::Command;

use super::shell_quote;
use crate::config::executor::SshTarget;
use crate::error::{Error, Result};

/// An open master connection.
pub struct Session {
    target: SshTarget,
    session: openssh::Session,
    socket: PathBuf,
    // The generated ssh_config (for proxy_command), kept alive with the session.
    _config_dir: Option<tempfile::TempDir>,
}

/// A short directory for control sockets (their paths are limited to about 108 bytes).
fn control_dir() -> Result<PathBuf> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = std::env::temp_dir().join(format!("dvc-exec-{uid}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::failed(format!("cannot create {}", dir.display())).source(e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::failed(format!("cannot protect {}", dir.display())).source(e))?;
    Ok(dir)
}

impl Session {
    /// Open the master connection.
    pub async fn connect(target: &SshTarget) -> Result<Self> {
        let mut b = SessionBuilder::default();
        b.known_hosts_check(KnownHosts::Strict)
            .connect_timeout(Duration::from_secs(15))
            // A dead link is noticed after 3 unanswered keepalives (ssh's ServerAliveCountMax),
            // 15 to 20 s; then the run's log is followed again over a new connection (the run
            // itself is detached and goes on).
            .server_alive_interval(Duration::from_secs(5))
            // A master whose dvc-exec was killed goes away by itself once idle, instead of
            // staying forever.
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(300).expect("not zero"),
            ))
            .control_directory(control_dir()?);
        if let Some(u) = &target.user {
            b.user(u.clone());
        }
        if let Some(p) = target.port {
            b.port(p);
        }
        if let Some(k) = &target.keyfile {
            if !k.exists() {
                return Err(
                    Error::usage(format!("the key file {} does not exist", k.display()))
                        .hint("fix the executor's `keyfile`"),
                );
            }
            b.keyfile(k);
        }
        if let Some(kh) = &target.known_hosts {
            b.user_known_hosts_file(kh);
        }
        if let Some(j) = &target.proxy_jump {
            b.jump_hosts(j.split(',').map(str::trim).filter(|s| !s.is_empty()));
        }
        let config_dir = match &target.proxy_command {
            Some(cmd) => {
                let dir = tempfile::Builder::new()
                    .prefix("dvc-exec-ssh")
                    .tempdir()
                    .map_err(|e| Error::failed("cannot create a temporary ssh_config").source(e))?;
                let path = dir.path().join("config");
                let mut text = format!("Host *\n    ProxyCommand {cmd}\n");
                if let Some(home) = dirs::home_dir() {
                    let user_config = home.join(".ssh").join("config");
                    if user_config.exists() {
                        text.push_str(&format!("Include {}\n", user_config.display()));
                    }
                }
                std::fs::write(&path, text)
                    .map_err(|e| Error::failed("cannot write a temporary ssh_config").source(e))?;
                b.config_file(&path);
                Some(dir)
            }
            None => None,
        };
        let session = b
            .connect(&target.host)
            .await
            .map_err(|e| connect_error(target, e))?;
        let socket = session.control_socket().to_path_buf();
        Ok(Self {
            target: target.clone(),
            session,
            socket,
            _config_dir: config_dir,
        })
    }

    /// The host this session reaches.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// Whether the master connection is still alive.
    pub async fn is_alive(&self) -> bool {
        self.session.check().await.is_ok()
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `ssh` command line that rsync (`-e`) and git (`GIT_SSH_COMMAND`) use to reach the host
    /// through the master. `-p 9` makes them fail at once instead of logging in again if the
    /// master has gone.
    pub fn tool_ssh_command(&self) -> String {
        format!(
            "ssh -S {} -o ControlMaster=no -o BatchMode=yes -p 9",
            shell_quote(&self.socket.to_string_lossy())
        )
    }

    /// The host name to put in `host:path` for the tools.
    pub fn host_for_tools(&self) -> String {
        self.target.host.clone()
    }

    /// A local process that runs `words` on the host, each word quoted.
    pub fn command(&self, words: &[String]) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-S")
            .arg(&self.socket)
            .args([
                "-o",
                "ControlMaster=no",
                "-o",
                "BatchMode=yes",
                "-p",
                "9",
                "-T",
            ])
            .arg(&self.target.host)
            .arg("--")
            .arg(
                words
                    .iter()
                    .map(|w| shell_quote(w))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        c
    }

    /// Close the master connection.
    pub async fn close(self) {
        let _ = self.session.close().await;
    }
}

/// Turn ssh's connection failure into an error that says what to do.
fn connect_error(target: &SshTarget, e: openssh::Error) -> Error {
    let text = format!("{e}");
    let mut detail = text.clone();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(c) = cur {
        detail.push('\n');
        detail.push_str(&c.to_string());
        cur = c.source();
    }
    let host = target.display();
    let known_hosts = target
        .known_hosts
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.ssh/known_hosts".into());
    let base = Error::failed(format!("cannot connect to {host}"))
        .source(std::io::Error::other(detail.clone()));
    if detail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") || detail.contains("Offending") {
        let offending = detail
            .lines()
            .find(|l| l.contains("Offending"))
            .map(|l| l.trim().to_string())
            .unwrap_or_default();
        return Error::usage(format!(
            "the host key of {host} does not match the one in {known_hosts}; refusing to connect"
        ))
        .source(std::io::Error::other(offending))
        .hint(format!(
            "if the host was really re-installed, remove its old key: ssh-keygen -R {} -f {known_hosts}",
            target.host
        ));
    }
    if detail.contains("Host key verification failed")
        || detail.contains("No ED25519 host key is known")
        || detail.contains("host key is known")
    {
        return Error::usage(format!("the host key of {host} is not known; refusing to connect"))
            .source(std::io::Error::other(detail))
            .hint(format!(
                "check the host's key fingerprint, then add it to {known_hosts}, e.g. with: ssh {} true (and answer yes after checking)",
                target.host
            ));
    }
    if detail.contains("Permission denied") {
        let key = match &target.keyfile {
            Some(k) => format!("the key {}", k.display()),
            None => "your default keys (~/.ssh/id_*) and ssh-agent".into(),
        };
        return Error::failed(format!("{host} refused the login with {key}"))
            .source(std::io::Error::other(detail))
            .hint("check the executor's `user` and `keyfile`, and that the key's .pub is in the host's authorized_keys");
    }
    if detail.contains("Could not resolve") {
        return base.hint("the host name does not resolve; check the executor's `host`");
    }
    if detail.contains("Connection refused")
        || detail.contains("timed out")
        || detail.contains("No route")
    {
        return base.hint(
            "nothing answers on that address and port; check `host`, `port` and that sshd runs",
        );
    }
    base
}
