//! The command line: every command, its flags, and its help.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit status of every command, for `ota --help`. `ask` and `demo --headless` say more
/// about 0, 3 and 4 in their own help (`crate::live::EXIT_STATUS_HELP`).
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  done; also when the reader of standard output went away early (`ota devices list |
     head -1`): output stops quietly, with no error
  1  an error (printed once, on stderr; with --json also as {\"error\": ...} on stdout), a
     refused request (nothing changed), or `firmware verify` found a bad build
  3  `ask`, `demo --headless`: a rollout aborted or was canceled, or a device failed
  4  `ask`, `demo --headless`: returned while devices still wait (see `ota ask --help`)";

/// Manage the firmware of a fleet of ESP32 devices by saying what you want.
///
/// The local CLI acts as the local admin: whoever can read and write the data dir.
#[derive(Debug, Parser)]
#[command(name = "ota", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Where the embedded backend keeps its database and firmware catalog.
    #[arg(long, global = true, env = "OTA_DATA_DIR", default_value = ".ota")]
    pub data_dir: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Where the fleet lives: `local` (the data dir) or `aws` (resources named by the
    /// `OTA_AWS_*` variables; see README.md, "On AWS").
    #[arg(long, global = true, env = "OTA_BACKEND", value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    #[command(subcommand)]
    pub command: Command,
}

/// The storage behind every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Local,
    Aws,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data dir; with --demo, a realistic demo fleet and firmware catalog.
    Init {
        /// Create the demo world: 26 device types, 64 firmware builds, 104 devices.
        #[arg(long)]
        demo: bool,
    },
    /// Show what a plain-language request would do, without doing it.
    Plan {
        /// For example: "Update all vision_ai_face_detector devices to v2.0.0".
        prompt: String,
    },
    /// The firmware catalog.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// Firmware signing keys: generate, list, export, revoke.
    #[command(subcommand)]
    Keys(crate::keys::KeysCommand),
    /// Authorization policies (Cedar): check a file, show those in force.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
    /// The device registry: status, health, state, location, configuration.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Remote commands to devices (reboot, identify, recalibrate, update_config, set_state):
    /// planned, then sent only when confirmed; list, show, cancel.
    #[command(subcommand)]
    Commands(crate::commands::CommandsCommand),
    /// A device's telemetry history (kept 7 days), oldest first.
    Telemetry(crate::devices::TelemetryArgs),
    /// The per-type OTA gate and policy.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Rollouts: list, show, start, cancel.
    #[command(subcommand)]
    Rollouts(RolloutsCommand),
    /// The AWS deployment (with --backend aws).
    #[command(subcommand)]
    Aws(AwsCommand),
    /// Plan a plain-language request, start it, and follow it live until it ends.
    /// Needs `ota serve` (or `ota demo`) running on the same data dir. It returns when every
    /// rollout has ended, when only devices that are not connected are left, or after --wait,
    /// naming the devices still waiting; Ctrl-C stops watching. The rollouts keep running on
    /// the server.
    #[command(after_help = crate::live::EXIT_STATUS_HELP)]
    Ask {
        /// For example: "Update all pet_feeder devices to the latest firmware".
        prompt: String,
        /// Return after this many seconds at most, even if devices are still updating.
        #[arg(long, value_name = "SECONDS", default_value_t = crate::live::DEFAULT_WAIT_SECS)]
        wait: u64,
    },
    /// Run the local server: the device MQTT endpoint, the jobs engine, signed firmware
    /// downloads and the JSON API. Loopback only by default.
    Serve(ServeArgs),
    /// Run simulated devices (the real device agent over simulated flash) against `ota serve`.
    Sim(SimArgs),
    /// The whole system in one process: the demo world, the server and a simulated fleet;
    /// then it takes prompts on stdin (and `ota ask` from another terminal). With --headless,
    /// runs one prompt, returns as `ota ask` does, prints the outcome and exits.
    #[command(after_help = crate::live::EXIT_STATUS_HELP)]
    Demo(DemoArgs),
    /// Tokens for the HTTP front doors (`/mcp`, the API), signed by the data dir's local key.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The MCP server on stdio, for Claude Code, Kiro and any MCP client
    /// (`claude mcp add ota -- ota --data-dir DIR mcp`). Calls run as the local user, who owns
    /// the data dir (admin).
    Mcp,
    /// The audit trail, newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// List firmware builds.
    List {
        /// Only this device type.
        #[arg(long = "type")]
        device_type: Option<String>,
        /// Only this device's type, saying of each version whether the device may run it
        /// (its security floor, the signature).
        #[arg(long = "for", value_name = "THING", conflicts_with = "device_type")]
        for_thing: Option<String>,
    },
    /// Sign a published build with a key of the data dir (`ota keys generate`); the key must
    /// be trusted. Signing again with the same key changes nothing; another key replaces the
    /// signature (rotation). The image and firmware.sha256 never change.
    Sign {
        device_type: String,
        version: String,
        /// The key's name in the data dir, or `kms:KEY` (an AWS KMS key id, ARN or
        /// `alias/NAME`, with the `aws` feature).
        #[arg(long)]
        key: String,
    },
    /// Publish a new build (immutable once published).
    Publish {
        #[arg(long = "type")]
        device_type: String,
        #[arg(long)]
        version: String,
        /// Release notes stored in metadata.json.
        #[arg(long, default_value = "")]
        notes: String,
        /// The image file.
        file: PathBuf,
        /// Sign it with this key of the data dir, or `kms:KEY` for an AWS KMS key (needed
        /// where signing is required).
        #[arg(long, value_name = "KEY")]
        sign: Option<String>,
        /// The anti-rollback counter: devices that ran a build with a higher one refuse it.
        #[arg(long, default_value_t = 0)]
        security_version: u32,
    },
    /// Hash every image and check it against firmware.sha256 and metadata.json.
    Verify {
        #[arg(long = "type")]
        device_type: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List devices.
    List {
        #[arg(long = "type")]
        device_type: Option<String>,
        /// Current version: 1.0.0, 1.x, 1.0 or <2.0.0.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        filters: crate::devices::DeviceFilters,
    },
    /// Show one device's whole status: connectivity and last seen, location, health, state,
    /// firmware, last telemetry, and its configuration as reported and as desired.
    Show { thing: String },
    /// Set a device's operational state (active, maintenance, retired), audited with the
    /// reason. Devices not active are left out of rollouts and commands unless named.
    SetState {
        thing: String,
        /// active, maintenance or retired.
        state: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Register a device and write its provisioning (ca.pem, cert.pem, key.pem, nvs.csv,
    /// settings.json) into an empty folder: a certificate from the data dir's CA naming the
    /// thing, for `ota serve`'s TLS device port (firmware/README.md, "Provisioning a device").
    /// With --backend aws: the thing in its type's group, an AWS IoT certificate with the
    /// device policy, Amazon Root CA 1 and the account's IoT endpoint.
    Enroll {
        thing: String,
        #[arg(long = "type")]
        device_type: String,
        /// An attribute written to settings.json (repeat for several).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// The URL the device reaches the TLS device port by [default: the running server's].
        #[arg(long, value_name = "mqtts://HOST:PORT")]
        mqtt_url: Option<String>,
    },
    /// Revoke every certificate of a device: `ota serve` closes its connection and refuses it
    /// (with --backend aws: its AWS IoT certificates are set INACTIVE and detached).
    Revoke { thing: String },
    /// Write mosquitto's password and ACL files for every registered device, so an external
    /// broker (`ota serve --mqtt-url`) enforces "a device acts only for itself".
    Provision {
        /// Folder to write `passwords` and `acl` into.
        #[arg(long)]
        mosquitto: PathBuf,
        /// The user `ota serve --mqtt-url` connects as.
        #[arg(long, default_value = "ota-cloud")]
        cloud_user: String,
        #[arg(long, env = "OTA_MQTT_CLOUD_PASSWORD")]
        cloud_password: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Allow OTA updates for a device type.
    Enable { device_type: String },
    /// Stop OTA updates for a device type.
    Disable { device_type: String },
    /// Show the gate and policy of every type.
    List,
    /// Set a type's rollout policy: the given settings change, the others stay as the type's
    /// current policy has them (its override, else the default). Plans made before no longer
    /// start (their plan id binds the policy).
    Policy(PolicyArgs),
}

/// `ota config policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    pub device_type: String,
    /// Devices updating at the same time (1-1000).
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Devices started per minute at most (1-1000).
    #[arg(long)]
    pub max_per_minute: Option<u32>,
    /// Abort when failures exceed this share of executed devices (0-100).
    #[arg(long)]
    pub abort_failure_percent: Option<f64>,
    /// The share is judged only once this many devices finished.
    #[arg(long)]
    pub abort_min_executed: Option<u32>,
    /// Abort when failures exceed this count.
    #[arg(long)]
    pub abort_max_failures: Option<u32>,
    /// A device in progress longer than this times out (1-10080 minutes).
    #[arg(long)]
    pub in_progress_timeout_minutes: Option<u32>,
    /// Retries for failed devices (0-10).
    #[arg(long)]
    pub retry_failed: Option<u8>,
    /// Retries for timed-out devices (0-10).
    #[arg(long)]
    pub retry_timed_out: Option<u8>,
    /// When a rollout aborts, roll the devices it moved back to the version each ran before.
    #[arg(long)]
    pub revert_on_abort: Option<bool>,
    /// Remove the type's override: it follows the default policy again.
    #[arg(long, conflicts_with_all = ["max_in_flight", "max_per_minute", "abort_failure_percent", "abort_min_executed", "abort_max_failures", "in_progress_timeout_minutes", "retry_failed", "retry_timed_out", "revert_on_abort"])]
    pub clear: bool,
}

#[derive(Debug, Subcommand)]
pub enum RolloutsCommand {
    /// List rollouts, newest first.
    List {
        #[arg(long = "type")]
        device_type: Option<String>,
        /// Only active rollouts.
        #[arg(long)]
        active: bool,
    },
    /// Show one rollout.
    Show { id: String },
    /// Start what a request plans. With --plan-id, only if the plan is still exactly that one.
    Start(StartArgs),
    /// Follow a rollout live until it ends (Ctrl-C stops watching, not the rollout).
    Watch { id: String },
    /// Cancel an active rollout.
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The request, as for `ota plan`.
    pub prompt: String,
    /// The plan id `ota plan` showed; refuse if the plan changed since.
    #[arg(long)]
    pub plan_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AwsCommand {
    /// Upload the demo world: firmware to S3, things, thing groups and shadows to IoT, and the
    /// config gate to DynamoDB. Idempotent.
    SeedDemo {
        /// Also create the bucket and tables (for emulators such as moto; on AWS the stack does).
        #[arg(long)]
        create_resources: bool,
    },
}

/// Where `ota serve` listens.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP: the JSON API and the signed firmware downloads.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The embedded MQTT device endpoint.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt_listen: SocketAddr,
    /// Use this external broker instead of the embedded endpoint:
    /// `mqtt://user:password@host:port` (see `ota devices provision`).
    #[arg(long, env = "OTA_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// POST a JSON message here when a rollout is aborted (`http://` only).
    #[arg(long, env = "OTA_WEBHOOK_URL")]
    pub webhook: Option<String>,
    /// A `Host` value `/mcp` accepts besides loopback (repeat for several), for a server
    /// reached through a domain name.
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Accept bearer tokens from this OIDC issuer (exact `iss`, e.g. a Cognito user pool URL)
    /// instead of the data dir's local key. Needs --oidc-jwks.
    #[arg(long, requires = "oidc_jwks")]
    pub oidc_issuer: Option<String>,
    /// The issuer's JWKS as a JSON file (fetch it from the issuer's `jwks_uri`).
    #[arg(long)]
    pub oidc_jwks: Option<PathBuf>,
    /// Required `aud` of tokens from --oidc-issuer.
    #[arg(long)]
    pub oidc_audience: Option<String>,
    /// Accepted `client_id` claim (Cognito access tokens carry no `aud`).
    #[arg(long)]
    pub oidc_client_id: Option<String>,
    /// The claim holding the roles (viewer, operator, admin).
    #[arg(long, default_value = "cognito:groups")]
    pub roles_claim: String,
    /// The issuer's hosted sign-in domain (Cognito: `https://PREFIX.auth.REGION.amazoncognito.com`),
    /// for the chat page's sign-in (authorization code with PKCE as --oidc-client-id; register
    /// this server's page URL as a callback). Without it the page asks for a token.
    #[arg(long, requires_all = ["oidc_issuer", "oidc_client_id"])]
    pub page_signin_domain: Option<String>,
    /// The chat model for requests the intent engine does not understand: `openai:MODEL` (any
    /// OpenAI-compatible server at --model-url: Ollama, vLLM, llama.cpp, LM Studio, OpenAI),
    /// `bedrock` or `bedrock:MODEL_ID` (Amazon Bedrock Converse, AWS credentials from the
    /// environment; default Amazon Nova 2 Lite), or `none` (the intent engine only).
    #[arg(long, env = "OTA_CHAT_MODEL", default_value = "none")]
    pub model: String,
    /// The OpenAI-compatible server's API root, including `/v1`.
    #[arg(long, env = "OTA_CHAT_BASE_URL", default_value = "http://127.0.0.1:11434/v1")]
    pub model_url: String,
    /// The environment variable holding that server's API key, if it needs one (keys are never
    /// taken on the command line, where `ps` would show them).
    #[arg(long, default_value = "OTA_CHAT_API_KEY")]
    pub model_key_env: String,
    #[command(flatten)]
    pub link: crate::server::LinkArgs,
}

/// The simulated fleet and its faults.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Devices per demo type: device n runs 1.0.0 when n mod 4 is 1 or 2, 2.0.0 when 3, the
    /// type's latest when 0.
    #[arg(long, default_value_t = 4)]
    pub devices_per_type: u32,
    /// Only these demo types, comma-separated (default: all).
    #[arg(long)]
    pub types: Option<String>,
    /// Fraction of devices whose download arrives corrupted (the hash check refuses it).
    #[arg(long, default_value_t = 0.0)]
    pub corrupt_rate: f64,
    /// Fraction of devices whose new image fails its self-test (the bootloader rolls back).
    #[arg(long, default_value_t = 0.0)]
    pub boot_failure_rate: f64,
    /// Fraction of devices whose download drops midway (the device resumes it).
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Fraction of devices behind a man in the middle who rewrites the image and the job
    /// document's sha256 to match (the hash check passes; the signature check refuses it).
    #[arg(long, default_value_t = 0.0)]
    pub tamper_rate: f64,
    /// Every device's anti-rollback floor is at least this (besides the security version of
    /// the firmware it runs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub security_floor: u32,
    /// Seed for which devices get which fault: the same seed gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also connect the demo's offline devices (mailbox_notifier-04, sound_level_meter-04),
    /// which the simulator otherwise leaves disconnected, as the demo world says they are.
    #[arg(long)]
    pub connect_offline: bool,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The MQTT endpoint, `host:port` (default: the running `ota serve` of the data dir; with
    /// --tls, its TLS device port).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Connect over mutual TLS, each device with its own certificate from the data dir's CA
    /// and no password, as real devices do. The certificates are issued once and kept in
    /// `<data dir>/sim-certs/`; a device revoked with `ota devices revoke` keeps its revoked
    /// one and is refused.
    #[arg(long)]
    pub tls: bool,
    /// Only register the simulated devices in the registry and exit (for example before
    /// `ota devices provision` writes an external broker's passwords).
    #[arg(long)]
    pub register_only: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Run one prompt end to end, wait until its rollouts end (or only devices that are not
    /// connected are left, or --wait elapsed), print the outcome, exit.
    #[arg(long, requires = "prompt")]
    pub headless: bool,
    /// The prompt for --headless.
    #[arg(long)]
    pub prompt: Option<String>,
    /// With --headless, and for each prompt typed: return after this many seconds at most
    /// (exit 4 with --headless), even if devices are still updating.
    #[arg(long, alias = "timeout-secs", value_name = "SECONDS", default_value_t = crate::live::DEFAULT_WAIT_SECS)]
    pub wait: u64,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a bearer token (ES256 JWT) for one role, verifiable by `ota serve` on this data dir.
    Create {
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Lifetime: 30m, 8h, 7d, 3600s.
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// Who the token speaks for (the audit trail records it).
        #[arg(long, default_value = "local-token")]
        subject: String,
    },
    /// Print the public JWKS of the data dir's signing key (what `ota serve` publishes at
    /// `/.well-known/jwks.json`).
    Jwks,
}
