//! The local git side of a run: checks, the workspace snapshot, fetching results.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Context, Error, Result};

/// A local git repository (the one holding the DVC project).
#[derive(Debug, Clone)]
pub struct Repo {
    /// The top of the git work tree.
    pub top: PathBuf,
    /// The DVC root's path relative to `top` (`""` when they are the same).
    pub subdir: String,
}

/// What the run starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit checked out (HEAD).
    pub base: String,
    /// A commit whose tree is the workspace: HEAD plus uncommitted and untracked files.
    pub commit: String,
}

impl Repo {
    /// Open the git repository around the DVC root, with the checks a run needs.
    pub fn open(dvc_root: &Path) -> Result<Self> {
        let top = git_in(dvc_root, &["rev-parse", "--show-toplevel"]).map_err(|_| {
            Error::usage(format!(
                "{} is not inside a git repository",
                dvc_root.display()
            ))
            .hint(
                "dvc-exec sends the project with git: run `git init` and commit your project first",
            )
        })?;
        let subdir = git_in(dvc_root, &["rev-parse", "--show-prefix"])?;
        let repo = Self {
            top: PathBuf::from(top.trim()),
            subdir: subdir.trim().trim_end_matches('/').to_string(),
        };
        if repo
            .git(&["rev-parse", "--verify", "-q", "HEAD^{commit}"])
            .is_err()
        {
            return Err(Error::usage("the repository has no commits yet")
                .hint("commit your project first: git add -A && git commit -m 'first commit'"));
        }
        for (marker, what, fix) in [
            (
                "MERGE_HEAD",
                "a merge is in progress",
                "finish it (git commit) or abort it (git merge --abort)",
            ),
            (
                "rebase-merge",
                "a rebase is in progress",
                "finish it (git rebase --continue) or abort it (git rebase --abort)",
            ),
            (
                "rebase-apply",
                "a rebase or git am is in progress",
                "finish or abort it (git rebase --abort / git am --abort)",
            ),
            (
                "CHERRY_PICK_HEAD",
                "a cherry-pick is in progress",
                "finish it or abort it (git cherry-pick --abort)",
            ),
        ] {
            let p = repo.git(&["rev-parse", "--git-path", marker])?;
            let p = repo.top.join(p.trim());
            if p.exists() {
                return Err(Error::usage(format!("cannot run an experiment: {what}")).hint(fix));
            }
        }
        Ok(repo)
    }

    /// Run git in the work tree's top and return stdout.
    pub fn git(&self, args: &[&str]) -> Result<String> {
        git_in(&self.top, args)
    }

    /// Run git with extra environment.
    pub fn git_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
        let mut c = Command::new("git");
        c.current_dir(&self.top).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run(c, args)
    }

    /// A config value, if set.
    pub fn config(&self, key: &str) -> Option<String> {
        self.git(&["config", "--get", key])
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Snapshot the workspace into a commit through a temporary index: tracked changes plus
    /// untracked files that git does not ignore. The user's index is not touched.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let base = self
            .git(&["rev-parse", "--verify", "HEAD^{commit}"])?
            .trim()
            .to_string();
        let tmp = tempfile::Builder::new()
            .prefix("dvc-exec-index")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let index = tmp.path().join("index");
        // Start from a copy of the real index, so only changed files are hashed again.
        let real = self.git(&["rev-parse", "--git-path", "index"])?;
        let real = self.top.join(real.trim());
        if real.exists() {
            std::fs::copy(&real, &index).context("cannot copy the git index")?;
            // With the real index's modification time: git re-reads a file changed in the same
            // second as the index was written ("racily clean") only when it can tell, and a
            // copy made later would hide such an edit from the snapshot.
            if let Ok(m) = std::fs::metadata(&real).and_then(|m| m.modified()) {
                std::fs::File::options()
                    .write(true)
                    .open(&index)
                    .and_then(|f| f.set_modified(m))
                    .context("cannot copy the git index")?;
            }
        }
        let index_s = index.to_string_lossy().to_string();
        let env = [
            ("GIT_INDEX_FILE", index_s.as_str()),
            ("GIT_AUTHOR_NAME", "dvc-exec"),
            ("GIT_AUTHOR_EMAIL", "dvc-exec@localhost"),
            ("GIT_COMMITTER_NAME", "dvc-exec"),
            ("GIT_COMMITTER_EMAIL", "dvc-exec@localhost"),
        ];
        if !real.exists() {
            self.git_env(&["read-tree", "HEAD"], &env)?;
        }
        self.git_env(&["add", "-A", "--", "."], &env)?;
        let tree = self.git_env(&["write-tree"], &env)?;
        let commit = self.git_env(
            &[
                "commit-tree",
                tree.trim(),
                "-p",
                &base,
                "-m",
                "dvc-exec: workspace snapshot",
            ],
            &env,
        )?;
        Ok(Snapshot {
            base,
            commit: commit.trim().to_string(),
        })
    }

    /// Paths that differ between two commits (whole repository).
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<BTreeSet<String>> {
        let out = self.git(&["diff", "--name-only", "-z", "--no-renames", from, to])?;
        Ok(out
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    /// The files named `dvc.lock` or `*.dvc` in a commit, with their contents.
    pub fn dvc_files(&self, commit: &str) -> Result<Vec<(String, String)>> {
        let out = self.git(&["ls-tree", "-r", "-z", "--full-tree", commit])?;
        let mut wanted = Vec::new();
        for entry in out.split('\0').filter(|s| !s.is_empty()) {
            let Some((meta, path)) = entry.split_once('\t') else {
                continue;
            };
            let name = path.rsplit('/').next().unwrap_or(path);
            let is_dvc = name == "dvc.lock" || (name.ends_with(".dvc") && name.len() > 4);
            if !is_dvc {
                continue;
            }
            let mut parts = meta.split_whitespace();
            let (_, kind, sha) = (parts.next(), parts.next(), parts.next());
            if kind == Some("blob")
                && let Some(sha) = sha
            {
                wanted.push((path.to_string(), sha.to_string()));
            }
        }
        let mut files = Vec::new();
        for (path, sha) in wanted {
            let text = self.git(&["cat-file", "blob", &sha])?;
            files.push((path, text));
        }
        Ok(files)
    }

    /// The contents of `path` at `commit`, or None if absent.
    pub fn show_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let spec = format!("{commit}:{path}");
        let out = Command::new("git")
            .current_dir(&self.top)
            .args(["cat-file", "blob", &spec])
            .stderr(Stdio::null())
            .process_group(0)
            .output()
            .context("cannot run git")?;
        Ok(out.status.success().then_some(out.stdout))
    }

    /// Whether a ref exists.
    pub fn has_ref(&self, name: &str) -> bool {
        self.git(&["rev-parse", "--verify", "-q", name]).is_ok()
    }
}

/// Run git in `dir`.
pub fn git_in(dir: &Path, args: &[&str]) -> Result<String> {
    let mut c = Command::new("git");
    c.current_dir(dir).args(args);
    run(c, args)
}

fn run(mut c: Command, args: &[&str]) -> Result<String> {
    // A process group of its own: a Ctrl-C at the terminal reaches dvc-exec, which decides
    // what to stop, and never leaves a local git command (an index, a ref, a checkout)
    // half-done.
    c.stdin(Stdio::null()).process_group(0);
    let mut attempt = 0;
    let out = loop {
        attempt += 1;
        let out = c.output().map_err(|e| {
            Error::failed("cannot run git")
                .source(e)
                .hint("install git (apt-get install git, brew install git)")
        })?;
        // A Ctrl-C sent to our process group in the instant before git left it: every git
        // command run here is safe to repeat.
        if interrupted_in_flight(&out.status) && attempt < 3 {
            continue;
        }
        break out;
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(
            Error::failed(format!("git {} failed", args.first().unwrap_or(&"")))
                .source(std::io::Error::other(err)),
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a child died of a SIGINT meant for dvc-exec (it was still in our process group).
pub(crate) fn interrupted_in_flight(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGINT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn a_snapshot_sees_an_edit_made_in_the_second_of_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let git = |args: &[&str]| {
            git_in(
                root,
                &[&["-c", "user.name=t", "-c", "user.email=t@t"], args].concat(),
            )
            .unwrap()
        };
        git(&["init", "-q"]);
        let f = root.join("params.yaml");
        // An edit of the same size in the same second as the commit that recorded the file
        // (git cannot tell it from the index's stat data alone), then a snapshot a second later.
        let mut tries = 0;
        let second = loop {
            tries += 1;
            assert!(tries < 20, "could not commit and edit within one second");
            std::fs::write(&f, "lr: 0.1\n").unwrap();
            git(&["add", "params.yaml"]);
            git(&["commit", "-qm", "x", "--allow-empty"]);
            std::fs::write(&f, "lr: 0.5\n").unwrap();
            let index = std::fs::metadata(root.join(".git/index")).unwrap();
            let now = secs(SystemTime::now());
            if secs(index.modified().unwrap()) == now
                && secs(std::fs::metadata(&f).unwrap().modified().unwrap()) == now
            {
                break now;
            }
        };
        while secs(SystemTime::now()) <= second {
            std::thread::sleep(Duration::from_millis(20));
        }
        let repo = Repo::open(root).unwrap();
        let snap = repo.snapshot().unwrap();
        let text = repo
            .show_file(&snap.commit, "params.yaml")
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "lr: 0.5\n");
    }
}
