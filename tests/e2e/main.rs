//! wharf end-to-end tests: each test starts its own wharf (and peers) on free loopback ports, in temp
//! dirs, and drives it with real clients (skopeo) and raw HTTP. See tests/run.sh.

// Support.
mod fixtures;
mod harness;
mod http;
mod layout;
mod oci;
mod skopeo;

// Tests.
mod archive;
mod auth;
mod auth_clients;
mod bad_input;
mod check_config;
mod cli_output;
mod config_env;
mod crash;
mod dedupe;
mod deploy_image;
mod exposure;
mod fsck;
mod gc;
mod hardening;
mod last_use;
mod metrics;
mod mirror;
mod mounts;
mod naming;
mod plain_words;
mod plugins;
mod push;
mod push_clients;
mod reference_peer;
mod registry_api;
mod replicas;
mod restart;
mod retag;
mod shared_backends;
mod skopeo_roundtrip;
mod status_page;
mod storage_copy;
mod test_runner;
mod tls_listener;
