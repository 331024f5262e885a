//! AWS EC2 executors (`type = aws`), behind the `aws` cargo feature.
//!
//! The EC2 calls behind [`super::vm::Compute`]; [`super::vm::VmProvider`] keeps the provider
//! contract (find by tags, resume before create, pools, rollback by the `dvc-exec:launch` tag,
//! gc), as for GCP and Azure. What is EC2's own: the key pair and security group, the newest
//! image found with DescribeImages, the next zone on a capacity error, the spot price.

pub mod catalog;

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceMarketOptionsRequest, InstanceStateName, InstanceType,
    IpPermission, IpRange, MarketType, Placement, ResourceType, ShutdownBehavior, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, VolumeType,
};
use base64::Engine;
use tokio::sync::OnceCell;

use super::cloud::{self, TAG_EXECUTOR};
use super::vm::{Compute, LaunchSpec, Vm, VmProvider};
use super::{Context, MachineState};
use crate::config::Executor;
use crate::config::executor::CloudSettings;
use crate::error::{Error, Result};
use crate::output::Ui;

/// The provider for `type = aws`.
pub fn provider(executor: Executor, ctx: Context) -> Result<VmProvider<Aws>> {
    let aws = Aws::new(&executor);
    Ok(VmProvider::new(executor, ctx, aws))
}

/// EC2 calls for one executor.
pub struct Aws {
    executor: Executor,
    cloud: CloudSettings,
    region: String,
    client: OnceCell<Client>,
    /// The image a launch uses, once resolved (id, root device).
    image: OnceCell<(String, Option<String>)>,
    /// The hourly price of what this process launched, and when.
    price: std::sync::Mutex<Option<(String, f64, Instant)>>,
}

fn setting(e: &Executor, key: &str) -> Option<String> {
    e.raw.keys.get(key).map(|s| s.value.clone())
}

/// Turn an EC2 error into one that says what to change.
fn ec2_error<E, R>(what: &str, e: aws_sdk_ec2::error::SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().unwrap_or("").to_string();
    let text = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => format!("{}", DisplayErrorContext(&e)),
    };
    // A setting AWS rejects is a configuration error (exit 2): nothing was started.
    let config_error = code.starts_with("InvalidAMIID")
        || code.starts_with("InvalidInstanceType")
        || code == "InvalidParameterValue"
        || code == "InvalidParameterCombination"
        || code == "InvalidSubnetID.NotFound"
        || code == "InvalidGroup.NotFound"
        || code == "SpotMaxPriceTooLow";
    let base = if config_error {
        Error::usage(format!("{what} failed"))
    } else {
        Error::failed(format!("{what} failed"))
    }
    .source(std::io::Error::other(text.clone()));
    match code.as_str() {
        "InsufficientInstanceCapacity" | "InsufficientCapacity" | "Unsupported" => base.hint(
            "AWS has no capacity for this instance type there now; try another zone (zone = ...), region, or machine",
        ),
        "InstanceLimitExceeded" | "VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded" => base.hint(
            "your AWS quota is exhausted for this instance type; request more in the Service Quotas console, or pick a smaller machine",
        ),
        "UnauthorizedOperation" | "AuthFailure" | "Blocked" | "OptInRequired" => base.hint(
            "your AWS credentials may not do this; check the profile (profile = ...) and its IAM permissions for EC2",
        ),
        "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" | "InvalidAMIID.Unavailable" => base.hint(
            "the image does not exist in this region; set image = ubuntu, nvidia, or an AMI id of this region",
        ),
        "InvalidInstanceType.NotFound" | "InvalidInstanceType" => base.hint(
            "the instance type does not exist in this region; fix instance_type, or use machine = SIZE[+GPU]",
        ),
        "InvalidParameterValue" | "InvalidParameterCombination" if what.contains("launch") => base.hint(
            "check instance_type (or machine), image and disk_size: the type may not exist in this region or not fit the image",
        ),
        "SpotMaxPriceTooLow" => {
            base.hint("raise spot_price, or set it to -1 to pay up to the on-demand price")
        }
        "" if text.contains("credentials") => base.hint(
            "no AWS credentials were found: set AWS_PROFILE or profile = ..., run aws sso login, or set AWS_ACCESS_KEY_ID",
        ),
        "" => base.hint("AWS could not be reached; check your network, or endpoint_url if you set one"),
        _ => base,
    }
}

impl Aws {
    /// The calls for this executor.
    pub fn new(executor: &Executor) -> Self {
        let mut cloud = executor.cloud.clone().unwrap_or_default();
        if executor.raw.keys.contains_key("pool") {
            cloud.keep = true;
        }
        let region = catalog::region(cloud.region.as_deref().unwrap_or("us-east"));
        Self {
            executor: executor.clone(),
            cloud,
            region,
            client: OnceCell::new(),
            image: OnceCell::new(),
            price: std::sync::Mutex::new(None),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.region.clone()));
                if let Some(p) = setting(&self.executor, "profile") {
                    loader = loader.profile_name(p);
                }
                if let Some(u) = setting(&self.executor, "endpoint_url") {
                    loader = loader.endpoint_url(u);
                }
                Client::new(&loader.load().await)
            })
            .await
    }

    fn tag_spec(kind: ResourceType, spec: &LaunchSpec) -> TagSpecification {
        let mut tags: Vec<Tag> = spec
            .labels
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        tags.push(Tag::builder().key("Name").value(&spec.name).build());
        TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(tags))
            .build()
    }

    async fn instances(&self, filters: Vec<Filter>) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
        let out = self
            .client()
            .await
            .describe_instances()
            .set_filters(Some(filters))
            .send()
            .await
            .map_err(|e| ec2_error("listing EC2 instances", e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect())
    }

    fn filter(name: &str, value: &str) -> Filter {
        Filter::builder().name(name).values(value).build()
    }

    fn live_states() -> Filter {
        Filter::builder()
            .name("instance-state-name")
            .values("pending")
            .values("running")
            .values("stopping")
            .values("stopped")
            .build()
    }

    fn vm_of(i: &aws_sdk_ec2::types::Instance) -> Vm {
        Vm {
            id: i.instance_id().unwrap_or_default().to_string(),
            state: match i.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => MachineState::Running,
                Some(InstanceStateName::Pending) => MachineState::Pending,
                Some(InstanceStateName::Stopped | InstanceStateName::Stopping) => {
                    MachineState::Stopped
                }
                _ => MachineState::Gone,
            },
            address: i
                .public_ip_address()
                .or(i.private_ip_address())
                .map(String::from),
            labels: i
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect::<BTreeMap<_, _>>(),
            launched: i.launch_time().map(|t| t.secs().max(0) as u64),
        }
    }

    /// The launch image, resolved once.
    async fn resolved_image(&self) -> Result<(String, Option<String>)> {
        self.image
            .get_or_try_init(|| self.resolve_image())
            .await
            .cloned()
    }

    async fn resolve_image(&self) -> Result<(String, Option<String>)> {
        let image = self.cloud.image.clone().unwrap_or_else(|| {
            let gpu = self.cloud.machine.as_ref().is_some_and(|m| m.gpu.is_some());
            if gpu {
                "nvidia".into()
            } else {
                "ubuntu".into()
            }
        });
        let client = self.client().await;
        let (owner, pattern) = match catalog::image_alias(&image) {
            Some(a) => a,
            None => {
                let out = client
                    .describe_images()
                    .image_ids(&image)
                    .send()
                    .await
                    .map_err(|e| ec2_error(&format!("looking up the image {image}"), e))?;
                let root = out
                    .images()
                    .first()
                    .and_then(|i| i.root_device_name())
                    .map(String::from);
                if out.images().is_empty() {
                    return Err(Error::usage(format!(
                        "the image {image} does not exist in {}",
                        self.region
                    ))
                    .hint("set image = ubuntu, nvidia, or an AMI id of this region"));
                }
                return Ok((image, root));
            }
        };
        let out = client
            .describe_images()
            .owners(owner)
            .filters(Self::filter("name", pattern))
            .filters(Self::filter("state", "available"))
            .send()
            .await
            .map_err(|e| ec2_error(&format!("looking up the newest {image} image"), e))?;
        let newest = out
            .images()
            .iter()
            .max_by(|a, b| {
                a.creation_date()
                    .unwrap_or("")
                    .cmp(b.creation_date().unwrap_or(""))
            })
            .ok_or_else(|| {
                Error::usage(format!(
                    "no {image} image found in {} (owner {owner}, name {pattern})",
                    self.region
                ))
                .hint("set image to an AMI id of this region")
            })?;
        Ok((
            newest.image_id().unwrap_or_default().to_string(),
            newest.root_device_name().map(String::from),
        ))
    }

    fn instance_type(&self) -> Result<String> {
        if let Some(t) = &self.cloud.instance_type {
            return Ok(t.clone());
        }
        let spec = self.cloud.machine_or_default();
        catalog::instance_type(&spec)
            .map(String::from)
            .map_err(|e| {
                Error::usage(format!("executor {:?}: {e}", self.executor.name))
                    .hint("set instance_type to an EC2 instance type")
            })
    }

    /// The key pair; returns its name and whether this launch created it.
    async fn ensure_key_pair(&self, spec: &LaunchSpec) -> Result<(String, bool)> {
        let name = format!(
            "dvc-exec-{}-{}",
            self.executor.name,
            cloud::key_fingerprint(&spec.ssh_public)
        );
        let client = self.client().await;
        let found = client.describe_key_pairs().key_names(&name).send().await;
        match found {
            Ok(out) if !out.key_pairs().is_empty() => return Ok((name, false)),
            Ok(_) => {}
            Err(e) if e.code() == Some("InvalidKeyPair.NotFound") => {}
            Err(e) => return Err(ec2_error("looking up the key pair", e)),
        }
        client
            .import_key_pair()
            .key_name(&name)
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(
                spec.ssh_public.as_bytes(),
            ))
            .tag_specifications(Self::tag_spec(ResourceType::KeyPair, spec))
            .send()
            .await
            .map_err(|e| ec2_error("importing the SSH key pair", e))?;
        Ok((name, true))
    }

    /// The security group admitting SSH from `cidr`; returns its id and whether this launch created it.
    async fn ensure_security_group(&self, spec: &LaunchSpec) -> Result<(String, bool)> {
        if let Some(sg) = setting(&self.executor, "security_group") {
            return Ok((sg, false));
        }
        let client = self.client().await;
        let vpc = match setting(&self.executor, "subnet") {
            Some(subnet) => client
                .describe_subnets()
                .subnet_ids(&subnet)
                .send()
                .await
                .map_err(|e| ec2_error(&format!("looking up the subnet {subnet}"), e))?
                .subnets()
                .first()
                .and_then(|s| s.vpc_id())
                .map(String::from),
            None => client
                .describe_vpcs()
                .filters(Self::filter("is-default", "true"))
                .send()
                .await
                .map_err(|e| ec2_error("looking up the default VPC", e))?
                .vpcs()
                .first()
                .and_then(|v| v.vpc_id())
                .map(String::from),
        };
        let vpc = vpc.ok_or_else(|| {
            Error::usage(format!("there is no default VPC in {}", self.region))
                .hint("set subnet = subnet-... (and security_group if you have one)")
        })?;
        let name = format!("dvc-exec-{}", self.executor.name);
        let existing = client
            .describe_security_groups()
            .filters(Self::filter("group-name", &name))
            .filters(Self::filter("vpc-id", &vpc))
            .send()
            .await
            .map_err(|e| ec2_error("looking up the security group", e))?;
        let (id, created) = match existing
            .security_groups()
            .first()
            .and_then(|g| g.group_id())
        {
            Some(id) => (id.to_string(), false),
            None => {
                let out = client
                    .create_security_group()
                    .group_name(&name)
                    .description("dvc-exec: SSH from the address that runs dvc-exec")
                    .vpc_id(&vpc)
                    .tag_specifications(Self::tag_spec(ResourceType::SecurityGroup, spec))
                    .send()
                    .await
                    .map_err(|e| ec2_error("creating the security group", e))?;
                (out.group_id().unwrap_or_default().to_string(), true)
            }
        };
        let cidr = &spec.ssh_cidr;
        let r = client
            .authorize_security_group_ingress()
            .group_id(&id)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(
                        IpRange::builder()
                            .cidr_ip(cidr)
                            .description("dvc-exec SSH")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await;
        match r {
            Ok(_) => {}
            Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
            Err(e) => {
                if created {
                    let _ = client.delete_security_group().group_id(&id).send().await;
                }
                return Err(ec2_error("opening SSH in the security group", e));
            }
        }
        Ok((id, created))
    }

    async fn zones(&self) -> Vec<String> {
        if let Some(z) = &self.cloud.zone {
            return vec![z.clone()];
        }
        match self
            .client()
            .await
            .describe_availability_zones()
            .send()
            .await
        {
            Ok(out) => out
                .availability_zones()
                .iter()
                .filter_map(|z| z.zone_name().map(String::from))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn spot_price(&self, instance_type: &str) -> Option<f64> {
        let out = self
            .client()
            .await
            .describe_spot_price_history()
            .instance_types(InstanceType::from(instance_type))
            .product_descriptions("Linux/UNIX")
            .max_results(5)
            .send()
            .await
            .ok()?;
        out.spot_price_history()
            .iter()
            .filter_map(|p| p.spot_price()?.parse::<f64>().ok())
            .reduce(f64::min)
    }

    async fn terminate(&self, id: &str) -> Result<()> {
        match self
            .client()
            .await
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => {
                Err(ec2_error(&format!("terminating {id}",), e).hint(self.terminate_command(id)))
            }
        }
    }

    fn terminate_command(&self, id: &str) -> String {
        let mut cmd = format!(
            "aws ec2 terminate-instances --region {} --instance-ids {id}",
            self.region
        );
        if let Some(p) = setting(&self.executor, "profile") {
            cmd.push_str(&format!(" --profile {p}"));
        }
        if let Some(u) = setting(&self.executor, "endpoint_url") {
            cmd.push_str(&format!(" --endpoint-url {u}"));
        }
        cmd
    }
}

#[async_trait]
impl Compute for Aws {
    fn place(&self) -> String {
        self.region.clone()
    }

    fn default_user(&self) -> &'static str {
        "ubuntu"
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<Vm>> {
        let mut filters: Vec<Filter> = labels
            .iter()
            .map(|(k, v)| Self::filter(&format!("tag:{k}"), v))
            .collect();
        filters.push(Self::live_states());
        Ok(self
            .instances(filters)
            .await?
            .iter()
            .map(Self::vm_of)
            .collect())
    }

    async fn get(&self, id: &str) -> Result<Option<Vm>> {
        Ok(self
            .instances(vec![Self::filter("instance-id", id)])
            .await?
            .first()
            .map(Self::vm_of))
    }

    async fn plan(&self) -> Result<String> {
        let instance_type = self.instance_type()?;
        let (image, _) = self.resolved_image().await?;
        let price = if self.cloud.spot {
            self.spot_price(&instance_type).await
        } else {
            None
        };
        Ok(format!(
            "a {instance_type}{} in {} ({image}){}",
            if self.cloud.spot {
                " spot instance"
            } else {
                ""
            },
            self.region,
            price
                .map(|p| format!(", about ${p:.3}/hour"))
                .unwrap_or_default()
        ))
    }

    async fn create(&self, spec: &LaunchSpec, ui: &Ui) -> Result<String> {
        let instance_type = self.instance_type()?;
        let (image, root_device) = self.resolved_image().await?;
        let data = &spec.user_data;
        if data.len() > 16 * 1024 {
            return Err(Error::usage(format!(
                "the machine's user data is {} bytes, over EC2's 16 KiB",
                data.len()
            ))
            .hint("shorten the startup_script: let it download and run a longer script"));
        }
        let price = if self.cloud.spot {
            self.spot_price(&instance_type).await
        } else {
            None
        };
        let (key_name, key_created) = self.ensure_key_pair(spec).await?;
        let (sg, sg_created) = match self.ensure_security_group(spec).await {
            Ok(x) => x,
            Err(e) => {
                if key_created {
                    let _ = self
                        .client()
                        .await
                        .delete_key_pair()
                        .key_name(&key_name)
                        .send()
                        .await;
                }
                return Err(e);
            }
        };
        let mut zones = self.zones().await;
        if zones.is_empty() {
            zones.push(String::new());
        }
        let mut last_error = None;
        for zone in &zones {
            let mut req = self
                .client()
                .await
                .run_instances()
                .image_id(&image)
                .instance_type(InstanceType::from(instance_type.as_str()))
                .min_count(1)
                .max_count(1)
                .key_name(&key_name)
                .security_group_ids(&sg)
                .user_data(base64::engine::general_purpose::STANDARD.encode(data.as_bytes()))
                .instance_initiated_shutdown_behavior(if spec.keep {
                    ShutdownBehavior::Stop
                } else {
                    ShutdownBehavior::Terminate
                })
                .tag_specifications(Self::tag_spec(ResourceType::Instance, spec))
                .tag_specifications(Self::tag_spec(ResourceType::Volume, spec));
            if !zone.is_empty() && setting(&self.executor, "subnet").is_none() {
                req = req.placement(Placement::builder().availability_zone(zone).build());
            }
            if let Some(subnet) = setting(&self.executor, "subnet") {
                req = req.subnet_id(subnet);
            }
            if let (Some(size), Some(root)) = (self.cloud.disk_size, &root_device) {
                req = req.block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(root)
                        .ebs(
                            EbsBlockDevice::builder()
                                .volume_size(size.div_ceil(1 << 30) as i32)
                                .volume_type(VolumeType::Gp3)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                );
            }
            if self.cloud.spot {
                let mut spot = SpotMarketOptions::builder()
                    .spot_instance_type(SpotInstanceType::OneTime)
                    .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate);
                if let Some(p) = self.cloud.spot_price.filter(|p| *p > 0.0) {
                    spot = spot.max_price(format!("{p}"));
                }
                req = req.instance_market_options(
                    InstanceMarketOptionsRequest::builder()
                        .market_type(MarketType::Spot)
                        .spot_options(spot.build())
                        .build(),
                );
            }
            if let Some(profile) = setting(&self.executor, "instance_profile") {
                let spec = if profile.starts_with("arn:") {
                    IamInstanceProfileSpecification::builder().arn(profile)
                } else {
                    IamInstanceProfileSpecification::builder().name(profile)
                };
                req = req.iam_instance_profile(spec.build());
            }
            match req.send().await {
                Ok(out) => {
                    let id = out
                        .instances()
                        .first()
                        .and_then(|i| i.instance_id())
                        .unwrap_or_default()
                        .to_string();
                    if let (Some(p), Ok(mut slot)) = (price, self.price.lock()) {
                        *slot = Some((id.clone(), p, Instant::now()));
                    }
                    return Ok(id);
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some("InsufficientInstanceCapacity" | "InsufficientCapacity")
                    ) && zones.len() > 1 =>
                {
                    ui.warn(&format!(
                        "no capacity for {instance_type} in {zone}; trying the next zone"
                    ));
                    last_error = Some(ec2_error("launching the instance", e));
                }
                Err(e) => {
                    last_error = Some(ec2_error("launching the instance", e));
                    break;
                }
            }
        }
        // Roll back what this launch created.
        let client = self.client().await;
        if sg_created {
            let _ = client.delete_security_group().group_id(&sg).send().await;
        }
        if key_created {
            let _ = client.delete_key_pair().key_name(&key_name).send().await;
        }
        Err(last_error.unwrap_or_else(|| Error::failed("launching the instance failed")))
    }

    async fn start(&self, id: &str) -> Result<()> {
        self.client()
            .await
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| ec2_error(&format!("starting {id}"), e))?;
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        self.terminate(id).await
    }

    fn delete_command(&self, id: &str) -> String {
        self.terminate_command(id)
    }

    fn cost_note(&self, id: &str) -> Option<String> {
        let slot = self.price.lock().ok()?;
        let (launched, price, since) = slot.as_ref()?;
        if launched != id {
            return None;
        }
        let hours = since.elapsed().as_secs_f64() / 3600.0;
        Some(format!(
            "{id} ran {:.0} minutes at about ${price:.3}/hour: about ${:.3}",
            hours * 60.0,
            price * hours.max(1.0 / 60.0)
        ))
    }

    async fn remove_shared(&self, dry_run: bool, ui: &Ui) -> Result<Vec<String>> {
        let client = self.client().await;
        let mut removed = Vec::new();
        let keys = client
            .describe_key_pairs()
            .filters(Self::filter(
                &format!("tag:{TAG_EXECUTOR}"),
                &self.executor.name,
            ))
            .send()
            .await
            .map_err(|e| ec2_error("listing key pairs", e))?;
        {
            for k in keys.key_pairs() {
                let name = k.key_name().unwrap_or_default().to_string();
                removed.push(format!("key pair {name}"));
                if !dry_run {
                    client
                        .delete_key_pair()
                        .key_name(&name)
                        .send()
                        .await
                        .map_err(|e| ec2_error(&format!("deleting the key pair {name}"), e))?;
                }
            }
            let groups = client
                .describe_security_groups()
                .filters(Self::filter(
                    &format!("tag:{TAG_EXECUTOR}"),
                    &self.executor.name,
                ))
                .send()
                .await
                .map_err(|e| ec2_error("listing security groups", e))?;
            for g in groups.security_groups() {
                let id = g.group_id().unwrap_or_default().to_string();
                removed.push(format!("security group {id}"));
                if !dry_run
                    && let Err(e) = client.delete_security_group().group_id(&id).send().await
                {
                    if e.code() == Some("DependencyViolation") {
                        ui.warn(&format!("security group {id} is still in use by terminating instances; run dvc-exec gc again in a minute"));
                    } else {
                        return Err(ec2_error(&format!("deleting the security group {id}"), e));
                    }
                }
            }
        }
        Ok(removed)
    }
}
