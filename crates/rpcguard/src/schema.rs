//! What the method registry and the OpenRPC document share: the schema
//! settings (draft-07, definitions under `#/components/schemas`, no
//! non-standard formats), the OpenRPC version, and the pre-serialized
//! document `rpc.discover` answers. It sits below both, so that the
//! registry (`api`) does not depend on the document builder (`openrpc`),
//! which reads the registry.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::transform::{transform_subschemas, Transform};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The OpenRPC version the document declares.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// Schema generation settings: draft-07, definitions under
/// `#/components/schemas`, no `$schema`, no non-standard formats.
pub(crate) fn schema_settings() -> SchemaSettings {
    SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
        s.transforms.push(Box::new(StripFormats));
    })
}

/// Removes `format` values that are not JSON Schema formats (schemars adds
/// `uint32`, `int64`, `double`, … for Rust numbers).
#[derive(Debug, Clone, Copy)]
struct StripFormats;

impl Transform for StripFormats {
    fn transform(&mut self, schema: &mut Schema) {
        const NON_STANDARD: [&str; 10] = [
            "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64",
            "double",
        ];
        if let Some(obj) = schema.as_object_mut() {
            let drop = matches!(obj.get("format"), Some(Value::String(f))
                if NON_STANDARD.contains(&f.as_str()) || f == "float" || f == "int" || f == "uint128" || f == "int128");
            if drop {
                obj.remove("format");
            }
        }
        transform_subschemas(self, schema);
    }
}

/// The result of `rpc.discover`: a whole OpenRPC document, pre-serialized,
/// also as shared bytes that an HTTP answer sends without a copy.
#[derive(Debug, Clone)]
pub(crate) struct OpenRpcDocument {
    raw: std::sync::Arc<RawValue>,
    /// The same text: the bytes own a clone of `raw` (one buffer).
    bytes: bytes::Bytes,
}

/// A document's text as the owner of [`OpenRpcDocument::bytes`].
struct RawText(std::sync::Arc<RawValue>);

impl AsRef<[u8]> for RawText {
    fn as_ref(&self) -> &[u8] {
        self.0.get().as_bytes()
    }
}

impl OpenRpcDocument {
    /// Wraps a document value.
    pub(crate) fn new(value: &Value) -> Result<Self, serde_json::Error> {
        let raw: std::sync::Arc<RawValue> = serde_json::value::to_raw_value(value)?.into();
        let bytes = bytes::Bytes::from_owner(RawText(raw.clone()));
        Ok(OpenRpcDocument { raw, bytes })
    }

    /// The serialized document, as `rpc.discover` answers it.
    pub(crate) fn json(&self) -> &str {
        self.raw.get()
    }

    /// The serialized document, as a raw JSON value.
    pub(crate) fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// The serialized document's bytes (shared: a clone copies nothing).
    pub(crate) fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }
}

impl Serialize for OpenRpcDocument {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RawValue::serialize(&self.raw, serializer)
    }
}

impl JsonSchema for OpenRpcDocument {
    fn schema_name() -> Cow<'static, str> {
        "OpenrpcDocument".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "An OpenRPC document (https://spec.open-rpc.org), version 1.3.2.",
            "required": ["openrpc", "info", "methods"],
            "properties": {
                "openrpc": { "type": "string" },
                "info": { "type": "object" },
                "servers": { "type": "array", "items": { "type": "object" } },
                "methods": { "type": "array", "items": { "type": "object" } },
                "components": { "type": "object" }
            }
        })
    }
}
