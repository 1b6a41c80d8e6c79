//! Who is calling: the [`Caller`] a security function proves in one
//! scheme, and the [`Identities`] it found across schemes.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::IntoScopes;
use crate::error::AuthFailure;

/// The authenticated caller of a method, as the security function resolved
/// it in one scheme. Handlers receive it like FastAPI's `Depends(get_user)`.
///
/// Besides its subject and scopes, a security function may attach typed
/// details ([`Caller::with_detail`]), e.g. the user record it loaded, so
/// that handlers need not load it again ([`Caller::detail`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is calling (for Bearer: the username).
    pub subject: String,
    /// The scheme the caller authenticated in.
    pub scheme: String,
    /// The scopes it holds in that scheme.
    pub scopes: BTreeSet<String>,
    details: jsonrpsee::Extensions,
}

impl Caller {
    /// A caller authenticated in the scheme named `scheme` with the given
    /// scopes. In code, prefer [`Scheme::caller`](super::Scheme::caller):
    /// the name cannot be misspelt.
    pub fn new(subject: impl Into<String>, scheme: &str, scopes: impl IntoScopes) -> Self {
        Caller {
            subject: subject.into(),
            scheme: scheme.to_owned(),
            scopes: scopes.into_scopes().into_iter().collect(),
            details: jsonrpsee::Extensions::new(),
        }
    }

    /// Attaches a detail of type `T` (one per type; a second replaces it).
    #[must_use]
    pub fn with_detail<T: Clone + Send + Sync + 'static>(mut self, detail: T) -> Self {
        self.details.insert(detail);
        self
    }

    /// The attached detail of type `T`, if any.
    pub fn detail<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.details.get::<T>()
    }

    /// True when the caller holds `scope` (in its scheme).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// What a security function found in one request: per scheme, the
/// identity its credential proved, or why that credential was refused.
/// Schemes the caller presented nothing for are absent.
///
/// One scheme holds one outcome. Adding a second for a scheme (two
/// functions of one scheme, combined with [`AnySecurity`](super::AnySecurity)) keeps an
/// identity over a refusal, and the first of two identities or two
/// refusals.
///
/// ```
/// use rpcguard::{AuthFailure, Caller, Identities};
/// let found = Identities::new()
///     .found(Caller::new("bot", "ApiKey", ["reports"]))
///     .refused("Bearer", AuthFailure::ExpiredToken);
/// assert_eq!(found.get("ApiKey").and_then(Result::ok).map(|c| c.subject.as_str()), Some("bot"));
/// assert_eq!(found.get("Bearer").and_then(Result::err), Some(AuthFailure::ExpiredToken));
/// assert!(found.get("Other").is_none());
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Identities {
    /// In the order found (for [`AnySecurity`](super::AnySecurity): the order of its functions).
    by_scheme: Vec<Outcome>,
}

/// What one scheme yielded. An identity carries its scheme's name, so
/// finding one copies no string.
#[derive(Debug, Clone)]
enum Outcome {
    Found(Arc<Caller>),
    Refused(String, AuthFailure),
}

impl Outcome {
    fn scheme(&self) -> &str {
        match self {
            Outcome::Found(caller) => &caller.scheme,
            Outcome::Refused(scheme, _) => scheme,
        }
    }
}

impl Identities {
    /// Nothing presented.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the identity `caller` proved in its scheme.
    pub fn found(self, caller: Caller) -> Self {
        self.found_shared(Arc::new(caller))
    }

    /// Adds the identity `caller` proved in its scheme, shared: a security
    /// function that keeps its callers built (one per account, say) hands
    /// them out without a copy per call, and the handler gets this `Arc`.
    pub fn found_shared(mut self, caller: Arc<Caller>) -> Self {
        self.add(Outcome::Found(caller));
        self
    }

    /// Adds a refused credential of `scheme`.
    pub fn refused(mut self, scheme: &str, reason: AuthFailure) -> Self {
        self.add(Outcome::Refused(scheme.to_owned(), reason));
        self
    }

    /// Adds everything `other` found, scheme by scheme.
    pub fn merge(mut self, other: Identities) -> Self {
        for outcome in other.by_scheme {
            self.add(outcome);
        }
        self
    }

    fn add(&mut self, outcome: Outcome) {
        match self
            .by_scheme
            .iter_mut()
            .find(|held| held.scheme() == outcome.scheme())
        {
            None => self.by_scheme.push(outcome),
            Some(held @ Outcome::Refused(..)) if matches!(outcome, Outcome::Found(_)) => {
                *held = outcome
            }
            Some(_) => {}
        }
    }

    fn outcome(&self, scheme: &str) -> Option<&Outcome> {
        self.by_scheme.iter().find(|o| o.scheme() == scheme)
    }

    /// The outcome in `scheme`: its identity, why its credential was
    /// refused, or `None` when nothing of that scheme was presented.
    pub fn get(&self, scheme: &str) -> Option<Result<&Caller, AuthFailure>> {
        self.outcome(scheme).map(|outcome| match outcome {
            Outcome::Found(caller) => Ok(&**caller),
            Outcome::Refused(_, reason) => Err(*reason),
        })
    }

    /// The identity found in `scheme`, shared (what the handler gets).
    pub fn shared(&self, scheme: &str) -> Option<&Arc<Caller>> {
        match self.outcome(scheme)? {
            Outcome::Found(caller) => Some(caller),
            Outcome::Refused(..) => None,
        }
    }

    /// Every identity found, in the order found.
    pub fn callers(&self) -> impl Iterator<Item = &Caller> + '_ {
        self.shared_callers().map(|caller| &**caller)
    }

    /// Every identity found, shared, in the order found.
    pub fn shared_callers(&self) -> impl Iterator<Item = &Arc<Caller>> + '_ {
        self.by_scheme.iter().filter_map(|outcome| match outcome {
            Outcome::Found(caller) => Some(caller),
            Outcome::Refused(..) => None,
        })
    }

    /// Every refusal, in the order found.
    pub fn refusals(&self) -> impl Iterator<Item = (&str, AuthFailure)> + '_ {
        self.by_scheme.iter().filter_map(|outcome| match outcome {
            Outcome::Found(_) => None,
            Outcome::Refused(scheme, reason) => Some((scheme.as_str(), *reason)),
        })
    }

    /// True when nothing was presented in any scheme.
    pub fn is_empty(&self) -> bool {
        self.by_scheme.is_empty()
    }
}

impl From<Caller> for Identities {
    fn from(caller: Caller) -> Self {
        Identities::new().found(caller)
    }
}

impl From<Option<Caller>> for Identities {
    fn from(caller: Option<Caller>) -> Self {
        caller.map(Identities::from).unwrap_or_default()
    }
}
