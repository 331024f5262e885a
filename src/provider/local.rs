//! The `local` executor: runs on this computer in a work tree of its own, with no network.

use async_trait::async_trait;

use super::{Address, Machine, MachineState, Provider};
use crate::config::Executor;
use crate::error::Result;
use crate::output::Ui;

/// Provider for `type = local`.
pub struct LocalProvider {
    executor: Executor,
}

impl LocalProvider {
    /// A provider for this executor.
    pub fn new(executor: Executor) -> Self {
        Self { executor }
    }

    fn machine(&self) -> Machine {
        Machine {
            id: "local".into(),
            executor: self.executor.name.clone(),
            address: Address::Local,
            owned: false,
            keep: true,
            state: Some(MachineState::Running),
            launched: None,
            slot: None,
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn executor(&self) -> &Executor {
        &self.executor
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        Ok(vec![self.machine()])
    }

    async fn acquire(&self, _run_id: &str, _ui: &Ui) -> Result<Machine> {
        Ok(self.machine())
    }

    async fn state(&self, _machine: &Machine) -> Result<MachineState> {
        Ok(MachineState::Running)
    }

    async fn release(&self, _machine: &Machine) -> Result<()> {
        Ok(())
    }
}
