//! Prometheus metrics, in the text exposition format of the Prometheus
//! project's own crate (`prometheus-client`).
//!
//! A [`Metrics`] is one registry. The server records into it on every call
//! (`rpcguard_calls_total{method,outcome}`,
//! `rpcguard_call_duration_seconds{method}`), every refused credential
//! (`rpcguard_auth_failures_total{reason}`), every policy budget that
//! refuses a call (`rpcguard_throttled_total{budget}`), open connections
//! and WebSocket sessions, and policy reloads; an application registers its
//! own metrics beside them ([`Metrics::register`]; the reference server adds
//! sign-ins, sessions, bcrypt, the store, keys and JWKS fetches). Process
//! metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, …) are read from `/proc` at each scrape.
//!
//! **Where it is served.** Not on the API's port: [`serve`] answers
//! `GET /metrics` on a listener of its own (`rpcguard serve --metrics-addr
//! 127.0.0.1:9464`), so the figures are never reachable from the public
//! side by accident, whatever proxy sits in front of the API; without that
//! listener nothing is served (and recording still costs only atomic
//! increments).
//!
//! **Label values** are only ever declared method names (an undeclared
//! name counts as `method="<unknown>"`), JSON-RPC error codes, and fixed
//! words: never anything a caller sent.
//!
//! **The hot path takes no lock.** Every declared method's counters and
//! histogram are made once, when the server starts, and a call finds them
//! through its policy entry; recording is a few relaxed atomic increments
//! (the call latency histogram is [`AtomicHistogram`], not the crate's
//! mutex-guarded one). The per-call counters and the histogram are sharded
//! by thread, each shard on cache lines of its own: with one atomic shared
//! by every core, each call made the cores pass the same cache lines back
//! and forth; a scrape adds the shards up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::error::AuthFailure;

/// The crate the registry is made with, for the application's own metrics
/// (`prometheus_client::metrics::counter::Counter` and friends).
pub use prometheus_client;

/// The prefix of every metric the framework registers.
pub const PREFIX: &str = "rpcguard";
/// The path [`serve`] answers.
pub const METRICS_PATH: &str = "/metrics";
/// The `method` label of calls to a method the server does not declare.
pub const UNKNOWN_METHOD: &str = "<unknown>";

/// Upper bounds, in seconds, of the call latency buckets: 50 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// Labels of `rpcguard_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    outcome: String,
}

/// A `method` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// A `budget` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

/// A `version` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// `issuer` and `outcome` labels (the issuer is the operator's
/// configuration, never a token's claim).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssuerOutcome {
    issuer: String,
    outcome: String,
}

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// The metrics of a server: one registry, the framework's own metrics in
/// it, and room for the application's. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    /// The application's recorder sets, one per type ([`Metrics::shared`]).
    shared: Mutex<HashMap<std::any::TypeId, Box<dyn std::any::Any + Send + Sync>>>,
    calls: Family<CallLabels, ShardedCounter>,
    durations: Family<MethodLabel, AtomicHistogram, fn() -> AtomicHistogram>,
    auth_failures: Family<ReasonLabel, Counter>,
    throttled: Family<BudgetLabel, Counter>,
    policy_reloads: Family<OutcomeLabel, Counter>,
    jwks_fetches: Family<IssuerOutcome, Counter>,
    connections: Gauge,
    ws_sessions: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the framework's metrics (all at zero), the process
    /// metrics, and `rpcguard_build_info{version}` of this crate.
    pub fn new() -> Self {
        // The process metrics keep their standard names (no prefix); the
        // rest live in a sub-registry under `rpcguard_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix(PREFIX);
        let calls = Family::<CallLabels, ShardedCounter>::default();
        let durations: Family<MethodLabel, AtomicHistogram, fn() -> AtomicHistogram> =
            Family::new_with_constructor(AtomicHistogram::latency);
        let auth_failures = Family::<ReasonLabel, Counter>::default();
        let throttled = Family::<BudgetLabel, Counter>::default();
        let policy_reloads = Family::<OutcomeLabel, Counter>::default();
        let jwks_fetches = Family::<IssuerOutcome, Counter>::default();
        let connections = Gauge::default();
        let ws_sessions = Gauge::default();
        registry.register(
            "calls",
            "JSON-RPC calls answered, by declared method and outcome (ok or the error code)",
            calls.clone(),
        );
        registry.register_with_unit(
            "call_duration",
            "Time from a call's arrival at the security check to its answer, by method",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "auth_failures",
            "Calls refused -32001, by reason (missing, invalid, expired, revoked token, wrong scheme)",
            auth_failures.clone(),
        );
        registry.register(
            "throttled",
            "Calls refused -32005, by the budget that refused them",
            throttled.clone(),
        );
        registry.register(
            "policy_reloads",
            "Policy reloads (SIGHUP), by outcome (applied or refused)",
            policy_reloads.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Fetches of an external issuer's JWKS, by issuer and outcome (ok or failed)",
            jwks_fetches.clone(),
        );
        registry.register(
            "connections",
            "Open client connections (HTTP and WebSocket)",
            connections.clone(),
        );
        registry.register(
            "ws_sessions",
            "Open WebSocket sessions",
            ws_sessions.clone(),
        );
        // A gauge at 1 rather than an OpenMetrics `info`, which the
        // Prometheus text parser (and `promtool check metrics`) refuses.
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The rpcguard framework version", build);
        for reason in [
            AuthFailure::MissingToken,
            AuthFailure::InvalidToken,
            AuthFailure::ExpiredToken,
            AuthFailure::RevokedToken,
            AuthFailure::WrongScheme,
        ] {
            let _ = auth_failures.get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            });
        }
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(root),
                shared: Mutex::new(HashMap::new()),
                calls,
                durations,
                auth_failures,
                throttled,
                policy_reloads,
                jwks_fetches,
                connections,
                ws_sessions,
            }),
        }
    }

    /// Registers an application metric as `rpcguard_<name>` (a counter's
    /// `_total` is added by the encoder). Take the metric's clone before:
    /// the registry keeps one, the application records into the other.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        if let Ok(mut registry) = self.inner.registry.lock() {
            registry
                .sub_registry_with_prefix(PREFIX)
                .register(name, help, metric);
        }
    }

    /// The application's recorders of type `T`, made (and registered) by
    /// `make` the first time only: a server restarted on the same registry
    /// records into the same families instead of registering them twice.
    pub fn shared<T: Clone + Send + Sync + 'static>(&self, make: impl FnOnce(&Metrics) -> T) -> T {
        let id = std::any::TypeId::of::<T>();
        if let Some(found) = self
            .inner
            .shared
            .lock()
            .ok()
            .and_then(|shared| shared.get(&id).and_then(|b| b.downcast_ref::<T>().cloned()))
        {
            return found;
        }
        let made = make(self);
        if let Ok(mut shared) = self.inner.shared.lock() {
            if let Some(first) = shared.get(&id).and_then(|b| b.downcast_ref::<T>()) {
                return first.clone();
            }
            shared.insert(id, Box::new(made.clone()));
        }
        made
    }

    /// [`Metrics::register`] with a unit (`Unit::Seconds` for a duration),
    /// which the name gets as a suffix.
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        if let Ok(mut registry) = self.inner.registry.lock() {
            registry
                .sub_registry_with_prefix(PREFIX)
                .register_with_unit(name, help, unit, metric);
        }
    }

    /// The registry in the Prometheus text exposition format 0.0.4, what
    /// Prometheus scrapes by default and `promtool check metrics` reads:
    /// [`Metrics::encode`]'s OpenMetrics with a counter's `HELP` and `TYPE`
    /// under its sample name (`…_total`), and without `UNIT` and `EOF`.
    pub fn encode_prometheus_text(&self) -> String {
        let open = self.encode();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len() + 64 * counters.len());
        for line in open.lines() {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            let family = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
                .and_then(|rest| rest.split(' ').next())
                .filter(|name| counters.contains(name));
            match family {
                Some(name) => {
                    let (head, tail) = line.split_at(7 + name.len());
                    out.push_str(head);
                    out.push_str("_total");
                    out.push_str(tail);
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The registry as OpenMetrics text (`# EOF`-terminated), what
    /// Prometheus asks for in its `Accept` header.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let Ok(registry) = self.inner.registry.lock() else {
            return out;
        };
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %err, "encoding the metrics failed");
        }
        out
    }

    /// Counts a call refused `-32001` for `reason`.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.inner
            .auth_failures
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts a call refused `-32005` by `budget` (a fixed word, e.g.
    /// `sign_in`, `policy_per_ip`).
    pub fn throttled(&self, budget: &'static str) {
        self.inner
            .throttled
            .get_or_create(&BudgetLabel {
                budget: budget.to_owned(),
            })
            .inc();
    }

    /// Counts a policy reload, applied or refused.
    pub fn policy_reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.inner
            .policy_reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a fetch of `issuer`'s JWKS.
    pub fn jwks_fetch(&self, issuer: &str, ok: bool) {
        self.inner
            .jwks_fetches
            .get_or_create(&IssuerOutcome {
                issuer: issuer.to_owned(),
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// Counts an open connection until the guard is dropped.
    pub(crate) fn connection(&self) -> GaugeGuard {
        GaugeGuard::new(self.inner.connections.clone())
    }

    /// Counts an open WebSocket session until the guard is dropped.
    pub(crate) fn ws_session(&self) -> GaugeGuard {
        GaugeGuard::new(self.inner.ws_sessions.clone())
    }

    /// The per-method recorders for these declared method names (and
    /// [`UNKNOWN_METHOD`]), made once so that a call takes no lock.
    pub(crate) fn methods<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> MethodTable {
        let mut table = HashMap::new();
        for name in names.into_iter().chain([UNKNOWN_METHOD]) {
            table.insert(Box::from(name), Arc::new(self.method(name)));
        }
        MethodTable {
            table: Arc::new(table),
        }
    }

    fn method(&self, name: &str) -> MethodMetrics {
        let counter = |outcome: &str| {
            self.inner
                .calls
                .get_or_create(&CallLabels {
                    method: name.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .clone()
        };
        MethodMetrics {
            ok: counter("ok"),
            errors: COMMON_CODES
                .iter()
                .map(|&code| (code, std::sync::OnceLock::new()))
                .collect(),
            duration: self
                .inner
                .durations
                .get_or_create(&MethodLabel {
                    method: name.to_owned(),
                })
                .clone(),
            name: Box::from(name),
            metrics: self.clone(),
        }
    }
}

/// The error codes whose counters a method keeps at hand once made (at
/// their first use, so the output lists only outcomes that happened; other
/// codes are looked up in the family each time).
const COMMON_CODES: [i32; 10] = [
    -32700, -32600, -32601, -32602, -32603, -32001, -32099, -32002, -32004, -32005,
];

/// A declared method's recorders.
pub(crate) struct MethodMetrics {
    ok: ShardedCounter,
    errors: Vec<(i32, std::sync::OnceLock<ShardedCounter>)>,
    duration: AtomicHistogram,
    name: Box<str>,
    metrics: Metrics,
}

impl MethodMetrics {
    /// The counter of this method's calls answered with `code`.
    fn counter(&self, code: i32) -> ShardedCounter {
        self.metrics
            .inner
            .calls
            .get_or_create(&CallLabels {
                method: self.name.to_string(),
                outcome: code.to_string(),
            })
            .clone()
    }

    /// Records one answered call: `error` is its error code, if any.
    pub(crate) fn record(&self, error: Option<i32>, elapsed: Duration) {
        match error {
            None => {
                self.ok.inc();
            }
            Some(code) => match self.errors.iter().find(|(c, _)| *c == code) {
                Some((_, counter)) => {
                    counter.get_or_init(|| self.counter(code)).inc();
                }
                None => {
                    self.counter(code).inc();
                }
            },
        }
        self.duration.observe(elapsed);
    }
}

/// Declared method name → its recorders; never changes after start.
#[derive(Clone)]
pub(crate) struct MethodTable {
    table: Arc<HashMap<Box<str>, Arc<MethodMetrics>>>,
}

impl MethodTable {
    /// The recorders of `method`, shared, if it is declared.
    pub(crate) fn shared(&self, method: &str) -> Option<Arc<MethodMetrics>> {
        self.table.get(method).cloned()
    }
}

/// Increments a gauge now and decrements it when dropped.
#[derive(Debug)]
pub(crate) struct GaugeGuard {
    gauge: Gauge,
}

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard { gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A histogram with fixed buckets and atomic counts: recording takes no
/// lock (`prometheus-client`'s own histogram takes a mutex per
/// observation). Encoded through `prometheus-client` like its own.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    /// Per thread shard: one count per bound, the last for +Inf, then the
    /// observation count and the sum in nanoseconds.
    shards: Box<[Padded<Box<[AtomicU64]>>]>,
}

/// How many shards the per-call metrics have: threads take them in turn.
const SHARDS: usize = 8;

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SHARD: usize = (NEXT.fetch_add(1, Ordering::Relaxed) as usize) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// A value on cache lines of its own (two, for adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A counter sharded by thread (see the module documentation), encoded as
/// one Prometheus counter.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShardedCounter {
    shards: Arc<[Padded<AtomicU64>; SHARDS]>,
}

impl ShardedCounter {
    /// Adds one.
    pub(crate) fn inc(&self) {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl AtomicHistogram {
    /// A histogram with these upper bounds (seconds, ascending) and +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        // Buckets and +Inf, count, sum.
        let width = bounds.len() + 3;
        let shards = (0..SHARDS)
            .map(|_| Padded((0..width).map(|_| AtomicU64::new(0)).collect()))
            .collect();
        AtomicHistogram {
            inner: Arc::new(HistogramInner { bounds, shards }),
        }
    }

    /// The call latency histogram: 50 µs to 10 s.
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS)
    }

    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let inner = &self.inner;
        let seconds = elapsed.as_secs_f64();
        let bucket = inner
            .bounds
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(inner.bounds.len());
        let Some(Padded(slots)) = inner.shards.get(shard()) else {
            return;
        };
        let n = inner.bounds.len();
        if let Some(count) = slots.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(count) = slots.get(n + 1) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(sum) = slots.get(n + 2) {
            sum.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// The total of slot `i` over the shards.
    fn total(&self, i: usize) -> u64 {
        self.inner
            .shards
            .iter()
            .filter_map(|Padded(slots)| slots.get(i))
            .map(|v| v.load(Ordering::Relaxed))
            .sum()
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.total(self.inner.bounds.len() + 1)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .enumerate()
            .map(|(i, bound)| (bound, self.total(i)))
            .collect();
        // Count from the buckets, so that the two agree within a scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.total(inner.bounds.len() + 2) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The standard process metrics, read from `/proc/self` at each scrape
/// (Linux; nothing elsewhere).
#[derive(Debug)]
struct ProcessCollector;

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let Some(process) = ProcessFigures::read() else {
            return Ok(());
        };
        let gauge = |value: f64| {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(value);
            gauge
        };
        let counter = |value: f64| {
            let counter = Counter::<f64, AtomicU64>::default();
            counter.inc_by(value);
            counter
        };
        let figures: [(&str, &str, Option<Unit>, &dyn EncodeMetric); 6] = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                &gauge(process.rss_bytes),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size",
                Some(Unit::Bytes),
                &gauge(process.vsize_bytes),
            ),
            (
                "process_cpu",
                "User and system CPU time",
                Some(Unit::Seconds),
                &counter(process.cpu_seconds),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                &gauge(process.open_fds),
            ),
            (
                "process_max_fds",
                "The open-file limit",
                None,
                &gauge(process.max_fds),
            ),
            (
                "process_start_time",
                "Start time since the Unix epoch",
                Some(Unit::Seconds),
                &gauge(process.start_time_seconds),
            ),
        ];
        for (name, help, unit, metric) in figures {
            let metric_encoder =
                encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
            metric.encode(metric_encoder)?;
        }
        Ok(())
    }
}

/// What `/proc/self` says about this process.
struct ProcessFigures {
    rss_bytes: f64,
    vsize_bytes: f64,
    cpu_seconds: f64,
    open_fds: f64,
    max_fds: f64,
    start_time_seconds: f64,
}

impl ProcessFigures {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        // SAFETY: sysconf reads a constant of the system.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|b| b.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Some(ProcessFigures {
            rss_bytes: field(24)? * page,
            vsize_bytes: field(23)?,
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            open_fds,
            max_fds,
            start_time_seconds: boot + field(22)? / ticks,
        })
    }
}

/// Serves `GET /metrics` on `listener` (and 404 for anything else) until
/// `shutdown` resolves. Give it a listener of its own on an address only
/// the monitoring can reach (loopback, a private interface).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::TokioIo;
    tokio::pin!(shutdown);
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(socket), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "metrics connection ended with an error");
            }
        });
    }
}

/// The answer to a request of the metrics listener.
fn answer<B>(
    req: &hyper::Request<B>,
    metrics: &Metrics,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    use http_body_util::Full;
    let mut response = hyper::Response::new(Full::default());
    if req.method() != hyper::Method::GET || req.uri().path() != METRICS_PATH {
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
        return response;
    }
    // OpenMetrics when the scraper asks for it (as Prometheus does), else
    // the classic text format.
    let open_metrics = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (content_type, body) = if open_metrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.encode_prometheus_text(),
        )
    };
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    *response.body_mut() = Full::new(hyper::body::Bytes::from(body));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_outcome_and_encoded() {
        let metrics = Metrics::new();
        let table = metrics.methods(["get_caller"]);
        let method = table.shared("get_caller").expect("declared");
        method.record(None, Duration::from_micros(80));
        method.record(Some(-32001), Duration::from_micros(30));
        method.record(Some(-31000), Duration::from_millis(3));
        assert!(table.shared("made-up").is_none(), "only declared names");
        table
            .shared(UNKNOWN_METHOD)
            .expect("unknown")
            .record(Some(-32601), Duration::from_micros(5));
        metrics.auth_failure(AuthFailure::ExpiredToken);
        let text = metrics.encode();
        for line in [
            "rpcguard_calls_total{method=\"get_caller\",outcome=\"ok\"} 1",
            "rpcguard_calls_total{method=\"get_caller\",outcome=\"-32001\"} 1",
            "rpcguard_calls_total{method=\"get_caller\",outcome=\"-31000\"} 1",
            "rpcguard_calls_total{method=\"<unknown>\",outcome=\"-32601\"} 1",
            "rpcguard_call_duration_seconds_count{method=\"get_caller\"} 3",
            "rpcguard_call_duration_seconds_bucket{le=\"0.0001\",method=\"get_caller\"} 2",
            "rpcguard_auth_failures_total{reason=\"expired_token\"} 1",
            "rpcguard_auth_failures_total{reason=\"missing_token\"} 0",
            "rpcguard_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
        assert!(!text.contains("made-up"));
        assert!(text.trim_end().ends_with("# EOF"));
        let classic = metrics.encode_prometheus_text();
        assert!(classic.contains("# TYPE rpcguard_calls_total counter\n"));
        assert!(classic.contains("# HELP rpcguard_calls_total JSON-RPC calls"));
        assert!(classic.contains("# TYPE rpcguard_call_duration_seconds histogram\n"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    }

    #[test]
    fn gauges_follow_their_guards() {
        let metrics = Metrics::new();
        let one = metrics.connection();
        let two = metrics.connection();
        let ws = metrics.ws_session();
        assert!(metrics.encode().contains("rpcguard_connections 2"));
        drop((one, ws));
        let text = metrics.encode();
        assert!(text.contains("rpcguard_connections 1"));
        assert!(text.contains("rpcguard_ws_sessions 0"));
        drop(two);
    }
}
