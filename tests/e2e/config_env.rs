//! The documented environment overrides of the config file.

use std::net::TcpStream;

use crate::harness::{Wharf, WharfOptions};
use crate::http::Api;
use crate::oci::{regular_files, Noise};

/// Proves: `WHARF_LISTEN` and `WHARF_DATA_DIR` win over `[server] listen` and `[storage] data_dir`:
/// wharf answers on the env address only and stores blobs under the env data dir only.
#[test]
fn env_overrides_listen_and_data_dir() {
    let wharf = Wharf::start(WharfOptions {
        via_env: true,
        ..Default::default()
    });
    let api = Api::new(wharf.base());
    let data = Noise::bytes(61, 5000);
    let digest = api.push_blob("env/app", &data);
    api.assert_blob_intact("env/app", &digest, 5000);

    assert!(
        regular_files(&wharf.blobs_dir())
            .iter()
            .any(|f| f.ends_with(crate::oci::hex_part(&digest))),
        "blob not under WHARF_DATA_DIR ({})",
        wharf.data_dir().display()
    );
    let decoy_files = regular_files(&wharf.decoy_data_dir());
    assert!(
        decoy_files.is_empty(),
        "wharf wrote to the config's data_dir despite WHARF_DATA_DIR: {decoy_files:?}"
    );
    let decoy = wharf.decoy_addr().unwrap();
    assert!(
        TcpStream::connect(decoy).is_err(),
        "wharf listens on the config's address {decoy} despite WHARF_LISTEN"
    );
}
