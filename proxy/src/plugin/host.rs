//! The wasmtime side of plugins: one engine, components compiled once (and kept precompiled on disk by
//! the digest of their bytes), instances from an `InstancePre` on the pooling allocator, every call
//! bounded by an epoch deadline and memory/table limits.
//!
//! A small warm pool of instances per plugin (a fresh instance per call only where instantiating is
//! cheaper than the pool's bookkeeping: measured here, even a small Rust component costs ~200 µs of
//! CPU fresh against a few µs warm); an instance is discarded after any failure.
//! WASI 0.2 is linked deny-by-default: no files, no network, no environment, no arguments, stdio to
//! nowhere, clocks frozen at zero. The only other import is `wharf:policy/log`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::{Operation, Platform, PluginError, RequestCtx};
use crate::config::PluginConfig;
use crate::digest::Digest;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "policy",
});

use self::wharf::policy::types;
use exports::wharf::policy::{access, lifecycle, manifests, platforms};

/// One epoch tick, the granularity of call deadlines.
const TICK: Duration = Duration::from_millis(1);
/// Instantiating plus `init` may take this long at least (Python and JS set up an interpreter).
const MIN_INIT_BUDGET: Duration = Duration::from_secs(2);
/// Above this instantiate+init time, instances are kept warm and reused instead of made per call.
/// Measured on the bench's 2 CPUs: a fresh instance of a small Rust plugin costs ~200 µs of CPU per
/// request (WASI context, slot reset, page faults), a warm call a few µs; so only a plugin cheaper
/// than a warm call's bookkeeping goes fresh.
const POOL_ABOVE: Duration = Duration::from_micros(20);
/// Warm instances kept per plugin.
const WARM_INSTANCES: usize = 4;
/// A plugin's log line is cut here.
const MAX_LOG_LINE: usize = 4096;

/// What a component exports of `wharf:policy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub access: bool,
    pub platforms: bool,
    pub manifests: bool,
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.access, "access"),
            (self.platforms, "platforms"),
            (self.manifests, "manifests"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        write!(f, "{}", names.join(","))
    }
}

/// What a store holds: the (empty) WASI context, the limits, and whose it is (for log lines).
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// Set when the plugin asked for more memory than `max_memory_mb`: a trap after that is reported
    /// as running out of memory.
    memory_denied: bool,
    plugin: Arc<str>,
}

impl wasmtime::ResourceLimiter for State {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.limits.memory_growing(current, desired, maximum)?;
        if !ok {
            self.memory_denied = true;
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl self::wharf::policy::log::Host for State {
    fn log(
        &mut self,
        level: self::wharf::policy::log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        use self::wharf::policy::log::Level;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let fields = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = &*self.plugin;
        match level {
            Level::Debug => tracing::debug!(plugin, %fields, "{message}"),
            Level::Info => tracing::info!(plugin, %fields, "{message}"),
            Level::Warn => tracing::warn!(plugin, %fields, "{message}"),
            Level::Error => tracing::error!(plugin, %fields, "{message}"),
        }
    }
}

impl self::wharf::policy::types::Host for State {}

/// Clocks that always say zero: plugins decide on the request, not on the time.
struct Frozen;

impl wasmtime_wasi::HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The engine and linker every plugin shares.
pub struct Host {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: PathBuf,
}

impl Host {
    pub fn new(cache_dir: &Path) -> Result<Host, String> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        // Generous per component (Python and JS components hold many core instances), bounded in total.
        pool.total_component_instances(256)
            .total_core_instances(2048)
            .total_memories(512)
            .total_tables(1024)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .max_core_instances_per_component(64)
            .max_memory_size(1 << 30)
            // A slot keeps its first pages mapped between instances: a small plugin's next instance
            // then starts without page faults (most of what a fresh instance costs otherwise).
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| format!("cannot start wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| format!("cannot link WASI: {e}"))?;
        self::wharf::policy::log::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| format!("cannot link wharf:policy/log: {e}"))?;
        // Epochs advance on their own thread; a call's deadline is counted in ticks of it.
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wharf-plugin-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                match ticker.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| format!("cannot start the plugin clock thread: {e}"))?;
        Ok(Host {
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
        })
    }

    /// Reads, compiles (or loads precompiled) and links a component, and finds what it exports.
    pub fn inspect(&self, name: &str, path: &Path) -> Result<Inspection, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            plugin: name.to_owned(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let load_err = |reason: String| PluginError::Load {
            plugin: name.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let digest = Digest::sha256_of(&bytes);
        let component = self.compile(&digest, &bytes).map_err(load_err)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "it imports what wharf does not give (wharf gives wharf:policy/log@0.1.0 and WASI \
                 0.2): {}",
                causes(&e)
            ))
        })?;
        let lifecycle = lifecycle::GuestIndices::new(&pre).ok();
        let access = access::GuestIndices::new(&pre).ok();
        let platforms = platforms::GuestIndices::new(&pre).ok();
        let manifests = manifests::GuestIndices::new(&pre).ok();
        let caps = Capabilities {
            access: access.is_some(),
            platforms: platforms.is_some(),
            manifests: manifests.is_some(),
        };
        if caps == Capabilities::default() {
            let other: Vec<&String> = exports
                .iter()
                .filter(|e| e.starts_with("wharf:policy/"))
                .collect();
            if !other.is_empty() {
                return Err(load_err(format!(
                    "it exports {other:?}, built against a version of wharf:policy this wharf does \
                     not know (it knows {}); use a newer wharf or rebuild the plugin against \
                     wit/policy.wit",
                    super::WIT_PACKAGE
                )));
            }
            return Err(PluginError::NoCapability {
                plugin: name.to_owned(),
                path: path.to_owned(),
            });
        }
        let Some(lifecycle) = lifecycle else {
            return Err(load_err(
                "it does not export wharf:policy/lifecycle@0.1.0 (init); every world in \
                 wit/policy.wit exports it"
                    .into(),
            ));
        };
        Ok(Inspection {
            digest,
            imports,
            exports,
            caps,
            pre,
            lifecycle,
            access,
            platforms,
            manifests,
        })
    }

    /// Reads, compiles (or loads precompiled), links, and initialises one plugin.
    pub fn load(&self, cfg: &PluginConfig) -> Result<Loaded, PluginError> {
        let Inspection {
            digest,
            caps,
            pre,
            lifecycle,
            access,
            platforms,
            manifests,
            ..
        } = self.inspect(&cfg.name, &cfg.path)?;
        let inner = Arc::new(Inner {
            name: Arc::from(cfg.name.as_str()),
            engine: self.engine.clone(),
            pre,
            lifecycle,
            access,
            platforms,
            manifests,
            caps,
            digest,
            config: cfg.config.clone(),
            timeout_ms: cfg.timeout_ms.max(1),
            max_memory: cfg.max_memory_mb.saturating_mul(1 << 20) as usize,
            pooled: std::sync::atomic::AtomicBool::new(false),
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
        });
        // Instantiate now: `init` sees the config at startup (a refusal stops wharf with the plugin's
        // reason). The second instantiation's cost (the first pays one-time setup) says whether
        // instances are worth keeping warm; a fresh instance per call keeps calls from seeing each
        // other's state.
        drop(inner.instantiate()?);
        let started = Instant::now();
        let second = inner.instantiate()?;
        let cost = started.elapsed();
        if cost > POOL_ABOVE {
            inner
                .pooled
                .store(true, std::sync::atomic::Ordering::Relaxed);
            inner.lock_pool().live = 1;
            inner.give_back(second);
        }
        tracing::debug!(plugin = %cfg.name, micros = cost.as_micros() as u64, "plugin instantiated");
        Ok(Loaded(inner))
    }

    /// The component for `bytes`: precompiled from the cache when there, else compiled and cached.
    fn compile(&self, digest: &Digest, bytes: &[u8]) -> Result<Component, String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let file = self
            .cache_dir
            .join(format!("{}-{:016x}.cwasm", digest.hex(), h.finish()));
        if file.exists() {
            // SAFETY: wharf wrote this file (atomically, below) from a component compiled by an engine
            // with the same compatibility hash, which is part of its name.
            match unsafe { Component::deserialize_file(&self.engine, &file) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "precompiled plugin unusable; compiling again")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| causes(&e))?;
        match component.serialize() {
            Ok(serialized) => {
                let tmp = file.with_extension(format!("tmp-{}", std::process::id()));
                let written = std::fs::create_dir_all(&self.cache_dir)
                    .and_then(|()| std::fs::write(&tmp, serialized))
                    .and_then(|()| std::fs::rename(&tmp, &file));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(dir = %self.cache_dir.display(), error = %e, "cannot keep the compiled plugin; it will be compiled again next start");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialise the compiled plugin"),
        }
        Ok(component)
    }
}

/// A component as wharf sees it before running it.
pub struct Inspection {
    pub digest: Digest,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub caps: Capabilities,
    pre: InstancePre<State>,
    lifecycle: lifecycle::GuestIndices,
    access: Option<access::GuestIndices>,
    platforms: Option<platforms::GuestIndices>,
    manifests: Option<manifests::GuestIndices>,
}

/// A loaded plugin; cheap to clone.
#[derive(Clone)]
pub struct Loaded(Arc<Inner>);

struct Inner {
    name: Arc<str>,
    engine: Engine,
    pre: InstancePre<State>,
    lifecycle: lifecycle::GuestIndices,
    access: Option<access::GuestIndices>,
    platforms: Option<platforms::GuestIndices>,
    manifests: Option<manifests::GuestIndices>,
    caps: Capabilities,
    digest: Digest,
    config: String,
    timeout_ms: u64,
    max_memory: usize,
    pooled: std::sync::atomic::AtomicBool,
    pool: Mutex<Pool>,
    /// Signalled when an instance goes back to the pool, or one is discarded.
    returned: Condvar,
}

/// The warm instances of a slow-to-instantiate plugin: at most `WARM_INSTANCES` exist at once; a call
/// that finds none free waits for one instead of paying an instantiation (most of a millisecond for
/// Python or JS) that would only be thrown away.
#[derive(Default)]
struct Pool {
    idle: Vec<Warm>,
    /// Instances in existence: idle, in use, or being made.
    live: usize,
}

struct Warm {
    store: Store<State>,
    instance: Instance,
}

impl Inner {
    fn init_budget_ticks(&self) -> u64 {
        let budget = MIN_INIT_BUDGET.max(Duration::from_millis(self.timeout_ms * 100));
        (budget.as_millis() / TICK.as_millis()) as u64 + 1
    }

    fn call_ticks(&self) -> u64 {
        self.timeout_ms / TICK.as_millis() as u64 + 1
    }

    /// A new instance, initialised with the plugin's config.
    fn instantiate(&self) -> Result<Warm, PluginError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.wall_clock(Frozen).monotonic_clock(Frozen);
        let state = State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.max_memory)
                .table_elements(1 << 20)
                .instances(64)
                .tables(64)
                .memories(16)
                .build(),
            memory_denied: false,
            plugin: self.name.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.init_budget_ticks());
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.failure(e, "instantiating", store.data().memory_denied))?;
        let lifecycle = self
            .lifecycle
            .load(&mut store, &instance)
            .map_err(|e| self.failure(e, "loading init", false))?;
        match lifecycle.call_init(&mut store, &self.config) {
            Ok(Ok(())) => Ok(Warm { store, instance }),
            Ok(Err(reason)) => Err(PluginError::Init {
                plugin: self.name.to_string(),
                reason,
            }),
            Err(e) => Err(self.failure(e, "init", store.data().memory_denied)),
        }
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_back(&self, w: Warm) {
        self.lock_pool().idle.push(w);
        self.returned.notify_one();
    }

    fn discard(&self) {
        let mut pool = self.lock_pool();
        pool.live = pool.live.saturating_sub(1);
        drop(pool);
        self.returned.notify_one();
    }

    /// A warm instance: an idle one, a new one while fewer than `WARM_INSTANCES` exist, else the next
    /// one given back.
    fn take_warm(&self) -> Result<Warm, PluginError> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(w) = pool.idle.pop() {
                return Ok(w);
            }
            if pool.live < WARM_INSTANCES {
                pool.live += 1;
                drop(pool);
                return self.instantiate().inspect_err(|_| self.discard());
            }
            // Bounded, so a lost wake-up costs a moment, never a request.
            pool = self
                .returned
                .wait_timeout(pool, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs `f` on an instance within the call deadline. An instance that failed is dropped.
    fn call<R>(
        &self,
        f: impl FnOnce(&mut Store<State>, &Instance) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, PluginError> {
        let pooled = self.pooled.load(std::sync::atomic::Ordering::Relaxed);
        let mut w = if pooled {
            self.take_warm()?
        } else {
            self.instantiate()?
        };
        w.store.set_epoch_deadline(self.call_ticks());
        let out = f(&mut w.store, &w.instance);
        let failed = out.is_err();
        let result = match out {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(reason)) => Err(PluginError::Returned {
                plugin: self.name.to_string(),
                reason,
            }),
            Err(e) => Err(self.failure(e, "call", w.store.data().memory_denied)),
        };
        if pooled {
            if failed {
                // A trapped or interrupted instance may be half-way through anything: never reuse it.
                drop(w);
                self.discard();
            } else {
                self.give_back(w);
            }
        }
        result
    }

    fn failure(&self, e: wasmtime::Error, during: &str, memory_denied: bool) -> PluginError {
        if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
            return PluginError::Timeout {
                plugin: self.name.to_string(),
                timeout_ms: if during == "call" {
                    self.timeout_ms
                } else {
                    self.init_budget_ticks()
                },
            };
        }
        let mut reason = match e.downcast_ref::<wasmtime::Trap>() {
            // The trap itself says it best; the rest is a backtrace of an anonymous module.
            Some(t) => t.to_string(),
            None => causes(&e),
        };
        if memory_denied {
            reason = format!(
                "it ran out of memory (max_memory_mb = {}; raise it in its [[plugin]] entry, or fix \
                 the plugin), then: {reason}",
                self.max_memory >> 20
            );
        }
        if reason.len() > 1024 {
            reason.truncate(1024);
        }
        PluginError::Trap {
            plugin: self.name.to_string(),
            reason: format!("{during}: {reason}"),
        }
    }
}

/// An error and its causes on one line (plain `Display` of each: the alternate form pretty-prints
/// wasmparser's byte arrays over many lines).
fn causes(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        // One line: some causes print byte arrays or backtraces over many.
        let s = match c.to_string().split_once("\nwasm backtrace:") {
            Some((head, _)) => head.to_owned(),
            None => c.to_string(),
        };
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out
}

fn request(ctx: &RequestCtx) -> types::Request {
    types::Request {
        operation: match ctx.operation {
            Operation::Pull => types::Operation::Pull,
            Operation::Push => types::Operation::Push,
            Operation::Delete => types::Operation::Delete,
            Operation::List => types::Operation::List,
        },
        registry: ctx.registry.clone(),
        repository: ctx.repository.clone(),
        reference: ctx.reference.clone(),
        client_address: ctx.client_address.clone(),
        identity: ctx.identity.clone(),
        user_agent: ctx.user_agent.clone(),
    }
}

fn to_wit(p: &Platform) -> types::Platform {
    types::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
        os_version: p.os_version.clone(),
        os_features: p.os_features.clone(),
    }
}

fn from_wit(p: types::Platform) -> Platform {
    Platform {
        os: p.os,
        architecture: p.architecture,
        variant: p.variant,
        os_version: p.os_version,
        os_features: p.os_features,
    }
}

impl Loaded {
    pub fn capabilities(&self) -> Capabilities {
        self.0.caps
    }

    pub fn digest(&self) -> &Digest {
        &self.0.digest
    }

    /// Whether instances are kept warm (slow to instantiate) rather than made per call.
    pub fn pooled(&self) -> bool {
        self.0.pooled.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `access.check`: `None` to allow, `Some(reason)` to deny.
    pub fn check(&self, ctx: &RequestCtx) -> Result<Option<String>, PluginError> {
        let Some(idx) = &self.0.access else {
            return Ok(None);
        };
        let req = request(ctx);
        self.0.call(|store, instance| {
            let g = idx.load(&mut *store, instance)?;
            Ok(g.call_check(store, &req)?.map(|d| match d {
                types::Decision::Allow => None,
                types::Decision::Deny(reason) => Some(reason),
            }))
        })
    }

    /// `platforms.select`: the platforms of `available` the plugin keeps.
    pub fn select(
        &self,
        ctx: &RequestCtx,
        available: &[Platform],
    ) -> Result<Vec<Platform>, PluginError> {
        let Some(idx) = &self.0.platforms else {
            return Ok(available.to_vec());
        };
        let req = request(ctx);
        let list: Vec<types::Platform> = available.iter().map(to_wit).collect();
        self.0.call(|store, instance| {
            let g = idx.load(&mut *store, instance)?;
            Ok(g.call_select(store, &req, &list)?
                .map(|kept| kept.into_iter().map(from_wit).collect()))
        })
    }

    /// `manifests.rewrite`: new bytes, or `None` to leave the manifest as it is.
    pub fn rewrite(
        &self,
        ctx: &RequestCtx,
        media_type: &str,
        manifest: &[u8],
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let Some(idx) = &self.0.manifests else {
            return Ok(None);
        };
        let req = request(ctx);
        self.0.call(|store, instance| {
            let g = idx.load(&mut *store, instance)?;
            g.call_rewrite(store, &req, media_type, manifest)
        })
    }
}
