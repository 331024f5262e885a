//! What the user sees: human text on a terminal, or one JSON event per line with `--json`.
//!
//! Human mode: the experiment's own output goes to stdout as it is written; dvc-exec's own
//! messages go to stderr, prefixed with `dvc-exec:`. JSON mode: stdout carries only events, each
//! one line: `{"event":"phase",...}`, `{"event":"log",...}`, `{"event":"result",...}`,
//! `{"event":"error",...}`.

use std::io::Write;

use serde_json::{Value, json};

/// The reporter every command writes through.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// Emit JSON events on stdout.
    pub json: bool,
    /// Human mode: print nothing but the experiment's output and errors.
    pub quiet: bool,
    /// Do not print the experiment's output (runs side by side keep it in their logs).
    pub mute_log: bool,
}

impl Ui {
    /// A step of the run begins (`connect`, `sync`, `run`, `fetch`, `apply`, ...).
    pub fn phase(&self, phase: &str, message: &str) {
        if self.json {
            self.event(json!({"event": "phase", "phase": phase, "message": message}));
        } else if !self.quiet {
            eprintln!("dvc-exec: {message}");
        }
    }

    /// A note for the user.
    pub fn note(&self, message: &str) {
        if self.json {
            self.event(json!({"event": "note", "message": message}));
        } else if !self.quiet {
            eprintln!("dvc-exec: {message}");
        }
    }

    /// A warning: shown even when quiet.
    pub fn warn(&self, message: &str) {
        if self.json {
            self.event(json!({"event": "warning", "message": message}));
        } else {
            eprintln!("dvc-exec: warning: {message}");
        }
    }

    /// Bytes of the experiment's log, as they arrive.
    pub fn log(&self, bytes: &[u8]) {
        if self.mute_log {
            return;
        }
        if self.json {
            let text = String::from_utf8_lossy(bytes);
            for line in text.split_inclusive('\n') {
                self.event(json!({"event": "log", "line": line.trim_end_matches('\n')}));
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }
    }

    /// The final result of a command.
    pub fn result(&self, value: Value, human: &str) {
        if self.json {
            let mut v = value;
            if let Value::Object(m) = &mut v {
                m.insert("event".into(), json!("result"));
            }
            self.event(v);
        } else if !human.is_empty() {
            eprintln!("dvc-exec: {human}");
        }
    }

    /// A JSON event line (JSON mode only).
    pub fn event(&self, value: Value) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{value}");
            let _ = out.flush();
        }
    }
}
