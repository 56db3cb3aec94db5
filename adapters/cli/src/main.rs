//! `ota`: the command-line front door. A thin adapter: it parses flags into typed requests,
//! calls `ota-core`'s service on the embedded backend (`ota-local`) or on AWS (`ota-aws`,
//! with `--backend aws`), and prints tables or JSON. Every rule is enforced by the service, not here.

mod cli;
mod demo;
mod render;
mod table;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use ota_core::auth::{Caller, Role};
use ota_core::device::DeviceQuery;
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::plan::Action;
use ota_core::rollout::RolloutQuery;
use ota_core::service::{FleetManager, PublishRequest, Settings};
use ota_core::version::{FirmwareVersion, VersionFilter};
use ota_core::{Error, Result};

use cli::{AwsCommand, BackendKind, Cli, Command, ConfigCommand, DevicesCommand, FirmwareCommand, RolloutsCommand};
use render::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = Output { json: cli.json };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
    }
}

/// The local user, who owns the data dir and so acts as its admin.
fn local_caller() -> Caller {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "local".into());
    Caller::new(format!("local:{user}"), [Role::Admin])
}

fn load_settings(data_dir: &Path) -> Result<Settings> {
    let path = data_dir.join("settings.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let s: Settings = serde_json::from_slice(&bytes)
                .map_err(|e| Error::invalid("settings file", path.display().to_string(), e.to_string()))?;
            s.naming.validate()?;
            s.gate.default_policy.validate()?;
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(Error::storage(format!("cannot read {}: {e}", path.display()))),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let out = Output { json: cli.json };
    let mut aws_settings = None;
    let backend = match cli.backend {
        BackendKind::Local => {
            if matches!(cli.command, Command::Aws(_)) {
                return Err(Error::invalid("backend", "local", "`ota aws` commands need --backend aws"));
            }
            if !matches!(cli.command, Command::Init { .. }) && !cli.data_dir.join("ota.db").exists() {
                return Err(Error::not_found_hint(
                    "data dir",
                    cli.data_dir.display().to_string(),
                    "run `ota init --demo` (or `ota init`) first, or pass --data-dir",
                ));
            }
            ota_local::open_backend(&cli.data_dir)?
        }
        BackendKind::Aws => {
            let settings = ota_aws::AwsSettings::from_env()?;
            let (clients, backend) = ota_aws::connect(&settings).await?;
            if let Command::Aws(AwsCommand::SeedDemo { create_resources: true }) = &cli.command {
                ota_aws::provision::create_resources(&clients, &settings).await?;
            }
            aws_settings = Some(settings);
            backend
        }
    };
    let svc = FleetManager::new(backend, load_settings(&cli.data_dir)?);
    let me = local_caller();
    match cli.command {
        Command::Aws(AwsCommand::SeedDemo { .. }) => {
            let summary = demo::init_demo(&svc, &me).await?;
            out.seeded(&summary);
        }
        Command::Init { demo } => {
            let summary = if demo { Some(demo::init_demo(&svc, &me).await?) } else { None };
            out.init(&cli.data_dir, summary.as_ref());
        }
        Command::Plan { prompt } => {
            let plan = svc.plan_prompt(&me, &prompt).await?;
            out.plan(&plan);
            // IoT Jobs caps a start rate, not devices in flight: say what the policy becomes.
            if let Some(s) = aws_settings.as_ref().filter(|_| !cli.json) {
                for d in &plan.deployments {
                    let rate = ota_aws::job_spec::start_rate(&d.policy, s.expected_update_minutes);
                    println!("On AWS ({}): {rate}", d.device_type);
                }
            }
        }
        Command::Firmware(FirmwareCommand::List { device_type }) => {
            let t = device_type.as_deref().map(DeviceType::parse).transpose()?;
            out.firmware(&svc.list_firmware(&me, t.as_ref()).await?);
        }
        Command::Firmware(FirmwareCommand::Publish { device_type, version, notes, file }) => {
            let device_type = DeviceType::parse(&device_type)?;
            let version = FirmwareVersion::parse(&version)?;
            let image = std::fs::read(&file)
                .map_err(|e| Error::invalid("firmware file", file.display().to_string(), e.to_string()))?;
            let published = svc
                .publish_firmware(
                    &me,
                    PublishRequest {
                        device_type,
                        version,
                        image,
                        release_notes: notes,
                        built_at: None,
                        extra: Default::default(),
                    },
                )
                .await?;
            out.published(&published);
        }
        Command::Firmware(FirmwareCommand::Verify { device_type }) => {
            let t = device_type.as_deref().map(DeviceType::parse).transpose()?;
            let reports = svc.verify_catalog(&me, t.as_ref()).await?;
            out.verified(&reports);
            if reports.iter().any(|r| r.error.is_some()) {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Devices(DevicesCommand::List { device_type, version }) => {
            let query = DeviceQuery {
                device_type: device_type.as_deref().map(DeviceType::parse).transpose()?,
                version: version.as_deref().map(VersionFilter::parse).transpose()?,
                connected: None,
            };
            out.devices(&svc.fleet_status(&me, &query).await?);
        }
        Command::Devices(DevicesCommand::Show { thing }) => {
            out.device(&svc.device(&me, &ThingName::parse(&thing)?).await?);
        }
        Command::Config(ConfigCommand::Enable { device_type }) => {
            out.config(&svc.set_ota_enabled(&me, &DeviceType::parse(&device_type)?, true).await?);
        }
        Command::Config(ConfigCommand::Disable { device_type }) => {
            out.config(&svc.set_ota_enabled(&me, &DeviceType::parse(&device_type)?, false).await?);
        }
        Command::Config(ConfigCommand::List) => {
            out.types(&svc.device_types(&me).await?);
        }
        Command::Rollouts(RolloutsCommand::List { device_type, active }) => {
            let query = RolloutQuery {
                device_type: device_type.as_deref().map(DeviceType::parse).transpose()?,
                active_only: active,
                limit: None,
            };
            out.rollouts(&svc.list_rollouts(&me, &query).await?);
        }
        Command::Rollouts(RolloutsCommand::Show { id }) => {
            out.rollout(&svc.rollout(&me, &JobId::parse(&id)?).await?);
        }
        Command::Rollouts(RolloutsCommand::Start(args)) => {
            let plan = svc.plan_prompt(&me, &args.prompt).await?;
            let Some(request) =
                plan.request.clone().filter(|_| matches!(plan.action, Action::Update | Action::Rollback))
            else {
                return Err(Error::Refused(format!("nothing to start: {}", plan.message)));
            };
            let started = svc.start(&me, &request, args.plan_id.as_deref()).await?;
            out.started(&started);
        }
        Command::Rollouts(RolloutsCommand::Cancel { id, reason }) => {
            out.rollout(&svc.cancel(&me, &JobId::parse(&id)?, &reason).await?);
        }
        Command::Audit { limit } => {
            out.audit(&svc.audit_trail(&me, limit).await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
