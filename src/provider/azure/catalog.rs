//! Azure names for dvc-exec's generic machines, regions and images (documented in docs/azure.md).

use crate::config::units::MachineSpec;

/// The Azure location for a generic region, else the location itself.
pub fn location(region: &str) -> String {
    match region {
        "us-east" => "eastus".into(),
        "us-west" => "westus2".into(),
        "eu-west" => "westeurope".into(),
        "eu-north" => "northeurope".into(),
        other => other.into(),
    }
}

/// The VM size for a generic machine spec.
pub fn vm_size(m: &MachineSpec) -> Result<&'static str, String> {
    let n = m.gpu_count.max(1);
    let size = m.size.as_str();
    Ok(match m.gpu.as_deref() {
        None => match size {
            "s" => "Standard_D2s_v5",
            "m" => "Standard_D4s_v5",
            "l" => "Standard_D8s_v5",
            _ => "Standard_D16s_v5",
        },
        Some("t4") if n >= 2 => "Standard_NC64as_T4_v3",
        Some("t4") => match size {
            "s" => "Standard_NC4as_T4_v3",
            "m" => "Standard_NC8as_T4_v3",
            _ => "Standard_NC16as_T4_v3",
        },
        // Azure's A10 is the data-centre twin of AWS's A10G.
        Some("a10g") if n >= 2 => "Standard_NV72ads_A10_v5",
        Some("a10g") => "Standard_NV36ads_A10_v5",
        Some("a100") => match n {
            1 => "Standard_NC24ads_A100_v4",
            2 => "Standard_NC48ads_A100_v4",
            3 | 4 => "Standard_NC96ads_A100_v4",
            _ => "Standard_ND96asr_v4",
        },
        Some("h100") => match n {
            1 => "Standard_NC40ads_H100_v5",
            2 => "Standard_NC80adis_H100_v5",
            _ => "Standard_ND96isr_H100_v5",
        },
        Some(g) => {
            return Err(format!(
                "Azure has no {g} GPU; use t4, a10g (A10), a100 or h100, or set instance_type to a VM size"
            ));
        }
    })
}

/// An image reference for an alias, a URN (`publisher:offer:sku:version`) or an image id.
pub fn image(text: &str) -> Result<serde_json::Value, String> {
    let urn = match text {
        "ubuntu" => "Canonical:ubuntu-24_04-lts:server:latest",
        // Microsoft's HPC image: NVIDIA driver and CUDA on Ubuntu 22.04.
        "nvidia" => "microsoft-dsvm:ubuntu-hpc:2204:latest",
        id if id.starts_with("/subscriptions/") => {
            return Ok(serde_json::json!({ "id": id }));
        }
        other => other,
    };
    let parts: Vec<&str> = urn.split(':').collect();
    match parts.as_slice() {
        [publisher, offer, sku, version] if parts.iter().all(|p| !p.is_empty()) => {
            Ok(serde_json::json!({
                "publisher": publisher, "offer": offer, "sku": sku, "version": version,
            }))
        }
        _ => Err(format!(
            "the image {text:?} is not ubuntu, nvidia, a URN (publisher:offer:sku:version) or an image id (/subscriptions/...)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_machines_map_to_vm_sizes() {
        let t = |s: &str| vm_size(&MachineSpec::parse(s).unwrap()).unwrap();
        assert_eq!(t("m"), "Standard_D4s_v5");
        assert_eq!(t("s+t4"), "Standard_NC4as_T4_v3");
        assert_eq!(t("m+a10g"), "Standard_NV36ads_A10_v5");
        assert_eq!(t("xl+a100*8"), "Standard_ND96asr_v4");
        assert_eq!(t("l+h100"), "Standard_NC40ads_H100_v5");
        assert!(vm_size(&MachineSpec::parse("m+l4").unwrap()).is_err());
        assert_eq!(location("eu-west"), "westeurope");
        assert_eq!(image("ubuntu").unwrap()["offer"], "ubuntu-24_04-lts");
        assert!(image("Canonical:x").is_err());
    }
}
