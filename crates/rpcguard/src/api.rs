//! The method registry: the one place where a method is declared.
//!
//! A declaration ([`Method`]) carries the name, docs, security requirement,
//! errors and examples; [`Api::method`] adds the typed params and result and
//! the async handler. From that one call come the jsonrpsee registration,
//! the entry the security middleware enforces, and the OpenRPC entry. There
//! is no second list of method names anywhere.
//!
//! Params are accepted by name (an object) and by position (an array in the
//! declared field order, which is the order of the params struct's fields).
//! Unknown, missing or ill-typed params give `-32602` saying what is wrong,
//! never echoing the value.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use jsonrpsee::{Extensions, RpcModule};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{self, AuthFailure, RpcError};
use crate::security::{
    Caller, Credentials, MethodSecurity, RemoteAddr, SchemeDoc, SessionCredentials,
};
use crate::server::Draining;

/// The name of the OpenRPC service-discovery method every server has.
pub const DISCOVER: &str = "rpc.discover";

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
/// use rpcguard::{Method, MethodSecurity};
/// let m = Method::new("get_caller")
///     .summary("Who am I")
///     .security(MethodSecurity::signed_in());
/// assert_eq!(m.name(), "get_caller");
///
/// // Names may be built at run time.
/// let tenant = "acme";
/// let m = Method::new(format!("{tenant}.report")).error(4001, "Quota exceeded");
/// assert_eq!(m.name(), "acme.report");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a method declaration does nothing until given to `Api::method`"]
pub struct Method {
    name: Cow<'static, str>,
    summary: String,
    description: String,
    security: MethodSecurity,
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
}

impl Method {
    /// A public method named `name` with no docs yet.
    ///
    /// The name may be a `&'static str` or built at run time (`String`).
    /// jsonrpsee keeps method names for the life of the process, so a name
    /// built at run time is leaked once, when the server registers it.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Method {
            name: name.into(),
            summary: String::new(),
            description: String::new(),
            security: MethodSecurity::public(),
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

    /// The security requirement (default: public).
    pub fn security(mut self, security: MethodSecurity) -> Self {
        self.security = security;
        self
    }

    /// For a public method: resolve the caller when credentials are sent,
    /// and give it to the handler (`None` when absent or not valid).
    pub fn optional_caller(mut self) -> Self {
        self.optional_caller = true;
        self
    }

    /// Codes of the wire contract ([`crate::error`]'s constants) this
    /// method can return beyond the ones its security and params imply,
    /// e.g. [`error::AUTHENTICATION_FAILED`] for `sign_in`. The document
    /// gives each the contract's message. A code the contract does not
    /// define is refused by [`Api::method`]: declare your own errors with
    /// [`Method::error`].
    pub fn errors(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        for code in codes {
            self.errors.push(DeclaredError {
                code,
                message: None,
            });
        }
        self
    }

    /// An application error this method can return
    /// ([`RpcError::custom`]`(code, message, data)`), listed in the
    /// document with its message. `code` must be outside the range
    /// JSON-RPC reserves (`-32768..=-32000`) and `message` not empty, or
    /// [`Api::method`] refuses the declaration. Declaring a code again
    /// replaces its message.
    ///
    /// ```
    /// use rpcguard::{Api, Method, NoParams, RpcError};
    /// const QUOTA_EXCEEDED: i32 = 4001;
    /// let mut api: Api<()> = Api::new();
    /// api.method(
    ///     Method::new("export").error(QUOTA_EXCEEDED, "Quota exceeded"),
    ///     |_: NoParams, _ctx| async {
    ///         Err::<bool, _>(RpcError::custom(QUOTA_EXCEEDED, "Quota exceeded", None))
    ///     },
    /// )
    /// .unwrap();
    /// // A reserved code is refused when declared.
    /// assert!(api.method(Method::new("bad").error(-32001, "Mine"), |_: NoParams, _ctx| async {
    ///     Ok::<_, RpcError>(true)
    /// }).is_err());
    /// ```
    pub fn error(mut self, code: i32, message: impl Into<String>) -> Self {
        self.errors.retain(|e| e.code != code);
        self.errors.push(DeclaredError {
            code,
            message: Some(message.into()),
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
    /// Security requirement.
    pub security: MethodSecurity,
    /// Whether a public method wants its caller resolved.
    pub optional_caller: bool,
    /// Extra errors, each with its message (checked by [`Api::method`]).
    pub errors: Vec<(i32, String)>,
    /// Examples.
    pub examples: Vec<Example>,
    /// Param names in positional order.
    pub param_names: Vec<String>,
    /// The params object schema (properties reference shared components).
    pub params_schema: fn(&mut SchemaGenerator) -> Schema,
    /// The result schema (a `$ref` for named types).
    pub result_schema: fn(&mut SchemaGenerator) -> Schema,
    /// The result type's schema name (for the result's content descriptor).
    pub result_name: String,
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
    /// jsonrpsee refused the registration.
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

type Registration<S> = Box<dyn FnOnce(&mut RpcModule<S>) -> Result<(), ApiError> + Send>;

/// The set of methods a server offers, built with [`Api::method`].
///
/// `S` is the application state handed to every handler.
pub struct Api<S> {
    decls: Vec<Arc<MethodDecl>>,
    registrations: Vec<Registration<S>>,
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
    /// An API with only `rpc.discover` declared (its handler is added by the
    /// server, which builds the document).
    pub fn new() -> Self {
        let discover = Method::new(DISCOVER)
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
        let decl = declaration::<NoParams, crate::schema::OpenRpcDocument>(discover)
            .expect("rpc.discover declares no errors");
        Api {
            decls: vec![Arc::new(decl)],
            registrations: Vec::new(),
        }
    }

    /// Declares a method with typed params `P`, result `R` and an async
    /// handler.
    ///
    /// ```
    /// use rpcguard::{Api, Method, MethodSecurity, NoParams, RpcError};
    /// let mut api: Api<()> = Api::new();
    /// api.method(
    ///     Method::new("ping").summary("Liveness").security(MethodSecurity::public()),
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
        if self.decls.iter().any(|d| d.name == method.name) {
            return Err(ApiError::Duplicate(method.name.into_owned()));
        }
        let decl = declaration::<P, R>(method)?;
        let name = decl.name.clone();
        let names = Arc::new(decl.param_names.clone());
        self.decls.push(Arc::new(decl));
        self.registrations
            .push(Box::new(move |module: &mut RpcModule<S>| {
                // jsonrpsee keeps names for the life of the process; a name
                // built at run time is leaked here, once per method.
                let name: &'static str = match name {
                    Cow::Borrowed(name) => name,
                    Cow::Owned(name) => Box::leak(name.into_boxed_str()),
                };
                module.register_async_method(name, move |params, state, mut extensions| {
                    let handler = handler.clone();
                    let names = names.clone();
                    async move {
                        let params = parse_params::<P>(params.as_str(), &names)?;
                        // The guard put it there (shared: jsonrpsee clones
                        // the extensions for the handler); the handler
                        // gets it through the context.
                        let caller = extensions.remove::<Arc<Caller>>();
                        let ctx = CallContext {
                            state,
                            caller,
                            extensions,
                        };
                        handler(params, ctx).await
                    }
                })?;
                Ok(())
            }));
        Ok(self)
    }

    /// Every declaration, `rpc.discover` first.
    pub(crate) fn declarations(&self) -> &[Arc<MethodDecl>] {
        &self.decls
    }

    /// The first method (in declaration order) that names a scheme not in
    /// `known`, with that scheme.
    pub(crate) fn unknown_scheme<'a>(&'a self, known: &[SchemeDoc]) -> Option<(&'a str, &'a str)> {
        self.decls.iter().find_map(|decl| {
            decl.security
                .schemes()
                .find(|scheme| !known.iter().any(|k| k.name == *scheme))
                .map(|scheme| (decl.name.as_ref(), scheme))
        })
    }

    /// Registers every handler into a jsonrpsee module over `state`, and
    /// returns it with the declarations the middleware enforces.
    /// `rpc.discover` is not registered here (the server's security layer
    /// answers it).
    pub(crate) fn into_parts(
        self,
        state: Arc<S>,
    ) -> Result<(RpcModule<S>, Vec<Arc<MethodDecl>>), ApiError> {
        let mut module = RpcModule::from_arc(state);
        for register in self.registrations {
            register(&mut module)?;
        }
        Ok((module, self.decls))
    }
}

fn declaration<P: JsonSchema, R: JsonSchema>(method: Method) -> Result<MethodDecl, ApiError> {
    let errors = documented_errors(&method)?;
    Ok(MethodDecl {
        name: method.name,
        summary: method.summary,
        description: method.description,
        security: method.security,
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
fn documented_errors(method: &Method) -> Result<Vec<(i32, String)>, ApiError> {
    let refuse = |code, why| ApiError::DeclaredError {
        method: method.name.clone().into_owned(),
        code,
        why,
    };
    method
        .errors
        .iter()
        .map(|declared| match &declared.message {
            None => match error::message_for(declared.code) {
                "" => Err(refuse(
                    declared.code,
                    "not a code of the contract; declare your own with `Method::error(code, message)`",
                )),
                message => Ok((declared.code, message.to_owned())),
            },
            Some(_) if error::is_reserved(declared.code) => Err(refuse(
                declared.code,
                "the code is reserved by JSON-RPC (-32768..=-32000); pick one outside that range",
            )),
            Some(message) if message.trim().is_empty() => {
                Err(refuse(declared.code, "the message is empty"))
            }
            Some(message) => Ok((declared.code, message.clone())),
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
