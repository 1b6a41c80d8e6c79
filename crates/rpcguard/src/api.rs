//! The method registry: the one place where a method is declared.
//!
//! A declaration ([`Method`]) carries the name, docs, security requirement,
//! errors and examples; [`Api::method`] adds the typed params and result and
//! the async handler. From that one call come the jsonrpsee registration,
//! the entry the security middleware enforces, and the OpenRPC entry. There
//! is no second list of method names anywhere.
//!
//! Secure by default: a method gets its [`Api`]'s default security
//! ([`Api::secured_by`]) unless it declares its own
//! ([`Method::security`]) or says it is public ([`Method::public`]). A
//! method with none of the three makes the server refuse to start, naming
//! it ([`ApiError::NoSecurity`]): one forgotten line cannot publish a
//! method. APIs compose with [`Api::merge`] and [`Api::nest`].
//!
//! Params are accepted by name (an object) and by position (an array in the
//! declared field order, which is the order of the params struct's fields).
//! Unknown, missing or ill-typed params give `-32602` saying what is wrong,
//! never echoing the value.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::types::Request;
use jsonrpsee::Extensions;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{self, AuthFailure, ErrorCode, RpcError};
use crate::security::{
    Caller, Credentials, MethodSecurity, RemoteAddr, Scheme, SessionCredentials,
};
use crate::server::{dispatch, Draining};

/// The name of the OpenRPC service-discovery method every server has.
pub(crate) const DISCOVER: &str = "rpc.discover";

/// Builds a type's schema in the document's generator.
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Params of a method that takes none: accepts no params, `[]` or `{}`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// An example pairing for the OpenRPC document: params by name and the
/// result they give.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Short name of the example.
    pub name: String,
    /// Params by name.
    pub params: Map<String, Value>,
    /// The result.
    pub result: Value,
}

impl Example {
    /// An example named `name`; `params` must be a JSON object.
    pub fn new(name: &str, params: Value, result: Value) -> Self {
        let params = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Example {
            name: name.to_owned(),
            params,
            result,
        }
    }
}

/// A method's declaration, without its types and handler.
///
/// ```
/// use rpcguard::{ErrorCode, Method, BEARER};
/// let m = Method::new("get_caller")
///     .summary("Who am I")
///     .security(BEARER.require(()));
/// assert_eq!(m.name(), "get_caller");
///
/// // Names may be built at run time.
/// let tenant = "acme";
/// let m = Method::new(format!("{tenant}.report"))
///     .public()
///     .error(ErrorCode::new(4001), "Quota exceeded");
/// assert_eq!(m.name(), "acme.report");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a method declaration does nothing until given to `Api::method`"]
pub struct Method {
    name: Cow<'static, str>,
    summary: String,
    description: String,
    /// `None`: the API's default.
    security: Option<MethodSecurity>,
    optional_caller: bool,
    errors: Vec<DeclaredError>,
    examples: Vec<Example>,
}

/// An error as [`Method::errors`] or [`Method::error`] declared it; checked
/// by [`Api::method`].
#[derive(Debug, Clone)]
struct DeclaredError {
    code: i32,
    /// `None`: one of the contract's codes, described by its own message.
    message: Option<String>,
    /// The schema of its `data`, if it has any.
    data: Option<SchemaFn>,
}

impl Method {
    /// A method named `name` with no docs yet, secured by its API's
    /// default ([`Api::secured_by`]) unless it says otherwise
    /// ([`Method::security`], [`Method::public`]).
    ///
    /// The name may be a `&'static str` or built at run time (`String`).
    /// jsonrpsee keeps method names for the life of the process, so a name
    /// built at run time is leaked once, when the server registers it.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Method {
            name: name.into(),
            summary: String::new(),
            description: String::new(),
            security: None,
            optional_caller: false,
            errors: Vec::new(),
            examples: Vec::new(),
        }
    }

    /// The method's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One-line summary.
    pub fn summary(mut self, summary: &str) -> Self {
        self.summary = summary.to_owned();
        self
    }

    /// Longer description (CommonMark).
    pub fn description(mut self, description: &str) -> Self {
        self.description = description.to_owned();
        self
    }

    /// The security requirement, instead of the API's default
    /// ([`Scheme::require`](crate::Scheme::require)).
    pub fn security(mut self, security: MethodSecurity) -> Self {
        self.security = Some(security);
        self
    }

    /// Anyone may call it, whatever the API's default. The document shows
    /// it without `x-security`.
    pub fn public(mut self) -> Self {
        self.security = Some(MethodSecurity::public());
        self
    }

    /// For a public method: resolve the caller when credentials are sent,
    /// and give it to the handler (`None` when absent or not valid).
    pub fn optional_caller(mut self) -> Self {
        self.optional_caller = true;
        self
    }

    /// Codes of the framework's contract ([`crate::error`]'s constants)
    /// this method can return beyond the ones its security and params
    /// imply, e.g. [`error::TOO_MANY_REQUESTS`] for a method that
    /// throttles. The document gives each the contract's message and
    /// `data` schema. A code the contract does not define is refused by
    /// [`Api::method`]: declare your own errors with [`Method::error`].
    pub fn errors(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        for code in codes {
            self.errors.push(DeclaredError {
                code,
                message: None,
                data: None,
            });
        }
        self
    }

    /// An application error this method can return
    /// ([`RpcError::custom`]`(code, message, ())`), listed in the document
    /// with its message. `message` must not be empty, or [`Api::method`]
    /// refuses the declaration. Declaring a code again replaces it.
    ///
    /// ```
    /// use rpcguard::{Api, ErrorCode, Method, NoParams, RpcError};
    /// const QUOTA_EXCEEDED: ErrorCode = ErrorCode::new(4001);
    /// let mut api: Api<()> = Api::new();
    /// api.method(
    ///     Method::new("export").public().error(QUOTA_EXCEEDED, "Quota exceeded"),
    ///     |_: NoParams, _ctx| async {
    ///         Err::<bool, _>(RpcError::custom(QUOTA_EXCEEDED, "Quota exceeded", ()))
    ///     },
    /// )
    /// .unwrap();
    /// ```
    pub fn error(self, code: ErrorCode, message: impl Into<String>) -> Self {
        self.declare_error(code, message.into(), None)
    }

    /// An application error this method can return with `data` of type
    /// `D` ([`RpcError::custom`]`(code, message, data)`): the document
    /// lists it with `D`'s schema (schemars), as it does the contract's
    /// own errors, so generated clients get a typed error.
    ///
    /// ```
    /// use rpcguard::{Api, ErrorCode, Method, NoParams, RpcError};
    /// use schemars::JsonSchema;
    /// use serde::Serialize;
    ///
    /// const QUOTA_EXCEEDED: ErrorCode = ErrorCode::new(4001);
    ///
    /// /// The `data` of a quota error.
    /// #[derive(Serialize, JsonSchema)]
    /// struct Quota {
    ///     /// Exports allowed per day.
    ///     limit: u32,
    /// }
    ///
    /// let mut api: Api<()> = Api::new();
    /// api.method(
    ///     Method::new("export")
    ///         .public()
    ///         .error_with_data::<Quota>(QUOTA_EXCEEDED, "Quota exceeded"),
    ///     |_: NoParams, _ctx| async {
    ///         Err::<bool, _>(RpcError::custom(QUOTA_EXCEEDED, "Quota exceeded", Quota { limit: 10 }))
    ///     },
    /// )
    /// .unwrap();
    /// ```
    pub fn error_with_data<D: JsonSchema>(
        self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        self.declare_error(code, message.into(), Some(|g| g.subschema_for::<D>()))
    }

    fn declare_error(mut self, code: ErrorCode, message: String, data: Option<SchemaFn>) -> Self {
        self.errors.retain(|e| e.code != code.get());
        self.errors.push(DeclaredError {
            code: code.get(),
            message: Some(message),
            data,
        });
        self
    }

    /// Adds an example pairing.
    pub fn example(mut self, example: Example) -> Self {
        self.examples.push(example);
        self
    }
}

/// A declared method as the middleware and the OpenRPC generator read it.
#[derive(Debug, Clone)]
pub(crate) struct MethodDecl {
    /// Name.
    pub name: Cow<'static, str>,
    /// One-line summary.
    pub summary: String,
    /// Description.
    pub description: String,
    /// Security requirement (public until resolved, see `security_from`).
    pub security: MethodSecurity,
    /// Where `security` came from.
    pub security_from: SecurityFrom,
    /// Whether a public method wants its caller resolved.
    pub optional_caller: bool,
    /// Extra errors, each with its message and data schema (checked by
    /// [`Api::method`]).
    pub errors: Vec<DocumentedError>,
    /// Examples.
    pub examples: Vec<Example>,
    /// Param names in positional order.
    pub param_names: Vec<String>,
    /// The params object schema (properties reference shared components).
    pub params_schema: SchemaFn,
    /// The result schema (a `$ref` for named types).
    pub result_schema: SchemaFn,
    /// The result type's schema name (for the result's content descriptor).
    pub result_name: String,
}

/// Where a declaration's security came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecurityFrom {
    /// The method's own (or `public`).
    Declared,
    /// Its API's default.
    Default,
    /// None yet: the API has no default (refused at start).
    Missing,
}

/// An error a method's document entry lists.
#[derive(Debug, Clone)]
pub(crate) struct DocumentedError {
    /// The code.
    pub code: i32,
    /// Its message.
    pub message: String,
    /// The schema of its `data`, if it has any (the contract's own codes
    /// get theirs from [`crate::error`]).
    pub data: Option<SchemaFn>,
}

/// Errors of declaring methods.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Two declarations of one name.
    #[error("method `{0}` is declared twice")]
    Duplicate(String),
    /// The name is reserved (`rpc.` prefix, JSON-RPC 2.0 §4.1).
    #[error("method `{0}` uses the reserved `rpc.` prefix")]
    Reserved(String),
    /// A declared error the document could not describe truthfully: a
    /// reserved code given as an application error, a code of no one given
    /// to [`Method::errors`], or an empty message.
    #[error("method `{method}` declares error {code}: {why}")]
    DeclaredError {
        /// The method.
        method: String,
        /// The code declared.
        code: i32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A method declares no security and its API has no default: say
    /// [`Method::public`], give it [`Method::security`], or give the API
    /// [`Api::secured_by`].
    #[error(
        "method `{0}` declares no security and its API has no default: add `.public()` or `.security(..)` to the method, or `Api::secured_by(..)` to the API"
    )]
    NoSecurity(String),
    /// A prefix given to [`Api::nest`] is empty or starts with `rpc.`.
    #[error("the prefix {0:?} is empty or reserved (`rpc.`)")]
    Prefix(String),
    /// jsonrpsee refused the registration. No longer produced: handlers
    /// are kept in rpcguard's own table (a name declared twice is
    /// [`ApiError::Duplicate`]); kept so that code matching on it builds.
    #[error("registering a method failed: {0}")]
    Register(#[from] jsonrpsee::core::RegisterMethodError),
}

/// What a handler receives besides its params: the server state and the
/// resolved caller.
#[derive(Debug)]
pub struct CallContext<S> {
    /// The state given to the server (store, keys, … of the application).
    pub state: Arc<S>,
    caller: Option<Arc<Caller>>,
    extensions: Extensions,
}

impl<S> CallContext<S> {
    /// The authenticated caller: the one identity that met the method's
    /// requirement (see [`MethodSecurity::check`]). Always present for
    /// secured methods (the middleware ran before the handler); `-32001`
    /// otherwise.
    pub fn caller(&self) -> Result<&Caller, RpcError> {
        self.caller
            .as_deref()
            .ok_or(RpcError::Unauthenticated(AuthFailure::MissingToken))
    }

    /// The caller if one was resolved (public methods declared with
    /// [`Method::optional_caller`]).
    pub fn optional_caller(&self) -> Option<&Caller> {
        self.caller.as_deref()
    }

    /// The client's address, when known: the TCP peer's, or — when the
    /// peer is a trusted proxy
    /// ([`ServerConfig::trusted_proxies`](crate::ServerConfig::trusted_proxies))
    /// — the address it forwarded for (its port is the one the proxy
    /// reported, else 0). The per-address budgets and limits count this
    /// address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.extensions.get::<RemoteAddr>().map(|r| r.client)
    }

    /// The TCP peer's address, when known: the proxy's, behind one (else
    /// the same as [`remote_addr`](Self::remote_addr)).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.extensions.get::<RemoteAddr>().map(|r| r.conn.peer)
    }

    /// Whether the server is draining (shutting down): a long-running
    /// handler may end early once it turns true ([`Draining`]); outside a
    /// server it never does.
    pub fn draining(&self) -> Draining {
        self.extensions
            .get::<RemoteAddr>()
            .map_or_else(Draining::never, |r| r.conn.drain.signal())
    }

    /// The id of the request this call came in ([`RequestId`](crate::security::RequestId)),
    /// for the handler's own log lines.
    pub fn request_id(&self) -> Option<&str> {
        self.extensions
            .get::<RemoteAddr>()
            .map(|r| r.request_id.as_str())
    }

    /// The WebSocket session's credential slot, to bind new credentials for
    /// the session's later calls ([`SessionCredentials`]); `None` on HTTP,
    /// where there is no session.
    pub fn session(&self) -> Option<&SessionCredentials> {
        self.extensions.get::<SessionCredentials>()
    }

    /// The credentials this call presented, as the security function was
    /// given them: those its WebSocket session bound
    /// ([`SessionCredentials`]), else the request's (or the upgrade's).
    pub fn credentials(&self) -> Option<Credentials> {
        crate::security::presented(&self.extensions).map(std::borrow::Cow::into_owned)
    }

    /// The request's extensions (for embedders' own layers).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }
}

/// Makes one handler over the state, for the name it is given (its
/// declaration's, prefixed when nested).
type Registration<S> = Box<dyn FnOnce(Arc<S>, &'static str) -> dispatch::Handler + Send>;

/// The set of methods a server offers, built with [`Api::method`] and
/// composed with [`Api::merge`] and [`Api::nest`].
///
/// `S` is the application state handed to every handler.
///
/// ```
/// use rpcguard::{Api, Method, NoParams, RpcError, Scheme};
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
///
/// let mut notes: Api<()> = Api::new();
/// notes.secured_by(KEY.require(["notes:read"]));
/// notes.method(Method::new("list"), |_: NoParams, _ctx| async {
///     Ok::<_, RpcError>(Vec::<String>::new())
/// })?;
///
/// let mut api: Api<()> = Api::new();
/// api.method(Method::new("ping").public(), |_: NoParams, _ctx| async {
///     Ok::<_, RpcError>("pong")
/// })?;
/// api.nest("notes.", notes)?;
/// assert_eq!(api.names().collect::<Vec<_>>(), ["rpc.discover", "ping", "notes.list"]);
/// # Ok::<(), rpcguard::ApiError>(())
/// ```
pub struct Api<S> {
    decls: Vec<Arc<MethodDecl>>,
    /// One per declaration (`None` for `rpc.discover`, which the server
    /// answers itself).
    registrations: Vec<Option<Registration<S>>>,
    default_security: Option<MethodSecurity>,
}

impl<S> std::fmt::Debug for Api<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.names().collect();
        f.debug_struct("Api").field("methods", &names).finish()
    }
}

impl<S> Api<S> {
    /// The names of the declared methods, `rpc.discover` first.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.decls.iter().map(|d| d.name.as_ref())
    }
}

impl<S: Send + Sync + 'static> Default for Api<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Send + Sync + 'static> Api<S> {
    /// An API with only `rpc.discover` declared (public; its handler is
    /// added by the server, which builds the document), and no default
    /// security: every method says its own, or [`Api::secured_by`] gives
    /// one.
    pub fn new() -> Self {
        let discover = Method::new(DISCOVER)
            .public()
            .summary("Returns the OpenRPC document of this server")
            .description(
                "The OpenRPC service-discovery method: the whole document describing every \
                 method, its params, result, errors and security requirement.",
            )
            .example(Example::new(
                "the document",
                Value::Object(Map::new()),
                serde_json::json!({
                    "openrpc": crate::schema::OPENRPC_VERSION,
                    "info": { "title": "rpcguard", "version": "0.1.0" },
                    "methods": []
                }),
            ));
        let decls = declaration::<NoParams, crate::schema::OpenRpcDocument>(discover)
            .map(|decl| vec![Arc::new(decl)])
            .unwrap_or_default();
        let registrations = decls.iter().map(|_| None).collect();
        Api {
            decls,
            registrations,
            default_security: None,
        }
    }

    /// The security every method of this API gets unless it declares its
    /// own or says [`Method::public`]: methods declared before and after
    /// this call alike (a second call replaces the default).
    pub fn secured_by(&mut self, security: MethodSecurity) -> &mut Self {
        for decl in &mut self.decls {
            if decl.security_from != SecurityFrom::Declared {
                let decl = Arc::make_mut(decl);
                decl.security = security.clone();
                decl.security_from = SecurityFrom::Default;
            }
        }
        self.default_security = Some(security);
        self
    }

    /// Declares a method with typed params `P`, result `R` and an async
    /// handler.
    ///
    /// The handler returns `Result<R, RpcError>`; `?` works on
    /// [`RpcError`] and on any [`std::error::Error`] (an internal error:
    /// logged with the method and the request id, answered `-32603`).
    ///
    /// ```
    /// use rpcguard::{Api, Method, NoParams, RpcError};
    /// let mut api: Api<()> = Api::new();
    /// api.method(
    ///     Method::new("ping").summary("Liveness").public(),
    ///     |_: NoParams, _ctx| async { Ok::<_, RpcError>("pong".to_owned()) },
    /// )
    /// .unwrap();
    /// assert_eq!(api.names().collect::<Vec<_>>(), ["rpc.discover", "ping"]);
    /// ```
    pub fn method<P, R, F, Fut>(
        &mut self,
        method: Method,
        handler: F,
    ) -> Result<&mut Self, ApiError>
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + Clone + Send + 'static,
        F: Fn(P, CallContext<S>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        if method.name.starts_with("rpc.") {
            return Err(ApiError::Reserved(method.name.into_owned()));
        }
        let mut decl = declaration::<P, R>(method)?;
        if decl.security_from == SecurityFrom::Missing {
            if let Some(default) = &self.default_security {
                decl.security = default.clone();
                decl.security_from = SecurityFrom::Default;
            }
        }
        let names = decl.param_names.clone();
        let register: Registration<S> = Box::new(move |state: Arc<S>, name: &'static str| {
            dispatch::handler(move |req, max| {
                let Request {
                    id,
                    params,
                    mut extensions,
                    ..
                } = req;
                // Kept for the log of an internal error (a made id is held
                // inline: no allocation).
                let request_id = extensions.get::<RemoteAddr>().map(|r| r.request_id.clone());
                let log = move |err: &RpcError| {
                    error::log_internal(err, name, request_id.as_ref().map(|id| id.as_str()))
                };
                // Read here, from the message itself (jsonrpsee copies the
                // params for an async method).
                let params = match parse_params::<P>(params.as_deref().map(|p| p.get()), &names) {
                    Ok(params) => params,
                    Err(err) => {
                        log(&err);
                        return Err(dispatch::respond::<()>(id, Err(err), max));
                    }
                };
                // The guard put it there; the handler gets it through the
                // context.
                let caller = extensions.remove::<Arc<Caller>>();
                let ctx = CallContext {
                    state: state.clone(),
                    caller,
                    extensions,
                };
                let running = handler(params, ctx);
                Ok(Box::pin(async move {
                    dispatch::respond(id, running.await.inspect_err(log), max)
                }))
            })
        });
        self.push(Arc::new(decl), register)?;
        Ok(self)
    }

    fn push(&mut self, decl: Arc<MethodDecl>, register: Registration<S>) -> Result<(), ApiError> {
        if self.decls.iter().any(|d| d.name == decl.name) {
            return Err(ApiError::Duplicate(decl.name.clone().into_owned()));
        }
        self.decls.push(decl);
        self.registrations.push(Some(register));
        Ok(())
    }

    /// Adds every method of `other` (its `rpc.discover` aside), as
    /// jsonrpsee's `RpcModule::merge` and axum's `Router::merge` do. A
    /// method of `other` that relies on a default keeps `other`'s, if it
    /// has one, else gets this API's. A name declared in both is refused.
    pub fn merge(&mut self, other: Api<S>) -> Result<&mut Self, ApiError> {
        self.adopt(None, other)
    }

    /// Adds every method of `other` under `prefix` (`nest("notes.",
    /// notes)` serves `notes`' `add` as `notes.add`), its defaults kept as
    /// with [`Api::merge`]. The prefix must not be empty or start with
    /// `rpc.`.
    pub fn nest(&mut self, prefix: &str, other: Api<S>) -> Result<&mut Self, ApiError> {
        if prefix.is_empty() || prefix.starts_with("rpc.") {
            return Err(ApiError::Prefix(prefix.to_owned()));
        }
        self.adopt(Some(prefix), other)
    }

    fn adopt(&mut self, prefix: Option<&str>, other: Api<S>) -> Result<&mut Self, ApiError> {
        for (mut decl, register) in other.decls.into_iter().zip(other.registrations) {
            let Some(register) = register else {
                continue; // its rpc.discover: this API has its own
            };
            let d = Arc::make_mut(&mut decl);
            if let Some(prefix) = prefix {
                d.name = Cow::Owned(format!("{prefix}{}", d.name));
            }
            match (d.security_from, &self.default_security) {
                // Settled by `other`: its own default stays its own.
                (SecurityFrom::Default, _) => d.security_from = SecurityFrom::Declared,
                (SecurityFrom::Missing, Some(default)) => {
                    d.security = default.clone();
                    d.security_from = SecurityFrom::Default;
                }
                _ => {}
            }
            self.push(decl, register)?;
        }
        Ok(self)
    }

    /// Every declaration, `rpc.discover` first.
    pub(crate) fn declarations(&self) -> &[Arc<MethodDecl>] {
        &self.decls
    }

    /// Refuses a method with no security of its own and no default.
    pub(crate) fn check_security(&self) -> Result<(), ApiError> {
        match self
            .decls
            .iter()
            .find(|d| d.security_from == SecurityFrom::Missing)
        {
            Some(decl) => Err(ApiError::NoSecurity(decl.name.clone().into_owned())),
            None => Ok(()),
        }
    }

    /// The first method (in declaration order) that names a scheme not in
    /// `known`, with that scheme.
    pub(crate) fn unknown_scheme<'a>(&'a self, known: &[Scheme]) -> Option<(&'a str, &'a str)> {
        self.decls.iter().find_map(|decl| {
            decl.security
                .schemes()
                .find(|scheme| !known.iter().any(|k| k.name() == *scheme))
                .map(|scheme| (decl.name.as_ref(), scheme))
        })
    }

    /// The schemes of `served` that no method names (none when a public
    /// method reads its caller: any scheme may give it one).
    pub(crate) fn unrequired_schemes<'a>(
        &self,
        served: &'a [Scheme],
    ) -> impl Iterator<Item = &'a str> + use<'a, '_, S> {
        let any_optional = self.decls.iter().any(|d| d.optional_caller);
        served.iter().map(Scheme::name).filter(move |name| {
            !any_optional
                && !self
                    .decls
                    .iter()
                    .any(|d| d.security.schemes().any(|s| s == *name))
        })
    }

    /// Every handler over `state`, by name, with the declarations the
    /// middleware enforces. `rpc.discover` has no handler here (the
    /// server's security layer answers it).
    pub(crate) fn into_parts(
        self,
        state: Arc<S>,
    ) -> Result<(dispatch::Handlers, Vec<Arc<MethodDecl>>), ApiError> {
        self.check_security()?;
        let mut handlers = dispatch::Handlers::default();
        for (decl, register) in self.decls.iter().zip(self.registrations) {
            let Some(register) = register else { continue };
            // A handler's internal errors are logged with its name, for the
            // life of the server; a name built at run time is leaked here,
            // once per method.
            let name: &'static str = match &decl.name {
                Cow::Borrowed(name) => name,
                Cow::Owned(name) => Box::leak(name.clone().into_boxed_str()),
            };
            handlers.insert(name.into(), register(state.clone(), name));
        }
        Ok((handlers, self.decls))
    }
}

fn declaration<P: JsonSchema, R: JsonSchema>(method: Method) -> Result<MethodDecl, ApiError> {
    let errors = documented_errors(&method)?;
    let (security, security_from) = match method.security {
        Some(security) => (security, SecurityFrom::Declared),
        None => (MethodSecurity::public(), SecurityFrom::Missing),
    };
    Ok(MethodDecl {
        name: method.name,
        summary: method.summary,
        description: method.description,
        security,
        security_from,
        optional_caller: method.optional_caller,
        errors,
        examples: method.examples,
        param_names: param_names::<P>(),
        params_schema: |generator| P::json_schema(generator),
        result_schema: |generator| generator.subschema_for::<R>(),
        result_name: R::schema_name().into_owned(),
    })
}

/// The declared errors with the message each shows in the document: the
/// contract's for [`Method::errors`], the application's own for
/// [`Method::error`]. Refuses what would be documented falsely.
fn documented_errors(method: &Method) -> Result<Vec<DocumentedError>, ApiError> {
    let refuse = |code, why| ApiError::DeclaredError {
        method: method.name.clone().into_owned(),
        code,
        why,
    };
    method
        .errors
        .iter()
        .map(|declared| {
            let message = match &declared.message {
                None => match error::message_for(declared.code) {
                    "" => {
                        return Err(refuse(
                            declared.code,
                            "not a code of the contract; declare your own with `Method::error(code, message)`",
                        ))
                    }
                    message => message.to_owned(),
                },
                Some(message) if message.trim().is_empty() => {
                    return Err(refuse(declared.code, "the message is empty"))
                }
                Some(message) => message.clone(),
            };
            Ok(DocumentedError {
                code: declared.code,
                message,
                data: declared.data,
            })
        })
        .collect()
}

/// The params struct's field names in declaration order.
fn param_names<P: JsonSchema>() -> Vec<String> {
    let mut generator = crate::schema::schema_settings().into_generator();
    let schema = P::json_schema(&mut generator);
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

/// Turns raw JSON-RPC params (object, array or absent) into `P`.
pub(crate) fn parse_params<P: DeserializeOwned>(
    raw: Option<&str>,
    names: &[String],
) -> Result<P, RpcError> {
    let value: Value = match raw {
        None => Value::Object(Map::new()),
        Some(text) => serde_json::from_str(text).map_err(|_| {
            RpcError::InvalidParams("params are not valid JSON or are nested too deeply".into())
        })?,
    };
    let object = match value {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        Value::Array(items) => {
            if items.len() > names.len() {
                return Err(RpcError::InvalidParams(format!(
                    "too many positional params: this method takes at most {}",
                    names.len()
                )));
            }
            names.iter().cloned().zip(items).collect()
        }
        _ => {
            return Err(RpcError::InvalidParams(
                "params must be an object (by name) or an array (by position)".into(),
            ))
        }
    };
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|err| {
        let path = err.path().to_string();
        RpcError::InvalidParams(describe_param_error(&path, &err.into_inner().to_string()))
    })
}

/// Rewrites a serde error so that it says what is wrong without echoing the
/// value (serde's own messages quote the offending input).
fn describe_param_error(path: &str, message: &str) -> String {
    let at = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("`{path}`: ")
    };
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("missing param {field}");
    }
    if message.starts_with("unknown field") {
        return "unknown param".to_owned();
    }
    if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("invalid length")
    {
        let expected = message
            .rsplit_once(", expected ")
            .map(|(_, e)| format!("expected {e}"))
            .unwrap_or_else(|| "wrong type".to_owned());
        return format!("{at}{expected}");
    }
    if message.starts_with("unknown variant") || message.starts_with("duplicate field") {
        return format!("{at}invalid value");
    }
    // Our own messages (from the newtypes' parsers) never echo the input.
    format!("{at}{message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        first: String,
        second: u32,
    }

    fn names() -> Vec<String> {
        param_names::<Pair>()
    }

    #[test]
    fn a_served_scheme_no_method_requires_is_found() {
        const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
        const OPS: Scheme = Scheme::api_key("Ops", "x-ops-key");
        let served = [KEY, OPS];
        let mut api: Api<()> = Api::new();
        api.method(
            Method::new("a").security(KEY.require(())),
            |_: NoParams, _| async { Ok::<_, RpcError>(true) },
        )
        .expect("a");
        assert_eq!(api.unrequired_schemes(&served).collect::<Vec<_>>(), ["Ops"]);
        // A public method that reads its caller may get it from any scheme.
        api.method(
            Method::new("b").public().optional_caller(),
            |_: NoParams, _| async { Ok::<_, RpcError>(true) },
        )
        .expect("b");
        assert_eq!(api.unrequired_schemes(&served).count(), 0);
    }

    #[test]
    fn names_follow_field_order() {
        assert_eq!(names(), vec!["first".to_owned(), "second".to_owned()]);
    }

    #[test]
    fn by_name_and_by_position_agree() {
        let a: Pair = parse_params(Some(r#"{"second":2,"first":"x"}"#), &names()).expect("by name");
        let b: Pair = parse_params(Some(r#"["x",2]"#), &names()).expect("by position");
        assert_eq!(a, b);
    }

    #[test]
    fn errors_do_not_echo_input() {
        let err =
            parse_params::<Pair>(Some(r#"{"first":"x","second":"s3cret"}"#), &names()).unwrap_err();
        let text = format!("{err}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(matches!(err, RpcError::InvalidParams(_)));
        let extra = parse_params::<Pair>(Some(r#"["x",2,3]"#), &names()).unwrap_err();
        assert!(matches!(extra, RpcError::InvalidParams(_)));
        let unknown =
            parse_params::<Pair>(Some(r#"{"first":"x","second":2,"s3cret":1}"#), &names())
                .unwrap_err();
        assert!(!format!("{unknown}").contains("s3cret"));
        let missing = parse_params::<Pair>(Some(r#"{"first":"x"}"#), &names()).unwrap_err();
        assert!(format!("{missing}").contains("second"));
    }
}
