//! The pluggable security function: the [`SecurityFunction`] trait, and
//! [`SecurityFn`], one made from a closure.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Caller, Credentials, Identities, Scheme};
use crate::error::{AuthFailure, RpcError};

/// The pluggable security function: credentials in, caller out.
///
/// It runs only for secured methods (and for public methods that ask for an
/// optional caller). For one scheme and a check that fits in a closure,
/// [`SecurityFn`] is shorter; implement the trait for the rest:
///
/// - [`authenticate`](SecurityFunction::authenticate): `Ok(None)` when the
///   request carries no credential this function understands,
///   `Ok(Some(caller))` with the scheme and scopes it proved, or
///   `Err(RpcError::Unauthenticated(..))` for a credential it refuses
///   (any other error becomes `-32603`). The caller is shared (`Arc`): a
///   function that keeps its callers built (one per account, say) hands
///   them out without a copy per call;
/// - [`schemes`](SecurityFunction::schemes): the schemes it authenticates,
///   for the OpenRPC document, for the server's check at start that every
///   scheme a method requires is served, and for the headers the server
///   keeps as [`Credentials`].
///
/// A function that proves several identities at once (one per scheme, like
/// [`AnySecurity`](super::AnySecurity)) overrides
/// [`identities`](SecurityFunction::identities) as well; the middleware
/// calls only that one, and picks one identity per call from it
/// ([`MethodSecurity::check`](super::MethodSecurity::check)).
///
/// The trait is an [`async_trait`](crate::async_trait): rustdoc shows its
/// methods as returning `Pin<Box<dyn Future ...>>`, but you write `async
/// fn` under `#[rpcguard::async_trait]` (re-exported, so no dependency of
/// your own is needed).
///
/// ```
/// use std::sync::Arc;
/// use rpcguard::{AuthFailure, Caller, Credentials, RpcError, Scheme, SecurityFunction};
///
/// const PARTNER: Scheme = Scheme::api_key("Partner", "x-partner-key");
///
/// struct PartnerKey {
///     secret: String,
/// }
///
/// #[rpcguard::async_trait]
/// impl SecurityFunction for PartnerKey {
///     async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Arc<Caller>>, RpcError> {
///         let Some(key) = credentials.get(&PARTNER)? else {
///             return Ok(None); // nothing of ours: another scheme may apply
///         };
///         // (compare digests in constant time in real code, see ApiKeySecurity)
///         if key != self.secret {
///             return Err(AuthFailure::InvalidToken.into());
///         }
///         Ok(Some(Arc::new(PARTNER.caller("partner", ["orders:read"]))))
///     }
///
///     fn schemes(&self) -> Vec<Scheme> {
///         vec![PARTNER.describe("The key our partners were given.")]
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let partner = PartnerKey { secret: "s3cret".to_owned() };
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-partner-key", http::HeaderValue::from_static("s3cret"));
/// let caller = partner
///     .authenticate(&Credentials::new(headers, None, None))
///     .await
///     .expect("accepted")
///     .expect("a caller");
/// assert_eq!((caller.subject.as_str(), caller.scheme.as_str()), ("partner", "Partner"));
/// # }
/// ```
#[async_trait]
pub trait SecurityFunction: Send + Sync + 'static {
    /// Resolves the caller from what it presented, in one of this
    /// function's schemes.
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError>;

    /// The schemes this function authenticates.
    fn schemes(&self) -> Vec<Scheme>;

    /// Every identity the credentials prove, one per scheme. The middleware
    /// calls this, never [`authenticate`](SecurityFunction::authenticate)
    /// directly.
    ///
    /// The default runs `authenticate`: its caller is the identity in the
    /// caller's scheme, and an `Unauthenticated` refusal counts against
    /// every scheme of [`schemes`](SecurityFunction::schemes).
    async fn identities(&self, credentials: &Credentials) -> Result<Identities, RpcError> {
        match self.authenticate(credentials).await {
            Ok(caller) => {
                Ok(caller.map_or_else(Identities::new, |c| Identities::new().found_shared(c)))
            }
            Err(RpcError::Unauthenticated(reason)) => {
                let schemes = self.schemes();
                if schemes.is_empty() {
                    return Err(RpcError::Unauthenticated(reason));
                }
                Ok(schemes.iter().fold(Identities::new(), |found, scheme| {
                    found.refused(scheme.name(), reason)
                }))
            }
            Err(other) => Err(other),
        }
    }
}

/// A shared security function.
pub type SharedSecurity = Arc<dyn SecurityFunction>;

/// A security function made from a closure, for one scheme: the closure
/// gets the credential presented for the scheme ([`Credentials::get`]) and
/// everything presented, and returns the caller, or why the credential is
/// refused. It runs only when the scheme's credential was presented.
///
/// ```
/// use std::sync::Arc;
/// use rpcguard::{AuthFailure, Scheme, SecurityFn, SharedSecurity};
///
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
///
/// let security: SharedSecurity = Arc::new(SecurityFn::new(&KEY, |key, _presented| async move {
///     match key.as_str() {
///         "k-writer" => Ok(KEY.caller("writer", ["notes:write", "notes:read"])),
///         "k-reader" => Ok(KEY.caller("reader", ["notes:read"])),
///         _ => Err(AuthFailure::InvalidToken.into()),
///     }
/// }));
/// assert_eq!(security.schemes()[0].name(), "ApiKey");
/// ```
///
/// A caller of another scheme than the function's is a mistake in the
/// closure: it is logged (naming both) and the call answered `-32603`.
pub struct SecurityFn<F> {
    scheme: Scheme,
    check: F,
}

impl<F> std::fmt::Debug for SecurityFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityFn")
            .field("scheme", &self.scheme.name())
            .finish_non_exhaustive()
    }
}

impl<F, Fut> SecurityFn<F>
where
    F: Fn(String, Credentials) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Caller, RpcError>> + Send + 'static,
{
    /// Serves `scheme` with `check`.
    pub fn new(scheme: &Scheme, check: F) -> Self {
        SecurityFn {
            scheme: scheme.clone(),
            check,
        }
    }
}

#[async_trait]
impl<F, Fut> SecurityFunction for SecurityFn<F>
where
    F: Fn(String, Credentials) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Caller, RpcError>> + Send + 'static,
{
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        let Some(credential) = credentials.get(&self.scheme)? else {
            return Ok(None);
        };
        let caller = (self.check)(credential.to_owned(), credentials.clone()).await?;
        if caller.scheme != self.scheme.name() {
            return Err(RpcError::internal(format!(
                "the security function of scheme `{}` returned a caller of scheme `{}`: build it with `Scheme::caller`",
                self.scheme.name(),
                caller.scheme
            )));
        }
        Ok(Some(Arc::new(caller)))
    }

    fn schemes(&self) -> Vec<Scheme> {
        vec![self.scheme.clone()]
    }
}

impl From<AuthFailure> for RpcError {
    fn from(reason: AuthFailure) -> Self {
        RpcError::Unauthenticated(reason)
    }
}
