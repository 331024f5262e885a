//! AWS names for dvc-exec's generic machines, regions and images (documented in docs/aws.md).

use crate::config::units::MachineSpec;

/// The EC2 region for a generic or native region name.
pub fn region(name: &str) -> String {
    match name {
        "us-east" => "us-east-1".into(),
        "us-west" => "us-west-2".into(),
        "eu-west" => "eu-west-1".into(),
        "eu-north" => "eu-north-1".into(),
        other => other.into(),
    }
}

/// The EC2 instance type for a generic machine spec.
pub fn instance_type(m: &MachineSpec) -> Result<&'static str, String> {
    let size = m.size.as_str();
    let n = m.gpu_count;
    let t = match (m.gpu.as_deref(), size) {
        (None, "s") => "t3.large",
        (None, "m") => "m6i.xlarge",
        (None, "l") => "m6i.2xlarge",
        (None, "xl") => "m6i.4xlarge",
        (Some("t4"), _) if n >= 2 => match n {
            2..=4 => "g4dn.12xlarge",
            _ => "g4dn.metal",
        },
        (Some("t4"), "s" | "m") => "g4dn.xlarge",
        (Some("t4"), "l") => "g4dn.2xlarge",
        (Some("t4"), _) => "g4dn.4xlarge",
        (Some("a10g"), _) if n >= 2 => match n {
            2..=4 => "g5.12xlarge",
            _ => "g5.48xlarge",
        },
        (Some("a10g"), "s" | "m") => "g5.xlarge",
        (Some("a10g"), "l") => "g5.2xlarge",
        (Some("a10g"), _) => "g5.4xlarge",
        (Some("l4"), _) if n >= 2 => match n {
            2..=4 => "g6.12xlarge",
            _ => "g6.48xlarge",
        },
        (Some("l4"), "s" | "m") => "g6.xlarge",
        (Some("l4"), "l") => "g6.2xlarge",
        (Some("l4"), _) => "g6.4xlarge",
        (Some("a100"), _) => "p4d.24xlarge",
        (Some("h100"), _) => "p5.48xlarge",
        (Some(g), _) => return Err(format!("no AWS instance type for the GPU {g}")),
        (None, s) => return Err(format!("no AWS instance type for the size {s}")),
    };
    Ok(t)
}

/// How to find the newest image for an alias: (owner, name pattern).
pub fn image_alias(alias: &str) -> Option<(&'static str, &'static str)> {
    match alias {
        // Canonical's Ubuntu 24.04 LTS.
        "ubuntu" => Some((
            "099720109477",
            "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*",
        )),
        // AWS Deep Learning Base GPU AMI (NVIDIA driver, CUDA) on Ubuntu.
        "nvidia" => Some((
            "amazon",
            "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)*",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_machines_map_to_instance_types() {
        let t = |s: &str| instance_type(&MachineSpec::parse(s).unwrap()).unwrap();
        assert_eq!(t("m"), "m6i.xlarge");
        assert_eq!(t("s+t4"), "g4dn.xlarge");
        assert_eq!(t("l+a10g"), "g5.2xlarge");
        assert_eq!(t("m+a10g*4"), "g5.12xlarge");
        assert_eq!(t("xl+a100*8"), "p4d.24xlarge");
        assert_eq!(t("xl+h100*8"), "p5.48xlarge");
        assert_eq!(region("us-east"), "us-east-1");
        assert_eq!(region("ap-south-1"), "ap-south-1");
    }
}
