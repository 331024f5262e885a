//! The `ssh` executor: a host that already exists, reached with the system's OpenSSH.

use async_trait::async_trait;

use super::{Address, Machine, MachineState, Provider};
use crate::config::Executor;
use crate::error::{Error, Result};
use crate::output::Ui;

/// Provider for `type = ssh`.
pub struct SshProvider {
    executor: Executor,
}

impl SshProvider {
    /// A provider for this executor (which must have its `ssh` settings).
    pub fn new(executor: Executor) -> Self {
        Self { executor }
    }

    fn machine(&self) -> Result<Machine> {
        let target = self.executor.ssh.clone().ok_or_else(|| {
            Error::usage(format!("executor {:?} has no SSH host", self.executor.name))
        })?;
        Ok(Machine {
            id: target.display(),
            executor: self.executor.name.clone(),
            address: Address::Ssh(target),
            owned: false,
            keep: true,
            state: Some(MachineState::Running),
            launched: None,
        })
    }
}

#[async_trait]
impl Provider for SshProvider {
    fn executor(&self) -> &Executor {
        &self.executor
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        Ok(vec![self.machine()?])
    }

    async fn acquire(&self, _run_id: &str, _ui: &Ui) -> Result<Machine> {
        self.machine()
    }

    async fn state(&self, _machine: &Machine) -> Result<MachineState> {
        Ok(MachineState::Running)
    }

    async fn release(&self, _machine: &Machine) -> Result<()> {
        Ok(())
    }
}
