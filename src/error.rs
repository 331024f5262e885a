//! Errors and exit codes.
//!
//! Every failure that reaches the user is an [`Error`]: a one-line message, the chain of causes
//! beneath it, and usually a hint that says what to do. The exit code is decided here and nowhere
//! else (see [`Error::exit_code`]):
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | an operational failure (a transfer that broke, a connection lost mid-run, ...) |
//! | 2    | a usage or configuration error, or a configured host that cannot be reached or refuses the login: nothing was started |
//! | N    | the remote experiment's own exit code when it failed |
//! | 130  | interrupted by Ctrl-C, after cleaning up |

use std::fmt;

/// What sort of failure an [`Error`] is; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad command-line arguments or a bad configuration file: exit 2.
    Usage,
    /// Something failed while doing the work: exit 1.
    Failed,
    /// The experiment ran and exited with this non-zero code.
    RunFailed(i32),
    /// The user pressed Ctrl-C: exit 130.
    Interrupted,
    /// A host the user configured cannot be reached or refuses the login, before anything was
    /// started: exit 2, as a configuration error. (Kept apart from [`Kind::Usage`] because
    /// another host of a pool may do.)
    Unreachable,
}

/// The error type of dvc-exec.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    hint: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A usage or configuration error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// An operational failure (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Kind::Failed, message)
    }

    /// The remote run finished with a non-zero exit code.
    pub fn run_failed(code: i32, message: impl Into<String>) -> Self {
        Self::new(Kind::RunFailed(code), message)
    }

    /// Ctrl-C.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(Kind::Interrupted, message)
    }

    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    /// Attach a hint: what the user can do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attach the underlying cause.
    pub fn source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same error as another kind (and so another exit code).
    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The hint, if any.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// The process exit code for this error (the one place that decides it).
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage | Kind::Unreachable => 2,
            Kind::Failed => 1,
            Kind::RunFailed(code) => {
                if code == 0 {
                    1
                } else {
                    code
                }
            }
            Kind::Interrupted => 130,
        }
    }

    /// The chain of causes, outermost first, as plain strings.
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(err) = next {
            let text = err.to_string();
            if !text.is_empty() && out.last() != Some(&text) {
                out.push(text);
            }
            next = err.source();
        }
        out
    }

    /// Render for a terminal: `error: ...`, `  caused by: ...`, `  hint: ...`.
    pub fn render(&self) -> String {
        let mut s = format!("error: {}", self.message);
        for cause in self.causes() {
            for (i, line) in cause.lines().enumerate() {
                if i == 0 {
                    s.push_str(&format!("\n  caused by: {line}"));
                } else {
                    s.push_str(&format!("\n    {line}"));
                }
            }
        }
        if let Some(hint) = &self.hint {
            for (i, line) in hint.lines().enumerate() {
                if i == 0 {
                    s.push_str(&format!("\n  hint: {line}"));
                } else {
                    s.push_str(&format!("\n        {line}"));
                }
            }
        }
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Add context to foreign errors: `.context("reading x")?`.
pub trait Context<T> {
    /// Wrap the error as an operational failure with this message.
    fn context(self, message: impl Into<String>) -> Result<T>;
    /// Like [`Context::context`], with the message built lazily.
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T, E> Context<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::failed(message).source(e))
    }
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::failed(f()).source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_decided_by_kind() {
        assert_eq!(Error::usage("x").exit_code(), 2);
        assert_eq!(Error::failed("x").exit_code(), 1);
        assert_eq!(Error::run_failed(3, "x").exit_code(), 3);
        assert_eq!(Error::run_failed(0, "x").exit_code(), 1);
        assert_eq!(Error::interrupted("x").exit_code(), 130);
        assert_eq!(
            Error::failed("x").with_kind(Kind::Unreachable).exit_code(),
            2
        );
    }

    #[test]
    fn render_shows_causes_and_hint() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::failed("reading a.config")
            .source(io)
            .hint("create it");
        let text = e.render();
        assert!(text.starts_with("error: reading a.config"));
        assert!(text.contains("caused by: no such file"));
        assert!(text.contains("hint: create it"));
    }
}
