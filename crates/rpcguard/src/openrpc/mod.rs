//! The OpenRPC 1.3.2 document, generated from the method declarations.
//!
//! Schemas come from schemars (JSON Schema draft-07). Named types go to
//! `components.schemas` and are referenced as `#/components/schemas/Name`;
//! each has a `title`, its name (the Rust type's), which code generators use
//! as the type's name; non-standard `format` values (`uint32`, `int64`,
//! `double`, …) are removed because strict validators refuse them. Each
//! method lists its security as `x-security` and the errors its security,
//! params and declaration imply; an error the contract sends with `data`
//! (`-32001`, `-32099`, `-32005`, `-32602`) carries the JSON Schema of that
//! `data` in its `data` field, a `$ref` to a component such as
//! `UnauthenticatedData` (the spec leaves `data` free; the document says so
//! with the root flag [`ERROR_DATA_SCHEMA`]).
//! `components["x-securitySchemes"]` describes each scheme. The server
//! builds the document once at start-up (and again when it takes a new
//! [`Policy`](crate::policy::Policy), which changes what the document
//! says) and `rpc.discover` serves it from memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::{Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::api::{Api, ApiError, MethodDecl, SchemaFn};
use crate::error::{self, data_schema_for, message_for};
use crate::schema::schema_settings;
pub use crate::schema::OPENRPC_VERSION;
use crate::security::Scheme;

/// The root extension that says every `errors[].data` of the document is a
/// JSON Schema of the error's `data` (OpenRPC leaves `data` free: "a
/// primitive or structured value"). The name is the one proposed in
/// open-rpc/spec#392; the spec's maintainers suggested a schema there in
/// open-rpc/spec#255.
pub const ERROR_DATA_SCHEMA: &str = "x-error-data-schema";

/// What the document says about the server itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocInfo {
    /// `info.title`.
    pub title: String,
    /// `info.version`.
    pub version: String,
    /// `info.description`.
    pub description: String,
    /// `servers[0].url`, e.g. `http://127.0.0.1:8080/`; empty: the server
    /// fills in `http://<its bound address>/`.
    pub server_url: String,
}

impl DocInfo {
    /// A document titled `title` at `version`, with no description, whose
    /// server URL the server fills in from its listener.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        DocInfo {
            title: title.into(),
            version: version.into(),
            description: String::new(),
            server_url: String::new(),
        }
    }

    /// Sets `info.description`.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets `servers[0].url`.
    #[must_use]
    pub fn server_url(mut self, url: impl Into<String>) -> Self {
        self.server_url = url.into();
        self
    }
}

/// Builds the document of `api`'s methods, describing `schemes` (those of
/// the server's [`SecurityFunction`](crate::SecurityFunction)) and the
/// server as `info` says: the document the server would serve. Refused as
/// the server would refuse to start: a method without security
/// ([`ApiError::NoSecurity`]).
pub fn document<S: Send + Sync + 'static>(
    api: &Api<S>,
    schemes: &[Scheme],
    info: &DocInfo,
) -> Result<Value, ApiError> {
    api.check_security()?;
    Ok(document_of(api.declarations(), schemes, info))
}

/// The document of these declarations (a policy's view of an API).
pub(crate) fn document_of(decls: &[Arc<MethodDecl>], schemes: &[Scheme], info: &DocInfo) -> Value {
    let mut generator = schema_settings().into_generator();
    let methods: Vec<Value> = decls
        .iter()
        .map(|d| method_entry(d, &mut generator))
        .collect();
    let schemas = titled(generator.take_definitions(true));
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": info.title,
            "version": info.version,
            "description": info.description,
        },
        "servers": [{ "name": "default", "url": info.server_url }],
        "methods": methods,
        "components": {
            "schemas": schemas,
            "x-securitySchemes": security_schemes(decls, schemes),
        },
        ERROR_DATA_SCHEMA: true,
    })
}

/// Gives every named schema a `title`, its name, first: without one, code
/// generators name the type after a hash of its schema (`ObjectOfStringIG9Y…`
/// for `User`). Names are unique in `components.schemas`, so titles are too;
/// a title schemars took from a doc comment's heading is replaced.
fn titled(definitions: Map<String, Value>) -> Map<String, Value> {
    definitions
        .into_iter()
        .map(|(name, schema)| {
            let schema = match schema {
                Value::Object(fields) => {
                    let mut with_title = Map::with_capacity(fields.len() + 1);
                    with_title.insert("title".into(), json!(name));
                    with_title.extend(fields.into_iter().filter(|(key, _)| key != "title"));
                    Value::Object(with_title)
                }
                other => other,
            };
            (name, schema)
        })
        .collect()
}

/// Runs the generator's transforms over a schema made outside
/// `take_definitions` (params and results are built inline).
fn finish_schema(generator: &mut SchemaGenerator, mut schema: Schema) -> Value {
    for transform in generator.transforms_mut() {
        transform.transform(&mut schema);
    }
    schema.to_value()
}

fn method_entry(decl: &MethodDecl, generator: &mut SchemaGenerator) -> Value {
    let params_schema = (decl.params_schema)(generator);
    let params_schema = finish_schema(generator, params_schema);
    let required: Vec<&str> = params_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let params: Vec<Value> = decl
        .param_names
        .iter()
        .map(|name| {
            let mut schema = params_schema
                .pointer(&format!("/properties/{name}"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            let description = schema
                .as_object_mut()
                .and_then(|o| o.remove("description"))
                .unwrap_or_else(|| json!(""));
            let schema = unwrap_single_all_of(schema);
            json!({
                "name": name,
                "description": description,
                "required": required.contains(&name.as_str()),
                "schema": schema,
            })
        })
        .collect();
    let result_schema = (decl.result_schema)(generator);
    let result_schema = finish_schema(generator, result_schema);
    let mut entry = Map::new();
    entry.insert("name".into(), json!(decl.name));
    entry.insert("summary".into(), json!(decl.summary));
    entry.insert("description".into(), json!(decl.description));
    entry.insert("paramStructure".into(), json!("either"));
    entry.insert("params".into(), json!(params));
    entry.insert(
        "result".into(),
        json!({ "name": decl.result_name, "schema": result_schema }),
    );
    entry.insert("errors".into(), json!(errors_of(decl, generator)));
    entry.insert("examples".into(), json!(examples_of(decl)));
    entry.insert("x-security".into(), decl.security.x_security());
    Value::Object(entry)
}

/// `{"allOf": [S]}` is how schemars attaches a description to a `$ref`;
/// with the description moved to the content descriptor, it is just `S`.
fn unwrap_single_all_of(schema: Value) -> Value {
    match schema.as_object() {
        Some(obj) if obj.len() == 1 => match obj.get("allOf").and_then(Value::as_array) {
            Some(all) if all.len() == 1 => all[0].clone(),
            _ => schema,
        },
        _ => schema,
    }
}

/// The errors a method can return: those its security implies, `-32602`
/// when it takes params, its declared ones, and `-32603`; each with the
/// schema of its `data` when it has one (the contract's, or the type a
/// declared error names).
fn errors_of(decl: &MethodDecl, generator: &mut SchemaGenerator) -> Vec<Value> {
    let mut codes = Vec::new();
    if !decl.security.is_public() {
        codes.push(error::UNAUTHENTICATED);
        if decl.security.needs_scopes() {
            codes.push(error::PERMISSION_ERROR);
        }
    }
    let mut errors: Vec<(i32, &str, Option<SchemaFn>)> = codes
        .into_iter()
        .map(|c| (c, message_for(c), None))
        .collect();
    errors.extend(
        decl.errors
            .iter()
            .map(|e| (e.code, e.message.as_str(), e.data)),
    );
    if !decl.param_names.is_empty() {
        errors.push((
            error::INVALID_PARAMS,
            message_for(error::INVALID_PARAMS),
            None,
        ));
    }
    errors.push((
        error::INTERNAL_ERROR,
        message_for(error::INTERNAL_ERROR),
        None,
    ));
    let mut seen = Vec::new();
    errors
        .into_iter()
        .filter(|(code, ..)| {
            let fresh = !seen.contains(code);
            seen.push(*code);
            fresh
        })
        .map(|(code, message, declared)| {
            let mut error = json!({ "code": code, "message": message });
            let data = match declared {
                Some(schema) => Some(schema(generator)),
                None => data_schema_for(code, generator),
            };
            if let Some(data) = data {
                error["data"] = finish_schema(generator, data);
            }
            error
        })
        .collect()
}

fn examples_of(decl: &MethodDecl) -> Vec<Value> {
    decl.examples
        .iter()
        .map(|example| {
            let params: Vec<Value> = decl
                .param_names
                .iter()
                .filter_map(|name| {
                    example
                        .params
                        .get(name)
                        .map(|value| json!({ "name": name, "value": value }))
                })
                .collect();
            json!({
                "name": example.name,
                "params": params,
                "result": { "name": decl.result_name, "value": example.result },
            })
        })
        .collect()
}

/// `components["x-securitySchemes"]`: each scheme with the scopes the
/// declared methods use.
fn security_schemes(decls: &[Arc<MethodDecl>], schemes: &[Scheme]) -> Value {
    let mut out = Map::new();
    for scheme in schemes {
        let mut scopes: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for decl in decls {
            for alt in decl.security.alternatives() {
                if alt.scheme == scheme.name() {
                    for scope in &alt.scopes {
                        let methods = scopes.entry(scope.clone()).or_default();
                        if !methods.contains(&decl.name.as_ref()) {
                            methods.push(&decl.name);
                        }
                    }
                }
            }
        }
        let scopes: Map<String, Value> = scopes
            .into_iter()
            .map(|(scope, methods)| (scope, json!(format!("Required by: {}", methods.join(", ")))))
            .collect();
        let mut entry = Map::new();
        entry.insert("type".into(), json!(scheme.kind().as_str()));
        entry.insert("in".into(), json!(scheme.location().as_str()));
        entry.insert("name".into(), json!(scheme.header()));
        if let Some(format) = scheme.token_format() {
            entry.insert("bearerFormat".into(), json!(format));
        }
        entry.insert("description".into(), json!(scheme.description()));
        entry.insert("scopes".into(), Value::Object(scopes));
        for (name, value) in scheme.extensions() {
            entry.insert(name.clone(), value.clone());
        }
        out.insert(scheme.name().to_owned(), Value::Object(entry));
    }
    Value::Object(out)
}
