//! One configuration file in DVC's syntax (configobj), read and written with its comments and
//! layout kept, plus the line numbers that error messages point at.

use std::path::{Path, PathBuf};

use configobj::{Builder, ConfigObj, Section};

use crate::error::{Context, Error, Result};

/// A parsed config file, or an empty one that does not exist yet.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
    exists: bool,
    obj: ConfigObj,
}

impl ConfigFile {
    /// Read and parse `path`; a missing file is an empty config.
    pub fn read(path: &Path) -> Result<Self> {
        let (text, exists) = match std::fs::read(path) {
            Ok(bytes) => (
                String::from_utf8(bytes).map_err(|_| {
                    Error::usage(format!("{} is not UTF-8 text", path.display()))
                        .hint("config files must be plain text; fix or remove the file")
                })?,
                true,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), false),
            Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => {
                return Err(Error::usage(format!(
                    "{} is a directory, not a config file",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(Error::usage(format!("cannot read {}", path.display())).source(e));
            }
        };
        Self::parse(path, text, exists)
    }

    /// Parse `text` as the contents of `path`.
    pub fn parse(path: &Path, text: String, exists: bool) -> Result<Self> {
        let mut obj = Builder::new().from_str(&text).map_err(|e| {
            let (line, what) = match e.parse_errors().first() {
                Some(p) => (Some(p.line_number), format!("{} (`{}`)", p.message, p.line.trim())),
                None => (None, e.to_string()),
            };
            let at = match line {
                Some(l) => format!("{}:{l}", super::display_path(path)),
                None => super::display_path(path),
            };
            Error::usage(format!("{at}: {what}")).hint(
                "the file uses DVC's config syntax: ['executor \"NAME\"'] section headers and `key = value` lines",
            )
        })?;
        if obj.indent().is_empty() {
            obj.set_indent("    ");
        }
        Ok(Self {
            path: path.to_path_buf(),
            text,
            exists,
            obj,
        })
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it existed when read.
    pub fn exists(&self) -> bool {
        self.exists
    }

    /// The parsed contents.
    pub fn root(&self) -> &Section {
        self.obj.root()
    }

    /// The parsed contents, for editing.
    pub fn root_mut(&mut self) -> &mut Section {
        self.obj.root_mut()
    }

    /// The 1-based line of `key` in `section` (or of the section header when `key` is None).
    pub fn line_of(&self, section: &str, key: Option<&str>) -> Option<usize> {
        locate(&self.text, section, key)
    }

    /// Write the file, creating its directory.
    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = self
            .obj
            .to_string()
            .map_err(|e| Error::usage(format!("cannot write {}", self.path.display())).source(e))?;
        // Write beside and rename, so a crash never leaves half a file.
        let tmp = self.path.with_extension("dvc-exec-tmp");
        std::fs::write(&tmp, text.as_bytes())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(())
    }
}

/// Split a section header line into its name: `['executor "gpu"']` -> `executor "gpu"`.
pub fn header_name(line: &str) -> Option<String> {
    let t = line.trim();
    if !t.starts_with('[') {
        return None;
    }
    let inner = t.trim_start_matches('[');
    let end = inner.find(']')?;
    let name = inner[..end].trim();
    let name = if name.len() >= 2
        && ((name.starts_with('\'') && name.ends_with('\''))
            || (name.starts_with('"') && name.ends_with('"')))
    {
        &name[1..name.len() - 1]
    } else {
        name
    };
    Some(name.to_string())
}

/// Find the line of a section header, or of a key inside it, in the raw text.
fn locate(text: &str, section: &str, key: Option<&str>) -> Option<usize> {
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = header_name(line) {
            in_section = name == section;
            if in_section && key.is_none() {
                return Some(i + 1);
            }
            continue;
        }
        if let (true, Some(key)) = (in_section, key) {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix(key)
                && rest.trim_start().starts_with('=')
            {
                return Some(i + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# my executors\n[core]\n    executor = gpu\n['executor \"gpu\"']\n    type = ssh  # the box\n    host = box\n";

    #[test]
    fn parses_dvc_style_sections() {
        let f = ConfigFile::parse(Path::new("x"), TEXT.into(), true).unwrap();
        let s = f.root().section("executor \"gpu\"").unwrap();
        assert_eq!(s.get_str("host"), Some("box"));
        assert_eq!(f.line_of("executor \"gpu\"", Some("host")), Some(6));
        assert_eq!(f.line_of("executor \"gpu\"", None), Some(4));
        assert_eq!(f.line_of("core", Some("executor")), Some(3));
    }

    #[test]
    fn edits_keep_comments_and_indent() {
        let mut f = ConfigFile::parse(Path::new("x"), TEXT.into(), true).unwrap();
        f.root_mut()
            .section_mut("executor \"gpu\"")
            .unwrap()
            .insert("port", "2222");
        let out = f.obj.to_string().unwrap();
        assert!(out.starts_with("# my executors\n"), "{out}");
        assert!(out.contains("    type = ssh # the box"), "{out}");
        assert!(out.contains("    port = 2222"), "{out}");
        assert!(out.contains("['executor \"gpu\"']"), "{out}");
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let e = ConfigFile::parse(
            Path::new("/p/exec.config"),
            "[core]\nthis is not a key\n".into(),
            true,
        )
        .unwrap_err();
        assert!(
            e.message().starts_with("/p/exec.config:2:"),
            "{}",
            e.message()
        );
        assert_eq!(e.exit_code(), 2);
    }
}
