//! The fake cloud servers refuse what the real APIs refuse, so a request of the wrong shape fails
//! the conformance suite instead of passing against a lenient fake.

mod common;

use std::io::{Read, Write};

use common::fake_azure::{FakeAzure, TOKEN};
use common::fake_gcp::FakeGcp;
use serde_json::{Value, json};

/// One HTTP request; returns the status and the JSON body.
fn request(port: u16, method: &str, path: &str, auth: &str, body: &Value) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let text = body.to_string();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

const JWT: &str = "Bearer aGVhZGVy.Y2xhaW1z.c2lnbmF0dXJl";

fn gcp_instance() -> Value {
    json!({
        "name": "dvc-exec-x-1",
        "machineType": "zones/us-central1-a/machineTypes/n2-standard-2",
        "disks": [{"boot": true, "initializeParams": {"sourceImage": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64", "diskSizeGb": "50"}}],
        "networkInterfaces": [{"network": "global/networks/default"}],
        "labels": {"dvc_exec_executor": "x"},
        "scheduling": {"provisioningModel": "STANDARD"},
    })
}

#[test]
fn the_gcp_fake_refuses_wrong_shapes() {
    let fake = FakeGcp::start();
    let path = "/compute/v1/projects/p/zones/us-central1-a/instances";
    let ok = request(fake.port, "POST", path, JWT, &gcp_instance());
    assert_eq!(ok.0, 200, "{ok:?}");
    let mut wrong = Vec::new();
    let mut v = gcp_instance();
    v["name"] = json!("dvc-exec-x-2");
    v["disks"][0]["initializeParams"]["diskSizeGb"] = json!(50);
    wrong.push(("an int64 as a JSON number", v));
    let mut v = gcp_instance();
    v["name"] = json!("Bad_Name");
    wrong.push(("a name with capitals", v));
    let mut v = gcp_instance();
    v["name"] = json!("dvc-exec-x-3");
    v["labels"] = json!({"dvc-exec:executor": "x"});
    wrong.push(("a label key with a colon", v));
    let mut v = gcp_instance();
    v["name"] = json!("dvc-exec-x-4");
    v["scheduling"] = json!({"provisioningModel": "SPOT", "automaticRestart": true});
    wrong.push(("spot that restarts", v));
    let mut v = gcp_instance();
    v["name"] = json!("dvc-exec-x-5");
    v["machineType"] = json!("n2-standard-2");
    wrong.push(("a machine type without its zone", v));
    for (what, body) in wrong {
        let (status, reply) = request(fake.port, "POST", path, JWT, &body);
        assert_eq!(status, 400, "{what} was accepted: {reply}");
    }
    let (status, _) = request(fake.port, "POST", path, "Bearer not-a-jwt", &gcp_instance());
    assert_eq!(status, 401, "a token that is not a signed JWT");
}

#[test]
fn the_azure_fake_refuses_wrong_shapes() {
    let fake = FakeAzure::start();
    let auth = format!("Bearer {TOKEN}");
    let rg = "/subscriptions/s/resourcegroups/g";
    let (status, _) = request(
        fake.port,
        "PUT",
        rg,
        &auth,
        &json!({"location": "westeurope"}),
    );
    assert_eq!(status, 400, "no api-version");
    let (status, _) = request(
        fake.port,
        "PUT",
        &format!("{rg}?api-version=2021-04-01"),
        &auth,
        &json!({"location": "westeurope"}),
    );
    assert_eq!(status, 201);
    let vm = |admin: &str, path: &str| {
        json!({
            "location": "westeurope",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
                "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "o", "sku": "s", "version": "latest"}},
                "osProfile": {"computerName": "x", "adminUsername": admin,
                    "linuxConfiguration": {"ssh": {"publicKeys": [{"path": path, "keyData": "ssh-ed25519 AAAA"}]}}},
                "networkProfile": {"networkInterfaces": [{"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/n"}]},
            },
        })
    };
    let put = |body: &Value| {
        request(
            fake.port,
            "PUT",
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/x?api-version=2024-07-01",
            &auth,
            body,
        )
    };
    assert_eq!(
        put(&vm("azureuser", "/home/azureuser/.ssh/authorized_keys")).0,
        201
    );
    assert_eq!(
        put(&vm("root", "/home/root/.ssh/authorized_keys")).0,
        400,
        "root is reserved"
    );
    assert_eq!(
        put(&vm("azureuser", "/root/.ssh/authorized_keys")).0,
        400,
        "key path"
    );
    let mut spot = vm("azureuser", "/home/azureuser/.ssh/authorized_keys");
    spot["properties"]["priority"] = json!("Spot");
    assert_eq!(put(&spot).0, 400, "spot without an eviction policy");
    let (status, _) = request(
        fake.port,
        "GET",
        &format!("{rg}?api-version=2021-04-01"),
        "Bearer other",
        &Value::Null,
    );
    assert_eq!(status, 401, "a token the fake did not issue");
}
