//! The policy in force: each method's effective declaration and budgets,
//! and the documents that describe them, swapped whole on a reload.
//!
//! An [`Enforcement`] is built once per policy and never changes; the
//! [`PolicyCell`] holds the current one and replaces it atomically, so a
//! call sees either the old policy or the new one, never a mix: the guard
//! takes one snapshot per call. Budgets whose rate did not change are
//! carried over to the new policy, so a reload gives nobody a fresh burst.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;

use super::document::document_resource;
use super::resource::Resource;
use crate::api::{Api, MethodDecl, DISCOVER};
use crate::error::RpcError;
use crate::limit::{Budget, Rate};
use crate::metrics::{MethodMetrics, MethodTable};
use crate::openrpc::{self, DocInfo};
use crate::policy::{Discover, Policy, PolicyError};
use crate::schema::OpenRpcDocument;
use crate::security::{Caller, Scheme};

/// Most caller views of the document kept (`--discover caller`); callers
/// beyond get theirs built per call.
const MAX_VIEWS: usize = 256;

/// A caller's budget key: its scheme and subject (and an external
/// caller's issuer), hashed with two secret keys into 128 bits (no allocation per call; no collision an outsider can
/// aim for).
type CallerKey = u128;

fn caller_key(caller: &Caller) -> CallerKey {
    static KEYS: OnceLock<(std::hash::RandomState, std::hash::RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (Default::default(), Default::default()));
    let hash = |state: &std::hash::RandomState| {
        let mut h = state.build_hasher();
        caller.scheme.hash(&mut h);
        caller.subject.hash(&mut h);
        // An external issuer's subject is not the local user of that name.
        #[cfg(feature = "oidc")]
        if let Some(external) = caller.detail::<crate::security::oidc::ExternalIdentity>() {
            external.issuer.hash(&mut h);
        }
        h.finish()
    };
    (u128::from(hash(a)) << 64) | u128::from(hash(b))
}

/// What the policy does to one declared method.
pub(crate) struct Enforced {
    /// The declaration with the policy's requirement in place.
    pub decl: Arc<MethodDecl>,
    /// `false`: the method answers `-32601`.
    pub enabled: bool,
    /// Where its calls are recorded (found here, so a call makes no
    /// lookup of its own).
    pub recorder: Option<Arc<MethodMetrics>>,
    per_caller: Option<Arc<Budget<CallerKey>>>,
    per_ip: Option<Arc<Budget<Option<IpAddr>>>>,
}

impl Enforced {
    /// Draws a call of `caller` (authenticated) from its budget.
    pub fn draw_caller(&self, caller: &Caller) -> Result<(), RpcError> {
        match &self.per_caller {
            Some(budget) => budget.check(&caller_key(caller)),
            None => Ok(()),
        }
    }

    /// Draws a call from client address `ip` (IPv6 by /64).
    pub fn draw_ip(&self, ip: Option<IpAddr>) -> Result<(), RpcError> {
        match &self.per_ip {
            Some(budget) => budget.check(&ip.map(crate::limit::client_key)),
            None => Ok(()),
        }
    }
}

/// The server-wide facts a policy is applied to.
pub(crate) struct Base {
    /// As the API declared them, `rpc.discover` first.
    pub decls: Vec<Arc<MethodDecl>>,
    /// The security function's schemes.
    pub schemes: Vec<Scheme>,
    /// The document's info.
    pub info: DocInfo,
    /// What `rpc.discover` answers.
    pub discover: Discover,
    /// Each declared method's metrics recorders, made once at start.
    pub recorders: MethodTable,
}

/// One policy, applied.
pub(crate) struct Enforcement {
    base: Arc<Base>,
    policy: Policy,
    methods: HashMap<String, Enforced>,
    /// The enabled methods, effective declarations, in declared order.
    visible: Vec<Arc<MethodDecl>>,
    /// The document of every enabled method.
    full: OpenRpcDocument,
    /// What `GET /openrpc.json` answers.
    resource: Resource,
    /// Caller views by the set of methods they show (`--discover caller`).
    views: Mutex<HashMap<Vec<bool>, OpenRpcDocument>>,
    caller_budgets: HashMap<Option<String>, Arc<Budget<CallerKey>>>,
    ip_budgets: HashMap<Option<String>, Arc<Budget<Option<IpAddr>>>>,
}

/// A budget of `rate` for `slot`, the old policy's when it had the same.
fn budget<K: Hash + Eq + Clone>(
    old: Option<&HashMap<Option<String>, Arc<Budget<K>>>>,
    slot: &Option<String>,
    rate: Rate,
    max_keys: usize,
) -> Arc<Budget<K>> {
    old.and_then(|budgets| budgets.get(slot))
        .filter(|b| b.rate() == rate && b.max_keys() == max_keys)
        .cloned()
        .unwrap_or_else(|| Arc::new(Budget::new(rate, max_keys)))
}

/// The budget `method` draws from: its own rate's (slot: its name), else
/// the global rate's (slot: `None`), shared by every method that uses it.
fn slot_budget<K: Hash + Eq + Clone>(
    method: &str,
    (own, global): (Option<Rate>, Option<Rate>),
    budgets: &mut HashMap<Option<String>, Arc<Budget<K>>>,
    old: Option<&HashMap<Option<String>, Arc<Budget<K>>>>,
    max_keys: usize,
) -> Option<Arc<Budget<K>>> {
    let (slot, rate) = match (own, global) {
        (Some(rate), _) => (Some(method.to_owned()), rate),
        (None, Some(rate)) => (None, rate),
        (None, None) => return None,
    };
    Some(
        budgets
            .entry(slot.clone())
            .or_insert_with(|| budget(old, &slot, rate, max_keys))
            .clone(),
    )
}

fn document_error(err: serde_json::Error) -> PolicyError {
    PolicyError {
        file: None,
        line: None,
        message: format!("building the OpenRPC document failed: {err}"),
    }
}

impl Enforcement {
    /// Applies `policy` to `base`, keeping `old`'s budgets where their rate
    /// is unchanged.
    pub fn build(
        base: Arc<Base>,
        policy: Policy,
        old: Option<&Enforcement>,
    ) -> Result<Enforcement, PolicyError> {
        let names: Vec<&str> = base.decls.iter().map(|d| d.name.as_ref()).collect();
        let schemes: Vec<&str> = base.schemes.iter().map(|s| s.name()).collect();
        policy.validate(&names, &schemes)?;
        let limits = &policy.limits;
        let mut caller_budgets = HashMap::new();
        let mut ip_budgets = HashMap::new();
        let mut methods = HashMap::with_capacity(base.decls.len());
        let mut visible = Vec::with_capacity(base.decls.len());
        for declared in &base.decls {
            let name = declared.name.as_ref();
            let resolve_caller = name == DISCOVER && base.discover == Discover::Caller;
            let (decl, enabled) = match policy.apply(declared, resolve_caller) {
                Some(decl) => (decl, true),
                None => (declared.clone(), false),
            };
            if enabled {
                policy.check_budgets(name, decl.security.is_public())?;
            }
            let own = limits.methods.get(name);
            let per_caller = slot_budget(
                name,
                (own.and_then(|l| l.per_caller), limits.per_caller),
                &mut caller_budgets,
                old.map(|o| &o.caller_budgets),
                limits.max_keys,
            );
            let per_ip = slot_budget(
                name,
                (own.and_then(|l| l.per_ip), limits.per_ip),
                &mut ip_budgets,
                old.map(|o| &o.ip_budgets),
                limits.max_keys,
            );
            if enabled {
                visible.push(decl.clone());
            }
            methods.insert(
                name.to_owned(),
                Enforced {
                    recorder: base.recorders.shared(name),
                    decl,
                    enabled,
                    per_caller,
                    per_ip,
                },
            );
        }
        let full = OpenRpcDocument::new(&openrpc::document_of(&visible, &base.schemes, &base.info))
            .map_err(document_error)?;
        let mut enforcement = Enforcement {
            resource: document_resource(Bytes::new()),
            base,
            policy,
            methods,
            visible,
            full,
            views: Mutex::new(HashMap::new()),
            caller_budgets,
            ip_budgets,
        };
        // `GET /openrpc.json` carries no credentials: in caller mode it
        // shows what an anonymous caller may call.
        let published = match enforcement.base.discover {
            Discover::All => enforcement.full.clone(),
            Discover::Caller => enforcement
                .view(&enforcement.shown(None))
                .map_err(document_error)?,
        };
        enforcement.resource = document_resource(published.bytes().clone());
        Ok(enforcement)
    }

    /// The method's enforcement, if it is declared.
    pub fn get(&self, method: &str) -> Option<&Enforced> {
        self.methods.get(method)
    }

    /// `GET /openrpc.json`.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Which enabled methods `caller` may call (all, for `None`: only the
    /// public ones).
    fn shown(&self, caller: Option<&Caller>) -> Vec<bool> {
        self.visible
            .iter()
            .map(|decl| {
                decl.security.is_public() || caller.is_some_and(|c| decl.security.admits(c))
            })
            .collect()
    }

    /// What `rpc.discover` answers `caller`: the whole document, or (in
    /// caller mode) the methods it may call, each distinct view built once.
    pub fn document_for(&self, caller: Option<&Caller>) -> Result<OpenRpcDocument, RpcError> {
        if self.base.discover == Discover::All {
            return Ok(self.full.clone());
        }
        let shown = self.shown(caller);
        if shown.iter().all(|&s| s) {
            return Ok(self.full.clone());
        }
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(doc) = views.get(&shown) {
            return Ok(doc.clone());
        }
        let doc = self.view(&shown).map_err(RpcError::internal)?;
        if views.len() < MAX_VIEWS {
            views.insert(shown, doc.clone());
        }
        Ok(doc)
    }

    fn view(&self, shown: &[bool]) -> Result<OpenRpcDocument, serde_json::Error> {
        let decls: Vec<Arc<MethodDecl>> = self
            .visible
            .iter()
            .zip(shown)
            .filter(|(_, &s)| s)
            .map(|(d, _)| d.clone())
            .collect();
        OpenRpcDocument::new(&openrpc::document_of(
            &decls,
            &self.base.schemes,
            &self.base.info,
        ))
    }

    /// Drops the budget keys that have refilled.
    pub fn sweep(&self) {
        for budget in self.caller_budgets.values() {
            budget.sweep();
        }
        for budget in self.ip_budgets.values() {
            budget.sweep();
        }
    }
}

/// The policy in force, replaced whole.
pub(crate) struct PolicyCell {
    base: Arc<Base>,
    current: ArcSwap<Enforcement>,
    /// Replacements one at a time, so each carries over the budgets of the
    /// one before.
    replacing: Mutex<()>,
}

impl PolicyCell {
    /// `policy` applied to `base`.
    pub fn new(base: Base, policy: Policy) -> Result<Self, PolicyError> {
        let base = Arc::new(base);
        let first = Enforcement::build(base.clone(), policy, None)?;
        Ok(PolicyCell {
            base,
            current: ArcSwap::from_pointee(first),
            replacing: Mutex::new(()),
        })
    }

    /// The metrics recorders of the declared methods.
    pub fn recorders(&self) -> &MethodTable {
        &self.base.recorders
    }

    /// The policy in force now (a snapshot: later replacements do not
    /// change it).
    pub fn load(&self) -> Guard<Arc<Enforcement>> {
        self.current.load()
    }

    /// The policy in force now, held (for the length of a call, across
    /// awaits).
    pub fn load_full(&self) -> Arc<Enforcement> {
        self.current.load_full()
    }

    /// Puts `policy` in force, or leaves the current one when it is
    /// invalid.
    pub fn replace(&self, policy: Policy) -> Result<(), PolicyError> {
        let _one_at_a_time = self.replacing.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let new = Enforcement::build(self.base.clone(), policy, Some(&old))?;
        self.current.store(Arc::new(new));
        Ok(())
    }
}

impl std::fmt::Debug for PolicyCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCell")
            .field("policy", self.load().policy())
            .finish()
    }
}

/// Replaces a running server's policy ([`RunningServer::policy`](super::RunningServer::policy)).
///
/// The new policy is checked like the first one; an invalid one is refused
/// and the policy in force stays. The switch is atomic: each call is
/// checked entirely under the old policy or entirely under the new one
/// (each entry of a batch is a call of its own). Connections stay open,
/// budgets whose rate is unchanged keep what they have drawn, and the
/// document (`rpc.discover`, `GET /openrpc.json`) changes with it.
#[derive(Clone)]
pub struct PolicyHandle(Arc<PolicyCell>);

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PolicyHandle").finish()
    }
}

impl PolicyHandle {
    pub(crate) fn new(cell: Arc<PolicyCell>) -> Self {
        PolicyHandle(cell)
    }

    /// Puts `policy` in force, or refuses it (the current one stays).
    pub fn replace(&self, policy: Policy) -> Result<(), PolicyError> {
        self.0.replace(policy)
    }

    /// The policy in force.
    pub fn current(&self) -> Policy {
        self.0.load().policy().clone()
    }
}

/// The OpenRPC document a server serves for `api` under `policy`: the
/// requirements in force, disabled methods left out (what `rpc.discover`
/// answers with [`Discover::All`]). An error when the policy names a
/// method or scheme the API does not have.
pub fn document_with_policy<S: Send + Sync + 'static>(
    api: &Api<S>,
    schemes: &[Scheme],
    info: &DocInfo,
    policy: &Policy,
) -> Result<serde_json::Value, super::ServerError> {
    api.check_security()?;
    let names: Vec<&str> = api.names().collect();
    let scheme_names: Vec<&str> = schemes.iter().map(|s| s.name()).collect();
    policy.validate(&names, &scheme_names)?;
    let decls: Vec<Arc<MethodDecl>> = api
        .declarations()
        .iter()
        .filter_map(|decl| policy.apply(decl, false))
        .collect();
    for decl in &decls {
        policy.check_budgets(&decl.name, decl.security.is_public())?;
    }
    Ok(openrpc::document_of(&decls, schemes, info))
}
