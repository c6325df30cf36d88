//! The registry's services as its endpoints share them: the `Registry` struct (the stores, upload
//! sessions, the mirror, policy, leases, push routes and auth), its constructor and its accessors.

use std::sync::Arc;

use dashmap::DashMap;

use super::session::Session;
use crate::cluster::Cluster;
use crate::mirror::Mirror;
use crate::push::Push;
use wharf_model::config::RegistryConfig;
use wharf_policy::auth::Auth;
use wharf_policy::policy::Policy;
use wharf_storage::lease::{Leases, Touching};
use wharf_storage::meta::Meta;
use wharf_storage::store::ContentStore;

pub struct Registry {
    pub(super) store: Arc<dyn ContentStore>,
    pub(super) meta: Meta,
    pub(super) cfg: RegistryConfig,
    /// Upload sessions open now (all of them: the startup purge loads those from before a restart).
    pub(super) sessions: DashMap<String, Arc<Session>>,
    /// Held while a new session is counted against the caps and added.
    pub(super) admitting: std::sync::Mutex<()>,
    pub(super) mirror: Mirror,
    pub(super) policy: Policy,
    /// Protection from the collector: upload sessions' leases, touches of what a request names.
    pub(super) leases: Leases,
    /// Push routes and their delivery (none: every push stays here).
    pub(super) push: Option<Arc<Push>>,
    /// Client authentication and rules (none: anyone may do anything).
    pub(super) auth: Option<Arc<Auth>>,
    /// The other replicas of this cache (none: this process is the only one).
    pub(super) cluster: Option<Arc<Cluster>>,
}

impl Registry {
    /// Serves from `store`: its touches protect what requests name, its leases hold upload sessions.
    pub fn new(store: Arc<Touching>, meta: Meta, cfg: RegistryConfig, mirror: Mirror) -> Self {
        let policy = mirror.policy().clone();
        let leases = store.leases().clone();
        Registry {
            store,
            meta,
            cfg,
            sessions: DashMap::new(),
            admitting: std::sync::Mutex::new(()),
            mirror,
            policy,
            leases,
            push: None,
            auth: None,
            cluster: None,
        }
    }

    /// Forwards requests for upload sessions other replicas own to them.
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Identifies callers and applies `[auth]`'s rules.
    pub fn with_auth(mut self, auth: Option<Arc<Auth>>) -> Self {
        self.auth = auth;
        self
    }

    /// The client authentication in force (none: anyone may do anything); the status page shows
    /// each caller what these rules let them pull.
    pub fn auth(&self) -> Option<&Arc<Auth>> {
        self.auth.as_ref()
    }

    /// Delivers pushes to routed repositories through `push`.
    pub fn with_push(mut self, push: Arc<Push>) -> Self {
        self.push = Some(push);
        self
    }

    pub fn push(&self) -> Option<&Arc<Push>> {
        self.push.as_ref()
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }
}
