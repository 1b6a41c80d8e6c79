//! Assembling a server: [`serve`], a builder in axum's shape, from a
//! listener and an [`Api`] to a running server.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::{RunningServer, ServerConfig, ServerError};
use crate::api::Api;
use crate::security::{Caller, Credentials, Identities, Scheme, SecurityFunction, SharedSecurity};
use crate::RpcError;

/// Serves `api` on `listener`: set the state, the security function and
/// the settings, then `.await` it (it runs until the shutdown signal, if
/// one was given, then drains) or [`spawn`](Serve::spawn) it.
///
/// ```no_run
/// use rpcguard::{Api, ApiKeySecurity, Method, NoParams, RpcError, Scheme};
///
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut api: Api<()> = Api::new();
/// api.secured_by(KEY.require(()));
/// api.method(Method::new("whoami"), |_: NoParams, ctx| async move {
///     Ok::<_, RpcError>(ctx.caller()?.subject.clone())
/// })?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// rpcguard::serve(listener, api)
///     .security(ApiKeySecurity::new(&KEY).key("k-1", "bot", ()))
///     .with_graceful_shutdown(rpcguard::server::shutdown_signal())
///     .await?;
/// # Ok(()) }
/// ```
///
/// Without a security function the server serves no scheme, so only
/// public methods can start; with state `()` no `.state(..)` is needed.
pub fn serve<S: Send + Sync + 'static>(listener: TcpListener, api: Api<S>) -> Serve<S, NoState> {
    Serve {
        listener,
        api,
        state: NoState,
        security: None,
        config: ServerConfig::default(),
        shutdown: None,
    }
}

/// A server being assembled (see [`serve`]).
#[must_use = "a server does nothing until it is awaited or spawned"]
pub struct Serve<S, St> {
    listener: TcpListener,
    api: Api<S>,
    state: St,
    security: Option<SharedSecurity>,
    config: ServerConfig,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S, St> std::fmt::Debug for Serve<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("api", &self.api)
            .field("security", &self.security.is_some())
            .finish_non_exhaustive()
    }
}

/// No state given yet: only an `Api<()>` can be served without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoState;

/// Where the server's state comes from: given with
/// [`Serve::state`], or nothing for an `Api<()>`.
pub trait StateSource<S>: sealed::Sealed {
    /// The state.
    fn into_state(self) -> Arc<S>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::NoState {}
    impl<S> Sealed for std::sync::Arc<S> {}
}

impl StateSource<()> for NoState {
    fn into_state(self) -> Arc<()> {
        Arc::new(())
    }
}

impl<S> StateSource<S> for Arc<S> {
    fn into_state(self) -> Arc<S> {
        self
    }
}

impl<S: Send + Sync + 'static, St> Serve<S, St> {
    /// The state every handler gets ([`CallContext::state`](crate::CallContext)).
    pub fn state(self, state: impl Into<Arc<S>>) -> Serve<S, Arc<S>> {
        Serve {
            listener: self.listener,
            api: self.api,
            state: state.into(),
            security: self.security,
            config: self.config,
            shutdown: self.shutdown,
        }
    }

    /// The security function: a [`SecurityFunction`] (a [`crate::SecurityFn`]
    /// from a closure, [`crate::ApiKeySecurity`], …).
    pub fn security(self, security: impl SecurityFunction) -> Self {
        self.shared_security(Arc::new(security))
    }

    /// The security function, already shared (e.g. kept to rotate keys).
    pub fn shared_security(mut self, security: SharedSecurity) -> Self {
        self.security = Some(security);
        self
    }

    /// The settings (limits, timeouts, the document's info, …).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Stops gracefully when `signal` resolves (e.g.
    /// [`shutdown_signal`](super::shutdown_signal)): `/ready` turns 503,
    /// the drain delay passes, the listener closes, and calls still
    /// running get until [`ServerConfig::shutdown_grace`]. Without it,
    /// the awaited server runs for ever.
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}

impl<S: Send + Sync + 'static, St: StateSource<S>> Serve<S, St> {
    /// Starts serving in the background. The server runs until the
    /// returned handle is stopped ([`RunningServer::stop`]) or dropped; a
    /// shutdown signal given here is not watched (use
    /// [`RunningServer::run_until`]).
    ///
    /// Refused, naming what is wrong: a method without security and no
    /// default ([`crate::ApiError::NoSecurity`]), a method requiring a
    /// scheme the security function does not serve
    /// ([`ServerError::UnknownScheme`]), a scheme with an invalid header,
    /// a bad policy, CORS origin or resource path.
    pub fn spawn(self) -> Result<RunningServer, ServerError> {
        let security = self
            .security
            .unwrap_or_else(|| Arc::new(NoSecurity) as SharedSecurity);
        super::spawn(
            self.listener,
            self.api,
            self.state.into_state(),
            security,
            self.config,
        )
    }
}

impl<S: Send + Sync + 'static, St: StateSource<S> + Send + 'static> IntoFuture for Serve<S, St> {
    type Output = Result<(), ServerError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(mut self) -> Self::IntoFuture {
        let shutdown = self.shutdown.take();
        Box::pin(async move {
            let server = self.spawn()?;
            match shutdown {
                Some(signal) => server.run_until(signal).await,
                None => std::future::pending::<()>().await,
            }
            Ok(())
        })
    }
}

/// The security function of a server given none: it serves no scheme.
struct NoSecurity;

#[async_trait::async_trait]
impl SecurityFunction for NoSecurity {
    async fn authenticate(&self, _: &Credentials) -> Result<Option<Arc<Caller>>, RpcError> {
        Ok(None)
    }

    fn schemes(&self) -> Vec<Scheme> {
        Vec::new()
    }

    async fn identities(&self, _: &Credentials) -> Result<Identities, RpcError> {
        Ok(Identities::new())
    }
}
