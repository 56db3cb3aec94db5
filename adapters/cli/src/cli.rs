//! The command line: every command, its flags, and its help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Manage the firmware of a fleet of ESP32 devices by saying what you want.
///
/// The local CLI acts as the local admin: whoever can read and write the data dir.
#[derive(Debug, Parser)]
#[command(name = "ota", version, about, long_about = None)]
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
    /// The device registry.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// The per-type OTA gate and policy.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Rollouts: list, show, start, cancel.
    #[command(subcommand)]
    Rollouts(RolloutsCommand),
    /// The AWS deployment (with --backend aws).
    #[command(subcommand)]
    Aws(AwsCommand),
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
    },
    /// Show one device.
    Show { thing: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Allow OTA updates for a device type.
    Enable { device_type: String },
    /// Stop OTA updates for a device type.
    Disable { device_type: String },
    /// Show the gate and policy of every type.
    List,
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
