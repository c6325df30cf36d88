//! The mirror's state as its parts share it: the `Mirror` struct (the upstreams' clients, the
//! fetcher, fills and single-flights, the policies) and its constructor.

use std::sync::Arc;

use dashmap::DashMap;

use super::fetch::{Fetched, Fetcher};
use super::platforms::PlatformPolicy;
use super::target::Failure;
use crate::fill::Fills;
use wharf_model::config::{Config, MirrorConfig};
use wharf_model::manifest::Descriptor;
use wharf_policy::policy::Policy;
use wharf_protocol::upstream::{Upstream, UpstreamError};
use wharf_storage::inflight::Flights;
use wharf_storage::lease::Touching;
use wharf_storage::meta::Meta;

pub struct Mirror {
    pub(super) upstreams: Vec<Arc<Upstream>>,
    pub(super) default: Option<Arc<Upstream>>,
    pub(super) cfg: MirrorConfig,
    pub(super) fetcher: Fetcher,
    pub(super) fills: Fills,
    pub(super) flights: Flights<String, std::result::Result<Fetched, Failure>>,
    pub(super) referrer_flights: Flights<String, std::result::Result<Vec<Descriptor>, Failure>>,
    /// wharf's own listen port: an `ns=` naming wharf itself is a local request, not a missing upstream.
    pub(super) own_port: u16,
    /// Hosts that requests named but no `[[upstream]]` configures, each logged once.
    pub(super) unconfigured_seen: DashMap<String, ()>,
    /// What a tag serves after the manifest plugins (the same policy as local repositories').
    pub(super) policy: Policy,
    /// Which platforms of an index are fetched, and what its tag serves.
    pub(super) platforms: PlatformPolicy,
}

/// Every upstream client, and the default one.
pub type Upstreams = (Vec<Arc<Upstream>>, Option<Arc<Upstream>>);

/// The upstream clients of `cfg` and the default one (`mirror.default_upstream`, which must name
/// one of them). Builds no storage: `wharf check-config` asks it too.
pub fn upstreams(cfg: &Config) -> std::result::Result<Upstreams, UpstreamError> {
    let upstreams = cfg
        .effective_upstreams()
        .iter()
        .map(|u| Upstream::new(u).map(Arc::new))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let default = match cfg.mirror.default_upstream.as_str() {
        "" => None,
        host => Some(
            upstreams
                .iter()
                .find(|u| u.host == host)
                .cloned()
                .ok_or_else(|| UpstreamError::Config {
                    host: host.to_owned(),
                    reason: "mirror.default_upstream names it but no [[upstream]] has that host"
                        .into(),
                })?,
        ),
    };
    Ok((upstreams, default))
}

impl Mirror {
    /// A mirror that caches into `store`, fills and reduces indexes under its leases, and serves
    /// tags through `policy` (the same plugins as local repositories').
    pub fn new(
        cfg: &Config,
        store: Arc<Touching>,
        meta: Meta,
        policy: Policy,
    ) -> std::result::Result<Self, UpstreamError> {
        let (upstreams, default) = upstreams(cfg)?;
        let fills = Fills::new(store.clone(), meta.clone());
        Ok(Mirror {
            upstreams,
            default,
            cfg: cfg.mirror.clone(),
            fills: fills.clone(),
            fetcher: Fetcher {
                store: store.clone(),
                meta: meta.clone(),
                max_manifest: cfg.registry.max_manifest_bytes,
            },
            flights: Flights::default(),
            referrer_flights: Flights::default(),
            own_port: cfg.server.listen.port(),
            unconfigured_seen: DashMap::new(),
            platforms: PlatformPolicy::new(
                &cfg.mirror,
                &cfg.effective_upstreams(),
                store.clone(),
                meta,
                fills,
                cfg.registry.max_manifest_bytes,
            ),
            policy,
        })
    }

    /// The policy (plugins) that tags served through the mirror go through.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }
}
