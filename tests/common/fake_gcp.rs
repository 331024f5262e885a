//! A fake Compute Engine API, from the public REST shapes: instances insert/get/list/delete/
//! start, firewalls, and zone and global operations that take a few polls to finish. It checks
//! the request bodies against what the real API requires and answers with its error shapes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::http::{Request, Response, serve};

/// What an operation does when it finishes.
#[derive(Clone)]
enum Effect {
    Run(String),
    Delete(String),
    Start(String),
    Firewall(Option<Value>, String),
    Fail(String, String, String),
}

struct Op {
    polls_left: u32,
    effect: Effect,
    zone: Option<String>,
    done: Option<Value>,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, Value>,
    firewalls: BTreeMap<String, Value>,
    ops: BTreeMap<String, Op>,
    next: u64,
    fail_next_insert: Option<(String, String)>,
    log: Vec<String>,
}

/// The fake, serving on a loopback port.
#[derive(Clone)]
pub struct FakeGcp {
    state: Arc<Mutex<State>>,
    pub port: u16,
}

fn err(status: u16, reason: &str, message: &str) -> Response {
    Response::json(
        status,
        json!({"error": {"code": status, "message": message,
            "errors": [{"reason": reason, "message": message, "domain": "global"}]}}),
    )
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.ends_with('-')
}

fn valid_label(s: &str, key: bool) -> bool {
    s.len() <= 63
        && (!key || s.starts_with(|c: char| c.is_ascii_lowercase()))
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Why an instance body would be refused by the real API, if it would.
fn check_instance(zone: &str, b: &Value) -> Result<(), String> {
    let name = b["name"].as_str().ok_or("name: required")?;
    if !valid_name(name) {
        return Err(format!("Invalid value for field 'resource.name': '{name}'"));
    }
    let mt = b["machineType"].as_str().ok_or("machineType: required")?;
    if !mt.contains(&format!("zones/{zone}/machineTypes/")) {
        return Err(format!(
            "Invalid value for field 'resource.machineType': '{mt}'"
        ));
    }
    let disks = b["disks"].as_array().ok_or("disks: required")?;
    let boot = disks
        .iter()
        .find(|d| d["boot"] == true)
        .ok_or("a boot disk is required")?;
    if boot["initializeParams"]["sourceImage"].as_str().is_none() {
        return Err(
            "Invalid value for field 'resource.disks[0].initializeParams.sourceImage'".into(),
        );
    }
    if let Some(size) = boot["initializeParams"].get("diskSizeGb")
        && !size.is_string()
    {
        return Err("diskSizeGb is an int64: a JSON string".into());
    }
    let nics = b["networkInterfaces"]
        .as_array()
        .ok_or("networkInterfaces: required")?;
    if nics.is_empty() || nics[0]["network"].as_str().is_none() {
        return Err("networkInterfaces[0].network: required".into());
    }
    if let Some(labels) = b["labels"].as_object() {
        for (k, v) in labels {
            if !valid_label(k, true) || !v.as_str().is_some_and(|v| valid_label(v, false)) {
                return Err(format!(
                    "Invalid value for field 'resource.labels': '{k}={v}'"
                ));
            }
        }
    }
    for item in b["metadata"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if !item["key"].is_string() || !item["value"].is_string() {
            return Err("metadata items need a string key and value".into());
        }
    }
    let s = &b["scheduling"];
    let model = s["provisioningModel"].as_str().unwrap_or("STANDARD");
    if !["STANDARD", "SPOT"].contains(&model) {
        return Err(format!(
            "Invalid value for field 'resource.scheduling.provisioningModel': '{model}'"
        ));
    }
    if model == "SPOT" && (s["automaticRestart"] != false || s["onHostMaintenance"] != "TERMINATE")
    {
        return Err("Spot VMs need automaticRestart false and onHostMaintenance TERMINATE".into());
    }
    if b["guestAccelerators"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
        && s["onHostMaintenance"] != "TERMINATE"
    {
        return Err("Instances with guest accelerators do not support live migration".into());
    }
    Ok(())
}

impl FakeGcp {
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s2 = state.clone();
        let port = serve(move |req| handle(&s2, req));
        Self { state, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (name, status) of every instance.
    pub fn instances(&self) -> Vec<(String, String)> {
        let s = self.state.lock().unwrap();
        s.instances
            .iter()
            .map(|(k, v)| (k.clone(), v["status"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    pub fn instance(&self, name: &str) -> Value {
        self.state.lock().unwrap().instances[name].clone()
    }

    pub fn firewalls(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .firewalls
            .values()
            .cloned()
            .collect()
    }

    /// The next insert's operation ends with this error.
    pub fn fail_next_create(&self, code: &str, message: &str) {
        self.state.lock().unwrap().fail_next_insert = Some((code.into(), message.into()));
    }

    /// A spot preemption: the instance stops, or goes when its termination action is DELETE.
    pub fn preempt(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        let delete = s
            .instances
            .get(name)
            .is_some_and(|i| i["scheduling"]["instanceTerminationAction"] == "DELETE");
        if delete {
            s.instances.remove(name);
        } else if let Some(i) = s.instances.get_mut(name) {
            i["status"] = json!("TERMINATED");
        }
    }

    /// "METHOD path" of every request.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

fn new_op(
    s: &mut State,
    base: &str,
    zone: Option<&str>,
    kind: &str,
    target: &str,
    effect: Effect,
) -> Response {
    s.next += 1;
    let name = format!("operation-{}-{kind}", s.next);
    s.ops.insert(
        name.clone(),
        Op {
            polls_left: 2,
            effect,
            zone: zone.map(String::from),
            done: None,
        },
    );
    Response::json(
        200,
        json!({
            "kind": "compute#operation", "id": s.next.to_string(), "name": name,
            "operationType": kind, "status": "RUNNING", "progress": 0,
            "targetLink": format!("{base}/{target}"),
            "zone": zone.map(|z| format!("{base}/zones/{z}")),
        }),
    )
}

fn poll_op(s: &mut State, name: &str) -> Response {
    let Some(op) = s.ops.get_mut(name) else {
        return err(
            404,
            "notFound",
            &format!("The resource 'operations/{name}' was not found"),
        );
    };
    if let Some(done) = &op.done {
        return Response::json(200, done.clone());
    }
    if op.polls_left > 0 {
        op.polls_left -= 1;
        return Response::json(
            200,
            json!({"kind": "compute#operation", "name": name, "status": "RUNNING", "zone": op.zone}),
        );
    }
    let effect = op.effect.clone();
    let mut done = json!({"kind": "compute#operation", "name": name, "status": "DONE", "progress": 100, "zone": op.zone});
    match effect {
        Effect::Run(n) | Effect::Start(n) => {
            if let Some(i) = s.instances.get_mut(&n) {
                i["status"] = json!("RUNNING");
            }
        }
        Effect::Delete(n) => {
            s.instances.remove(&n);
        }
        Effect::Firewall(Some(body), n) => {
            s.firewalls.insert(n, body);
        }
        Effect::Firewall(None, n) => {
            s.firewalls.remove(&n);
        }
        Effect::Fail(n, code, message) => {
            s.instances.remove(&n);
            done["httpErrorStatusCode"] = json!(503);
            done["error"] = json!({"errors": [{"code": code, "message": message}]});
        }
    }
    s.ops.get_mut(name).unwrap().done = Some(done.clone());
    Response::json(200, done)
}

/// An operation on an existing instance, which takes `status` while it runs.
fn instance_op(
    s: &mut State,
    base: &str,
    zone: &str,
    name: &str,
    status: &str,
    kind: &str,
    effect: Effect,
) -> Response {
    let Some(i) = s.instances.get_mut(name) else {
        return err(
            404,
            "notFound",
            &format!("The resource 'instances/{name}' was not found"),
        );
    };
    i["status"] = json!(status);
    let target = format!("zones/{zone}/instances/{name}");
    new_op(s, base, Some(zone), kind, &target, effect)
}

fn matches_filter(i: &Value, filter: &str) -> bool {
    filter
        .split(" AND ")
        .filter(|t| !t.trim().is_empty())
        .all(|term| {
            let t = term.trim().trim_start_matches('(').trim_end_matches(')');
            let Some((k, v)) = t.split_once(" = ") else {
                return false;
            };
            let key = k.trim().trim_start_matches("labels.");
            i["labels"][key].as_str() == Some(v.trim().trim_matches('"'))
        })
}

fn handle(state: &Mutex<State>, req: &Request) -> Response {
    let mut s = state.lock().unwrap();
    s.log.push(format!("{} {}", req.method, req.path));
    let auth = req
        .headers
        .get("authorization")
        .cloned()
        .unwrap_or_default();
    // A service-account key signs a JWT locally: header.claims.signature.
    if !auth.starts_with("Bearer ") || auth.matches('.').count() != 2 {
        return err(
            401,
            "authError",
            "Request is missing a valid OAuth 2 access token",
        );
    }
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let base_for = |p: &str| format!("https://www.googleapis.com/compute/v1/projects/{p}");
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", ["compute", "v1", "projects", p, "zones", z, "instances"]) => {
            if let Err(e) = check_instance(z, &req.body) {
                return err(400, "invalid", &e);
            }
            let name = req.body["name"].as_str().unwrap().to_string();
            if s.instances.contains_key(&name) {
                return err(
                    409,
                    "alreadyExists",
                    &format!("The resource '{name}' already exists"),
                );
            }
            let mut i = req.body.clone();
            i["status"] = json!("PROVISIONING");
            i["id"] = json!(format!("{}", 1000 + s.next));
            i["zone"] = json!(format!("{}/zones/{z}", base_for(p)));
            i["creationTimestamp"] = json!("2026-12-04T15:10:00.000-08:00");
            i["networkInterfaces"][0]["networkIP"] = json!("10.128.0.2");
            if i["networkInterfaces"][0]["accessConfigs"].is_array() {
                i["networkInterfaces"][0]["accessConfigs"][0]["natIP"] = json!("127.0.0.1");
            }
            s.instances.insert(name.clone(), i);
            let effect = match s.fail_next_insert.take() {
                Some((code, message)) => Effect::Fail(name.clone(), code, message),
                None => Effect::Run(name.clone()),
            };
            new_op(
                &mut s,
                &base_for(p),
                Some(z),
                "insert",
                &format!("zones/{z}/instances/{name}"),
                effect,
            )
        }
        ("GET", ["compute", "v1", "projects", _, "zones", _, "instances"]) => {
            let filter = req.query.get("filter").cloned().unwrap_or_default();
            let items: Vec<Value> = s
                .instances
                .values()
                .filter(|i| matches_filter(i, &filter))
                .cloned()
                .collect();
            Response::json(200, json!({"kind": "compute#instanceList", "items": items}))
        }
        ("GET", ["compute", "v1", "projects", _, "zones", _, "instances", n]) => {
            match s.instances.get(*n) {
                Some(i) => Response::json(200, i.clone()),
                None => err(
                    404,
                    "notFound",
                    &format!("The resource 'instances/{n}' was not found"),
                ),
            }
        }
        ("DELETE", ["compute", "v1", "projects", p, "zones", z, "instances", n]) => {
            let effect = Effect::Delete(n.to_string());
            instance_op(&mut s, &base_for(p), z, n, "STOPPING", "delete", effect)
        }
        (
            "POST",
            [
                "compute",
                "v1",
                "projects",
                p,
                "zones",
                z,
                "instances",
                n,
                "start",
            ],
        ) => {
            let effect = Effect::Start(n.to_string());
            instance_op(&mut s, &base_for(p), z, n, "STAGING", "start", effect)
        }
        ("GET", ["compute", "v1", "projects", _, "zones", _, "operations", op]) => {
            poll_op(&mut s, op)
        }
        ("GET", ["compute", "v1", "projects", _, "global", "operations", op]) => {
            poll_op(&mut s, op)
        }
        ("GET", ["compute", "v1", "projects", _, "global", "firewalls", n]) => {
            match s.firewalls.get(*n) {
                Some(f) => Response::json(200, f.clone()),
                None => err(
                    404,
                    "notFound",
                    &format!("The resource 'firewalls/{n}' was not found"),
                ),
            }
        }
        ("POST", ["compute", "v1", "projects", p, "global", "firewalls"]) => {
            let b = &req.body;
            let ok = b["name"].as_str().is_some_and(valid_name)
                && b["allowed"][0]["IPProtocol"].is_string()
                && b["sourceRanges"].as_array().is_some_and(|r| !r.is_empty())
                && b["direction"] == "INGRESS";
            if !ok {
                return err(400, "invalid", &format!("Invalid firewall: {b}"));
            }
            let name = b["name"].as_str().unwrap().to_string();
            new_op(
                &mut s,
                &base_for(p),
                None,
                "insert",
                &format!("global/firewalls/{name}"),
                Effect::Firewall(Some(b.clone()), name.clone()),
            )
        }
        ("DELETE", ["compute", "v1", "projects", p, "global", "firewalls", n]) => {
            if !s.firewalls.contains_key(*n) {
                return err(
                    404,
                    "notFound",
                    &format!("The resource 'firewalls/{n}' was not found"),
                );
            }
            new_op(
                &mut s,
                &base_for(p),
                None,
                "delete",
                &format!("global/firewalls/{n}"),
                Effect::Firewall(None, n.to_string()),
            )
        }
        _ => err(
            404,
            "notFound",
            &format!("the fake has no {} {}", req.method, req.path),
        ),
    }
}
