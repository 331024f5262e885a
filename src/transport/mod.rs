//! Transports: how commands, files and git objects reach a machine.
//!
//! A [`Transport`] is either this computer or a [`Session`](ssh::Session): one multiplexed
//! OpenSSH master connection per host, reused by every command, by rsync and by git through its
//! control socket. Every remote step is one call of the helper script (`remote.sh`), sent along
//! with the call, so nothing is installed on the executor and each step is one round trip.

pub mod ssh;

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::error::{Context, Error, Result};
use crate::provider::Address;

/// The helper script run on the executor.
pub const REMOTE_SCRIPT: &str = include_str!("remote.sh");

/// A way to reach one machine.
pub enum Transport {
    /// This computer.
    Local,
    /// An SSH host, through one master connection.
    Ssh(Box<ssh::Session>),
}

/// The output of one helper call.
#[derive(Debug)]
pub struct Reply {
    /// Exit status code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Reply {
    /// The value of `key=value` lines on stdout.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

impl Transport {
    /// Connect to a machine's address.
    pub async fn connect(address: &Address) -> Result<Self> {
        match address {
            Address::Local => Ok(Transport::Local),
            Address::Ssh(target) => Ok(Transport::Ssh(Box::new(
                ssh::Session::connect(target).await?,
            ))),
        }
    }

    /// A name for messages: `this machine` or `user@host:port`.
    pub fn describe(&self) -> String {
        match self {
            Transport::Local => "this machine".into(),
            Transport::Ssh(s) => s.target().display(),
        }
    }

    /// A command that runs the helper with `args` on the machine.
    pub fn helper_command(&self, args: &[String]) -> Command {
        let mut words: Vec<String> = vec![
            "bash".into(),
            "-c".into(),
            REMOTE_SCRIPT.into(),
            "dvc-exec-remote".into(),
        ];
        words.extend(args.iter().cloned());
        match self {
            Transport::Local => {
                let mut c = Command::new(&words[0]);
                c.args(&words[1..]);
                c
            }
            Transport::Ssh(s) => s.command(&words),
        }
    }

    /// Run the helper with `args` and collect its output.
    pub async fn helper(&self, args: &[String]) -> Result<Reply> {
        let mut cmd = self.helper_command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .with_context(|| format!("cannot run a command on {}", self.describe()))?;
        Ok(Reply {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run the helper and fail unless it exits 0.
    pub async fn helper_ok(&self, what: &str, args: &[String]) -> Result<Reply> {
        let reply = self.helper(args).await?;
        if reply.code != Some(0) {
            return Err(self.remote_failure(what, &reply));
        }
        Ok(reply)
    }

    /// The error for a helper call that failed.
    pub fn remote_failure(&self, what: &str, reply: &Reply) -> Error {
        let detail = reply.stderr.trim();
        let mut e = Error::failed(format!("{what} failed on {}", self.describe()));
        if !detail.is_empty() {
            e = e.source(std::io::Error::other(detail.to_string()));
        }
        if reply.code == Some(255)
            && let Transport::Ssh(_) = self
        {
            e = e.hint("the SSH connection failed; check that the host is reachable");
        }
        if detail.contains("No space left on device") {
            e = e.hint(format!(
                "the disk of {} is full; free space in the executor's workdir",
                self.describe()
            ));
        }
        e
    }

    /// The `-e` argument for rsync and the `host:` prefix of remote paths (None: local paths).
    pub fn rsync_remote(&self) -> Option<(String, String)> {
        match self {
            Transport::Local => None,
            Transport::Ssh(s) => Some((s.tool_ssh_command(), s.host_for_tools())),
        }
    }

    /// Copy `files` (relative to `src_dir`) into `dst_dir`, skipping those the receiver has
    /// (DVC cache objects: content-addressed, read-only). `upload` says which side is the
    /// machine. Returns the bytes rsync reports on the wire.
    pub async fn copy_files(
        &self,
        upload: bool,
        src_dir: &Path,
        dst_dir: &Path,
        files: &[String],
    ) -> Result<u64> {
        if !upload && !files.is_empty() {
            std::fs::create_dir_all(dst_dir)
                .with_context(|| format!("cannot create {}", dst_dir.display()))?;
        }
        let what = "DVC cache objects";
        self.rsync(
            upload,
            src_dir,
            dst_dir,
            files,
            &["--ignore-existing", "--chmod=F0444"],
            what,
        )
        .await
    }

    /// Copy `files` (relative to `src_dir` on the machine) into `dst_dir` here, as
    /// [`Transport::copy_files`] does, with partial files kept in `temp_dir` until they are
    /// whole: an interrupted copy leaves nothing half-written in `dst_dir`.
    pub async fn download_files(
        &self,
        src_dir: &Path,
        dst_dir: &Path,
        files: &[String],
        temp_dir: &Path,
    ) -> Result<u64> {
        if !files.is_empty() {
            std::fs::create_dir_all(dst_dir)
                .with_context(|| format!("cannot create {}", dst_dir.display()))?;
        }
        let temp = format!("--temp-dir={}", temp_dir.display());
        self.rsync(
            false,
            src_dir,
            dst_dir,
            files,
            &["--ignore-existing", "--chmod=F0444", &temp],
            "DVC cache objects",
        )
        .await
    }

    /// Mirror `paths` (files or directories, relative to the roots) from one side to the other
    /// with rsync's delta transfer; directories are mirrored exactly (`--delete`). Paths missing
    /// on the sending side are skipped. Returns the bytes on the wire.
    pub async fn mirror_paths(
        &self,
        upload: bool,
        src_root: &Path,
        dst_root: &Path,
        paths: &[String],
    ) -> Result<u64> {
        self.rsync(upload, src_root, dst_root, paths, &["--delete"], "files")
            .await
    }

    /// rsync `paths` (relative to the roots, given on stdin) through the SSH master.
    async fn rsync(
        &self,
        upload: bool,
        src_root: &Path,
        dst_root: &Path,
        paths: &[String],
        extra: &[&str],
        what: &str,
    ) -> Result<u64> {
        if paths.is_empty() {
            return Ok(0);
        }
        let side = |p: &Path| -> OsString {
            let mut s = OsString::new();
            if let Some((_, host)) = self.rsync_remote() {
                s.push(host);
                s.push(":");
            }
            s.push(p.as_os_str());
            s.push("/");
            s
        };
        let (src, dst) = if upload {
            (with_slash(src_root), side(dst_root))
        } else {
            (side(src_root), with_slash(dst_root))
        };
        let mut cmd = Command::new("rsync");
        cmd.args([
            "-rlt",
            "--ignore-missing-args",
            "--stats",
            "--from0",
            "--files-from=-",
        ])
        .args(extra);
        if let Some((ssh, _)) = self.rsync_remote() {
            cmd.arg("-e").arg(ssh);
        }
        cmd.arg(src).arg(dst);
        // A process group of its own: a Ctrl-C at the terminal reaches dvc-exec, which stops it.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            Error::failed("cannot run rsync")
                .source(e)
                .hint("install rsync on this machine (apt-get install rsync, brew install rsync)")
        })?;
        let mut list = Vec::new();
        for f in paths {
            list.extend_from_slice(f.trim_end_matches('/').as_bytes());
            list.push(0);
        }
        let mut stdin = child.stdin.take().expect("piped");
        let feed = async move {
            use tokio::io::AsyncWriteExt;
            let r = stdin.write_all(&list).await;
            drop(stdin);
            r
        };
        let (fed, out) = tokio::join!(feed, child.wait_with_output());
        let out = out.context("rsync did not run")?;
        // Exit code 20: rsync caught a SIGINT (a Ctrl-C sent to our process group in the
        // instant before it left the group).
        if out.status.code() == Some(20) || crate::run::git::interrupted_in_flight(&out.status) {
            return Err(Error::interrupted("rsync was interrupted"));
        }
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let dir = if upload { dst_root } else { src_root };
            let mut e = Error::failed(format!(
                "copying {what} {} {} failed",
                if upload { "to" } else { "from" },
                self.describe()
            ))
            .source(std::io::Error::other(err.clone()));
            if err.contains("No space left") {
                e = e.hint(format!(
                    "the disk is full at {}; free space there and run again",
                    dir.display()
                ));
            }
            return Err(e);
        }
        fed.context("cannot give rsync its file list")?;
        Ok(parse_rsync_bytes(
            &String::from_utf8_lossy(&out.stdout),
            upload,
        ))
    }

    /// Environment and URL with which the local git reaches `path` on the machine.
    pub fn git_remote(&self, path: &Path) -> (String, Option<String>) {
        match self {
            Transport::Local => (path.display().to_string(), None),
            Transport::Ssh(s) => (
                format!("{}:{}", s.host_for_tools(), path.display()),
                Some(s.tool_ssh_command()),
            ),
        }
    }

    /// Close the connection.
    pub async fn close(self) {
        if let Transport::Ssh(s) = self {
            s.close().await;
        }
    }
}

fn with_slash(p: &Path) -> OsString {
    let mut s = p.as_os_str().to_os_string();
    s.push("/");
    s
}

/// Bytes on the wire from rsync's `--stats` output.
pub(crate) fn parse_rsync_bytes(stats: &str, upload: bool) -> u64 {
    let key = if upload {
        "Total bytes sent:"
    } else {
        "Total bytes received:"
    };
    stats
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .map(|v| v.trim().replace(',', ""))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Quote one word for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| format!("'{}'", word.replace('\0', "").replace('\'', "'\\''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_stats_are_read() {
        let stats = "Number of files: 3\nTotal bytes sent: 1,234\nTotal bytes received: 56\n";
        assert_eq!(parse_rsync_bytes(stats, true), 1234);
        assert_eq!(parse_rsync_bytes(stats, false), 56);
    }

    #[test]
    fn quoting_keeps_words_whole() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("plain"), "plain");
        assert!(shell_quote("$(rm -rf /); `x`").starts_with('\''));
    }
}
