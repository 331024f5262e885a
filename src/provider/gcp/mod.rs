//! GCP Compute Engine executors (`type = gcp`), behind the `gcp` cargo feature.
//!
//! The calls go through google-cloud-compute-v1 (credentials from Application Default
//! Credentials); [`super::vm::VmProvider`] keeps the provider contract. Machines carry
//! dvc-exec's labels (`dvc_exec_executor`, ...: GCP label keys allow no colon, and plain
//! underscores keep them simple in list filters), a network tag
//! that one firewall rule per executor opens to SSH from `ssh_cidr` only, the client's SSH key
//! in their metadata, and the cloud-init user data with the pinned host key and the watchdog.
//! No service account is attached unless `service_account` is set (for `data = pull`).

pub mod catalog;

use std::collections::BTreeMap;

use async_trait::async_trait;
use google_cloud_compute_v1::client::{Firewalls, GlobalOperations, Instances, ZoneOperations};
use google_cloud_compute_v1::model::{Firewall, Instance, Operation};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::cloud::{TAG_EXECUTOR, TAG_KEEP, TAG_LAUNCH, TAG_OWNER, TAG_PROJECT};
use super::vm::{self, Compute, LaunchSpec, Vm, VmProvider};
use super::{Context, MachineState};
use crate::config::Executor;
use crate::config::executor::CloudSettings;
use crate::error::{Error, Result};
use crate::output::Ui;

/// The provider for `type = gcp`.
pub fn provider(executor: Executor, ctx: Context) -> Result<VmProvider<Gcp>> {
    let gcp = Gcp::new(&executor)?;
    Ok(VmProvider::new(executor, ctx, gcp))
}

/// Compute Engine calls for one executor.
pub struct Gcp {
    executor: String,
    cloud: CloudSettings,
    project: String,
    zone: String,
    endpoint: Option<String>,
    service_account: Option<String>,
    clients: OnceCell<Clients>,
}

struct Clients {
    instances: Instances,
    zone_ops: ZoneOperations,
    firewalls: Firewalls,
    global_ops: GlobalOperations,
}

/// dvc-exec's own label keys, as GCP allows them (no colon).
const OWN_KEYS: [&str; 5] = [TAG_EXECUTOR, TAG_PROJECT, TAG_OWNER, TAG_LAUNCH, TAG_KEEP];

/// A label key GCP accepts and its list filters take as is: lowercase letters, digits and
/// `_`, at most 63, a letter first.
pub fn label_key(key: &str) -> String {
    let k: String = key
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(63)
        .collect();
    if k.starts_with(|c: char| c.is_ascii_lowercase()) {
        k
    } else {
        format!("l{k}").chars().take(63).collect()
    }
}

/// A label value GCP accepts: lowercase letters, digits, `_` and `-`, at most 63.
pub fn label_value(value: &str) -> String {
    value
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect()
}

/// Turn a Compute Engine error into one that says what to change.
fn api_error(what: &str, e: google_cloud_compute_v1::Error) -> Error {
    if e.is_authentication() {
        return Error::usage(format!("{what} failed: no usable Google Cloud credentials"))
            .source(e)
            .hint("run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file");
    }
    if e.is_connect() || e.is_io() || e.is_timeout() {
        return Error::failed(format!(
            "{what} failed: Compute Engine could not be reached"
        ))
        .source(e)
        .hint("check your network, or endpoint_url if you set one");
    }
    let http = e.http_status_code().unwrap_or(0);
    let message = e
        .status()
        .map(|s| s.message.clone())
        .unwrap_or_else(|| e.to_string());
    classify(what, http, "", &message)
}

/// The error for a failed call or operation: `http` status, operation error `code`, `message`.
fn classify(what: &str, http: u16, code: &str, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    let base = |usage: bool| {
        if usage {
            Error::usage(format!("{what} failed"))
        } else {
            Error::failed(format!("{what} failed"))
        }
        .source(std::io::Error::other(if code.is_empty() {
            message.to_string()
        } else {
            format!("{code}: {message}")
        }))
    };
    if code.starts_with("ZONE_RESOURCE_POOL_EXHAUSTED")
        || lower.contains("does not have enough resources")
    {
        return base(false).hint("GCP has no capacity for this machine in this zone now; try another zone (zone = ...), region, or machine");
    }
    if code == "QUOTA_EXCEEDED" || lower.contains("quota") {
        return base(false).hint("your GCP quota is exhausted for this machine or GPU in this region; request more on the IAM & Admin > Quotas page, or pick a smaller machine");
    }
    if http == 403 || code == "PERMISSION_DENIED" || code == "FORBIDDEN" {
        return base(true).hint("your Google Cloud credentials may not do this; grant the account roles/compute.instanceAdmin.v1 and roles/compute.securityAdmin on the project, and check project = ...");
    }
    if lower.contains("image")
        && (http == 404 || code.contains("NOT_FOUND") || lower.contains("not found"))
    {
        return base(true).hint("the image does not exist; set image = ubuntu, nvidia, or an image URL such as projects/P/global/images/family/F");
    }
    if lower.contains("machinetype")
        || lower.contains("machine type")
        || lower.contains("acceleratortype")
    {
        return base(true).hint("the machine type or GPU does not exist in this zone; fix instance_type, machine or zone");
    }
    if http == 404 || code.contains("NOT_FOUND") {
        return base(true).hint("check project and zone: the project or zone does not exist or Compute Engine is not enabled in it");
    }
    if http == 400 || code == "INVALID_FIELD_VALUE" || code == "BAD_REQUEST" {
        return base(true).hint("Compute Engine refused a setting; check instance_type, machine, image, disk_size and zone");
    }
    base(false)
}

impl Gcp {
    /// The calls for `executor`; checks its settings.
    pub fn new(executor: &Executor) -> Result<Self> {
        let setting = |k: &str| executor.raw.keys.get(k).map(|s| s.value.clone());
        let cloud = executor.cloud.clone().unwrap_or_default();
        let project = setting("project")
            .or_else(|| std::env::var("GOOGLE_CLOUD_PROJECT").ok())
            .ok_or_else(|| {
                Error::usage(format!("executor {:?} has no GCP project", executor.name)).hint(
                    format!(
                        "set it: dvc-exec executor modify {} project MY-PROJECT",
                        executor.name
                    ),
                )
            })?;
        let zone = match (&cloud.zone, &cloud.region) {
            (Some(z), _) => z.clone(),
            (None, Some(r)) => catalog::zone(r),
            (None, None) => catalog::zone("us-central1"),
        };
        Ok(Self {
            executor: executor.name.clone(),
            cloud,
            project,
            zone,
            endpoint: setting("endpoint_url"),
            service_account: setting("service_account"),
            clients: OnceCell::new(),
        })
    }

    async fn clients(&self) -> Result<&Clients> {
        self.clients
            .get_or_try_init(|| async {
                let creds = google_cloud_auth::credentials::Builder::default()
                    .build()
                    .map_err(|e| {
                        Error::usage("no Google Cloud credentials were found")
                            .source(e)
                            .hint("run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file")
                    })?;
                macro_rules! client {
                    ($t:ty) => {{
                        let mut b = <$t>::builder().with_credentials(creds.clone());
                        if let Some(ep) = &self.endpoint {
                            b = b.with_endpoint(ep.clone());
                        }
                        b.build().await.map_err(|e| {
                            Error::failed("cannot set up the Compute Engine client").source(e)
                        })?
                    }};
                }
                Ok::<_, Error>(Clients {
                    instances: client!(Instances),
                    zone_ops: client!(ZoneOperations),
                    firewalls: client!(Firewalls),
                    global_ops: client!(GlobalOperations),
                })
            })
            .await
    }

    fn machine_type(&self) -> Result<catalog::MachineType> {
        if let Some(t) = &self.cloud.instance_type {
            return Ok((t.clone(), None));
        }
        let spec = self.cloud.machine_or_default();
        catalog::machine_type(&spec).map_err(|e| {
            Error::usage(format!("executor {:?}: {e}", self.executor))
                .hint("set machine = SIZE[+GPU[*COUNT]] with a GPU GCP has, or instance_type to a GCP machine type")
        })
    }

    fn image(&self) -> String {
        let gpu = self.cloud.machine.as_ref().is_some_and(|m| m.gpu.is_some());
        catalog::image(
            self.cloud
                .image
                .as_deref()
                .unwrap_or(if gpu { "nvidia" } else { "ubuntu" }),
        )
    }

    fn network_tag(&self) -> String {
        format!("dvc-exec-{}", vm::cloud_name(&self.executor))
    }

    fn firewall_name(&self) -> String {
        format!("{}-ssh", self.network_tag())
    }

    /// Wait for a zone (`zone = Some`) or global operation to finish; its error, if any.
    async fn wait(&self, what: &str, op: Operation, zone: bool) -> Result<()> {
        let c = self.clients().await?;
        let mut op = op;
        let mut attempt = 0;
        loop {
            let v = serde_json::to_value(&op).unwrap_or(Value::Null);
            if v["status"] == "DONE" {
                let first = &v["error"]["errors"][0];
                if first.is_object() {
                    return Err(classify(
                        what,
                        v["httpErrorStatusCode"].as_u64().unwrap_or(0) as u16,
                        first["code"].as_str().unwrap_or(""),
                        first["message"].as_str().unwrap_or(""),
                    ));
                }
                return Ok(());
            }
            let name = v["name"].as_str().unwrap_or_default().to_string();
            tokio::time::sleep(vm::poll_delay(attempt, None)).await;
            attempt += 1;
            op = if zone {
                c.zone_ops
                    .get()
                    .set_project(&self.project)
                    .set_zone(&self.zone)
                    .set_operation(&name)
                    .send()
                    .await
            } else {
                c.global_ops
                    .get()
                    .set_project(&self.project)
                    .set_operation(&name)
                    .send()
                    .await
            }
            .map_err(|e| api_error(&format!("{what} (waiting for {name})"), e))?;
        }
    }

    /// Whether the executor's firewall rule exists.
    async fn firewall_exists(&self) -> Result<bool> {
        let c = self.clients().await?;
        match c
            .firewalls
            .get()
            .set_project(&self.project)
            .set_firewall(self.firewall_name())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.http_status_code() == Some(404) => Ok(false),
            Err(e) => Err(api_error("looking up the firewall rule", e)),
        }
    }

    /// The firewall rule opening SSH to the executor's machines; whether this call created it.
    async fn ensure_firewall(&self, cidr: &str) -> Result<bool> {
        if self.firewall_exists().await? {
            return Ok(false);
        }
        let c = self.clients().await?;
        let name = self.firewall_name();
        let body: Firewall = serde_json::from_value(json!({
            "name": name,
            "description": format!("dvc-exec: SSH to the machines of executor {}", self.executor),
            "network": "global/networks/default",
            "direction": "INGRESS",
            "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
            "sourceRanges": [cidr],
            "targetTags": [self.network_tag()],
        }))
        .expect("a valid firewall");
        let op = c
            .firewalls
            .insert()
            .set_project(&self.project)
            .set_body(body)
            .send()
            .await
            .map_err(|e| api_error("creating the firewall rule for SSH", e))?;
        self.wait("creating the firewall rule for SSH", op, false)
            .await?;
        Ok(true)
    }

    async fn delete_firewall(&self) -> Result<()> {
        let c = self.clients().await?;
        match c
            .firewalls
            .delete()
            .set_project(&self.project)
            .set_firewall(self.firewall_name())
            .send()
            .await
        {
            Ok(op) => self.wait("deleting the firewall rule", op, false).await,
            Err(e) if e.http_status_code() == Some(404) => Ok(()),
            Err(e) => Err(api_error("deleting the firewall rule", e)),
        }
    }

    fn instance_body(&self, spec: &LaunchSpec) -> Result<Instance> {
        let (machine_type, accelerator) = self.machine_type()?;
        let gpu = catalog::has_gpu(&machine_type, accelerator.is_some());
        let mut labels = serde_json::Map::new();
        for (k, v) in &spec.labels {
            labels.insert(label_key(k), Value::String(label_value(v)));
        }
        let mut disk = json!({"sourceImage": self.image()});
        if let Some(size) = self.cloud.disk_size {
            disk["diskSizeGb"] = Value::String(size.div_ceil(1 << 30).to_string());
        }
        let mut body = json!({
            "name": spec.name,
            "machineType": format!("zones/{}/machineTypes/{machine_type}", self.zone),
            "labels": labels,
            "tags": {"items": [self.network_tag()]},
            "metadata": {"items": [
                {"key": "user-data", "value": spec.user_data},
                {"key": "ssh-keys", "value": format!("{}:{}", spec.user, spec.ssh_public)},
                {"key": "block-project-ssh-keys", "value": "true"},
            ]},
            "disks": [{"boot": true, "autoDelete": true, "initializeParams": disk}],
            "networkInterfaces": [{
                "network": "global/networks/default",
                "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}],
            }],
            "scheduling": {
                "onHostMaintenance": if gpu || self.cloud.spot { "TERMINATE" } else { "MIGRATE" },
                "automaticRestart": !self.cloud.spot,
                "provisioningModel": if self.cloud.spot { "SPOT" } else { "STANDARD" },
            },
            "serviceAccounts": [],
        });
        if self.cloud.spot {
            body["scheduling"]["instanceTerminationAction"] =
                json!(if spec.keep { "STOP" } else { "DELETE" });
        }
        if let Some((kind, n)) = accelerator {
            body["guestAccelerators"] = json!([{
                "acceleratorType": format!("zones/{}/acceleratorTypes/{kind}", self.zone),
                "acceleratorCount": n,
            }]);
        }
        if let Some(sa) = &self.service_account {
            body["serviceAccounts"] = json!([{
                "email": sa,
                "scopes": ["https://www.googleapis.com/auth/devstorage.read_only"],
            }]);
        }
        serde_json::from_value(body).map_err(|e| {
            Error::failed("cannot build the Compute Engine instance request").source(e)
        })
    }

    fn vm_of(&self, i: &Instance) -> Vm {
        let v = serde_json::to_value(i).unwrap_or(Value::Null);
        let state = match v["status"].as_str().unwrap_or("") {
            "RUNNING" => MachineState::Running,
            "PROVISIONING" | "STAGING" | "REPAIRING" | "PENDING_STOP" => MachineState::Pending,
            "STOPPING" | "STOPPED" | "SUSPENDING" | "SUSPENDED" | "TERMINATED" => {
                MachineState::Stopped
            }
            _ => MachineState::Gone,
        };
        let nic = &v["networkInterfaces"][0];
        let address = nic["accessConfigs"][0]["natIP"]
            .as_str()
            .or(nic["networkIP"].as_str())
            .map(String::from);
        let mut labels = BTreeMap::new();
        if let Some(map) = v["labels"].as_object() {
            for (k, val) in map {
                let key = OWN_KEYS
                    .iter()
                    .find(|own| label_key(own) == *k)
                    .map(|own| own.to_string())
                    .unwrap_or_else(|| k.clone());
                labels.insert(key, val.as_str().unwrap_or_default().to_string());
            }
        }
        Vm {
            id: v["name"].as_str().unwrap_or_default().to_string(),
            state,
            address,
            labels,
            launched: v["creationTimestamp"].as_str().and_then(vm::unix_seconds),
        }
    }
}

#[async_trait]
impl Compute for Gcp {
    fn place(&self) -> String {
        format!("{} of project {}", self.zone, self.project)
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<Vm>> {
        let c = self.clients().await?;
        let filter = labels
            .iter()
            .map(|(k, v)| format!("(labels.{} = \"{}\")", label_key(k), label_value(v)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut found = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut req = c
                .instances
                .list()
                .set_project(&self.project)
                .set_zone(&self.zone)
                .set_filter(&filter);
            if let Some(p) = &page {
                req = req.set_page_token(p);
            }
            let out = req
                .send()
                .await
                .map_err(|e| api_error("listing Compute Engine instances", e))?;
            found.extend(out.items.iter().map(|i| self.vm_of(i)));
            match out.next_page_token.filter(|p| !p.is_empty()) {
                Some(p) => page = Some(p),
                None => break,
            }
        }
        // The filter is the server's; check it here too.
        Ok(found
            .into_iter()
            .filter(|vm| {
                labels.iter().all(|(k, v)| {
                    vm.labels.get(*k).map(String::as_str) == Some(label_value(v).as_str())
                })
            })
            .collect())
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>> {
        let c = self.clients().await?;
        match c
            .instances
            .get()
            .set_project(&self.project)
            .set_zone(&self.zone)
            .set_instance(id)
            .send()
            .await
        {
            Ok(i) => Ok(Some(self.vm_of(&i))),
            Err(e) if e.http_status_code() == Some(404) => Ok(None),
            Err(e) => Err(api_error(&format!("looking up {id}"), e)),
        }
    }

    fn default_user(&self) -> &'static str {
        "dvc"
    }

    async fn plan(&self) -> Result<String> {
        let (machine_type, accelerator) = self.machine_type()?;
        Ok(format!(
            "{} {machine_type}{}{} in {} ({})",
            // "an n2-standard-4", "a g2-standard-8": by how the letter is said.
            if machine_type
                .starts_with(['a', 'e', 'f', 'h', 'i', 'l', 'm', 'n', 'o', 'r', 's', 'x'])
            {
                "an"
            } else {
                "a"
            },
            accelerator
                .map(|(k, n)| format!(" with {n} x {k}"))
                .unwrap_or_default(),
            if self.cloud.spot {
                " spot instance"
            } else {
                ""
            },
            self.place(),
            self.image()
        ))
    }

    async fn create(&self, spec: &LaunchSpec, ui: &Ui) -> Result<String> {
        let body = self.instance_body(spec)?;
        let firewall_created = self.ensure_firewall(&spec.ssh_cidr).await?;
        let c = self.clients().await?;
        let result = async {
            let op = c
                .instances
                .insert()
                .set_project(&self.project)
                .set_zone(&self.zone)
                .set_body(body)
                .send()
                .await
                .map_err(|e| api_error("launching the instance", e))?;
            ui.note(&format!(
                "waiting for Compute Engine to create {}",
                spec.name
            ));
            self.wait("launching the instance", op, true).await
        }
        .await;
        if let Err(e) = result {
            // All or nothing: what this launch made goes.
            let _ = self.delete(&spec.name).await;
            if firewall_created {
                let _ = self.delete_firewall().await;
            }
            return Err(e);
        }
        Ok(spec.name.clone())
    }

    async fn start(&self, id: &str) -> Result<()> {
        let c = self.clients().await?;
        let op = c
            .instances
            .start()
            .set_project(&self.project)
            .set_zone(&self.zone)
            .set_instance(id)
            .send()
            .await
            .map_err(|e| api_error(&format!("starting {id}"), e))?;
        self.wait(&format!("starting {id}"), op, true).await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let c = self.clients().await?;
        let what = format!("deleting {id}");
        match c
            .instances
            .delete()
            .set_project(&self.project)
            .set_zone(&self.zone)
            .set_instance(id)
            .send()
            .await
        {
            Ok(op) => match self.wait(&what, op, true).await {
                Err(e) if e.to_string().contains("not found") => Ok(()),
                other => other,
            },
            Err(e) if e.http_status_code() == Some(404) => Ok(()),
            Err(e) => Err(api_error(&what, e)),
        }
    }

    fn delete_command(&self, id: &str) -> String {
        format!(
            "gcloud compute instances delete {id} --project {} --zone {} --quiet",
            self.project, self.zone
        )
    }

    async fn remove_shared(&self, dry_run: bool, _ui: &Ui) -> Result<Vec<String>> {
        if !self.firewall_exists().await? {
            return Ok(Vec::new());
        }
        if !dry_run {
            self.delete_firewall().await?;
        }
        Ok(vec![format!("firewall rule {}", self.firewall_name())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_what_gcp_accepts() {
        assert_eq!(label_key("dvc-exec:executor"), "dvc_exec_executor");
        assert_eq!(label_key("cost-center"), "cost_center");
        assert_eq!(label_key("Team"), "team");
        assert_eq!(label_key("1x"), "l1x");
        assert_eq!(label_value("Alice@Laptop.local"), "alice-laptop-local");
        assert_eq!(label_value(&"x".repeat(80)).len(), 63);
    }
}
