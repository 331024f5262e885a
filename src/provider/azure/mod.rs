//! Azure VM executors (`type = azure`), behind the `azure` cargo feature.
//!
//! Tokens come from azure_identity (a service principal from the environment or the executor's
//! `tenant_id`/`client_id`/`client_secret`, then the Azure CLI's login, then a managed
//! identity); the rest is a small REST client over Azure Resource Manager that follows ARM's
//! long-running-operation protocol (`Azure-AsyncOperation`, else `Location`; `Retry-After`) and
//! checks `provisioningState` before it calls a VM created. Per executor: a resource group (made
//! and later removed by dvc-exec when it did not exist), a virtual network and a network
//! security group admitting SSH from `ssh_cidr` only; per machine, the VM with its NIC, public IP
//! and OS disk, all deleted with it.

pub mod catalog;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{Mutex, OnceCell};

use super::cloud::TAG_EXECUTOR;
use super::vm::{self, Compute, LaunchSpec, Vm, VmProvider};
use super::{Context, MachineState};
use crate::config::Executor;
use crate::config::executor::CloudSettings;
use crate::error::{Error, Result};
use crate::output::Ui;

const COMPUTE_API: &str = "2024-07-01";
const NETWORK_API: &str = "2024-05-01";
const RESOURCES_API: &str = "2021-04-01";
const SCOPE: &str = "https://management.azure.com/.default";

/// The provider for `type = azure`.
pub fn provider(executor: Executor, ctx: Context) -> Result<VmProvider<Azure>> {
    let azure = Azure::new(&executor)?;
    Ok(VmProvider::new(executor, ctx, azure))
}

/// Azure Resource Manager calls for one executor.
pub struct Azure {
    executor: String,
    cloud: CloudSettings,
    subscription: String,
    group: String,
    location: String,
    base: String,
    service_principal: Option<(String, String, String)>,
    identity: Option<String>,
    http: reqwest::Client,
    credential: OnceCell<Arc<dyn TokenCredential>>,
    token: Mutex<Option<(String, std::time::Instant)>>,
}

/// What ARM answered.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// Turn an ARM error into one that says what to change.
fn arm_error(what: &str, status: u16, body: &Value) -> Error {
    let e = if body["error"].is_object() {
        &body["error"]
    } else {
        body
    };
    let code = e["code"].as_str().unwrap_or("");
    let message = e["message"].as_str().unwrap_or("");
    let text = format!("{code}: {message}");
    let lower = text.to_ascii_lowercase();
    let base = |usage: bool| {
        if usage {
            Error::usage(format!("{what} failed"))
        } else {
            Error::failed(format!("{what} failed"))
        }
        .source(std::io::Error::other(text.clone()))
    };
    match code {
        "SkuNotAvailable" | "AllocationFailed" | "ZonalAllocationFailed"
        | "OverconstrainedAllocationRequest" | "OverconstrainedZonalAllocationRequest" => base(false)
            .hint("Azure has no capacity for this VM size in this location now; try another location (location = ...) or machine"),
        "QuotaExceeded" | "OperationNotAllowed" if lower.contains("quota") => base(false)
            .hint("your Azure quota is exhausted for this VM family in this location; request more under Subscriptions > Usage + quotas, or pick a smaller machine"),
        "AuthorizationFailed" | "LinkedAuthorizationFailed" | "Forbidden" => base(true)
            .hint("your Azure identity may not do this; give it the Contributor role on the subscription or resource group, and check subscription = ..."),
        "InvalidAuthenticationToken" | "ExpiredAuthenticationToken" | "AuthenticationFailed" => base(true)
            .hint("log in again with `az login`, or check AZURE_CLIENT_ID / AZURE_CLIENT_SECRET / AZURE_TENANT_ID"),
        "ImageNotFound" | "PlatformImageNotFound" | "InvalidImageReference" => base(true)
            .hint("the image does not exist in this location; set image = ubuntu, nvidia, a URN (publisher:offer:sku:version) or an image id"),
        "SubscriptionNotFound" | "InvalidSubscriptionId" => base(true)
            .hint("check subscription = ...: it must be the id of a subscription your identity can use"),
        "InvalidParameter" | "BadRequest" | "InvalidRequestFormat" | "InvalidTemplate"
        | "LocationNotAvailableForResourceType" | "NoRegisteredProviderFound" => base(true)
            .hint("Azure refused a setting; check instance_type, machine, image, disk_size, location and user"),
        _ if status == 401 => base(true)
            .hint("log in again with `az login`, or check AZURE_CLIENT_ID / AZURE_CLIENT_SECRET / AZURE_TENANT_ID"),
        _ if status == 403 => base(true)
            .hint("your Azure identity may not do this; give it the Contributor role on the subscription or resource group"),
        _ => base(false),
    }
}

fn tag_map(labels: &[(String, String)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

impl Azure {
    /// The calls for `executor`; checks its settings.
    pub fn new(executor: &Executor) -> Result<Self> {
        let setting = |k: &str| executor.raw.keys.get(k).map(|s| s.value.clone());
        let cloud = executor.cloud.clone().unwrap_or_default();
        let subscription = setting("subscription")
            .or_else(|| std::env::var("AZURE_SUBSCRIPTION_ID").ok())
            .ok_or_else(|| {
                Error::usage(format!("executor {:?} has no Azure subscription", executor.name))
                    .hint(format!(
                        "set it: dvc-exec executor modify {} subscription SUBSCRIPTION-ID (az account show --query id)",
                        executor.name
                    ))
            })?;
        let location = setting("location")
            .or_else(|| cloud.region.clone())
            .map(|r| catalog::location(&r))
            .unwrap_or_else(|| "eastus".into());
        let group = setting("resource_group")
            .unwrap_or_else(|| format!("dvc-exec-{}", vm::cloud_name(&executor.name)));
        let service_principal = match (
            setting("tenant_id"),
            setting("client_id"),
            setting("client_secret"),
        ) {
            (Some(t), Some(c), Some(s)) => Some((t, c, s)),
            (None, None, None) => match (
                std::env::var("AZURE_TENANT_ID"),
                std::env::var("AZURE_CLIENT_ID"),
                std::env::var("AZURE_CLIENT_SECRET"),
            ) {
                (Ok(t), Ok(c), Ok(s)) => Some((t, c, s)),
                _ => None,
            },
            _ => {
                return Err(Error::usage(format!(
                    "executor {:?} sets only some of tenant_id, client_id and client_secret",
                    executor.name
                ))
                .hint("set all three (client_secret at the local or global level), or none to use the Azure CLI's login"));
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::failed("cannot set up an HTTP client").source(e))?;
        Ok(Self {
            executor: executor.name.clone(),
            cloud,
            subscription,
            group,
            location,
            base: setting("endpoint_url")
                .unwrap_or_else(|| "https://management.azure.com".into())
                .trim_end_matches('/')
                .to_string(),
            service_principal,
            identity: setting("identity"),
            http,
            credential: OnceCell::new(),
            token: Mutex::new(None),
        })
    }

    /// The first credential of the chain that gives a token: service principal, Azure CLI,
    /// managed identity.
    async fn bearer(&self) -> Result<String> {
        let mut cached = self.token.lock().await;
        if let Some((t, at)) = cached.as_ref()
            && at.elapsed() < Duration::from_secs(30 * 60)
        {
            return Ok(t.clone());
        }
        let mut errors = Vec::new();
        if let Some(c) = self.credential.get() {
            let t = c.get_token(&[SCOPE], None).await.map_err(|e| {
                Error::usage("cannot get an Azure token")
                    .source(e)
                    .hint("log in again with `az login`")
            })?;
            let t = t.token.secret().to_string();
            *cached = Some((t.clone(), std::time::Instant::now()));
            return Ok(t);
        }
        let mut chain: Vec<(&str, Arc<dyn TokenCredential>)> = Vec::new();
        if let Some((tenant, client, secret)) = &self.service_principal {
            match azure_identity::ClientSecretCredential::new(
                tenant,
                client.clone(),
                secret.clone().into(),
                None,
            ) {
                Ok(c) => chain.push(("the service principal", c)),
                Err(e) => errors.push(format!("the service principal: {e}")),
            }
        }
        match azure_identity::AzureCliCredential::new(None) {
            Ok(c) => chain.push(("the Azure CLI", c)),
            Err(e) => errors.push(format!("the Azure CLI: {e}")),
        }
        if std::env::var_os("IDENTITY_ENDPOINT").is_some()
            || std::env::var_os("MSI_ENDPOINT").is_some()
            || self.base == "https://management.azure.com"
        {
            match azure_identity::ManagedIdentityCredential::new(None) {
                Ok(c) => chain.push(("a managed identity", c)),
                Err(e) => errors.push(format!("a managed identity: {e}")),
            }
        }
        for (name, c) in chain {
            match tokio::time::timeout(Duration::from_secs(30), c.get_token(&[SCOPE], None)).await {
                Ok(Ok(t)) => {
                    let t = t.token.secret().to_string();
                    let _ = self.credential.set(c);
                    *cached = Some((t.clone(), std::time::Instant::now()));
                    return Ok(t);
                }
                Ok(Err(e)) => errors.push(format!("{name}: {e}")),
                Err(_) => errors.push(format!("{name}: timed out")),
            }
        }
        Err(Error::usage("no Azure credentials were found")
            .source(std::io::Error::other(errors.join("; ")))
            .hint(
                "run `az login`, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
            ))
    }

    fn url(&self, path: &str, api: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        if path.starts_with("http") {
            return path.to_string();
        }
        format!("{}{path}{sep}api-version={api}", self.base)
    }

    fn group_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourcegroups/{}",
            self.subscription, self.group
        )
    }

    fn provider_path(&self, provider: &str, kind: &str, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{provider}/{kind}/{name}",
            self.subscription, self.group
        )
    }

    fn vm_path(&self, name: &str) -> String {
        self.provider_path("Microsoft.Compute", "virtualMachines", name)
    }

    fn vnet_path(&self) -> String {
        self.provider_path(
            "Microsoft.Network",
            "virtualNetworks",
            &format!("dvc-exec-{}-vnet", vm::cloud_name(&self.executor)),
        )
    }

    fn nsg_path(&self) -> String {
        self.provider_path(
            "Microsoft.Network",
            "networkSecurityGroups",
            &format!("dvc-exec-{}-nsg", vm::cloud_name(&self.executor)),
        )
    }

    /// One request; `url` is complete.
    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let token = self.bearer().await?;
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), url).bearer_auth(&token);
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_string());
            }
            let result = req.send().await;
            let retryable = match &result {
                Ok(r) => r.status().as_u16() == 429 || r.status().is_server_error(),
                Err(e) => e.is_connect() || e.is_timeout(),
            };
            if retryable && attempt < 4 {
                let after = result
                    .as_ref()
                    .ok()
                    .and_then(|r| retry_after_headers(r.headers()));
                tokio::time::sleep(vm::poll_delay(attempt + 2, after)).await;
                attempt += 1;
                continue;
            }
            let r = result.map_err(|e| {
                Error::failed(format!("{what} failed: Azure could not be reached"))
                    .source(e)
                    .hint("check your network, or endpoint_url if you set one")
            })?;
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await.unwrap_or_default();
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
    }

    /// A call that may be a long-running operation: follow it to its end. Returns the final
    /// body (for a PUT, the resource read again).
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let first = self.send(what, method.clone(), url, body).await?;
        if first.status >= 400 {
            return Err(arm_error(what, first.status, &first.body));
        }
        let header = |h: &reqwest::header::HeaderMap, k: &str| {
            h.get(k).and_then(|v| v.to_str().ok()).map(String::from)
        };
        let async_url = header(&first.headers, "azure-asyncoperation");
        let location = header(&first.headers, "location");
        if async_url.is_some() || (location.is_some() && first.status == 202) {
            let mut delay = retry_after_headers(&first.headers);
            let mut attempt = 0;
            loop {
                tokio::time::sleep(vm::poll_delay(attempt, delay)).await;
                attempt += 1;
                if attempt > 600 {
                    return Err(Error::failed(format!("{what} did not finish in time")));
                }
                if let Some(u) = &async_url {
                    let r = self.send(what, reqwest::Method::GET, u, None).await?;
                    if r.status >= 400 {
                        return Err(arm_error(what, r.status, &r.body));
                    }
                    delay = retry_after_headers(&r.headers);
                    match r.body["status"].as_str().unwrap_or("") {
                        "Succeeded" => break,
                        "Failed" | "Canceled" => return Err(arm_error(what, 200, &r.body)),
                        _ => continue,
                    }
                } else if let Some(u) = &location {
                    let r = self.send(what, reqwest::Method::GET, u, None).await?;
                    match r.status {
                        202 => delay = retry_after_headers(&r.headers),
                        s if s >= 400 => return Err(arm_error(what, s, &r.body)),
                        _ => {
                            if method != reqwest::Method::PUT {
                                return Ok(r.body);
                            }
                            break;
                        }
                    }
                }
            }
        } else if method != reqwest::Method::PUT {
            return Ok(first.body);
        }
        if method != reqwest::Method::PUT {
            return Ok(Value::Null);
        }
        // A PUT is done when the resource says so, not when the first answer came.
        let mut attempt = 0;
        loop {
            let r = self.send(what, reqwest::Method::GET, url, None).await?;
            if r.status >= 400 {
                return Err(arm_error(what, r.status, &r.body));
            }
            match r.body["properties"]["provisioningState"].as_str() {
                None | Some("Succeeded") => return Ok(r.body),
                Some("Failed") | Some("Canceled") => {
                    return Err(arm_error(
                        what,
                        200,
                        &json!({"code": "ProvisioningFailed", "message": format!("provisioningState is {}", r.body["properties"]["provisioningState"])}),
                    ));
                }
                Some(_) => {}
            }
            tokio::time::sleep(vm::poll_delay(attempt, None)).await;
            attempt += 1;
            if attempt > 600 {
                return Err(Error::failed(format!("{what} did not finish in time")));
            }
        }
    }

    async fn exists(&self, what: &str, url: &str) -> Result<Option<Value>> {
        let r = self.send(what, reqwest::Method::GET, url, None).await?;
        match r.status {
            404 => Ok(None),
            s if s >= 400 => Err(arm_error(what, s, &r.body)),
            _ => Ok(Some(r.body)),
        }
    }

    fn own_tags(&self) -> Value {
        json!({ TAG_EXECUTOR: self.executor })
    }

    /// The resource group, virtual network and security group the executor's machines share.
    async fn ensure_shared(&self, cidr: &str) -> Result<()> {
        let rg = self.url(&self.group_path(), RESOURCES_API);
        if self
            .exists("looking up the resource group", &rg)
            .await?
            .is_none()
        {
            self.call(
                "creating the resource group",
                reqwest::Method::PUT,
                &rg,
                Some(&json!({"location": self.location, "tags": self.own_tags()})),
            )
            .await?;
        }
        let vnet = json!({
            "location": self.location,
            "tags": self.own_tags(),
            "properties": {
                "addressSpace": {"addressPrefixes": ["10.42.0.0/16"]},
                "subnets": [{"name": "default", "properties": {"addressPrefix": "10.42.0.0/24"}}],
            },
        });
        self.call(
            "creating the virtual network",
            reqwest::Method::PUT,
            &self.url(&self.vnet_path(), NETWORK_API),
            Some(&vnet),
        )
        .await?;
        let nsg = json!({
            "location": self.location,
            "tags": self.own_tags(),
            "properties": {"securityRules": [{
                "name": "dvc-exec-ssh",
                "properties": {
                    "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22",
                    "sourceAddressPrefix": cidr, "destinationAddressPrefix": "*",
                    "access": "Allow", "priority": 1000, "direction": "Inbound",
                },
            }]},
        });
        self.call(
            "creating the network security group",
            reqwest::Method::PUT,
            &self.url(&self.nsg_path(), NETWORK_API),
            Some(&nsg),
        )
        .await?;
        Ok(())
    }

    fn vm_size(&self) -> Result<String> {
        if let Some(t) = &self.cloud.instance_type {
            return Ok(t.clone());
        }
        let spec = self.cloud.machine_or_default();
        catalog::vm_size(&spec).map(String::from).map_err(|e| {
            Error::usage(format!("executor {:?}: {e}", self.executor))
                .hint("set machine = SIZE[+GPU[*COUNT]] with a GPU Azure has, or instance_type to an Azure VM size")
        })
    }

    fn image(&self) -> Result<Value> {
        let gpu = self.cloud.machine.as_ref().is_some_and(|m| m.gpu.is_some());
        let text = self
            .cloud
            .image
            .clone()
            .unwrap_or_else(|| if gpu { "nvidia" } else { "ubuntu" }.into());
        catalog::image(&text).map_err(|e| {
            Error::usage(format!("executor {:?}: {e}", self.executor))
                .hint("set image = ubuntu, nvidia, a URN or an image id")
        })
    }

    fn vm_body(&self, spec: &LaunchSpec) -> Result<Value> {
        // Azure reserves root (and admin, ...) as the admin user: log in as root through
        // cloud-init instead (the user data then lets root in with the same key).
        let admin = if spec.user == "root" {
            "azureuser"
        } else {
            spec.user.as_str()
        };
        let custom = base64::engine::general_purpose::STANDARD.encode(spec.user_data.as_bytes());
        if custom.len() > 65535 {
            return Err(
                Error::usage("the machine's user data is over Azure's 64 KiB")
                    .hint("shorten the startup_script: let it download and run a longer script"),
            );
        }
        let mut os_disk = json!({
            "createOption": "FromImage",
            "deleteOption": "Delete",
            "managedDisk": {"storageAccountType": "StandardSSD_LRS"},
        });
        if let Some(size) = self.cloud.disk_size {
            os_disk["diskSizeGB"] = json!(size.div_ceil(1 << 30));
        }
        let subnet = format!("{}/subnets/default", self.vnet_path());
        let mut body = json!({
            "location": self.location,
            "tags": tag_map(&spec.labels),
            "properties": {
                "hardwareProfile": {"vmSize": self.vm_size()?},
                "storageProfile": {"imageReference": self.image()?, "osDisk": os_disk},
                "osProfile": {
                    "computerName": spec.name,
                    "adminUsername": admin,
                    "customData": custom,
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": true,
                        "ssh": {"publicKeys": [{
                            "path": format!("/home/{admin}/.ssh/authorized_keys"),
                            "keyData": spec.ssh_public,
                        }]},
                    },
                },
                "networkProfile": {
                    "networkApiVersion": "2020-11-01",
                    "networkInterfaceConfigurations": [{
                        "name": format!("{}-nic", spec.name),
                        "properties": {
                            "primary": true,
                            "deleteOption": "Delete",
                            "networkSecurityGroup": {"id": self.nsg_path()},
                            "ipConfigurations": [{
                                "name": "ipconfig",
                                "properties": {
                                    "subnet": {"id": subnet},
                                    "publicIPAddressConfiguration": {
                                        "name": format!("{}-ip", spec.name),
                                        "sku": {"name": "Standard"},
                                        "properties": {
                                            "deleteOption": "Delete",
                                            "publicIPAllocationMethod": "Static",
                                        },
                                    },
                                },
                            }],
                        },
                    }],
                },
            },
        });
        if let Some(id) = &self.identity {
            // Only for data = pull: the VM reads the DVC remote as this identity. Without it
            // the VM has no identity at all.
            body["identity"] =
                json!({"type": "UserAssigned", "userAssignedIdentities": {id.as_str(): {}}});
        }
        if self.cloud.spot {
            body["properties"]["priority"] = json!("Spot");
            body["properties"]["evictionPolicy"] =
                json!(if spec.keep { "Deallocate" } else { "Delete" });
            body["properties"]["billingProfile"] =
                json!({"maxPrice": self.cloud.spot_price.filter(|p| *p > 0.0).unwrap_or(-1.0)});
        }
        Ok(body)
    }

    /// A VM as ARM reports it with its instance view, and its public address.
    async fn vm_of(&self, v: &Value) -> Result<Vm> {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let mut view = v["properties"]["instanceView"].clone();
        if view.is_null() {
            let url = self.url(
                &format!("{}/instanceView", self.vm_path(&name)),
                COMPUTE_API,
            );
            view = self
                .exists(&format!("looking up {name}"), &url)
                .await?
                .unwrap_or(Value::Null);
        }
        let codes: Vec<&str> = view["statuses"]
            .as_array()
            .map(|s| s.iter().filter_map(|c| c["code"].as_str()).collect())
            .unwrap_or_default();
        let provisioning = v["properties"]["provisioningState"].as_str().unwrap_or("");
        let power = codes
            .iter()
            .find_map(|c| c.strip_prefix("PowerState/"))
            .unwrap_or("");
        let state = match (provisioning, power) {
            ("Deleting", _) => MachineState::Gone,
            (_, "running") => MachineState::Running,
            (_, "stopped" | "stopping" | "deallocated" | "deallocating") => MachineState::Stopped,
            _ => MachineState::Pending,
        };
        let address = if state == MachineState::Running {
            let ip = self.url(
                &self.provider_path(
                    "Microsoft.Network",
                    "publicIPAddresses",
                    &format!("{name}-ip"),
                ),
                NETWORK_API,
            );
            self.exists("looking up the public address", &ip)
                .await?
                .and_then(|b| b["properties"]["ipAddress"].as_str().map(String::from))
        } else {
            None
        };
        let labels: BTreeMap<String, String> = v["tags"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let launched = v["properties"]["timeCreated"]
            .as_str()
            .and_then(crate::provider::vm::unix_seconds);
        Ok(Vm {
            id: name,
            state,
            address,
            labels,
            launched,
        })
    }
}

fn retry_after_headers(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[async_trait]
impl Compute for Azure {
    fn place(&self) -> String {
        format!("{} (resource group {})", self.location, self.group)
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<Vm>> {
        let rg = self.url(&self.group_path(), RESOURCES_API);
        if self
            .exists("looking up the resource group", &rg)
            .await?
            .is_none()
        {
            return Ok(Vec::new());
        }
        let mut url = self.url(
            &format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines",
                self.subscription, self.group
            ),
            COMPUTE_API,
        );
        let mut found = Vec::new();
        loop {
            let r = self
                .send("listing Azure VMs", reqwest::Method::GET, &url, None)
                .await?;
            if r.status >= 400 {
                return Err(arm_error("listing Azure VMs", r.status, &r.body));
            }
            for v in r.body["value"].as_array().cloned().unwrap_or_default() {
                let tags = &v["tags"];
                if labels
                    .iter()
                    .all(|(k, val)| tags[*k].as_str() == Some(*val))
                {
                    found.push(self.vm_of(&v).await?);
                }
            }
            match r.body["nextLink"].as_str() {
                Some(next) if !next.is_empty() => url = next.to_string(),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>> {
        let url = self.url(
            &format!("{}?$expand=instanceView", self.vm_path(id)),
            COMPUTE_API,
        );
        match self.exists(&format!("looking up {id}"), &url).await? {
            Some(v) => Ok(Some(self.vm_of(&v).await?)),
            None => Ok(None),
        }
    }

    fn default_user(&self) -> &'static str {
        "azureuser"
    }

    async fn plan(&self) -> Result<String> {
        let size = self.vm_size()?;
        let image = self.image()?;
        let image = match image["id"].as_str() {
            Some(id) => id.to_string(),
            None => format!(
                "{}:{}:{}:{}",
                image["publisher"].as_str().unwrap_or(""),
                image["offer"].as_str().unwrap_or(""),
                image["sku"].as_str().unwrap_or(""),
                image["version"].as_str().unwrap_or("")
            ),
        };
        Ok(format!(
            "a {size}{} in {} ({image})",
            if self.cloud.spot { " spot VM" } else { "" },
            self.place()
        ))
    }

    async fn create(&self, spec: &LaunchSpec, ui: &Ui) -> Result<String> {
        let body = self.vm_body(spec)?;
        self.ensure_shared(&spec.ssh_cidr).await?;
        ui.note(&format!("waiting for Azure to create {}", spec.name));
        let url = self.url(&self.vm_path(&spec.name), COMPUTE_API);
        match self
            .call("launching the VM", reqwest::Method::PUT, &url, Some(&body))
            .await
        {
            Ok(_) => Ok(spec.name.clone()),
            Err(e) => {
                // All or nothing: a failed VM still holds its NIC, IP and disk.
                let _ = self.delete(&spec.name).await;
                Err(e)
            }
        }
    }

    async fn start(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("{}/start", self.vm_path(id)), COMPUTE_API);
        self.call(&format!("starting {id}"), reqwest::Method::POST, &url, None)
            .await
            .map(|_| ())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let url = self.url(&self.vm_path(id), COMPUTE_API);
        match self
            .call(
                &format!("deleting {id}"),
                reqwest::Method::DELETE,
                &url,
                None,
            )
            .await
        {
            Err(e) if e.to_string().contains("ResourceNotFound") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn park(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("{}/instanceView", self.vm_path(id)), COMPUTE_API);
        let view = self.exists(&format!("looking up {id}"), &url).await?;
        let stopped = view.is_some_and(|v| {
            v["statuses"]
                .as_array()
                .is_some_and(|s| s.iter().any(|c| c["code"] == "PowerState/stopped"))
        });
        if stopped {
            let url = self.url(&format!("{}/deallocate", self.vm_path(id)), COMPUTE_API);
            self.call(
                &format!("deallocating {id}"),
                reqwest::Method::POST,
                &url,
                None,
            )
            .await?;
        }
        Ok(())
    }

    fn delete_command(&self, id: &str) -> String {
        format!(
            "az vm delete --subscription {} --resource-group {} --name {id} --yes",
            self.subscription, self.group
        )
    }

    async fn remove_shared(&self, dry_run: bool, _ui: &Ui) -> Result<Vec<String>> {
        let rg_url = self.url(&self.group_path(), RESOURCES_API);
        let Some(rg) = self
            .exists("looking up the resource group", &rg_url)
            .await?
        else {
            return Ok(Vec::new());
        };
        // A group dvc-exec made goes whole; in someone else's, only what dvc-exec put there.
        if rg["tags"][TAG_EXECUTOR].as_str() == Some(self.executor.as_str()) {
            if !dry_run {
                self.call(
                    "deleting the resource group",
                    reqwest::Method::DELETE,
                    &rg_url,
                    None,
                )
                .await?;
            }
            return Ok(vec![format!("resource group {}", self.group)]);
        }
        let mut removed = Vec::new();
        for (what, path) in [
            ("network security group", self.nsg_path()),
            ("virtual network", self.vnet_path()),
        ] {
            let url = self.url(&path, NETWORK_API);
            if self
                .exists(&format!("looking up the {what}"), &url)
                .await?
                .is_some()
            {
                removed.push(format!("{what} {}", path.rsplit('/').next().unwrap_or("")));
                if !dry_run {
                    self.call(
                        &format!("deleting the {what}"),
                        reqwest::Method::DELETE,
                        &url,
                        None,
                    )
                    .await?;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_errors_name_the_fix() {
        let e = arm_error(
            "launching the VM",
            409,
            &json!({"error": {"code": "SkuNotAvailable", "message": "no"}}),
        );
        assert!(e.hint_text().unwrap().contains("capacity"));
        let e = arm_error(
            "launching the VM",
            403,
            &json!({"error": {"code": "AuthorizationFailed", "message": "no"}}),
        );
        assert_eq!(e.kind(), crate::error::Kind::Usage);
    }
}
