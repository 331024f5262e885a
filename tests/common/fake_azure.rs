//! A fake Azure Resource Manager, from the public REST shapes: resource groups, virtual
//! networks, network security groups, public IPs and VMs, with PUT/DELETE/POST answered as
//! long-running operations (`Azure-AsyncOperation` or `Location`) that take a few polls. It
//! checks `api-version`, the bearer token and the request bodies against what ARM requires.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::http::{Request, Response, serve};

/// The token the fake `az` hands out and the fake accepts.
pub const TOKEN: &str = "fake-arm-token";

#[derive(Clone)]
enum Effect {
    Provisioned(String),
    Remove(String),
    Start(String),
    Deallocate(String),
    Fail(String, String, String),
}

struct Op {
    polls_left: u32,
    effect: Effect,
    result: Option<(u16, Value)>,
}

#[derive(Default)]
struct State {
    /// Resources by lowercased id.
    resources: BTreeMap<String, Value>,
    ops: BTreeMap<String, Op>,
    next: u64,
    fail_next_vm: Option<(String, String)>,
    log: Vec<String>,
}

/// The fake, serving on a loopback port.
#[derive(Clone)]
pub struct FakeAzure {
    state: Arc<Mutex<State>>,
    pub port: u16,
}

fn err(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, json!({"error": {"code": code, "message": message}}))
}

const RESERVED_USERS: &[&str] = &[
    "root",
    "admin",
    "administrator",
    "user",
    "user1",
    "test",
    "guest",
    "sys",
    "support",
];

/// Why a VM body would be refused by ARM, if it would.
fn check_vm(s: &State, b: &Value) -> Result<(), String> {
    b["location"].as_str().ok_or("location: required")?;
    let p = &b["properties"];
    p["hardwareProfile"]["vmSize"]
        .as_str()
        .ok_or("properties.hardwareProfile.vmSize: required")?;
    let img = &p["storageProfile"]["imageReference"];
    let by_urn = ["publisher", "offer", "sku", "version"]
        .iter()
        .all(|k| img[*k].is_string());
    if !by_urn && !img["id"].is_string() {
        return Err(
            "properties.storageProfile.imageReference: publisher, offer, sku and version, or id"
                .into(),
        );
    }
    let os = &p["osProfile"];
    let admin = os["adminUsername"]
        .as_str()
        .ok_or("osProfile.adminUsername: required")?;
    if RESERVED_USERS.contains(&admin) {
        return Err(format!(
            "The Admin Username specified is not allowed: {admin}"
        ));
    }
    os["computerName"]
        .as_str()
        .ok_or("osProfile.computerName: required")?;
    if let Some(c) = os["customData"].as_str() {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(c)
            .map_err(|_| "osProfile.customData must be base64")?;
    }
    let keys = &os["linuxConfiguration"]["ssh"]["publicKeys"][0];
    if keys["path"].as_str() != Some(&format!("/home/{admin}/.ssh/authorized_keys")) {
        return Err("linuxConfiguration.ssh.publicKeys[0].path must be /home/<adminUsername>/.ssh/authorized_keys".into());
    }
    let net = &p["networkProfile"];
    let nic = &net["networkInterfaceConfigurations"][0];
    if nic.is_object() {
        if !net["networkApiVersion"].is_string() {
            return Err(
                "networkProfile.networkApiVersion is required with networkInterfaceConfigurations"
                    .into(),
            );
        }
        let ipc = &nic["properties"]["ipConfigurations"][0]["properties"];
        for id in [
            nic["properties"]["networkSecurityGroup"]["id"].as_str(),
            ipc["subnet"]["id"].as_str(),
        ]
        .into_iter()
        .flatten()
        {
            let parent = id.split("/subnets/").next().unwrap().to_ascii_lowercase();
            if !s.resources.contains_key(&parent) {
                return Err(format!("Resource {id} not found"));
            }
        }
    } else if !net["networkInterfaces"][0]["id"].is_string() {
        return Err("properties.networkProfile: a network interface is required".into());
    }
    if p["priority"] == "Spot" && !p["evictionPolicy"].is_string() {
        return Err("Spot VMs need an evictionPolicy".into());
    }
    if let Some(tags) = b["tags"].as_object() {
        if tags.len() > 50 {
            return Err("at most 50 tags".into());
        }
        if tags
            .keys()
            .any(|k| k.contains(['<', '>', '%', '&', '\\', '?', '/']))
        {
            return Err("tag names cannot contain <, >, %, &, \\, ?, /".into());
        }
    }
    Ok(())
}

impl FakeAzure {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s2 = state.clone();
        let port = serve(move |req| handle(&s2, port_of(req), req));
        Self { state, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        s.resources
            .iter()
            .filter(|(id, _)| id.contains(&format!("/{}/", kind.to_ascii_lowercase())))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// (name, power state or provisioning state) of every VM.
    pub fn instances(&self) -> Vec<(String, String)> {
        self.of_kind("virtualMachines")
            .iter()
            .map(|v| {
                let state = if v["properties"]["provisioningState"] == "Succeeded" {
                    v["_power"].as_str().unwrap_or("").to_string()
                } else {
                    v["properties"]["provisioningState"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                };
                (v["name"].as_str().unwrap_or("").to_string(), state)
            })
            .collect()
    }

    pub fn instance(&self, name: &str) -> Value {
        self.of_kind("virtualMachines")
            .into_iter()
            .find(|v| v["name"] == name)
            .unwrap()
    }

    /// A resource by its (lowercased) id.
    pub fn resource(&self, id: &str) -> Value {
        self.state.lock().unwrap().resources[id].clone()
    }

    /// Every resource id there is.
    pub fn resource_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .resources
            .keys()
            .cloned()
            .collect()
    }

    pub fn fail_next_create(&self, code: &str, message: &str) {
        self.state.lock().unwrap().fail_next_vm = Some((code.into(), message.into()));
    }

    /// A spot eviction: with policy Delete the VM (and what goes with it) is gone, else it is
    /// deallocated.
    pub fn preempt(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let Some(id) = s
            .resources
            .iter()
            .find(|(_, v)| v["name"] == name && v["type"] == "Microsoft.Compute/virtualMachines")
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if s.resources[&id]["properties"]["evictionPolicy"] == "Delete" {
            remove(&mut s, &id);
        } else {
            s.resources.get_mut(&id).unwrap()["_power"] = json!("deallocated");
        }
    }

    /// The VM's operating system shuts down (what its watchdog does): Azure then reports it
    /// stopped, still allocated and billed.
    pub fn power_off(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        for v in s.resources.values_mut() {
            if v["name"] == name && v["type"] == "Microsoft.Compute/virtualMachines" {
                v["_power"] = json!("stopped");
            }
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn port_of(req: &Request) -> String {
    req.headers.get("host").cloned().unwrap_or_default()
}

/// Remove a resource and, for a VM, what it created with deleteOption Delete.
fn remove(s: &mut State, id: &str) {
    if let Some(v) = s.resources.remove(id)
        && v["type"] == "Microsoft.Compute/virtualMachines"
    {
        let ip = v["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"]["name"]
            .as_str()
            .unwrap_or("")
            .to_ascii_lowercase();
        s.resources
            .retain(|k, _| !k.ends_with(&format!("/publicipaddresses/{ip}")));
    }
    // Everything inside a removed group goes with it.
    if !id.contains("/providers/") {
        let prefix = format!("{id}/");
        s.resources.retain(|k, _| !k.starts_with(&prefix));
    }
}

fn new_op(
    s: &mut State,
    host: &str,
    effect: Effect,
    location_style: bool,
) -> Vec<(String, String)> {
    s.next += 1;
    let id = format!("op{}", s.next);
    s.ops.insert(
        id.clone(),
        Op {
            polls_left: 2,
            effect,
            result: None,
        },
    );
    if location_style {
        vec![
            (
                "Location".into(),
                format!("http://{host}/fake-operations/{id}"),
            ),
            ("Retry-After".into(), "0".into()),
        ]
    } else {
        vec![(
            "Azure-AsyncOperation".into(),
            format!("http://{host}/fake-async/{id}?api-version=2024-07-01"),
        )]
    }
}

/// A 202 whose operation is followed through `Location`.
fn accepted(s: &mut State, host: &str, effect: Effect, mut r: Response) -> Response {
    r.headers = new_op(s, host, effect, true);
    r
}

fn finish(s: &mut State, id: &str) -> Option<(u16, Value)> {
    let op = s.ops.get_mut(id)?;
    if let Some(r) = &op.result {
        return Some(r.clone());
    }
    if op.polls_left > 0 {
        op.polls_left -= 1;
        return None;
    }
    let effect = op.effect.clone();
    let result = match effect {
        Effect::Provisioned(rid) => {
            if let Some(r) = s.resources.get_mut(&rid) {
                r["properties"]["provisioningState"] = json!("Succeeded");
                r["_power"] = json!("running");
            }
            let public_ip = s.resources.get(&rid).and_then(|r| {
                r["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]
                    ["ipConfigurations"][0]["properties"]["publicIPAddressConfiguration"]["name"]
                    .as_str()
                    .map(String::from)
            });
            if let Some(ip) = public_ip {
                let group = rid.split("/providers/").next().unwrap().to_string();
                let ip_id = format!(
                    "{group}/providers/microsoft.network/publicipaddresses/{}",
                    ip.to_ascii_lowercase()
                );
                s.resources.insert(ip_id, json!({"name": ip, "type": "Microsoft.Network/publicIPAddresses", "properties": {"ipAddress": "127.0.0.1", "provisioningState": "Succeeded"}}));
            }
            (200, json!({"status": "Succeeded"}))
        }
        Effect::Remove(rid) => {
            remove(s, &rid);
            (200, json!({"status": "Succeeded"}))
        }
        Effect::Start(rid) => {
            if let Some(r) = s.resources.get_mut(&rid) {
                r["_power"] = json!("running");
            }
            (200, json!({"status": "Succeeded"}))
        }
        Effect::Deallocate(rid) => {
            if let Some(r) = s.resources.get_mut(&rid) {
                r["_power"] = json!("deallocated");
            }
            (200, json!({"status": "Succeeded"}))
        }
        Effect::Fail(rid, code, message) => {
            if let Some(r) = s.resources.get_mut(&rid) {
                r["properties"]["provisioningState"] = json!("Failed");
            }
            (
                200,
                json!({"status": "Failed", "error": {"code": code, "message": message}}),
            )
        }
    };
    s.ops.get_mut(id).unwrap().result = Some(result.clone());
    Some(result)
}

fn public(v: &Value, expand: bool) -> Value {
    let mut v = v.clone();
    let power = v["_power"].as_str().unwrap_or("starting").to_string();
    if let Some(m) = v.as_object_mut() {
        m.remove("_power");
    }
    if expand {
        v["properties"]["instanceView"] = json!({"statuses": [
            {"code": format!("ProvisioningState/{}", v["properties"]["provisioningState"].as_str().unwrap_or("").to_ascii_lowercase())},
            {"code": format!("PowerState/{power}")},
        ]});
    }
    v
}

fn handle(state: &Mutex<State>, host: String, req: &Request) -> Response {
    let mut s = state.lock().unwrap();
    s.log.push(format!("{} {}", req.method, req.path));
    if req.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
        return err(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    if let Some(op) = req.path.strip_prefix("/fake-async/") {
        return match finish(&mut s, op) {
            None => Response::json(200, json!({"status": "InProgress"})),
            Some((st, body)) => Response::json(st, body),
        };
    }
    if let Some(op) = req.path.strip_prefix("/fake-operations/") {
        return match finish(&mut s, op) {
            None => Response::json(202, Value::Null)
                .header("Retry-After", "0")
                .header("Location", &format!("http://{host}/fake-operations/{op}")),
            Some((200, b)) if b["status"] == "Succeeded" => Response::json(204, Value::Null),
            Some((_, b)) => Response::json(400, json!({"error": b["error"]})),
        };
    }
    if !req.query.contains_key("api-version") {
        return err(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    }
    let id = req.path.trim_end_matches('/').to_ascii_lowercase();
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let lower: Vec<String> = parts.iter().map(|p| p.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let group_id = |rg: &str, sub: &str| {
        format!(
            "/subscriptions/{sub}/resourcegroups/{}",
            rg.to_ascii_lowercase()
        )
    };
    match (req.method.as_str(), lower.as_slice()) {
        (m, ["subscriptions", sub, "resourcegroups", rg]) => {
            let rid = group_id(rg, sub);
            match m {
                "GET" => match s.resources.get(&rid) {
                    Some(v) => Response::json(200, v.clone()),
                    None => err(
                        404,
                        "ResourceGroupNotFound",
                        &format!("Resource group '{}' could not be found.", parts[3]),
                    ),
                },
                "PUT" => {
                    if !req.body["location"].is_string() {
                        return err(
                            400,
                            "LocationRequired",
                            "The location property is required for this definition.",
                        );
                    }
                    let v = json!({"id": req.path, "name": parts[3], "location": req.body["location"], "tags": req.body["tags"], "properties": {"provisioningState": "Succeeded"}});
                    s.resources.insert(rid, v.clone());
                    Response::json(201, v)
                }
                "DELETE" => {
                    if !s.resources.contains_key(&rid) {
                        return err(404, "ResourceGroupNotFound", "not found");
                    }
                    accepted(
                        &mut s,
                        &host,
                        Effect::Remove(rid),
                        Response::json(202, Value::Null),
                    )
                }
                _ => err(405, "MethodNotAllowed", m),
            }
        }
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.compute",
                "virtualmachines",
            ],
        ) => {
            let prefix = format!("{id}/");
            let vms: Vec<Value> = s
                .resources
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                .map(|(_, v)| public(v, false))
                .collect();
            Response::json(200, json!({"value": vms}))
        }
        (
            "GET",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.compute",
                "virtualmachines",
                _,
                "instanceview",
            ],
        ) => {
            let vm_id = id.trim_end_matches("/instanceview").to_string();
            match s.resources.get(&vm_id) {
                Some(v) => {
                    Response::json(200, public(v, true)["properties"]["instanceView"].clone())
                }
                None => err(404, "ResourceNotFound", "The Resource was not found."),
            }
        }
        (
            "POST",
            [
                "subscriptions",
                _,
                "resourcegroups",
                _,
                "providers",
                "microsoft.compute",
                "virtualmachines",
                _,
                action @ ("start" | "deallocate"),
            ],
        ) => {
            let vm_id = id.trim_end_matches(&format!("/{action}")).to_string();
            if !s.resources.contains_key(&vm_id) {
                return err(404, "ResourceNotFound", "The Resource was not found.");
            }
            let effect = if *action == "start" {
                Effect::Start(vm_id)
            } else {
                Effect::Deallocate(vm_id)
            };
            accepted(&mut s, &host, effect, Response::json(202, Value::Null))
        }
        (
            m,
            [
                "subscriptions",
                sub,
                "resourcegroups",
                rg,
                "providers",
                provider,
                kind,
                _,
            ],
        ) => {
            let full_kind = format!("{}/{}", parts[5], parts[6]);
            let known = [
                "microsoft.compute/virtualmachines",
                "microsoft.network/virtualnetworks",
                "microsoft.network/networksecuritygroups",
                "microsoft.network/publicipaddresses",
            ];
            if !known.contains(&format!("{provider}/{kind}").as_str()) {
                return err(400, "NoRegisteredProviderFound", &full_kind);
            }
            match m {
                "GET" => match s.resources.get(&id) {
                    Some(v) => Response::json(
                        200,
                        public(
                            v,
                            req.query
                                .get("$expand")
                                .is_some_and(|e| e == "instanceView"),
                        ),
                    ),
                    None => err(
                        404,
                        "ResourceNotFound",
                        &format!(
                            "The Resource '{full_kind}/{}' under resource group '{}' was not found.",
                            parts[7], parts[3]
                        ),
                    ),
                },
                "PUT" => {
                    if !s.resources.contains_key(&group_id(rg, sub)) {
                        return err(
                            404,
                            "ResourceGroupNotFound",
                            &format!("Resource group '{}' could not be found.", parts[3]),
                        );
                    }
                    let body = &req.body;
                    if !body["location"].is_string() {
                        return err(
                            400,
                            "LocationRequired",
                            "The location property is required.",
                        );
                    }
                    let is_vm = *kind == "virtualmachines";
                    if is_vm && let Err(e) = check_vm(&s, body) {
                        return err(400, "InvalidParameter", &e);
                    }
                    if *kind == "networksecuritygroups" {
                        for r in body["properties"]["securityRules"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                        {
                            let p = &r["properties"];
                            let ok = [
                                "protocol",
                                "access",
                                "direction",
                                "sourceAddressPrefix",
                                "destinationPortRange",
                            ]
                            .iter()
                            .all(|k| p[*k].is_string())
                                && p["priority"].is_u64();
                            if !ok {
                                return err(
                                    400,
                                    "InvalidRequestFormat",
                                    &format!("bad security rule {r}"),
                                );
                            }
                        }
                    }
                    let mut v = body.clone();
                    v["id"] = json!(req.path);
                    v["name"] = json!(parts[7]);
                    v["type"] = json!(
                        full_kind
                            .replace("microsoft.", "Microsoft.")
                            .replace("virtualmachines", "virtualMachines")
                    );
                    v["properties"]["provisioningState"] =
                        json!(if is_vm { "Creating" } else { "Updating" });
                    if is_vm {
                        v["properties"]["timeCreated"] = json!("2026-12-04T23:10:00.0000000+00:00");
                        v["_power"] = json!("starting");
                    }
                    s.resources.insert(id.clone(), v.clone());
                    let effect = match (is_vm, s.fail_next_vm.take()) {
                        (true, Some((code, message))) => Effect::Fail(id.clone(), code, message),
                        (false, Some(f)) => {
                            s.fail_next_vm = Some(f);
                            Effect::Provisioned(id.clone())
                        }
                        _ => Effect::Provisioned(id.clone()),
                    };
                    let h = new_op(&mut s, &host, effect, false);
                    let mut r = Response::json(201, public(&v, false));
                    r.headers = h;
                    r
                }
                "DELETE" => {
                    if !s.resources.contains_key(&id) {
                        return Response::json(204, Value::Null);
                    }
                    accepted(
                        &mut s,
                        &host,
                        Effect::Remove(id.clone()),
                        Response::json(202, Value::Null),
                    )
                }
                _ => err(405, "MethodNotAllowed", m),
            }
        }
        _ => err(
            404,
            "NotFound",
            &format!("the fake has no {} {}", req.method, req.path),
        ),
    }
}
