//! The wasmtime side of plugins: one engine, components compiled once (and kept precompiled on disk by
//! the digest of their bytes), instances from an `InstancePre` on the pooling allocator, every call
//! bounded by an epoch deadline and memory/table limits.
//!
//! A small warm pool of instances per plugin (a fresh instance per call only where instantiating is
//! cheaper than the pool's bookkeeping: measured here, even a small Rust component costs ~200 µs of
//! CPU fresh against a few µs warm); an instance is discarded after any failure.
//! WASI 0.2 is linked deny-by-default: no files, no network, no environment, no arguments, stdio to
//! nowhere, clocks frozen at zero. The only other import is `wharf:policy/log`.
//!
//! Calls run inline on the request's task, on a fiber (wasmtime's async calls), with WASI's async
//! bindings, which never block the thread: a hop to a blocking thread and back cost more CPU than
//! the call itself (~38 µs of the +40 µs a Rust plugin added per request). A long call does not hold
//! its worker thread: every epoch tick it yields to the runtime, and after its deadline it traps.
//!
//! What a plugin hands back is bounded before wharf copies it (`Host::new`'s `max_answer`): a 40 MB
//! rewrite is refused while its bytes are still in the instance's memory, and the instance goes.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::error::PluginError;
use super::wit::WIT_PACKAGE;
use wharf_model::config::PluginConfig;
use wharf_model::digest::Digest;
use wharf_model::platform::Platform;
use wharf_model::request::{Operation, RequestCtx};

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "policy",
    // Exports are called on a fiber (see the module comment); `log` stays a plain host function.
    exports: { default: async },
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
/// The least `max_answer` is raised to: a log line's fields or a denial's reason never fail a call
/// because `registry.max_manifest_bytes` was set low (a rewrite is still held to that setting, by
/// the policy that stores it).
const MIN_ANSWER: usize = 1 << 20;
/// How wasmtime's error says a value lifted out of an instance exceeded the store's hostcall fuel
/// (`HostcallFuelExhausted`, a private type: its text is all there is). `plugin::tests` runs a
/// plugin into it, so a wasmtime that words it otherwise fails a test rather than a user.
const FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

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
    /// Epoch ticks the running call may still use; each tick it yields, at zero it is interrupted.
    ticks_left: u64,
    plugin: Arc<str>,
    /// Set while `init` runs on an instance after the first: it says again what the first one said.
    quiet: bool,
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
        if self.quiet {
            return;
        }
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
    max_answer: usize,
}

impl Host {
    /// `max_answer`: the most bytes one call may hand back (`registry.max_manifest_bytes`, raised
    /// to 1 MiB). wasmtime's hostcall fuel counts the bytes of every list and string as it lifts
    /// them out of the instance, before it allocates anything for them, so a larger answer fails
    /// the call without being copied (wasmtime 48 runs a component's post-return, which frees the
    /// answer, before `call_async` returns, so a lazily lifted `WasmList` is no way to look at the
    /// length first: its bytes may already be reused, wasmtime issue #12467).
    pub fn new(cache_dir: &Path, max_answer: u64) -> Result<Host, String> {
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
            .table_keep_resident(64 << 10)
            // Every call runs on a fiber stack from the pool; a free stack is not zeroed or
            // decommitted (`async_stack_zeroing` is off), so taking one costs no page faults.
            .total_stacks(256);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| format!("cannot start wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
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
            max_answer: usize::try_from(max_answer)
                .unwrap_or(usize::MAX)
                .max(MIN_ANSWER),
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
                    WIT_PACKAGE
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
            max_answer: self.max_answer,
            pooled: std::sync::atomic::AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
            warm: tokio::sync::Semaphore::new(WARM_INSTANCES),
            initialised: std::sync::atomic::AtomicBool::new(false),
        });
        // Instantiate now: `init` sees the config at startup (a refusal stops wharf with the plugin's
        // reason). The second instantiation's cost (the first pays one-time setup) says whether
        // instances are worth keeping warm; a fresh instance per call keeps calls from seeing each
        // other's state.
        drop(block_on(inner.instantiate())?);
        let started = Instant::now();
        let second = block_on(inner.instantiate())?;
        let cost = started.elapsed();
        if cost > POOL_ABOVE {
            inner
                .pooled
                .store(true, std::sync::atomic::Ordering::Relaxed);
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
    /// The hostcall fuel of every store: the most bytes one answer may hold.
    max_answer: usize,
    pooled: std::sync::atomic::AtomicBool,
    /// Warm instances not in use.
    idle: Mutex<Vec<Warm>>,
    /// At most `WARM_INSTANCES` warm instances exist (idle, in use, or being made); a call that finds
    /// none free waits for one instead of paying an instantiation (most of a millisecond for Python
    /// or JS) that would only be thrown away.
    warm: tokio::sync::Semaphore,
    /// Whether an instance's `init` has succeeded: every later instance (the load's measuring one, a
    /// fresh one per call, the warm pool's) runs `init` with the same config, so what it logs was
    /// said already.
    initialised: std::sync::atomic::AtomicBool,
}

struct Warm {
    store: Store<State>,
    instance: Instance,
}

/// An instance lent to one call. Dropped without `finish` (a failed call, or a request that went
/// away mid-call) it is discarded, never reused: it may be half-way through anything.
struct Call<'a> {
    inner: &'a Inner,
    warm: Warm,
    _permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Call<'_> {
    /// The call's outcome as the chain sees it; the instance goes back to the pool if it succeeded.
    fn finish<R>(self, out: wasmtime::Result<Result<R, String>>) -> Result<R, PluginError> {
        let inner = self.inner;
        let out = match out {
            Ok(out) => out,
            // A trapped or interrupted instance is dropped here.
            Err(e) => return Err(inner.failure(e, "call", self.warm.store.data().memory_denied)),
        };
        // An `err` result is the plugin's own answer: the instance is sound.
        if inner.pooled.load(std::sync::atomic::Ordering::Relaxed) {
            inner.give_back(self.warm);
        }
        out.map_err(|reason| PluginError::Returned {
            plugin: inner.name.to_string(),
            reason,
        })
    }
}

/// Runs a future to completion from synchronous code (loading plugins, the CLI): on the current
/// runtime when called from one of its blocking threads, else on a small runtime of its own.
/// Never called on a runtime worker thread.
pub fn block_on<F: Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(f),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime starts")
            .block_on(f),
    }
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
    async fn instantiate(&self) -> Result<Warm, PluginError> {
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
            ticks_left: self.init_budget_ticks(),
            plugin: self.name.clone(),
            quiet: self.initialised.load(std::sync::atomic::Ordering::Relaxed),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        store.set_hostcall_fuel(self.max_answer);
        // Yield to the runtime every tick, so a slow call shares its worker thread; interrupt the call
        // once its ticks are used up.
        store.epoch_deadline_callback(|mut cx| {
            let s = cx.data_mut();
            if s.ticks_left == 0 {
                return Ok(UpdateDeadline::Interrupt);
            }
            s.ticks_left -= 1;
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| self.failure(e, "instantiating", store.data().memory_denied))?;
        let lifecycle = self
            .lifecycle
            .load(&mut store, &instance)
            .map_err(|e| self.failure(e, "loading init", false))?;
        match lifecycle.call_init(&mut store, &self.config).await {
            Ok(Ok(())) => {
                store.data_mut().quiet = false;
                self.initialised
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(Warm { store, instance })
            }
            Ok(Err(reason)) => Err(PluginError::Init {
                plugin: self.name.to_string(),
                reason,
            }),
            Err(e) => Err(self.failure(e, "init", store.data().memory_denied)),
        }
    }

    fn give_back(&self, w: Warm) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }

    /// An instance for one call, its deadline set: a warm one (an idle one, a new one while fewer
    /// than `WARM_INSTANCES` exist, else the next one given back), or a fresh one.
    async fn begin(&self) -> Result<Call<'_>, PluginError> {
        let pooled = self.pooled.load(std::sync::atomic::Ordering::Relaxed);
        let (mut warm, permit) = if pooled {
            let permit = self.warm.acquire().await.map_err(|_| PluginError::Trap {
                plugin: self.name.to_string(),
                reason: "the plugin is being unloaded".into(),
            })?;
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let warm = match idle {
                Some(w) => w,
                None => self.instantiate().await?,
            };
            (warm, Some(permit))
        } else {
            (self.instantiate().await?, None)
        };
        warm.store.data_mut().ticks_left = self.call_ticks();
        warm.store.set_epoch_deadline(1);
        Ok(Call {
            inner: self,
            warm,
            _permit: permit,
        })
    }

    fn failure(&self, e: wasmtime::Error, during: &str, memory_denied: bool) -> PluginError {
        if e.chain().any(|c| c.to_string().contains(FUEL_EXHAUSTED)) {
            return PluginError::TooLarge {
                plugin: self.name.to_string(),
                limit: self.max_answer,
            };
        }
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
    pub async fn check(&self, ctx: &RequestCtx) -> Result<Option<String>, PluginError> {
        let Some(idx) = &self.0.access else {
            return Ok(None);
        };
        let req = request(ctx);
        let mut c = self.0.begin().await?;
        let out = async {
            let w = &mut c.warm;
            let g = idx.load(&mut w.store, &w.instance)?;
            Ok(g.call_check(&mut w.store, &req).await?.map(|d| match d {
                types::Decision::Allow => None,
                types::Decision::Deny(reason) => Some(reason),
            }))
        }
        .await;
        c.finish(out)
    }

    /// `platforms.select`: the platforms of `available` the plugin keeps.
    pub async fn select(
        &self,
        ctx: &RequestCtx,
        available: &[Platform],
    ) -> Result<Vec<Platform>, PluginError> {
        let Some(idx) = &self.0.platforms else {
            return Ok(available.to_vec());
        };
        let req = request(ctx);
        let list: Vec<types::Platform> = available.iter().map(to_wit).collect();
        let mut c = self.0.begin().await?;
        let out = async {
            let w = &mut c.warm;
            let g = idx.load(&mut w.store, &w.instance)?;
            Ok(g.call_select(&mut w.store, &req, &list)
                .await?
                .map(|kept| kept.into_iter().map(from_wit).collect()))
        }
        .await;
        c.finish(out)
    }

    /// `manifests.rewrite`: new bytes, or `None` to leave the manifest as it is.
    pub async fn rewrite(
        &self,
        ctx: &RequestCtx,
        media_type: &str,
        manifest: &[u8],
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let Some(idx) = &self.0.manifests else {
            return Ok(None);
        };
        let req = request(ctx);
        let mut c = self.0.begin().await?;
        let out = async {
            let w = &mut c.warm;
            let g = idx.load(&mut w.store, &w.instance)?;
            g.call_rewrite(&mut w.store, &req, media_type, manifest)
                .await
        }
        .await;
        c.finish(out)
    }
}
