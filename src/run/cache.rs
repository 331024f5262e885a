//! The DVC cache objects a run needs, found from the project's `dvc.lock` and `.dvc` files.
//!
//! DVC 3 keeps objects at `CACHE/files/md5/AB/CDEF...`; a directory is a `.dir` manifest (JSON
//! list of `{md5, relpath}`) plus its files. Only the objects a commit references are sent, and
//! rsync's `--ignore-existing` skips those the receiver already has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::file::ConfigFile;
use crate::config::{Level, Paths};
use crate::error::Result;

/// The md5 hashes (with `.dir` where a directory) referenced by DVC files' contents.
pub fn hashes_in(files: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, text) in files {
        // A file DVC itself could not read is DVC's error to report; skip it here.
        if let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(text) {
            collect(&value, &mut out);
        }
    }
    out
}

fn collect(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                if k == "md5" {
                    if let Some(s) = val.as_str()
                        && is_hash(s)
                    {
                        out.insert(s.to_string());
                    }
                } else {
                    collect(val, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        _ => {}
    }
}

fn is_hash(s: &str) -> bool {
    let h = s.strip_suffix(".dir").unwrap_or(s);
    h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The path of an object relative to the cache directory.
pub fn object_path(hash: &str) -> String {
    format!("files/md5/{}/{}", &hash[..2], &hash[2..])
}

/// The hashes listed in the `.dir` manifests among `hashes` that exist under `cache`.
pub fn dir_entries(cache: &Path, hashes: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for h in hashes.iter().filter(|h| h.ends_with(".dir")) {
        let Ok(text) = std::fs::read_to_string(cache.join(object_path(h))) else {
            continue;
        };
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&text) else {
            continue;
        };
        for item in items {
            if let Some(md5) = item.get("md5").and_then(|m| m.as_str())
                && is_hash(md5)
            {
                out.insert(md5.to_string());
            }
        }
    }
    out
}

/// The local DVC cache directory, as DVC resolves `cache.dir` over its config levels.
pub fn local_cache_dir(paths: &Paths) -> Result<PathBuf> {
    let mut dir = paths
        .dvc_dir
        .as_ref()
        .map(|d| d.join("cache"))
        .unwrap_or_else(|| PathBuf::from(".dvc/cache"));
    for level in Level::ALL {
        let Some(path) = paths.dvc_file(level) else {
            continue;
        };
        let file = ConfigFile::read(&path)?;
        if let Some(value) = file.root().section("cache").and_then(|s| s.get_str("dir")) {
            let p = PathBuf::from(value);
            dir = if p.is_absolute() {
                p
            } else {
                path.parent().map(|d| d.join(&p)).unwrap_or(p)
            };
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hashes_in_lock_and_dvc_files() {
        let lock = "schema: '2.0'\nstages:\n  train:\n    cmd: python train.py\n    deps:\n    - path: data\n      hash: md5\n      md5: 0123456789abcdef0123456789abcdef.dir\n    outs:\n    - path: model.txt\n      hash: md5\n      md5: fedcba9876543210fedcba9876543210\n      size: 3\n";
        let dvc = "outs:\n- md5: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  path: raw.txt\n";
        let h = hashes_in(&[
            ("dvc.lock".into(), lock.into()),
            ("raw.txt.dvc".into(), dvc.into()),
        ]);
        assert_eq!(h.len(), 3);
        assert!(h.contains("0123456789abcdef0123456789abcdef.dir"));
        assert_eq!(
            object_path("fedcba9876543210fedcba9876543210"),
            "files/md5/fe/dcba9876543210fedcba9876543210"
        );
    }

    #[test]
    fn broken_yaml_is_skipped() {
        assert!(hashes_in(&[("dvc.lock".into(), ":\n  - [".into())]).is_empty());
    }
}
