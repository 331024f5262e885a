//! The provider policy shared by clouds that give virtual machines through a REST API (GCP,
//! Azure): resume before create, pools of kept machines, rollback of interrupted launches by
//! their launch label, garbage collection. Each cloud implements only [`Compute`], the handful of
//! calls that differ; [`VmProvider`] turns it into a [`Provider`] that keeps the contract.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::cloud::{
    self, ExecutorKeys, TAG_EXECUTOR, TAG_KEEP, TAG_LAUNCH, TAG_OWNER, TAG_PROJECT,
};
use super::{Address, Context, Machine, MachineState, Provider, lease};
use crate::config::Executor;
use crate::config::executor::CloudSettings;
use crate::error::{Error, Result};
use crate::output::Ui;

/// A virtual machine as its cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Its name, unique among the executor's machines (the id dvc-exec shows).
    pub id: String,
    /// Its life state.
    pub state: MachineState,
    /// Its public (else private) IP address, once it has one.
    pub address: Option<String>,
    /// Its labels or tags, with dvc-exec's keys given back as written (`dvc-exec:executor`).
    pub labels: BTreeMap<String, String>,
    /// When it was created (unix seconds), where known.
    pub launched: Option<u64>,
}

impl Vm {
    /// Whether it is kept between runs (its `dvc-exec:keep` label).
    pub fn kept(&self) -> bool {
        self.labels.get(TAG_KEEP).map(String::as_str) == Some("true")
    }
}

/// What a launch asks the cloud for.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The new machine's name.
    pub name: String,
    /// Labels (dvc-exec's own and the executor's `tags`).
    pub labels: Vec<(String, String)>,
    /// The cloud-init user data.
    pub user_data: String,
    /// The login user.
    pub user: String,
    /// The client's public key, OpenSSH format.
    pub ssh_public: String,
    /// The addresses allowed to reach SSH.
    pub ssh_cidr: String,
    /// Kept between runs: stop rather than delete when the watchdog shuts it down.
    pub keep: bool,
}

/// The calls a cloud provides; everything else is [`VmProvider`]'s.
///
/// Contract: [`Compute::create`] returns only once the cloud accepted the machine (its
/// long-running operation finished) and removes whatever it made itself when it fails;
/// [`Compute::delete`] of a machine that is gone succeeds; errors carry a hint that names the
/// key to change (capacity, quota, permission, image, machine type).
#[async_trait]
pub trait Compute: Send + Sync {
    /// Where machines go, for messages (`us-central1-a`, `westeurope`).
    fn place(&self) -> String;
    /// Every machine whose labels include all of `labels`.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<Vm>>;
    /// One machine, or `None` when it does not exist.
    async fn get(&self, id: &str) -> Result<Option<Vm>>;
    /// What a launch will be, for the launch message: "a TYPE in PLACE (IMAGE)"; resolving it
    /// is where configuration errors surface, before anything is created.
    async fn plan(&self) -> Result<String>;
    /// The login user when the executor sets none.
    fn default_user(&self) -> &'static str;
    /// Create a machine and the network pieces it needs; returns its id (the cloud's, or the
    /// spec's name where the cloud names machines by it).
    async fn create(&self, spec: &LaunchSpec, ui: &Ui) -> Result<String>;
    /// Start a stopped machine.
    async fn start(&self, id: &str) -> Result<()>;
    /// Delete a machine and what was made for it alone. Idempotent.
    async fn delete(&self, id: &str) -> Result<()>;
    /// The command that deletes the machine without dvc-exec.
    fn delete_command(&self, id: &str) -> String;
    /// Release the compute of a machine its watchdog shut down, where the cloud still bills a
    /// machine that is merely powered off (Azure: deallocate it). Default: nothing to do.
    async fn park(&self, _id: &str) -> Result<()> {
        Ok(())
    }
    /// Remove (or with `dry_run` list) the executor's shared pieces (firewall rule, network,
    /// resource group), called when it has no machines left.
    async fn remove_shared(&self, dry_run: bool, ui: &Ui) -> Result<Vec<String>>;
    /// What the machine has cost so far, where the cloud told its price at launch.
    fn cost_note(&self, _id: &str) -> Option<String> {
        None
    }
}

/// A [`Provider`] for a cloud that implements [`Compute`].
pub struct VmProvider<C: Compute> {
    executor: Executor,
    cloud: CloudSettings,
    ctx: Context,
    compute: C,
    leases: std::sync::Mutex<Vec<lease::Lease>>,
}

fn setting(e: &Executor, key: &str) -> Option<String> {
    e.raw.keys.get(key).map(|s| s.value.clone())
}

impl<C: Compute> VmProvider<C> {
    /// A provider for `executor` over `compute`.
    pub fn new(executor: Executor, ctx: Context, compute: C) -> Self {
        let mut cloud = executor.cloud.clone().unwrap_or_default();
        // Pool machines outlive runs: they are kept, and stopped by their watchdog when idle.
        if executor.raw.keys.contains_key("pool") {
            cloud.keep = true;
        }
        Self {
            executor,
            cloud,
            ctx,
            compute,
            leases: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The login user (`user`, else `default`).
    pub fn user(executor: &Executor, default: &str) -> String {
        setting(executor, "user").unwrap_or_else(|| default.into())
    }

    fn login(&self) -> String {
        Self::user(&self.executor, self.compute.default_user())
    }

    fn labels(&self, run_id: &str) -> Vec<(String, String)> {
        let mut labels = vec![
            (TAG_EXECUTOR.to_string(), self.executor.name.clone()),
            (TAG_PROJECT.to_string(), self.ctx.project.clone()),
            (TAG_OWNER.to_string(), self.ctx.owner.clone()),
            (TAG_LAUNCH.to_string(), run_id.to_string()),
            (TAG_KEEP.to_string(), self.cloud.keep.to_string()),
        ];
        labels.extend(self.cloud.tags.iter().cloned());
        labels
    }

    fn machine_of(&self, vm: &Vm, keys: &ExecutorKeys) -> Machine {
        Machine {
            id: vm.id.clone(),
            executor: self.executor.name.clone(),
            address: Address::Ssh(cloud::ssh_target(
                &self.executor,
                keys,
                vm.address.as_deref().unwrap_or_default(),
                &self.login(),
                None,
            )),
            owned: true,
            keep: vm.kept(),
            state: Some(vm.state),
            launched: vm.launched,
            slot: None,
        }
    }

    /// Machines the watchdog shut down: an ephemeral one is never used again (its client is
    /// gone), so it is deleted; a kept one is parked so that it costs nothing while stopped.
    async fn tidy(&self, vms: &[Vm], ui: &Ui) {
        for vm in vms.iter().filter(|v| v.state == MachineState::Stopped) {
            let result = if vm.kept() {
                self.compute.park(&vm.id).await
            } else {
                ui.note(&format!(
                    "removing {}: its watchdog stopped it after its client went away",
                    vm.id
                ));
                self.compute.delete(&vm.id).await
            };
            if let Err(e) = result {
                ui.warn(&format!("could not tidy {}: {e}", vm.id));
            }
        }
    }

    async fn project_machines(&self) -> Result<Vec<Vm>> {
        self.compute
            .list(&[
                (TAG_EXECUTOR, self.executor.name.as_str()),
                (TAG_PROJECT, self.ctx.project.as_str()),
            ])
            .await
    }

    /// Create a machine for `run_id` and wait until it is running and bootstrapped; on any
    /// failure nothing of it is left.
    async fn launch(&self, run_id: &str, ui: &Ui, keys: &ExecutorKeys) -> Result<Machine> {
        let plan = self.compute.plan().await?;
        let user = self.login();
        let spec = LaunchSpec {
            // dvc-exec-EXECUTOR-RUNSUFFIX+RANDOM: unique, and lowercase as clouds want it.
            name: format!(
                "dvc-exec-{}-{}{:04x}",
                cloud_name(&self.executor.name),
                cloud_name(run_id.rsplit('-').next().unwrap_or(run_id)),
                fastrand::u16(..)
            ),
            labels: self.labels(run_id),
            user_data: cloud::launch_user_data(
                &self.executor,
                &self.ctx.root,
                keys,
                &user,
                self.cloud.keep,
            )?,
            user,
            ssh_public: keys.client_public.clone(),
            ssh_cidr: cloud::ssh_cidr(&self.executor).await?,
            keep: self.cloud.keep,
        };
        ui.phase("launch", &format!("launching {plan}"));
        let id = self.compute.create(&spec, ui).await?;
        ui.note(&format!("launched {id}"));
        let ready = async {
            let vm = self.wait_running(&id, ui).await?;
            let machine = self.machine_of(&vm, keys);
            self.ready(&machine, ui).await?;
            Ok::<_, Error>(machine)
        }
        .await;
        match ready {
            Ok(m) => Ok(m),
            Err(e) => Err(self.remove_after_failure(&id, e).await),
        }
    }

    /// Delete a machine whose launch failed; if that fails too, say how to finish by hand.
    async fn remove_after_failure(&self, id: &str, error: Error) -> Error {
        match self.compute.delete(id).await {
            Ok(()) => error,
            Err(_) => error.hint(format!(
                "{id} could not be removed; remove it with: {}",
                self.compute.delete_command(id)
            )),
        }
    }

    async fn wait_running(&self, id: &str, ui: &Ui) -> Result<Vm> {
        let started = Instant::now();
        let mut said = false;
        loop {
            match self.compute.get(id).await? {
                Some(vm) if vm.state == MachineState::Running && vm.address.is_some() => {
                    return Ok(vm);
                }
                Some(vm) if vm.state != MachineState::Gone => {}
                // Gone, or no longer there at all.
                _ => {
                    return Err(Error::failed(format!("{id} was deleted while starting"))
                        .hint("for spot capacity, try another zone, region or machine, or spot = false"));
                }
            }
            if !said {
                ui.note(&format!("waiting for {id} to start"));
                said = true;
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(Error::failed(format!("{id} did not start in 10 minutes")));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Wait until the machine answers on SSH and its bootstrap is done.
    async fn ready(&self, machine: &Machine, ui: &Ui) -> Result<()> {
        if let Address::Ssh(target) = &machine.address {
            let workdir = cloud::remote_workdir(&self.executor, &self.login());
            cloud::wait_until_ready(target, &workdir, ui, Duration::from_secs(1200)).await?;
        }
        Ok(())
    }

    async fn acquire_from_pool(&self, n: usize, run_id: &str, ui: &Ui) -> Result<Machine> {
        let name = self.executor.name.clone();
        let mut said = false;
        loop {
            let guard = lease::CreateLock::take(&name).await?;
            let keys = ExecutorKeys::load_or_create(&name)?;
            let vms = self.project_machines().await?;
            let machines: Vec<Machine> = vms
                .iter()
                .filter(|v| v.state != MachineState::Gone)
                .map(|v| self.machine_of(v, &keys))
                .collect();
            let in_state = |s: MachineState| -> Vec<Machine> {
                machines
                    .iter()
                    .filter(|m| m.state == Some(s))
                    .cloned()
                    .collect()
            };
            let picked = match lease::try_acquire(&name, &in_state(MachineState::Running))? {
                Some(got) => Some(got),
                None => lease::try_acquire(&name, &in_state(MachineState::Stopped))?,
            };
            if let Some((m, l)) = picked {
                drop(guard);
                self.leases.lock().expect("not poisoned").push(l);
                ui.phase("launch", &format!("using {} from the pool of {name}", m.id));
                let m = self.start(&m, ui).await?;
                self.ready(&m, ui).await?;
                return Ok(m);
            }
            if machines.len() < n {
                let m = self.launch(run_id, ui, &keys).await?;
                let l = lease::take_new(&name, &m)?;
                drop(guard);
                self.leases.lock().expect("not poisoned").push(l);
                return Ok(m);
            }
            drop(guard);
            if !said {
                ui.note(&format!(
                    "all {n} machines of the pool of {name} are busy; waiting for one"
                ));
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// A name part the clouds accept in resource names: lowercase letters, digits and dashes.
pub fn cloud_name(text: &str) -> String {
    let s: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.trim_matches('-').chars().take(20).collect()
}

#[async_trait]
impl<C: Compute> Provider for VmProvider<C> {
    fn executor(&self) -> &Executor {
        &self.executor
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        let vms = self
            .compute
            .list(&[(TAG_EXECUTOR, self.executor.name.as_str())])
            .await?;
        // Kept machines their watchdog powered off stop costing compute (Azure bills a VM
        // that is only powered off).
        for vm in vms
            .iter()
            .filter(|v| v.state == MachineState::Stopped && v.kept())
        {
            let _ = self.compute.park(&vm.id).await;
        }
        Ok(vms
            .iter()
            .filter(|v| v.state != MachineState::Gone)
            .map(|v| self.machine_of(v, &keys))
            .collect())
    }

    async fn acquire(&self, run_id: &str, ui: &Ui) -> Result<Machine> {
        if let Some(n) = setting(&self.executor, "pool").and_then(|n| n.parse::<usize>().ok()) {
            return self.acquire_from_pool(n, run_id, ui).await;
        }
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        let (kept, ephemeral): (Vec<Vm>, Vec<Vm>) = self
            .project_machines()
            .await?
            .into_iter()
            .partition(Vm::kept);
        self.tidy(&ephemeral, ui).await;
        // Resume before create: a kept machine of this executor and project.
        let pick = kept
            .iter()
            .find(|v| v.state == MachineState::Running)
            .or_else(|| kept.iter().find(|v| v.state == MachineState::Stopped));
        let Some(vm) = pick else {
            return self.launch(run_id, ui, &keys).await;
        };
        let machine = self.machine_of(vm, &keys);
        if vm.state == MachineState::Stopped {
            ui.phase("launch", &format!("starting the kept machine {}", vm.id));
        } else {
            ui.phase("launch", &format!("reusing the running machine {}", vm.id));
        }
        let machine = self.start(&machine, ui).await?;
        self.ready(&machine, ui).await?;
        Ok(machine)
    }

    async fn state(&self, machine: &Machine) -> Result<MachineState> {
        Ok(self
            .compute
            .get(&machine.id)
            .await?
            .map(|v| v.state)
            .unwrap_or(MachineState::Gone))
    }

    async fn release(&self, machine: &Machine) -> Result<()> {
        if let Ok(mut l) = self.leases.lock() {
            l.retain(|l| l.machine_id != machine.id);
        }
        if machine.keep {
            return Ok(());
        }
        self.destroy(machine).await
    }

    async fn abort(&self, run_id: &str) -> Result<()> {
        let found = self
            .compute
            .list(&[
                (TAG_EXECUTOR, self.executor.name.as_str()),
                (TAG_LAUNCH, run_id),
            ])
            .await?;
        for vm in found {
            self.compute.delete(&vm.id).await?;
        }
        Ok(())
    }

    async fn create(&self, run_id: &str, ui: &Ui) -> Result<Machine> {
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        self.launch(run_id, ui, &keys).await
    }

    async fn start(&self, machine: &Machine, ui: &Ui) -> Result<Machine> {
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        if machine.state == Some(MachineState::Stopped) {
            self.compute.start(&machine.id).await?;
        }
        let vm = self.wait_running(&machine.id, ui).await?;
        Ok(self.machine_of(&vm, &keys))
    }

    async fn destroy(&self, machine: &Machine) -> Result<()> {
        self.compute.delete(&machine.id).await.map_err(|e| {
            e.hint(format!(
                "remove it with: {}",
                self.compute.delete_command(&machine.id)
            ))
        })
    }

    fn cost_note(&self, machine: &Machine) -> Option<String> {
        self.compute.cost_note(&machine.id)
    }

    fn cleanup_command(&self, machine: &Machine) -> Option<String> {
        Some(self.compute.delete_command(&machine.id))
    }

    async fn gc(&self, dry_run: bool, busy: &[String], ui: &Ui) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let vms = self
            .compute
            .list(&[(TAG_EXECUTOR, self.executor.name.as_str())])
            .await?;
        let mut remaining = 0;
        for vm in vms.iter().filter(|v| v.state != MachineState::Gone) {
            if busy.contains(&vm.id) {
                remaining += 1;
                ui.note(&format!("keeping {}: a run is using it", vm.id));
                continue;
            }
            removed.push(format!("instance {}", vm.id));
            if !dry_run {
                self.compute.delete(&vm.id).await?;
            }
        }
        if remaining == 0 {
            removed.extend(self.compute.remove_shared(dry_run, ui).await?);
        }
        Ok(removed)
    }
}

/// Poll intervals for long-running operations: quick at first, then every few seconds, and
/// never sooner than the server asks (`Retry-After`).
pub fn poll_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_millis(250 * 2u64.pow(attempt.min(4))).min(Duration::from_secs(5));
    retry_after.map_or(base, |r| r.min(Duration::from_secs(30)))
}

/// Unix seconds of an RFC 3339 time such as `2026-12-04T15:10:00.123-08:00`.
pub fn unix_seconds(t: &str) -> Option<u64> {
    let n = |a: usize, b: usize| t.get(a..b)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        n(0, 4)?,
        n(5, 7)?,
        n(8, 10)?,
        n(11, 13)?,
        n(14, 16)?,
        n(17, 19)?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let zone = &t[19..];
    let zone = zone.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone.as_bytes().first() {
        Some(b'+') | Some(b'-') => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let oh = zone.get(1..3)?.parse::<i64>().ok()?;
            let om = zone.get(4..6)?.parse::<i64>().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => 0,
    };
    u64::try_from(days * 86400 + h * 3600 + mi * 60 + s - offset).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_clouds_accept() {
        assert_eq!(cloud_name("My_GPU.box"), "my-gpu-box");
        assert_eq!(cloud_name("-x-"), "x");
        assert_eq!(cloud_name(&"a".repeat(40)).len(), 20);
    }

    #[test]
    fn polling_backs_off_and_honours_retry_after() {
        assert_eq!(poll_delay(0, None), Duration::from_millis(250));
        assert_eq!(poll_delay(10, None), Duration::from_secs(4));
        assert_eq!(
            poll_delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn creation_times_parse() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-12-04T15:10:00.123-08:00"),
            unix_seconds("2026-12-04T23:10:00Z")
        );
        assert_eq!(unix_seconds("garbage"), None);
    }
}
