//! AWS EC2 executors (`type = aws`), behind the `aws` cargo feature.
//!
//! Machines are found by their tags (`dvc-exec:executor`, `dvc-exec:project`), kept machines
//! are resumed before new ones are created, a launch that fails half-way is rolled back, and a
//! launch interrupted by Ctrl-C is found again by its `dvc-exec:launch` tag and terminated.

pub mod catalog;

use std::time::{Duration, Instant};

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

use super::cloud::{
    self, ExecutorKeys, TAG_EXECUTOR, TAG_KEEP, TAG_LAUNCH, TAG_OWNER, TAG_PROJECT,
};
use super::{Address, Context, Machine, MachineState, Provider};
use crate::config::Executor;
use crate::config::executor::CloudSettings;
use crate::error::{Error, Result};
use crate::output::Ui;

/// Provider for `type = aws`.
pub struct AwsProvider {
    executor: Executor,
    cloud: CloudSettings,
    ctx: Context,
    region: String,
    client: OnceCell<Client>,
    /// The hourly price of what this provider launched, and when.
    price: std::sync::Mutex<Option<(String, f64, Instant)>>,
    /// Leases on pool machines this process holds.
    leases: std::sync::Mutex<Vec<super::lease::Lease>>,
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

impl AwsProvider {
    /// A provider for this executor.
    pub fn new(executor: Executor, ctx: Context) -> Self {
        let mut cloud = executor.cloud.clone().unwrap_or_default();
        // Pool machines outlive runs: they are kept, and stopped by their watchdog when idle.
        if executor.raw.keys.contains_key("pool") {
            cloud.keep = true;
        }
        let region = catalog::region(cloud.region.as_deref().unwrap_or("us-east"));
        Self {
            executor,
            cloud,
            ctx,
            region,
            client: OnceCell::new(),
            price: std::sync::Mutex::new(None),
            leases: std::sync::Mutex::new(Vec::new()),
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

    fn user(&self) -> String {
        setting(&self.executor, "user").unwrap_or_else(|| "ubuntu".into())
    }

    fn tags(&self, run_id: &str) -> Vec<Tag> {
        let mut tags = vec![
            (TAG_EXECUTOR.to_string(), self.executor.name.clone()),
            (TAG_PROJECT.to_string(), self.ctx.project.clone()),
            (TAG_OWNER.to_string(), self.ctx.owner.clone()),
            (TAG_LAUNCH.to_string(), run_id.to_string()),
            (TAG_KEEP.to_string(), self.cloud.keep.to_string()),
            (
                "Name".to_string(),
                format!("dvc-exec-{}", self.executor.name),
            ),
        ];
        tags.extend(self.cloud.tags.iter().cloned());
        tags.into_iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    fn tag_spec(&self, kind: ResourceType, run_id: &str) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(self.tags(run_id)))
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

    fn machine_of(&self, i: &aws_sdk_ec2::types::Instance, keys: &ExecutorKeys) -> Machine {
        let address = i
            .public_ip_address()
            .or(i.private_ip_address())
            .unwrap_or_default()
            .to_string();
        let keep = i
            .tags()
            .iter()
            .any(|t| t.key() == Some(TAG_KEEP) && t.value() == Some("true"));
        Machine {
            id: i.instance_id().unwrap_or_default().to_string(),
            executor: self.executor.name.clone(),
            address: Address::Ssh(cloud::ssh_target(
                &self.executor,
                keys,
                &address,
                &self.user(),
                None,
            )),
            owned: true,
            keep,
            state: Some(match i.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => MachineState::Running,
                Some(InstanceStateName::Pending) => MachineState::Pending,
                Some(InstanceStateName::Stopped | InstanceStateName::Stopping) => {
                    MachineState::Stopped
                }
                _ => MachineState::Gone,
            }),
            launched: i.launch_time().map(|t| t.secs().max(0) as u64),
            slot: None,
        }
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
        let spec = self
            .cloud
            .machine
            .clone()
            .unwrap_or_else(|| crate::config::units::MachineSpec::parse("m").expect("valid"));
        catalog::instance_type(&spec)
            .map(String::from)
            .map_err(|e| {
                Error::usage(format!("executor {:?}: {e}", self.executor.name))
                    .hint("set instance_type to an EC2 instance type")
            })
    }

    /// The key pair; returns its name and whether this launch created it.
    async fn ensure_key_pair(&self, keys: &ExecutorKeys, run_id: &str) -> Result<(String, bool)> {
        let name = format!(
            "dvc-exec-{}-{}",
            self.executor.name,
            keys.client_fingerprint()
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
                keys.client_public.as_bytes(),
            ))
            .tag_specifications(self.tag_spec(ResourceType::KeyPair, run_id))
            .send()
            .await
            .map_err(|e| ec2_error("importing the SSH key pair", e))?;
        Ok((name, true))
    }

    /// The security group admitting SSH from `cidr`; returns its id and whether this launch created it.
    async fn ensure_security_group(&self, run_id: &str) -> Result<(String, bool)> {
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
                    .tag_specifications(self.tag_spec(ResourceType::SecurityGroup, run_id))
                    .send()
                    .await
                    .map_err(|e| ec2_error("creating the security group", e))?;
                (out.group_id().unwrap_or_default().to_string(), true)
            }
        };
        let cidr = cloud::ssh_cidr(&self.executor).await?;
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
                            .cidr_ip(&cidr)
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

    async fn wait_running(&self, id: &str, ui: &Ui) -> Result<aws_sdk_ec2::types::Instance> {
        let started = Instant::now();
        let mut said = false;
        loop {
            let found = self
                .instances(vec![Self::filter("instance-id", id)])
                .await?;
            let Some(i) = found.into_iter().next() else {
                return Err(Error::failed(format!(
                    "instance {id} disappeared while starting"
                )));
            };
            match i.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => return Ok(i),
                Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown) => {
                    let reason = i
                        .state_reason()
                        .and_then(|r| r.message())
                        .unwrap_or("no reason given");
                    return Err(Error::failed(format!(
                        "instance {id} was terminated while starting: {reason}"
                    ))
                    .hint(
                        "for spot capacity, try another zone, region or machine, or spot = false",
                    ));
                }
                _ => {}
            }
            if !said {
                ui.note(&format!("waiting for {id} to start"));
                said = true;
            }
            if started.elapsed() > Duration::from_secs(600) {
                return Err(Error::failed(format!(
                    "instance {id} did not start in 10 minutes"
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
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

    async fn launch(&self, run_id: &str, ui: &Ui, keys: &ExecutorKeys) -> Result<String> {
        let instance_type = self.instance_type()?;
        let (image, root_device) = self.resolve_image().await?;
        let user = self.user();
        let data =
            cloud::launch_user_data(&self.executor, &self.ctx.root, keys, &user, self.cloud.keep)?;
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
        ui.phase(
            "launch",
            &format!(
                "launching a {instance_type}{} in {} ({image}){}",
                if self.cloud.spot {
                    " spot instance"
                } else {
                    ""
                },
                self.region,
                price
                    .map(|p| format!(", about ${p:.3}/hour"))
                    .unwrap_or_default()
            ),
        );

        let (key_name, key_created) = self.ensure_key_pair(keys, run_id).await?;
        let (sg, sg_created) = match self.ensure_security_group(run_id).await {
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
                .instance_initiated_shutdown_behavior(if self.cloud.keep {
                    ShutdownBehavior::Stop
                } else {
                    ShutdownBehavior::Terminate
                })
                .tag_specifications(self.tag_spec(ResourceType::Instance, run_id))
                .tag_specifications(self.tag_spec(ResourceType::Volume, run_id));
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

    /// A pool of up to `n` kept machines: lease an idle running one, else start a stopped one,
    /// else create one while fewer than `n` exist, else wait.
    async fn acquire_from_pool(&self, n: usize, run_id: &str, ui: &Ui) -> Result<Machine> {
        use super::lease;
        let name = self.executor.name.clone();
        let mut said = false;
        loop {
            let guard = lease::CreateLock::take(&name).await?;
            let keys = ExecutorKeys::load_or_create(&name)?;
            let found = self
                .instances(vec![
                    Self::filter(&format!("tag:{TAG_EXECUTOR}"), &name),
                    Self::filter(&format!("tag:{TAG_PROJECT}"), &self.ctx.project),
                    Self::live_states(),
                ])
                .await?;
            let machines: Vec<Machine> = found.iter().map(|i| self.machine_of(i, &keys)).collect();
            let running: Vec<Machine> = machines
                .iter()
                .filter(|m| m.state == Some(MachineState::Running))
                .cloned()
                .collect();
            let stopped: Vec<Machine> = machines
                .iter()
                .filter(|m| m.state == Some(MachineState::Stopped))
                .cloned()
                .collect();
            let picked = match lease::try_acquire(&name, &running)? {
                Some(got) => Some(got),
                None => lease::try_acquire(&name, &stopped)?,
            };
            if let Some((m, l)) = picked {
                drop(guard);
                self.leases.lock().expect("not poisoned").push(l);
                ui.phase("launch", &format!("using {} from the pool of {name}", m.id));
                let m = self.start(&m, ui).await?;
                self.ready(&m, ui).await?;
                return Ok(m);
            }
            if machines.len() < n {
                let m = self.create(run_id, ui).await?;
                let l = lease::take_new(&name, &m)?;
                drop(guard);
                self.leases.lock().expect("not poisoned").push(l);
                return Ok(m);
            }
            drop(guard);
            if !said {
                ui.note(&format!(
                    "all {n} machines of the pool of {name} are busy; waiting for one"
                ));
                said = true;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Wait until the machine answers on SSH and its bootstrap is done.
    async fn ready(&self, machine: &Machine, ui: &Ui) -> Result<()> {
        if let Address::Ssh(target) = &machine.address {
            let workdir = cloud::remote_workdir(&self.executor, &self.user());
            cloud::wait_until_ready(target, &workdir, ui, Duration::from_secs(1200)).await?;
        }
        Ok(())
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
impl Provider for AwsProvider {
    fn executor(&self) -> &Executor {
        &self.executor
    }

    async fn list(&self) -> Result<Vec<Machine>> {
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        let found = self
            .instances(vec![
                Self::filter(&format!("tag:{TAG_EXECUTOR}"), &self.executor.name),
                Self::live_states(),
            ])
            .await?;
        Ok(found.iter().map(|i| self.machine_of(i, &keys)).collect())
    }

    async fn acquire(&self, run_id: &str, ui: &Ui) -> Result<Machine> {
        if let Some(n) = setting(&self.executor, "pool").and_then(|n| n.parse::<usize>().ok()) {
            return self.acquire_from_pool(n, run_id, ui).await;
        }
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        // Resume before create: a kept machine of this executor and project.
        let kept = self
            .instances(vec![
                Self::filter(&format!("tag:{TAG_EXECUTOR}"), &self.executor.name),
                Self::filter(&format!("tag:{TAG_PROJECT}"), &self.ctx.project),
                Self::filter(&format!("tag:{TAG_KEEP}"), "true"),
                Self::live_states(),
            ])
            .await?;
        let pick = kept
            .iter()
            .find(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
            .or_else(|| {
                kept.iter()
                    .find(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Stopped))
            });
        let instance = match pick {
            Some(i) => {
                let id = i.instance_id().unwrap_or_default().to_string();
                if i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Stopped) {
                    ui.phase("launch", &format!("starting the kept machine {id}"));
                    self.client()
                        .await
                        .start_instances()
                        .instance_ids(&id)
                        .send()
                        .await
                        .map_err(|e| ec2_error(&format!("starting {id}"), e))?;
                } else {
                    ui.phase("launch", &format!("reusing the running machine {id}"));
                }
                self.wait_running(&id, ui).await?
            }
            None => {
                let id = self.launch(run_id, ui, &keys).await?;
                ui.note(&format!("launched {id}"));
                self.wait_running(&id, ui).await?
            }
        };
        let machine = self.machine_of(&instance, &keys);
        if let Err(e) = self.ready(&machine, ui).await {
            if !machine.keep || pick.is_none() {
                let _ = self.terminate(&machine.id).await;
            }
            return Err(e);
        }
        Ok(machine)
    }

    async fn state(&self, machine: &Machine) -> Result<MachineState> {
        let found = self
            .instances(vec![Self::filter("instance-id", &machine.id)])
            .await?;
        Ok(
            match found.first().and_then(|i| i.state()).and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => MachineState::Running,
                Some(InstanceStateName::Pending) => MachineState::Pending,
                Some(InstanceStateName::Stopped | InstanceStateName::Stopping) => {
                    MachineState::Stopped
                }
                _ => MachineState::Gone,
            },
        )
    }

    async fn release(&self, machine: &Machine) -> Result<()> {
        if let Ok(mut l) = self.leases.lock() {
            l.retain(|l| l.machine_id != machine.id);
        }
        if machine.keep {
            return Ok(());
        }
        self.terminate(&machine.id).await
    }

    async fn abort(&self, run_id: &str) -> Result<()> {
        let found = self
            .instances(vec![
                Self::filter(&format!("tag:{TAG_LAUNCH}"), run_id),
                Self::filter(&format!("tag:{TAG_EXECUTOR}"), &self.executor.name),
                Self::live_states(),
            ])
            .await?;
        for i in found {
            if let Some(id) = i.instance_id() {
                self.terminate(id).await?;
            }
        }
        Ok(())
    }

    fn cleanup_command(&self, machine: &Machine) -> Option<String> {
        Some(self.terminate_command(&machine.id))
    }

    async fn create(&self, run_id: &str, ui: &Ui) -> Result<Machine> {
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        let id = self.launch(run_id, ui, &keys).await?;
        ui.note(&format!("launched {id}"));
        let instance = self.wait_running(&id, ui).await?;
        let machine = self.machine_of(&instance, &keys);
        self.ready(&machine, ui).await?;
        Ok(machine)
    }

    async fn start(&self, machine: &Machine, ui: &Ui) -> Result<Machine> {
        let keys = ExecutorKeys::load_or_create(&self.executor.name)?;
        if machine.state == Some(MachineState::Stopped) {
            self.client()
                .await
                .start_instances()
                .instance_ids(&machine.id)
                .send()
                .await
                .map_err(|e| ec2_error(&format!("starting {}", machine.id), e))?;
        }
        let instance = self.wait_running(&machine.id, ui).await?;
        Ok(self.machine_of(&instance, &keys))
    }

    async fn destroy(&self, machine: &Machine) -> Result<()> {
        self.terminate(&machine.id).await
    }

    fn cost_note(&self, machine: &Machine) -> Option<String> {
        let slot = self.price.lock().ok()?;
        let (id, price, since) = slot.as_ref()?;
        if *id != machine.id {
            return None;
        }
        let hours = since.elapsed().as_secs_f64() / 3600.0;
        Some(format!(
            "{id} ran {:.0} minutes at about ${price:.3}/hour: about ${:.3}",
            hours * 60.0,
            price * hours.max(1.0 / 60.0)
        ))
    }

    async fn gc(&self, dry_run: bool, busy: &[String], ui: &Ui) -> Result<Vec<String>> {
        let client = self.client().await;
        let mut removed = Vec::new();
        let found = self
            .instances(vec![
                Self::filter(&format!("tag:{TAG_EXECUTOR}"), &self.executor.name),
                Self::live_states(),
            ])
            .await?;
        let mut remaining = 0;
        for i in &found {
            let id = i.instance_id().unwrap_or_default().to_string();
            if busy.contains(&id) {
                remaining += 1;
                ui.note(&format!("keeping {id}: a run is using it"));
                continue;
            }
            removed.push(format!("instance {id}"));
            if !dry_run {
                self.terminate(&id).await?;
            }
        }
        let keys = client
            .describe_key_pairs()
            .filters(Self::filter(
                &format!("tag:{TAG_EXECUTOR}"),
                &self.executor.name,
            ))
            .send()
            .await
            .map_err(|e| ec2_error("listing key pairs", e))?;
        if remaining == 0 {
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
