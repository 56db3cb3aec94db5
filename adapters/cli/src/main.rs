//! `ota`: the command-line front door. A thin adapter: it parses flags into typed requests,
//! calls `ota-core`'s service on the embedded backend (`ota-local`) or on AWS (`ota-aws`,
//! with `--backend aws`), and prints tables or JSON. Every rule is enforced by the service, not here.

// Standard output goes through `outln!`/`out!` (a closed pipe is a quiet exit, not a panic).
#![deny(clippy::print_stdout)]

#[macro_use]
mod stdout;
mod aws;
mod cli;
mod commands;
mod demo;
mod devices;
mod enroll;
mod keys;
mod live;
mod policy;
mod render;
mod server;
mod table;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ota_core::auth::{Caller, Role};
use ota_core::device::DeviceQuery;
use ota_core::names::{DeviceType, JobId, ThingName};
use ota_core::rollout::RolloutQuery;
use ota_core::service::{FleetManager, PublishOptions, PublishRequest, Settings};
use ota_core::version::{FirmwareVersion, VersionFilter};
use ota_core::{Error, Result};

use cli::{
    AwsCommand, BackendKind, Cli, Command, ConfigCommand, DemoArgs, DevicesCommand, FirmwareCommand, RolloutsCommand,
    ServeArgs, SimArgs, TokenCommand,
};
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
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
    };
    stdout::flush();
    code
}

/// The local user, who owns the data dir and so acts as its admin.
fn local_caller() -> Caller {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "local".into());
    Caller::new(format!("local:{user}"), [Role::Admin])
}

fn load_settings(data_dir: &Path) -> Result<Settings> {
    let path = data_dir.join("settings.json");
    match std::fs::read(&path) {
        Ok(bytes) => Settings::from_json(&bytes, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
        Err(e) => Err(Error::storage(format!("cannot read {}: {e}", path.display()))),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let out = Output { json: cli.json };
    if let Command::Policy(command) = &cli.command {
        return policy::run(command, &cli.data_dir, cli.backend, &out);
    }
    // A policies.cedar that does not parse or validate stops every command here.
    let policies = policy::load(&cli.data_dir, cli.backend)?;
    let mut aws_settings = None;
    let mut store = None;
    let local_only = matches!(
        cli.command,
        Command::Ask { .. }
            | Command::Serve(_)
            | Command::Sim(_)
            | Command::Demo(_)
            | Command::Rollouts(RolloutsCommand::Watch { .. })
            | Command::Devices(DevicesCommand::Provision { .. })
    );
    if let Command::Devices(DevicesCommand::Revoke { thing }) = &cli.command {
        let revoked = match cli.backend {
            BackendKind::Local => enroll::revoke(&cli.data_dir, thing)?,
            BackendKind::Aws => enroll::revoke_on_aws(thing).await?,
        };
        match cli.json {
            true => outln!("{}", serde_json::to_string_pretty(&revoked).unwrap_or_default()),
            false => outln!("{}: {} certificate(s) revoked", revoked.thing, revoked.serials.len()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Keys(_) = &cli.command {
        let Command::Keys(command) = cli.command else { unreachable!() };
        keys::run(&cli.data_dir, command, &out, cli.backend == BackendKind::Local)?;
        return Ok(ExitCode::SUCCESS);
    }
    let new_data_dir = !cli.data_dir.join("ota.db").exists();
    let backend = match cli.backend {
        BackendKind::Local => {
            if matches!(cli.command, Command::Aws(_)) {
                return Err(Error::invalid("backend", "local", "`ota aws` commands need --backend aws"));
            }
            if !matches!(cli.command, Command::Init { .. } | Command::Demo(_)) && !cli.data_dir.join("ota.db").exists()
            {
                return Err(Error::not_found_hint(
                    "data dir",
                    cli.data_dir.display().to_string(),
                    "run `ota init --demo` (or `ota init`) first, or pass --data-dir",
                ));
            }
            let (backend, sqlite) = ota_local::open_local(&cli.data_dir)?;
            store = Some(sqlite);
            backend
        }
        BackendKind::Aws if local_only => {
            return Err(Error::invalid(
                "backend",
                "aws",
                "this command runs the local engine; on AWS, IoT Jobs runs the rollouts (use `ota rollouts start` and `ota rollouts show`)",
            ));
        }
        BackendKind::Aws => {
            let (backend, info) = aws::connect(&cli.command).await?;
            aws_settings = Some(info);
            backend
        }
    };
    // A new data dir signs its firmware (a trusted `default` key, signing required), before
    // the settings load.
    let signer = match (&cli.command, cli.backend) {
        (Command::Init { .. } | Command::Demo(_), BackendKind::Local) => {
            keys::default_signer(&cli.data_dir, new_data_dir)?
        }
        _ => None,
    };
    let settings = match &aws_settings {
        Some(aws) => aws.service.clone(),
        None => load_settings(&cli.data_dir)?,
    };
    let policies = policies.or_else(|| aws_settings.as_ref().and_then(|a| a.policies.clone()));
    let svc = Arc::new(policy::apply(FleetManager::new(backend, settings)?, policies));
    let me = local_caller();
    let local_store =
        || store.clone().ok_or_else(|| Error::invalid("backend", "aws", "this command needs the local backend"));
    match cli.command {
        Command::Ask { prompt, wait } => {
            let store = local_store()?;
            if server::ServerInfo::read(&cli.data_dir).is_none() {
                eprintln!(
                    "warning: no `ota serve` or `ota demo` is running on {}; the rollout will wait for it",
                    cli.data_dir.display()
                );
            }
            let code = live::ask(&svc, &store, &me, &prompt, Duration::from_secs(wait), &out).await?;
            return Ok(ExitCode::from(code));
        }
        Command::Rollouts(RolloutsCommand::Watch { id }) => {
            let store = local_store()?;
            let id = JobId::parse(&id)?;
            svc.rollout(&me, &id).await?;
            let how = live::Watch { wait: None, until_only_offline: false, bars: !cli.json };
            let watched = live::watch(&svc, &store, std::slice::from_ref(&id), how).await?;
            if watched.end == live::End::Ended {
                if cli.json {
                    let reports = live::headless_rollouts(&store, &watched.progress).await?;
                    outln!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
                } else {
                    live::print_summary(&store, &watched.progress).await?;
                }
            }
        }
        Command::Devices(DevicesCommand::Enroll { thing, device_type, attrs, out: dir, mqtt_url }) => {
            let done = match cli.backend {
                BackendKind::Local => {
                    enroll::enroll(&cli.data_dir, &svc, &thing, &device_type, &attrs, &dir, mqtt_url).await?
                }
                BackendKind::Aws => enroll::enroll_on_aws(&svc, &thing, &device_type, &attrs, &dir, mqtt_url).await?,
            };
            match cli.json {
                true => outln!("{}", serde_json::to_string_pretty(&done).unwrap_or_default()),
                false => outln!(
                    "enrolled {} for {}: {} in {}",
                    done.thing,
                    done.mqtt_url,
                    done.files.join(", "),
                    done.out.display()
                ),
            }
        }
        Command::Devices(DevicesCommand::Provision { mosquitto, cloud_user, cloud_password }) => {
            let creds = device_credentials(&cli.data_dir)?;
            let things: Vec<ThingName> =
                svc.fleet_status(&me, &DeviceQuery::default()).await?.devices.into_iter().map(|d| d.thing).collect();
            std::fs::create_dir_all(&mosquitto)
                .map_err(|e| Error::storage(format!("cannot create {}: {e}", mosquitto.display())))?;
            let files =
                ota_local::link::write_mosquitto_files(&mosquitto, &creds, &things, &cloud_user, &cloud_password)
                    .map_err(|e| Error::storage(format!("cannot write the mosquitto files: {e}")))?;
            outln!("wrote credentials and ACLs for {} devices: {files:?}", things.len());
            outln!("in mosquitto.conf: allow_anonymous false, password_file and acl_file pointing at them;");
            outln!("then: ota serve --mqtt-url mqtt://{cloud_user}:<password>@<host>:<port>");
        }
        Command::Mcp => {
            // stdout carries the protocol: nothing else may be printed there.
            let progress: Option<Arc<dyn ota_mcp::RolloutProgress>> =
                store.clone().map(|s| Arc::new(server::LocalProgress(s)) as Arc<dyn ota_mcp::RolloutProgress>);
            ota_mcp::OtaMcp::new(svc.clone(), progress)
                .serve_stdio(me.clone())
                .await
                .map_err(|e| Error::storage(format!("the MCP stdio session ended: {e}")))?;
        }
        Command::Token(TokenCommand::Jwks) => {
            let issuer = ota_auth::LocalIssuer::load_or_create(&cli.data_dir)
                .map_err(|e| Error::storage(format!("the local signing key: {e}")))?;
            outln!("{}", serde_json::to_string_pretty(&issuer.jwks()).unwrap_or_default());
        }
        Command::Token(TokenCommand::Create { role, ttl, subject }) => {
            let role = parse_role(&role)?;
            let ttl = parse_ttl(&ttl)?;
            let issuer = ota_auth::LocalIssuer::load_or_create(&cli.data_dir)
                .map_err(|e| Error::storage(format!("the local signing key: {e}")))?;
            let token = issuer
                .issue(&subject, role, ttl)
                .map_err(|e| Error::invalid("token", subject.clone(), e.to_string()))?;
            outln!("{token}");
        }
        Command::Serve(args) => {
            let store = local_store()?;
            let server = server::start(&cli.data_dir, svc.clone(), store, serve_options(&args).await?).await?;
            announce(&server, &cli.data_dir);
            let _ = tokio::signal::ctrl_c().await;
            server.stop().await;
        }
        Command::Sim(args) => sim(&cli.data_dir, &svc, args).await?,
        Command::Demo(args) => {
            let store = local_store()?;
            return run_demo(&cli.data_dir, svc, store, &me, args, &out, signer.as_ref()).await;
        }
        Command::Aws(AwsCommand::SeedDemo { .. }) => {
            let summary = demo::init_demo(&svc, &me, None).await?;
            out.seeded(&summary);
        }
        Command::Init { demo } => {
            let summary = if demo { Some(demo::init_demo(&svc, &me, signer.as_ref()).await?) } else { None };
            out.init(&cli.data_dir, summary.as_ref());
            if new_data_dir && let Some(key) = &signer {
                eprintln!(
                    "firmware must be signed here: publish with --sign {} (key {}, trusted; see `ota keys list`)",
                    keys::DEFAULT_KEY,
                    key.key_id()
                );
            }
        }
        Command::Plan { prompt } => {
            let plan = svc.plan_prompt(&me, &prompt).await?;
            out.plan(&plan);
            // IoT Jobs caps a start rate, not devices in flight: say what the policy becomes.
            if let Some(s) = aws_settings.as_ref().filter(|_| !cli.json) {
                for line in aws::start_rates(&plan, s) {
                    outln!("{line}");
                }
            }
        }
        Command::Firmware(FirmwareCommand::List { device_type: _, for_thing: Some(thing) }) => {
            keys::list_for(&svc, &me, &ThingName::parse(&thing)?, &out).await?;
        }
        Command::Firmware(FirmwareCommand::List { device_type, for_thing: None }) => {
            let t = device_type.as_deref().map(DeviceType::parse).transpose()?;
            out.firmware(&svc.list_firmware(&me, t.as_ref()).await?);
        }
        Command::Firmware(FirmwareCommand::Sign { device_type, version, key }) => {
            let artifact = ota_core::catalog::ArtifactRef::new(
                DeviceType::parse(&device_type)?,
                FirmwareVersion::parse(&version)?,
            );
            let key = keys::signer(&cli.data_dir, &key).await?;
            let signed = svc.sign_firmware(&me, &artifact, key.as_ref()).await?;
            out.signed(&signed);
        }
        Command::Firmware(FirmwareCommand::Publish { device_type, version, notes, file, sign, security_version }) => {
            let key = match sign.as_deref() {
                Some(name) => Some(keys::signer(&cli.data_dir, name).await?),
                None => None,
            };
            let device_type = DeviceType::parse(&device_type)?;
            let version = FirmwareVersion::parse(&version)?;
            let image = std::fs::read(&file)
                .map_err(|e| Error::invalid("firmware file", file.display().to_string(), e.to_string()))?;
            let request = PublishRequest {
                device_type,
                version,
                image,
                release_notes: notes,
                built_at: None,
                extra: Default::default(),
            };
            let signer = key.as_deref();
            let published =
                svc.publish_firmware_signed(&me, request, PublishOptions { signer, security_version }).await?;
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
        Command::Devices(DevicesCommand::List { device_type, version, filters }) => {
            let mut query = DeviceQuery {
                device_type: device_type.as_deref().map(DeviceType::parse).transpose()?,
                version: version.as_deref().map(VersionFilter::parse).transpose()?,
                ..Default::default()
            };
            filters.apply(&mut query)?;
            out.devices(&svc.fleet_status(&me, &query).await?);
        }
        Command::Devices(DevicesCommand::Show { thing }) => devices::show(&svc, &me, &thing, &out).await?,
        Command::Devices(DevicesCommand::SetState { thing, state, reason }) => {
            devices::set_state(&svc, &me, &thing, &state, &reason, &out).await?;
        }
        Command::Commands(command) => commands::run(&svc, &me, command, &out).await?,
        Command::Telemetry(args) => devices::telemetry(&svc, &me, &args, &out).await?,
        Command::Config(ConfigCommand::Enable { device_type }) => {
            out.config(&svc.set_ota_enabled(&me, &DeviceType::parse(&device_type)?, true).await?);
        }
        Command::Config(ConfigCommand::Disable { device_type }) => {
            out.config(&svc.set_ota_enabled(&me, &DeviceType::parse(&device_type)?, false).await?);
        }
        Command::Config(ConfigCommand::List) => {
            out.types(&svc.device_types(&me).await?);
        }
        Command::Config(ConfigCommand::Policy(args)) => {
            let t = DeviceType::parse(&args.device_type)?;
            let policy = if args.clear { None } else { Some(policy_from(&svc, &t, &args).await?) };
            out.config(&svc.set_policy(&me, &t, policy).await?);
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
            let id = JobId::parse(&id)?;
            let rollout = svc.rollout(&me, &id).await?;
            // Each device's execution, where the engine's executions are at hand (locally).
            let executions: Option<Vec<_>> = match &store {
                Some(store) => Some(store.executions(&id).await?.iter().map(live::device_execution).collect()),
                None => None,
            };
            out.rollout_with_executions(&rollout, executions.as_deref());
        }
        Command::Rollouts(RolloutsCommand::Start(args)) => {
            let asked = svc.ask(&me, &args.prompt, true, args.plan_id.as_deref()).await?;
            match asked.started {
                Some(started) => out.started(&started),
                None => out.nothing_started(&asked.plan),
            }
        }
        Command::Rollouts(RolloutsCommand::Cancel { id, reason }) => {
            out.rollout(&svc.cancel(&me, &JobId::parse(&id)?, &reason).await?);
        }
        // Ran above, before any backend opened.
        Command::Keys(_) | Command::Policy(_) | Command::Devices(DevicesCommand::Revoke { .. }) => {}
        Command::Audit { limit } => {
            out.audit(&svc.audit_trail(&me, limit).await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The type's current policy (its override, else the default) with the settings `args` gives.
/// The service validates the result.
async fn policy_from(
    svc: &FleetManager,
    t: &DeviceType,
    args: &cli::PolicyArgs,
) -> Result<ota_core::policy::RolloutPolicy> {
    let mut p = match svc.backend().config.get(t).await?.and_then(|c| c.policy) {
        Some(p) => p,
        None => svc.settings().gate.default_policy.clone(),
    };
    if let Some(v) = args.max_in_flight {
        p.max_in_flight = v;
    }
    if let Some(v) = args.max_per_minute {
        p.max_per_minute = Some(v);
    }
    if let Some(v) = args.abort_failure_percent {
        p.abort.failure_percent = v;
    }
    if let Some(v) = args.abort_min_executed {
        p.abort.min_executed = v;
    }
    if let Some(v) = args.abort_max_failures {
        p.abort.max_failures = Some(v);
    }
    if let Some(v) = args.in_progress_timeout_minutes {
        p.in_progress_timeout_minutes = v;
    }
    if let Some(v) = args.retry_failed {
        p.retries.failed = v;
    }
    if let Some(v) = args.retry_timed_out {
        p.retries.timed_out = v;
    }
    if let Some(v) = args.revert_on_abort {
        p.revert_on_abort = v;
    }
    Ok(p)
}

/// The chat model `args` name, built; `None` for the intent engine only.
async fn chat_model(args: &ServeArgs) -> Result<Option<Arc<dyn ota_core::agent::ChatModel>>> {
    use ota_core::agent::ModelSpec;
    Ok(match ModelSpec::parse(&args.model)? {
        None => None,
        Some(ModelSpec::OpenAi { model }) => {
            let mut config = ota_openai::OpenAiConfig::new(args.model_url.clone(), model);
            if let Ok(key) = std::env::var(&args.model_key_env)
                && !key.trim().is_empty()
            {
                config = config.with_api_key(key.trim());
            }
            Some(Arc::new(ota_openai::OpenAiChat::new(config)?))
        }
        Some(ModelSpec::Bedrock { model_id }) => Some(aws::bedrock(model_id).await?),
    })
}

async fn serve_options(args: &ServeArgs) -> Result<server::ServeOptions> {
    Ok(server::ServeOptions {
        listen: args.listen,
        mqtt_listen: args.mqtt_listen,
        mqtt_url: args.mqtt_url.clone(),
        webhook: args.webhook.clone(),
        oidc: args.oidc_issuer.as_ref().zip(args.oidc_jwks.as_ref()).map(|(issuer, jwks)| server::OidcOptions {
            issuer: issuer.clone(),
            jwks: jwks.clone(),
            audience: args.oidc_audience.clone(),
            client_id: args.oidc_client_id.clone(),
            roles_claim: args.roles_claim.clone(),
            page_signin: args.page_signin_domain.clone(),
        }),
        allowed_hosts: (!args.allowed_hosts.is_empty()).then(|| {
            let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
            hosts.extend(args.allowed_hosts.iter().cloned());
            hosts
        }),
        model: chat_model(args).await?,
        link: args.link.clone(),
    })
}

fn announce(server: &server::Server, data_dir: &Path) {
    let i = &server.info;
    eprintln!("ota server running (Ctrl-C stops it)");
    eprintln!("  devices (MQTT): {}:{}", i.mqtt_host, i.mqtt_port);
    if let Some(mqtts) = &i.mqtts {
        eprintln!("  devices (MQTT over TLS, certificates from `ota devices enroll`): {mqtts}");
    }
    eprintln!(
        "  chat page: {}/ (sign in with a token from `ota --data-dir {} token create --role operator`)",
        i.http,
        data_dir.display()
    );
    eprintln!("  HTTP API, MCP (/mcp) and firmware downloads: {}", i.http);
}

async fn sim(data_dir: &Path, svc: &FleetManager, args: SimArgs) -> Result<()> {
    let mut specs = live::fleet_specs(&args.fleet)?;
    live::resume_versions(svc, &mut specs).await?;
    live::register(svc, &specs).await?;
    if args.register_only {
        eprintln!("registered {} simulated devices", specs.len());
        return Ok(());
    }
    let (host, port) = match &args.mqtt {
        Some(addr) => {
            let (h, p) =
                addr.rsplit_once(':').ok_or_else(|| Error::invalid("--mqtt", addr.clone(), "expected host:port"))?;
            (h.to_string(), p.parse().map_err(|_| Error::invalid("--mqtt", addr.clone(), "the port is not a number"))?)
        }
        None => {
            let info = server::ServerInfo::read(data_dir).ok_or_else(|| {
                Error::not_found_hint(
                    "running server",
                    data_dir.display().to_string(),
                    "start `ota serve` first, or pass --mqtt",
                )
            })?;
            match (args.tls, &info.mqtts) {
                (false, _) => (info.mqtt_host, info.mqtt_port),
                (true, Some(url)) => mqtts_host_port(url)?,
                (true, None) => {
                    return Err(Error::invalid(
                        "--tls",
                        data_dir.display().to_string(),
                        "the running `ota serve` has no TLS device port (start it with --mqtts-listen ADDR), or pass --mqtt HOST:PORT",
                    ));
                }
            }
        }
    };
    let tls = match args.tls {
        false => None,
        true => {
            let things: Vec<ThingName> = specs.iter().map(|s| s.thing.clone()).collect();
            let dir = data_dir.to_path_buf();
            let tls = tokio::task::spawn_blocking(move || live::sim_tls(&dir, &things))
                .await
                .map_err(|e| Error::storage(e.to_string()))??;
            eprintln!(
                "TLS to {host}:{port}: {} certificate(s) issued, {} reused from {}",
                tls.issued,
                tls.identities.len() - tls.issued,
                data_dir.join(live::SIM_CERTS_DIR).display()
            );
            for thing in &tls.revoked {
                eprintln!(
                    "warning: {thing}'s certificate is revoked (`ota devices revoke`): the server refuses it;                      `ota devices enroll {thing}` admits it again"
                );
            }
            for thing in &tls.not_started {
                eprintln!(
                    "warning: {thing} is revoked (`ota devices revoke`) and has no certificate of its own here: not started"
                );
            }
            specs.retain(|s| !tls.not_started.contains(&s.thing));
            Some(tls.identities)
        }
    };
    let creds = device_credentials(data_dir)?;
    let n = specs.len();
    let trust = live::device_trust(svc, &specs, args.fleet.security_floor).await?;
    let fleet = tokio::task::spawn_blocking(move || live::start_fleet(specs, &host, port, creds, trust, tls))
        .await
        .map_err(|e| Error::storage(e.to_string()))??;
    eprintln!("{n} simulated devices running (Ctrl-C stops them)");
    // Until Ctrl-C: each device's new error, once (a refused certificate, a wrong password, a
    // failed update), so a device that cannot connect says why.
    let mut said: BTreeMap<ThingName, String> = BTreeMap::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        for d in fleet.snapshot() {
            if let Some(e) = d.connect_error.or(d.last_error).filter(|e| said.get(&d.thing) != Some(e)) {
                eprintln!("{}: {e}", d.thing);
                said.insert(d.thing, e);
            }
        }
    }
    let _ = tokio::task::spawn_blocking(move || fleet.stop()).await;
    Ok(())
}

/// `HOST` and `PORT` of an `mqtts://HOST:PORT` URL (server.json's `mqtts`).
fn mqtts_host_port(url: &str) -> Result<(String, u16)> {
    let bad = || Error::invalid("server.json mqtts", url.to_string(), "expected mqtts://HOST:PORT");
    let (host, port) = url.strip_prefix("mqtts://").and_then(|r| r.rsplit_once(':')).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port.parse().map_err(|_| bad())?))
}

async fn run_demo(
    data_dir: &Path,
    svc: Arc<FleetManager>,
    store: Arc<ota_local::SqliteStore>,
    me: &Caller,
    args: DemoArgs,
    out: &Output,
    signer: Option<&ota_core::signing::LocalSigningKey>,
) -> Result<ExitCode> {
    demo::init_demo(&svc, me, signer).await?;
    let mut specs = live::fleet_specs(&args.fleet)?;
    live::resume_versions(&svc, &mut specs).await?;
    live::register(&svc, &specs).await?;
    let server = server::start(data_dir, svc.clone(), store.clone(), serve_options(&args.serve).await?).await?;
    let creds = device_credentials(data_dir)?;
    let (host, port) = (server.info.mqtt_host.clone(), server.info.mqtt_port);
    let fleet_specs = specs.clone();
    let trust = live::device_trust(&svc, &specs, args.fleet.security_floor).await?;
    let fleet = tokio::task::spawn_blocking(move || live::start_fleet(fleet_specs, &host, port, creds, trust, None))
        .await
        .map_err(|e| Error::storage(e.to_string()))??;
    let result = demo_body(&svc, &store, me, &args, out, &specs, &fleet, &server, data_dir).await;
    let _ = tokio::task::spawn_blocking(move || fleet.stop()).await;
    server.stop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn demo_body(
    svc: &FleetManager,
    store: &ota_local::SqliteStore,
    me: &Caller,
    args: &DemoArgs,
    out: &Output,
    specs: &[ota_device::host::SimDeviceSpec],
    fleet: &ota_device::host::SimFleet,
    server: &server::Server,
    data_dir: &Path,
) -> Result<ExitCode> {
    live::wait_reported(store, specs, Duration::from_secs(120)).await?;
    let Some(prompt) = args.prompt.as_deref().filter(|_| args.headless) else {
        announce(server, data_dir);
        eprintln!("  {} simulated devices connected", specs.len());
        eprintln!("Type a request (Ctrl-D to quit), for example:");
        eprintln!("  Update all pet_feeder devices to the latest firmware");
        eprintln!("  Roll back pet_feeder-03 to 1.0.0");
        eprintln!("  Which devices are offline?");
        eprintln!("  Reboot pet_feeder-03");
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        loop {
            eprint!("ota> ");
            let line = tokio::select! {
                line = lines.next_line() => line.map_err(|e| Error::storage(e.to_string()))?,
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(line) = line else { break };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Err(e) = live::ask(svc, store, me, line, Duration::from_secs(args.wait), out).await {
                out.error(&e);
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let wait = Duration::from_secs(args.wait);
    let (report, progress) = live::ask_and_follow(svc, store, me, prompt, wait, false, out).await?;
    if !out.json {
        if let Some(plan) = &report.plan {
            out.plan(plan);
        }
        for item in &report.items {
            outln!("{}", item.summary());
        }
    }
    // Devices that just succeeded confirm their image right after reporting; give the last
    // ones a moment so the snapshot shows where they settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if out.json {
        let report = live::with_devices(report, fleet);
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        Ok(ExitCode::from(report.exit_code))
    } else {
        live::print_summary(store, &progress).await?;
        live::print_ending(&report, wait);
        Ok(ExitCode::from(report.exit_code))
    }
}

fn parse_role(s: &str) -> Result<Role> {
    match s {
        "viewer" => Ok(Role::Viewer),
        "operator" => Ok(Role::Operator),
        "admin" => Ok(Role::Admin),
        _ => Err(Error::invalid("--role", s, "must be viewer, operator or admin")),
    }
}

/// `30m`, `8h`, `7d`, `3600s` (or bare seconds).
fn parse_ttl(s: &str) -> Result<Duration> {
    let bad = || Error::invalid("--ttl", s, "expected a number with s, m, h or d, for example 8h");
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

/// The data dir's device credentials (the secret every simulated or provisioned device's
/// password derives from).
fn device_credentials(data_dir: &Path) -> Result<ota_local::link::DeviceCredentials> {
    ota_local::link::DeviceCredentials::load_or_create(data_dir)
        .map_err(|e| Error::storage(format!("device secret: {e}")))
}
