//! What a method requires of its caller: alternatives, each a scheme and
//! the scopes all needed in it ([`MethodSecurity`], [`Requirement`]), and
//! the scope lists they are built from ([`IntoScopes`]).

use std::collections::BTreeSet;

use super::{Caller, Identities};
use crate::error::{AuthFailure, MissingScopes, RpcError};

/// A list of scopes: `()`, an array (`["a", "b"]`, `[]`), a slice or a
/// `Vec` of `&str` or `String`, or a set. Every scope-taking call
/// ([`Scheme::require`](super::Scheme::require),
/// [`Scheme::caller`](super::Scheme::caller), …) accepts any of them.
///
/// ```
/// use rpcguard::{IntoScopes, Scheme};
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
/// let owned: Vec<String> = vec!["a".into()];
/// for scopes in [
///     KEY.require(()),
///     KEY.require([]),
///     KEY.require(["a"]),
///     KEY.require(&["a"][..]),
///     KEY.require(owned.clone()),
///     KEY.require(&owned[..]),
/// ] {
///     let _ = scopes;
/// }
/// assert_eq!(["b", "a", "b"].into_scopes(), ["b", "a", "b"]);
/// ```
pub trait IntoScopes {
    /// The scopes, in the order given (repeats kept; requirements sort
    /// and dedupe them).
    fn into_scopes(self) -> Vec<String>;
}

impl IntoScopes for () {
    fn into_scopes(self) -> Vec<String> {
        Vec::new()
    }
}

impl<const N: usize> IntoScopes for [&str; N] {
    fn into_scopes(self) -> Vec<String> {
        self.iter().map(|s| (*s).to_owned()).collect()
    }
}

impl<const N: usize> IntoScopes for &[&str; N] {
    fn into_scopes(self) -> Vec<String> {
        self.iter().map(|s| (*s).to_owned()).collect()
    }
}

impl IntoScopes for &[&str] {
    fn into_scopes(self) -> Vec<String> {
        self.iter().map(|s| (*s).to_owned()).collect()
    }
}

impl IntoScopes for &[String] {
    fn into_scopes(self) -> Vec<String> {
        self.to_vec()
    }
}

impl IntoScopes for Vec<&str> {
    fn into_scopes(self) -> Vec<String> {
        self.into_iter().map(str::to_owned).collect()
    }
}

impl IntoScopes for Vec<String> {
    fn into_scopes(self) -> Vec<String> {
        self
    }
}

impl IntoScopes for &Vec<String> {
    fn into_scopes(self) -> Vec<String> {
        self.clone()
    }
}

impl IntoScopes for BTreeSet<String> {
    fn into_scopes(self) -> Vec<String> {
        self.into_iter().collect()
    }
}

impl IntoScopes for &BTreeSet<String> {
    fn into_scopes(self) -> Vec<String> {
        self.iter().cloned().collect()
    }
}

/// The security requirement a method declares: a list of alternatives,
/// each a scheme and the scopes all needed in it; any one alternative
/// suffices. No alternative means public.
///
/// Built from a [`Scheme`](super::Scheme) ([`Scheme::require`](super::Scheme::require)),
/// alternatives joined with [`MethodSecurity::or`]:
///
/// ```
/// use rpcguard::{MethodSecurity, Scheme};
/// const BEARER: Scheme = Scheme::bearer("Bearer");
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
/// let any_signed_in = BEARER.require(());
/// let admins = BEARER.require(["admin"]).or(KEY.require(["admin"]));
/// let any_bot = KEY.require([]);
/// // Any of several scope sets in one scheme.
/// let either = BEARER.require(["admin"]).or(BEARER.require(["scope1", "scope2"]));
/// assert!(MethodSecurity::public().is_public());
/// assert!(!any_signed_in.is_public());
/// assert_eq!(admins.alternatives().len(), 2);
/// assert_eq!(admins.schemes().collect::<Vec<_>>(), ["Bearer", "ApiKey"]);
/// assert!(any_bot.alternatives()[0].scopes.is_empty());
/// // The document's `x-security`: an object when each scheme appears once,
/// // else a list of one-scheme objects.
/// assert_eq!(admins.x_security(), serde_json::json!({"ApiKey": ["admin"], "Bearer": ["admin"]}));
/// assert_eq!(
///     either.x_security(),
///     serde_json::json!([{"Bearer": ["admin"]}, {"Bearer": ["scope1", "scope2"]}])
/// );
/// ```
///
/// Every scheme a method names must be one the server's
/// [`SecurityFunction::schemes`](super::SecurityFunction::schemes) lists:
/// the server refuses to start otherwise, naming the method and the
/// scheme, so a misspelt scheme cannot lock a method for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct MethodSecurity {
    /// In the order declared: the order alternatives are tried.
    alternatives: Vec<Requirement>,
}

/// One alternative of a [`MethodSecurity`]: a caller authenticated in
/// `scheme` holding every one of `scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// The scheme the caller must be authenticated in.
    pub scheme: String,
    /// The scopes all needed, sorted and without repeats (none: any caller
    /// authenticated in the scheme).
    pub scopes: Vec<String>,
}

impl Requirement {
    /// `scheme` (by name, e.g. from a policy file) with all of `scopes`
    /// (sorted, repeats dropped). In code, prefer
    /// [`Scheme::require`](super::Scheme::require).
    pub fn new(scheme: &str, scopes: impl IntoScopes) -> Self {
        let mut scopes = scopes.into_scopes();
        scopes.sort();
        scopes.dedup();
        Requirement {
            scheme: scheme.to_owned(),
            scopes,
        }
    }

    /// The scopes of this alternative `caller` lacks (none: it is met),
    /// `None` when `caller` is of another scheme.
    pub fn lacking(&self, caller: &Caller) -> Option<Vec<String>> {
        (caller.scheme == self.scheme).then(|| {
            self.scopes
                .iter()
                .filter(|scope| !caller.scopes.contains(*scope))
                .cloned()
                .collect()
        })
    }
}

impl MethodSecurity {
    /// No requirement: anyone may call. A method says so with
    /// [`Method::public`](crate::Method::public).
    pub fn public() -> Self {
        Self::default()
    }

    /// Any one of `alternatives` (in order); none: public.
    pub fn any_of(alternatives: impl IntoIterator<Item = Requirement>) -> Self {
        alternatives
            .into_iter()
            .fold(Self::public(), |security, alt| security.or_requirement(alt))
    }

    /// Adds `other`'s alternatives after this one's: meeting any of them
    /// also suffices. Alternatives are tried in the order they are added;
    /// a scheme may have several (any one of several scope sets); adding
    /// one that is already there changes nothing.
    pub fn or(self, other: MethodSecurity) -> Self {
        other
            .alternatives
            .into_iter()
            .fold(self, |security, alt| security.or_requirement(alt))
    }

    fn or_requirement(mut self, alternative: Requirement) -> Self {
        if !self.alternatives.contains(&alternative) {
            self.alternatives.push(alternative);
        }
        self
    }

    /// True when the method needs no credentials.
    pub fn is_public(&self) -> bool {
        self.alternatives.is_empty()
    }

    /// The alternatives, in the order they are tried.
    pub fn alternatives(&self) -> &[Requirement] {
        &self.alternatives
    }

    /// The schemes of the alternatives, in the order they are first tried,
    /// each once.
    pub fn schemes(&self) -> impl Iterator<Item = &str> + '_ {
        self.alternatives
            .iter()
            .enumerate()
            .filter(|(i, alt)| {
                !self.alternatives[..*i]
                    .iter()
                    .any(|earlier| earlier.scheme == alt.scheme)
            })
            .map(|(_, alt)| alt.scheme.as_str())
    }

    /// True when some alternative asks for at least one scope.
    pub fn needs_scopes(&self) -> bool {
        self.alternatives.iter().any(|alt| !alt.scopes.is_empty())
    }

    /// The document's `x-security`: `{scheme: [scopes], …}` (the schemes
    /// are alternatives) when every scheme has one alternative; otherwise a
    /// list of one-scheme objects, `[{scheme: [scopes]}, …]`, in the order
    /// they are tried (OpenAPI's `security` form).
    pub fn x_security(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        let one = |alt: &Requirement| {
            let scopes = alt.scopes.iter().cloned().map(Value::String).collect();
            (alt.scheme.clone(), Value::Array(scopes))
        };
        if self.schemes().count() == self.alternatives.len() {
            // Sorted by scheme, as the object form has always been written.
            let mut sorted: Vec<&Requirement> = self.alternatives.iter().collect();
            sorted.sort_by(|a, b| a.scheme.cmp(&b.scheme));
            Value::Object(sorted.into_iter().map(one).collect())
        } else {
            Value::Array(
                self.alternatives
                    .iter()
                    .map(|alt| Value::Object(Map::from_iter([one(alt)])))
                    .collect(),
            )
        }
    }

    /// True when `caller` meets some alternative.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.alternatives
            .iter()
            .any(|alt| alt.lacking(caller).is_some_and(|l| l.is_empty()))
    }

    /// The one caller this requirement lets in, from the identities a
    /// security function found.
    ///
    /// For a secured method: the identity of the first alternative (in
    /// declared order) whose scheme authenticated the caller with all its
    /// scopes. Otherwise, in this order: `-32099` with the scopes missing
    /// in each required scheme the caller is authenticated in (when a
    /// scheme has several alternatives: those of the alternative that lacks
    /// the fewest, the first of equals); `-32001` with the reason a
    /// required scheme's credential was refused; `-32001 wrong_scheme` when
    /// the caller is authenticated only in schemes the method does not
    /// accept; `-32001 missing_token`.
    ///
    /// For a public method: `Ok` with the first identity found, if any
    /// (what a handler declared with
    /// [`Method::optional_caller`](crate::Method::optional_caller) gets).
    pub fn check<'i>(&self, identities: &'i Identities) -> Result<Option<&'i Caller>, RpcError> {
        if self.is_public() {
            return Ok(identities.callers().next());
        }
        let mut missing = MissingScopes::new();
        let mut refused = None;
        for alt in &self.alternatives {
            match identities.get(&alt.scheme) {
                Some(Ok(caller)) => {
                    let lacking = alt.lacking(caller).unwrap_or_default();
                    if lacking.is_empty() {
                        return Ok(Some(caller));
                    }
                    match missing.get(&alt.scheme) {
                        Some(fewer) if fewer.len() <= lacking.len() => {}
                        _ => {
                            missing.insert(alt.scheme.clone(), lacking);
                        }
                    }
                }
                Some(Err(reason)) => {
                    refused.get_or_insert(reason);
                }
                None => {}
            }
        }
        let failure = if !missing.is_empty() {
            return Err(RpcError::PermissionDenied(missing));
        } else if let Some(reason) = refused {
            reason
        } else if identities.callers().next().is_some() {
            AuthFailure::WrongScheme
        } else {
            AuthFailure::MissingToken
        };
        Err(RpcError::Unauthenticated(failure))
    }
}
