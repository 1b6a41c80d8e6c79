//! Request ids that jsonrpsee 0.26 cannot carry.
//!
//! JSON-RPC 2.0 (§4) allows an id to be a string, a number or null, and
//! every request that is not a notification must be answered. jsonrpsee's
//! `Id` holds only null, strings and integers from 0 to 2⁶⁴−1: a request
//! with any other number as its id (`-1`, `1.5`, `1e3`,
//! `18446744073709551616`) fails to parse as a call, parses as a
//! notification instead, and is never answered (nor executed). An id of
//! another JSON type (`{}`, `[1]`, `true`) makes the request invalid, and
//! jsonrpsee also takes it for a notification.
//!
//! So before a message reaches jsonrpsee, [`normalize`] replaces each such
//! numeric id with a string placeholder unique to the message (a random
//! nonce no client can guess), and [`Restore::apply`] puts the original
//! text back into the answer, digit for digit. A request whose id has an
//! invalid type is made unparseable, so jsonrpsee answers it `-32600` with
//! `id: null` and does not execute it. The common case (string, small
//! integer or no id) is checked with one borrowing parse and passes
//! through untouched.
//!
//! Two more answers jsonrpsee gets wrong are set right here: valid JSON
//! that is neither an object nor an array, and a single object without an
//! id that is neither a call nor a notification, are invalid requests
//! (-32600, JSON-RPC §5.1), not parse errors.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// What to put back in the answer.
#[derive(Debug, Default)]
pub(crate) struct Restore {
    /// (quoted placeholder, original id text)
    swaps: Vec<(String, String)>,
}

impl Restore {
    /// The answer with every placeholder replaced by the id it stands for.
    pub(crate) fn apply(&self, mut answer: String) -> String {
        for (placeholder, original) in &self.swaps {
            answer = answer.replace(placeholder.as_str(), original);
        }
        answer
    }
}

/// A message ready for jsonrpsee.
#[derive(Debug)]
pub(crate) enum Normalized {
    /// Nothing to change.
    AsIs(Bytes),
    /// Rewritten; the answer needs [`Restore::apply`].
    Rewritten(Bytes, Restore),
    /// A single request with an id of an invalid type: this answer, and
    /// nothing is executed.
    Invalid(&'static str),
}

/// The answer to a single request whose id has an invalid type.
const INVALID_REQUEST: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid request"},"id":null}"#;

/// Stands in for a batch entry whose id has an invalid type: not a call,
/// not a notification, no id, so jsonrpsee answers -32600 with id null.
const INVALID_ENTRY: &str = r#"{"jsonrpc":"2.0"}"#;

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
}

impl Probe<'_> {
    /// Has the shape of a call or notification (`"jsonrpc": "2.0"` and a
    /// string `method`).
    fn is_well_formed(&self) -> bool {
        self.jsonrpc.is_some_and(|v| v.get() == "\"2.0\"")
            && self.method.is_some_and(|m| m.get().starts_with('"'))
    }
}

/// How jsonrpsee would take an id.
#[derive(Debug, PartialEq, Eq)]
enum IdKind {
    /// Null, a string, or an integer that fits u64.
    Supported,
    /// A legal JSON-RPC number jsonrpsee cannot hold.
    OtherNumber,
    /// An object, array or boolean: an invalid request.
    Invalid,
}

fn kind(raw: &str) -> IdKind {
    match raw.as_bytes().first() {
        Some(b'"') | Some(b'n') => IdKind::Supported,
        Some(b'-' | b'0'..=b'9') if raw.parse::<u64>().is_ok() => IdKind::Supported,
        Some(b'-' | b'0'..=b'9') => IdKind::OtherNumber,
        _ => IdKind::Invalid,
    }
}

/// One change to the message: replace `len` bytes at `at` with `with`.
struct Edit {
    at: usize,
    len: usize,
    with: String,
}

/// The byte offset of `part` inside `whole` (`part` borrows from it).
fn offset_in(whole: &[u8], part: &str) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// A single request, already probed: `None` when it goes to jsonrpsee as is.
fn normalize_single(body: &Bytes, probe: &Probe) -> Option<Normalized> {
    let Some(id) = probe.id else {
        // jsonrpsee answers a single ill-formed request without an id
        // with a parse error (-32700); JSON-RPC says -32600.
        return (!probe.is_well_formed()).then_some(Normalized::Invalid(INVALID_REQUEST));
    };
    match kind(id.get()) {
        IdKind::Supported => None,
        IdKind::Invalid => Some(Normalized::Invalid(INVALID_REQUEST)),
        IdKind::OtherNumber => {
            let nonce: u64 = rand::random();
            let placeholder = format!("\"rpcguard-id-{nonce:016x}-0\"");
            let at = offset_in(body, id.get());
            let mut out = Vec::with_capacity(body.len() + placeholder.len());
            out.extend_from_slice(&body[..at]);
            out.extend_from_slice(placeholder.as_bytes());
            out.extend_from_slice(&body[at + id.get().len()..]);
            let restore = Restore {
                swaps: vec![(placeholder, id.get().to_owned())],
            };
            Some(Normalized::Rewritten(Bytes::from(out), restore))
        }
    }
}

/// Prepares a message (a request object or a batch) for jsonrpsee.
pub(crate) fn normalize(body: Bytes) -> Normalized {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Normalized::AsIs(body);
    };
    let entries: Vec<&RawValue> = match first {
        // One request: one borrowing parse, the common case.
        b'{' => {
            return match serde_json::from_slice::<Probe>(&body) {
                Ok(probe) => normalize_single(&body, &probe)
                    .unwrap_or_else(|| Normalized::AsIs(body.clone())),
                Err(_) => Normalized::AsIs(body),
            }
        }
        b'[' => match serde_json::from_slice::<Vec<&RawValue>>(&body) {
            Ok(entries) => entries,
            Err(_) => return Normalized::AsIs(body),
        },
        // Valid JSON that is neither an object nor an array is not a
        // request (jsonrpsee would call it a parse error).
        _ if serde_json::from_slice::<&RawValue>(&body).is_ok() => {
            return Normalized::Invalid(INVALID_REQUEST)
        }
        _ => return Normalized::AsIs(body),
    };
    // A batch: each entry on its own (jsonrpsee answers ill-formed entries
    // itself; an id of an invalid type makes the entry invalid).
    let nonce: u64 = rand::random();
    let mut edits = Vec::new();
    let mut restore = Restore::default();
    for entry in entries {
        let Ok(probe) = serde_json::from_str::<Probe>(entry.get()) else {
            continue;
        };
        let Some(id) = probe.id else {
            continue;
        };
        match kind(id.get()) {
            IdKind::Supported => {}
            IdKind::Invalid => edits.push(Edit {
                at: offset_in(&body, entry.get()),
                len: entry.get().len(),
                with: INVALID_ENTRY.to_owned(),
            }),
            IdKind::OtherNumber => {
                let placeholder = format!("\"rpcguard-id-{nonce:016x}-{}\"", restore.swaps.len());
                edits.push(Edit {
                    at: offset_in(&body, id.get()),
                    len: id.get().len(),
                    with: placeholder.clone(),
                });
                restore.swaps.push((placeholder, id.get().to_owned()));
            }
        }
    }
    if edits.is_empty() {
        return Normalized::AsIs(body);
    }
    let mut out = Vec::with_capacity(body.len() + 32 * edits.len());
    let mut from = 0;
    for edit in edits {
        out.extend_from_slice(&body[from..edit.at]);
        out.extend_from_slice(edit.with.as_bytes());
        from = edit.at + edit.len;
    }
    out.extend_from_slice(&body[from..]);
    Normalized::Rewritten(Bytes::from(out), restore)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str) -> (String, Restore) {
        match normalize(Bytes::from(body.to_owned())) {
            Normalized::Rewritten(body, restore) => {
                (String::from_utf8(body.to_vec()).expect("utf8"), restore)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn supported_ids_pass_untouched() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m","params":{"id":-1}}"#,
            r#"[{"jsonrpc":"2.0","id":18446744073709551615,"method":"m"}]"#,
            "not json",
        ] {
            assert!(
                matches!(normalize(Bytes::from(body)), Normalized::AsIs(_)),
                "{body}"
            );
        }
    }

    #[test]
    fn other_numbers_are_swapped_and_restored() {
        for id in ["-1", "1.5", "1e3", "18446744073709551616", "-0"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m","params":[{id}]}}"#);
            let (sent, restore) = rewritten(&body);
            assert!(sent.contains(r#""id":"rpcguard-id-"#), "{sent}");
            assert!(
                sent.ends_with(&format!(r#""params":[{id}]}}"#)),
                "params untouched: {sent}"
            );
            let placeholder = &restore.swaps[0].0;
            let answer = format!(r#"{{"jsonrpc":"2.0","id":{placeholder},"result":true}}"#);
            let back = restore.apply(answer);
            assert_eq!(
                back,
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":true}}"#)
            );
        }
    }

    #[test]
    fn invalid_ids_are_refused() {
        for id in ["{}", "[1]", "true", "false"] {
            let single = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            assert!(matches!(
                normalize(Bytes::from(single)),
                Normalized::Invalid(_)
            ));
            let batch = format!(
                r#"[{{"jsonrpc":"2.0","id":{id},"method":"m"}},{{"jsonrpc":"2.0","id":-2,"method":"m"}}]"#
            );
            let (sent, _) = rewritten(&batch);
            assert!(sent.starts_with(&format!("[{INVALID_ENTRY},")), "{sent}");
        }
    }
}
