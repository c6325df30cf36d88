//! wharf: a registry-protocol proxy for container images. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod archive;
pub mod auth;
pub mod check_config;
pub mod fill;
pub mod logbuf;
pub mod metrics_listener;
pub mod mirror;
pub mod output;
pub mod plugin;
pub mod policy;
pub mod push;
pub mod registry;
pub mod server;
pub mod status;
pub mod tls;
pub mod ui;
