//! wharf: a registry-protocol proxy for container images. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod admin_client;
pub mod admin_socket;
pub mod app;
pub mod archive;
pub mod backends;
pub mod check_config;
pub mod cluster;
pub mod fill;
pub mod history;
pub mod logbuf;
pub mod metrics_listener;
pub mod mirror;
pub mod output;
pub mod plugins_cli;
pub mod push;
pub mod registry;
pub mod server;
pub mod status;
pub mod storage_copy;
pub mod tls;
pub mod ui;
