//! Authorization policies in the CLI: `<data-dir>/policies.cedar` replaces the default
//! policies for every command and `ota serve` when it is there (a file that does not parse or
//! validate stops every command, with its line and column: never a fallback to allow), and
//! `ota policy check FILE` / `ota policy show`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use ota_core::authz::{Authorizer, SCHEMA};
use ota_core::service::FleetManager;
use ota_core::{Error, Result};

use crate::cli::BackendKind;
use crate::render::Output;

/// The policy file of a data dir.
pub const FILE: &str = "policies.cedar";

/// `ota policy`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse FILE and validate it against ota's Cedar schema; on a problem, print its line
    /// and column and fail. Changes nothing.
    Check {
        /// A Cedar policy file (for example examples/change_freeze.cedar).
        file: PathBuf,
    },
    /// Print the policies in force: `<data-dir>/policies.cedar` when there is one, otherwise
    /// ota's default policies (the role matrix). With --schema, the Cedar schema instead.
    Show {
        #[arg(long)]
        schema: bool,
    },
}

/// Reads and validates `path`.
fn read(path: &Path) -> Result<Authorizer> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::invalid("policy file", path.display().to_string(), format!("cannot read it: {e}")))?;
    Ok(Authorizer::from_text(&text, &path.display().to_string())?)
}

/// The policies of the local data dir: `Some` when `policies.cedar` is there (and valid),
/// `None` for the defaults. On AWS nothing is read here.
pub fn load(data_dir: &Path, backend: BackendKind) -> Result<Option<Arc<Authorizer>>> {
    let path = data_dir.join(FILE);
    if backend != BackendKind::Local || !path.exists() {
        return Ok(None);
    }
    read(&path).map(|a| Some(Arc::new(a)))
}

/// `svc` deciding by `policies` when there are some.
pub fn apply(svc: FleetManager, policies: Option<Arc<Authorizer>>) -> FleetManager {
    match policies {
        Some(p) => svc.with_authorizer(p),
        None => svc,
    }
}

/// Runs `ota policy ...` (needs no backend).
pub fn run(command: &PolicyCommand, data_dir: &Path, backend: BackendKind, out: &Output) -> Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let authz = read(file)?;
            let ids = authz.policy_ids();
            if out.json {
                let v = serde_json::json!({ "file": file.display().to_string(), "valid": true, "policies": ids });
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                outln!(
                    "{}: valid ({} polic{}: {})",
                    file.display(),
                    ids.len(),
                    if ids.len() == 1 { "y" } else { "ies" },
                    if ids.is_empty() { "none, so everything is denied".to_string() } else { ids.join(", ") }
                );
            }
        }
        PolicyCommand::Show { schema: true } => outln!("{}", SCHEMA.trim_end()),
        PolicyCommand::Show { schema: false } => {
            if backend != BackendKind::Local {
                return Err(Error::invalid(
                    "backend",
                    "aws",
                    "`ota policy show` shows a local data dir's policies; check a file with `ota policy check FILE`",
                ));
            }
            let (authz, source) = match load(data_dir, backend)? {
                Some(a) => {
                    let source = a.source().to_string();
                    (a, source)
                }
                None => (
                    Arc::new(Authorizer::default()),
                    format!("ota's default policies (no {FILE} in {})", data_dir.display()),
                ),
            };
            if out.json {
                let v = serde_json::json!({ "source": source, "policies": authz.policy_ids(), "text": authz.text() });
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                outln!("// {source}");
                outln!("{}", authz.text().trim_end());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
