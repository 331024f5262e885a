//! GCP names for dvc-exec's generic machines, regions and images (documented in docs/gcp.md).

use crate::config::units::MachineSpec;

/// The zone for a generic region, a GCP region (its zone `-a`... as GCP names them) or a zone.
pub fn zone(region: &str) -> String {
    match region {
        "us-east" => "us-east1-c".into(),
        "us-west" => "us-west1-b".into(),
        "eu-west" => "europe-west4-a".into(),
        "eu-north" => "europe-north1-a".into(),
        // A zone already (us-central1-a).
        z if z.matches('-').count() >= 2 => z.into(),
        // A region: us-east1 has no zone a.
        "us-east1" => "us-east1-c".into(),
        r => format!("{r}-a"),
    }
}

/// A machine type and, for N1 machines, the accelerators to attach: `(type, Some((accelerator, count)))`.
pub type MachineType = (String, Option<(&'static str, u32)>);

/// The machine type for a generic machine spec.
pub fn machine_type(m: &MachineSpec) -> Result<MachineType, String> {
    let n = m.gpu_count.max(1);
    let by_size = |s: &str, small: u32| -> u32 {
        match s {
            "s" => small,
            "m" => small * 2,
            "l" => small * 4,
            _ => small * 8,
        }
    };
    Ok(match m.gpu.as_deref() {
        None => (format!("n2-standard-{}", by_size(&m.size, 2)), None),
        Some("t4") => {
            if n > 4 {
                return Err("GCP attaches at most 4 T4 GPUs to one machine".into());
            }
            let cpus = by_size(&m.size, 4).max(4 * n).min(64);
            (format!("n1-standard-{cpus}"), Some(("nvidia-tesla-t4", n)))
        }
        Some("l4") => match n {
            1 => (format!("g2-standard-{}", by_size(&m.size, 4).min(32)), None),
            2 => ("g2-standard-24".into(), None),
            3 | 4 => ("g2-standard-48".into(), None),
            _ => ("g2-standard-96".into(), None),
        },
        Some("a100") => match n {
            1 => ("a2-highgpu-1g".into(), None),
            2 => ("a2-highgpu-2g".into(), None),
            3 | 4 => ("a2-highgpu-4g".into(), None),
            _ => ("a2-highgpu-8g".into(), None),
        },
        Some("h100") => match n {
            1 => ("a3-highgpu-1g".into(), None),
            2 => ("a3-highgpu-2g".into(), None),
            3 | 4 => ("a3-highgpu-4g".into(), None),
            _ => ("a3-highgpu-8g".into(), None),
        },
        Some(g) => {
            return Err(format!(
                "GCP has no {g} GPU; use t4, l4, a100 or h100, or set instance_type"
            ));
        }
    })
}

/// Whether machines of this type carry GPUs (they cannot live-migrate).
pub fn has_gpu(machine_type: &str, accelerator: bool) -> bool {
    accelerator
        || ["g2-", "a2-", "a3-"]
            .iter()
            .any(|p| machine_type.starts_with(p))
}

/// The image for an alias, else the image itself (a URL, `projects/P/global/images/...`).
pub fn image(alias: &str) -> String {
    match alias {
        // Canonical's Ubuntu 24.04 LTS, newest of the family.
        "ubuntu" => "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64".into(),
        // Google's Deep Learning VM base image: NVIDIA driver and CUDA on Ubuntu 22.04.
        "nvidia" => {
            "projects/deeplearning-platform-release/global/images/family/common-cu124-ubuntu-2204"
                .into()
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_machines_map_to_machine_types() {
        let t = |s: &str| machine_type(&MachineSpec::parse(s).unwrap()).unwrap();
        assert_eq!(t("m"), ("n2-standard-4".into(), None));
        assert_eq!(
            t("s+t4"),
            ("n1-standard-4".into(), Some(("nvidia-tesla-t4", 1)))
        );
        assert_eq!(
            t("l+t4*2"),
            ("n1-standard-16".into(), Some(("nvidia-tesla-t4", 2)))
        );
        assert_eq!(t("m+l4"), ("g2-standard-8".into(), None));
        assert_eq!(t("xl+a100*8"), ("a2-highgpu-8g".into(), None));
        assert_eq!(t("xl+h100*8"), ("a3-highgpu-8g".into(), None));
        assert!(machine_type(&MachineSpec::parse("m+a10g").unwrap()).is_err());
        assert_eq!(zone("us-east"), "us-east1-c");
        assert_eq!(zone("us-central1"), "us-central1-a");
        assert_eq!(zone("europe-west4-b"), "europe-west4-b");
    }
}
