//! The `ssh` executor: a host that already exists, reached with the system's OpenSSH.

use async_trait::async_trait;

use super::{Address, Machine, MachineState, Provider, lease};
use crate::config::Executor;
use crate::error::{Error, Result};
use crate::output::Ui;

/// Provider for `type = ssh`.
pub struct SshProvider {
    executor: Executor,
    leases: std::sync::Mutex<Vec<lease::Lease>>,
}

impl SshProvider {
    /// A provider for this executor (which must have its `ssh` settings).
    pub fn new(executor: Executor) -> Self {
        Self {
            executor,
            leases: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Every machine: each host, or each slot of each host when runs are leased.
    fn machines(&self) -> Result<Vec<Machine>> {
        if self.executor.ssh_hosts.is_empty() {
            return Err(Error::usage(format!(
                "executor {:?} has no SSH host",
                self.executor.name
            )));
        }
        let mut out = Vec::new();
        for target in &self.executor.ssh_hosts {
            let slots = self.executor.slots.unwrap_or(1);
            for slot in 0..slots {
                let leased = self.executor.slots.is_some();
                out.push(Machine {
                    id: if slots > 1 {
                        format!("{}#{slot}", target.display())
                    } else {
                        target.display()
                    },
                    executor: self.executor.name.clone(),
                    address: Address::Ssh(target.clone()),
                    owned: false,
                    keep: true,
                    state: Some(MachineState::Running),
                    launched: None,
                    slot: leased.then_some(slot),
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Provider for SshProvider {
    fn executor(&self) -> &Executor {
        &self.executor
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        self.machines()
    }

    /// A plain `host` is shared: runs on it go on side by side. A pool (`hosts`) or a host with
    /// `slots` is leased: each run takes an idle host or slot.
    async fn acquire(&self, _run_id: &str, ui: &Ui) -> Result<Machine> {
        let machines = self.machines()?;
        if self.executor.slots.is_none() {
            return Ok(machines.into_iter().next().expect("at least one host"));
        }
        let (machine, lease) = lease::acquire(&self.executor.name, &machines, ui).await?;
        self.leases.lock().expect("not poisoned").push(lease);
        Ok(machine)
    }

    async fn state(&self, _machine: &Machine) -> Result<MachineState> {
        Ok(MachineState::Running)
    }

    async fn release(&self, machine: &Machine) -> Result<()> {
        self.leases
            .lock()
            .expect("not poisoned")
            .retain(|l| l.machine_id != machine.id);
        Ok(())
    }
}
