//! The reference server's own metrics, registered beside the framework's in
//! one [`rpcguard::metrics::Metrics`] (names in the README's Deploy
//! section): sign-ins by outcome, sessions opened and ended by cause,
//! refresh-token reuse, the bcrypt queue, the store's latency and errors,
//! key rotations. Label values are fixed words, never caller input.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;
use rpcguard::metrics::{AtomicHistogram, Metrics};

/// An `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// A `cause` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

/// An `op` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Why a session ended (the `cause` of `rpcguard_sessions_ended_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// `sign_out`.
    SignOut,
    /// `sign_out {"everywhere": true}`.
    SignOutEverywhere,
    /// A rotated refresh token presented again.
    RefreshReuse,
    /// `change_password` ended the user's other sessions.
    PasswordChange,
    /// A `sign_in` past `--max-sessions-per-account` ended the oldest.
    SessionLimit,
}

impl EndCause {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::SignOut => "sign_out",
            EndCause::SignOutEverywhere => "sign_out_everywhere",
            EndCause::RefreshReuse => "refresh_reuse",
            EndCause::PasswordChange => "password_change",
            EndCause::SessionLimit => "session_limit",
        }
    }
}

/// The reference server's recorders. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccountMetrics {
    framework: Metrics,
    sign_ins: Family<OutcomeLabel, Counter>,
    sessions_opened: Counter,
    sessions_ended: Family<CauseLabel, Counter>,
    refresh_reuse: Counter,
    store_duration: Family<OpLabel, AtomicHistogram, fn() -> AtomicHistogram>,
    store_errors: Counter,
    key_rotations: Counter,
    /// Jobs waiting for a bcrypt thread.
    pub bcrypt_queue_depth: Gauge,
    /// Time a bcrypt job waited for a thread.
    pub bcrypt_wait: AtomicHistogram,
}

impl AccountMetrics {
    /// The reference server's metrics in `metrics`, registered there the
    /// first time.
    pub fn register(metrics: &Metrics) -> Self {
        metrics.shared(Self::make)
    }

    fn make(metrics: &Metrics) -> Self {
        let this = AccountMetrics {
            framework: metrics.clone(),
            sign_ins: Family::default(),
            sessions_opened: Counter::default(),
            sessions_ended: Family::default(),
            refresh_reuse: Counter::default(),
            store_duration: Family::new_with_constructor(AtomicHistogram::latency),
            store_errors: Counter::default(),
            key_rotations: Counter::default(),
            bcrypt_queue_depth: Gauge::default(),
            bcrypt_wait: AtomicHistogram::latency(),
        };
        metrics.register(
            "sign_ins",
            "sign_in attempts by outcome (ok, failed, disabled, throttled, busy)",
            this.sign_ins.clone(),
        );
        metrics.register(
            "sessions_opened",
            "Sessions opened by sign_in",
            this.sessions_opened.clone(),
        );
        metrics.register(
            "sessions_ended",
            "Sessions ended by this server, by cause (disable, delete and `user sign-out` are counted where they run)",
            this.sessions_ended.clone(),
        );
        metrics.register(
            "refresh_reuse",
            "Rotated refresh tokens presented again (each ended its session)",
            this.refresh_reuse.clone(),
        );
        metrics.register(
            "bcrypt_queue_depth",
            "bcrypt jobs waiting for a thread",
            this.bcrypt_queue_depth.clone(),
        );
        metrics.register_with_unit(
            "bcrypt_wait",
            "Time a bcrypt job waited for a thread",
            Unit::Seconds,
            this.bcrypt_wait.clone(),
        );
        metrics.register_with_unit(
            "store_duration",
            "Database operations by operation",
            Unit::Seconds,
            this.store_duration.clone(),
        );
        metrics.register(
            "store_errors",
            "Database operations that failed",
            this.store_errors.clone(),
        );
        metrics.register(
            "key_rotations",
            "Signing-key rotations this server has seen",
            this.key_rotations.clone(),
        );
        for outcome in ["ok", "failed", "disabled", "throttled"] {
            this.sign_ins
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(0);
        }
        this
    }

    /// The framework's registry these live in.
    pub fn framework(&self) -> &Metrics {
        &self.framework
    }

    /// Counts a `sign_in` by outcome (`ok`, `failed`, `disabled`,
    /// `throttled`).
    pub fn sign_in(&self, outcome: &'static str) {
        self.sign_ins.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts a session opened.
    pub fn session_opened(&self) {
        self.sessions_opened.inc();
    }

    /// Counts `n` sessions ended for `cause`.
    pub fn sessions_ended(&self, cause: EndCause, n: usize) {
        if n > 0 {
            self.sessions_ended
                .get_or_create(&CauseLabel {
                    cause: cause.as_str(),
                })
                .inc_by(n as u64);
        }
    }

    /// Counts a refresh-token reuse.
    pub fn refresh_reuse(&self) {
        self.refresh_reuse.inc();
        self.sessions_ended(EndCause::RefreshReuse, 1);
    }

    /// Counts a call refused `-32005` by `budget` (`sign_in`, `sign_up`,
    /// `refresh`, `bcrypt_queue`).
    pub fn throttled(&self, budget: &'static str) {
        self.framework.throttled(budget);
    }

    /// Records one store operation.
    pub fn store_op(&self, op: &'static str, elapsed: Duration, failed: bool) {
        self.store_duration
            .get_or_create(&OpLabel { op })
            .observe(elapsed);
        if failed {
            self.store_errors.inc();
        }
    }

    /// Counts a change of the signing key, and writes its audit event.
    pub fn key_rotation(&self, kid: &str) {
        self.key_rotations.inc();
        rpcguard::audit::Audit::new(rpcguard::audit::Event::KeyRotated)
            .reason(kid)
            .emit();
    }
}

impl Default for AccountMetrics {
    fn default() -> Self {
        Self::register(&Metrics::new())
    }
}
