//! dvc-exec: run DVC experiments on remote machines and cloud GPUs, and get them back as
//! ordinary DVC experiments.
//!
//! The layout follows the architecture:
//! - [`config`]: executors configured like DVC remotes, at DVC's four levels.
//! - [`provider`]: where machines come from (local, SSH hosts, clouds), behind one trait.
//! - [`transport`]: how commands, files and git objects reach a machine (SSH or local).
//! - [`run`]: one experiment execution, end to end.
//! - [`shim`]: `dvc exp run --executor NAME` through a `dvc` link to this binary.
//! - [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod interrupt;
pub mod output;
pub mod provider;
pub mod run;
pub mod shim;
pub mod transport;

pub use error::{Error, Result};
