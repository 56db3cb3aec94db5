//! `ota-core` is the heart of ota: the domain of fleet firmware updates, the ports every
//! backend implements, and the one service that enforces every safety rule (config gate,
//! roles, version existence, integrity, policy bounds, one active rollout per type), so no
//! front door and no language model can bypass them. It does no I/O: backends (`ota-local`,
//! `ota-aws`) and adapters (CLI, MCP, HTTP) live elsewhere and depend on this crate.
//!
//! With default features off it builds only what a device needs: names, versions, the
//! catalog layout, the streaming integrity check and firmware signature verification.

pub mod catalog;
pub mod command;
pub mod error;
pub mod integrity;
pub mod job;
pub mod names;
pub mod signing;
pub mod topics;
pub mod update;
pub mod version;

#[cfg(feature = "service")]
pub mod agent;
#[cfg(feature = "service")]
pub mod audit;
#[cfg(feature = "service")]
pub mod auth;
#[cfg(feature = "service")]
pub mod authz;
#[cfg(feature = "service")]
pub mod commands;
#[cfg(feature = "service")]
pub mod config;
#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "service")]
pub mod demo;
#[cfg(feature = "service")]
pub mod device;
#[cfg(feature = "service")]
pub mod intent;
#[cfg(feature = "service")]
pub mod memory;
#[cfg(feature = "service")]
pub mod plan;
#[cfg(feature = "service")]
pub mod policy;
#[cfg(feature = "service")]
pub mod ports;
#[cfg(feature = "service")]
pub mod rollout;
#[cfg(feature = "schema")]
mod schema;
#[cfg(feature = "service")]
pub mod service;
#[cfg(feature = "service")]
pub mod similarity;
#[cfg(feature = "service")]
pub mod targeting;

pub use error::{Error, Result};
