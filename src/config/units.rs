//! Values with units and small grammars: sizes, durations, machine specs, regions.

use std::fmt;
use std::time::Duration;

/// Parse a size such as `100G`, `512M`, `2T` or a bare number of gibibytes (`100`).
/// Returns bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = split_number(t);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write it like 100G, 512M or 2T"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => 1 << 30,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} has an unknown size unit {unit:?}; use K, M, G or T"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parse a duration such as `30m`, `24h`, `90s`, `2d` or a bare number of minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = split_number(t);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write it like 30m, 24h or 90s"))?;
    let secs: u64 = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" => 1,
        "" | "m" | "min" | "mins" => 60,
        "h" | "hr" | "hrs" => 3600,
        "d" | "day" | "days" => 86400,
        _ => {
            return Err(format!(
                "{text:?} has an unknown duration unit {unit:?}; use s, m, h or d"
            ));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn split_number(t: &str) -> (&str, &str) {
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    (&t[..end], t[end..].trim())
}

/// Generic machine sizes.
pub const SIZES: &[&str] = &["s", "m", "l", "xl"];
/// Generic GPU names.
pub const GPUS: &[&str] = &["t4", "l4", "a10g", "a100", "h100"];
/// Generic regions, mapped to each cloud's own names by the providers.
pub const REGIONS: &[&str] = &["us-east", "us-west", "eu-west", "eu-north"];

/// A generic machine spec: `SIZE[+GPU[*COUNT]]`, for example `l+a100*2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    /// One of [`SIZES`].
    pub size: String,
    /// One of [`GPUS`], if any.
    pub gpu: Option<String>,
    /// How many GPUs (1 when a GPU is named without a count).
    pub gpu_count: u32,
}

impl MachineSpec {
    /// Parse `SIZE[+GPU[*COUNT]]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim().to_ascii_lowercase();
        let (size, rest) = match t.split_once('+') {
            Some((s, r)) => (s.trim().to_string(), Some(r.trim().to_string())),
            None => (t.clone(), None),
        };
        if !SIZES.contains(&size.as_str()) {
            return Err(format!(
                "{text:?}: the size {size:?} is not one of {}; write SIZE[+GPU[*COUNT]], for example l+a100*2, or set instance_type to the cloud's own type",
                SIZES.join(", ")
            ));
        }
        let (gpu, gpu_count) = match rest {
            None => (None, 0),
            Some(r) => {
                let (g, c) = match r.split_once('*') {
                    Some((g, c)) => {
                        let c: u32 = c.trim().parse().ok().filter(|c| *c >= 1).ok_or_else(|| {
                            format!("{text:?}: the GPU count {c:?} is not a whole number of at least 1")
                        })?;
                        (g.trim().to_string(), c)
                    }
                    None => (r, 1),
                };
                if !GPUS.contains(&g.as_str()) {
                    return Err(format!(
                        "{text:?}: the GPU {g:?} is not one of {}",
                        GPUS.join(", ")
                    ));
                }
                (Some(g), c)
            }
        };
        Ok(Self {
            size,
            gpu,
            gpu_count,
        })
    }
}

impl fmt::Display for MachineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.size)?;
        if let Some(g) = &self.gpu {
            write!(f, "+{g}")?;
            if self.gpu_count != 1 {
                write!(f, "*{}", self.gpu_count)?;
            }
        }
        Ok(())
    }
}

/// Parse a boolean the way DVC's config does.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean; use true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100G").unwrap(), 100 << 30);
        assert_eq!(parse_size("100").unwrap(), 100 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert!(parse_size("12Q").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("5").unwrap().as_secs(), 300);
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn machine_specs() {
        let m = MachineSpec::parse("l+a100*2").unwrap();
        assert_eq!(
            (m.size.as_str(), m.gpu.as_deref(), m.gpu_count),
            ("l", Some("a100"), 2)
        );
        assert_eq!(m.to_string(), "l+a100*2");
        assert_eq!(MachineSpec::parse("xl").unwrap().gpu, None);
        assert!(MachineSpec::parse("huge").unwrap_err().contains("size"));
        assert!(MachineSpec::parse("m+k80").unwrap_err().contains("GPU"));
        assert!(MachineSpec::parse("m+t4*0").is_err());
    }
}
