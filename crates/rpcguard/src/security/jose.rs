//! The JOSE header of a compact JWS (RFC 7515), read here rather than by a
//! JWT library, for the members a library may not show:
//!
//! - `crit` (RFC 7515 §4.1.11): the extensions a recipient must understand
//!   or refuse the token. rpcguard understands none, so a token with a
//!   `crit` member, whatever its value (`null`, `[]`, a list of names), is
//!   refused: [`crit_free`] for the server's own tokens, [`JoseHeader::crit`]
//!   for an external issuer's;
//! - `typ` (RFC 7515 §4.1.9, RFC 9068 §2.1): absent, a string, or something
//!   else (a number, `null`, a list): [`Typ`], so that a non-string `typ` is
//!   refused rather than read as absent;
//! - `alg` as written, so that names a library does not know (RFC 9864's
//!   `Ed25519`) can be mapped by the caller.
//!
//! Nothing here verifies anything: a header is read to decide how to verify
//! the token, or to refuse it early.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// What a JOSE header says in `typ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Typ {
    /// No `typ` member.
    Absent,
    /// A string `typ`, as written.
    Text(String),
    /// A `typ` that is not a string (`null` included): refused by every
    /// verifier here.
    NotText,
}

/// The JOSE header of a compact JWS, as far as verification needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JoseHeader {
    /// `alg`, as written.
    pub alg: String,
    /// `kid`, when it is a string.
    pub kid: Option<String>,
    /// `typ`.
    pub typ: Typ,
    /// Whether the header has a `crit` member, whatever its value.
    pub crit: bool,
}

impl JoseHeader {
    /// The header of the compact JWS `token`; `None` when `token` is not
    /// three dot-separated segments whose first is base64url (unpadded) of
    /// a JSON object with a string `alg`.
    pub fn of_token(token: &str) -> Option<JoseHeader> {
        let (header, _, _) = segments(token)?;
        let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
        let members: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
        let alg = members.get("alg")?.as_str()?.to_owned();
        let kid = members
            .get("kid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let typ = match members.get("typ") {
            None => Typ::Absent,
            Some(Value::String(typ)) => Typ::Text(typ.clone()),
            Some(_) => Typ::NotText,
        };
        Some(JoseHeader {
            alg,
            kid,
            typ,
            crit: members.contains_key("crit"),
        })
    }
}

/// The three segments of a compact JWS (`header.payload.signature`), or
/// `None` when there are not exactly three.
pub fn segments(token: &str) -> Option<(&str, &str, &str)> {
    let mut parts = token.split('.');
    let found = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(found)
}

/// The decoded JOSE header of `token` (the JSON bytes of its first
/// segment), or `None` when `token` is not three segments or its first is
/// not base64url (unpadded). For a caller that parses the header itself and
/// checks [`crit_free_json`] on the same bytes, decoding them once.
pub fn header_json(token: &str) -> Option<Vec<u8>> {
    let (header, _, _) = segments(token)?;
    URL_SAFE_NO_PAD.decode(header).ok()
}

/// False when the JOSE header JSON `bytes` has a `crit` member, or names
/// `crit` in bytes that are not a JSON object (fail closed); true
/// otherwise. Bytes that are no JSON at all but cannot name `crit` pass:
/// the verifier that parses them next refuses them.
///
/// Cheap enough for the hot path: the JSON is parsed only when the bytes
/// could name `crit` (they contain `crit`, or an escape that could spell
/// it); the usual header (`{"typ":"JWT","alg":"HS256","kid":"…"}`) is only
/// scanned.
pub fn crit_free_json(bytes: &[u8]) -> bool {
    let could_name_crit = bytes.contains(&b'\\') || bytes.windows(4).any(|w| w == b"crit");
    if !could_name_crit {
        return true;
    }
    serde_json::from_slice::<Map<String, Value>>(bytes)
        .is_ok_and(|members| !members.contains_key("crit"))
}

/// [`crit_free_json`] of the header of `token`; false when `token` has no
/// decodable header ([`header_json`]).
pub fn crit_free(token: &str) -> bool {
    header_json(token).is_some_and(|bytes| crit_free_json(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn crit_in_any_form_is_found() {
        for header in [
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","crit":[]}"#,
            r#"{"alg":"HS256","crit":null}"#,
            r#"{"alg":"HS256","cr\u0069t":["b64"],"b64":false}"#,
            r#"{"crit":"x","alg":"HS256","crit":["x"]}"#,
        ] {
            assert!(!crit_free(&token(header)), "{header}");
            let parsed = JoseHeader::of_token(&token(header));
            assert!(parsed.is_some_and(|h| h.crit), "{header}");
        }
    }

    #[test]
    fn headers_without_crit_pass_even_when_a_value_says_crit() {
        for header in [
            r#"{"typ":"JWT","alg":"HS256","kid":"hs256-1"}"#,
            r#"{"alg":"HS256","kid":"critical"}"#,
            r#"{"alg":"HS256","kid":"a\"b"}"#,
        ] {
            assert!(crit_free(&token(header)), "{header}");
            let parsed = JoseHeader::of_token(&token(header)).expect("a header");
            assert!(!parsed.crit);
        }
    }

    #[test]
    fn malformed_tokens_are_not_crit_free() {
        for bad in ["", "abc", "a.b", "YQ.b.c.d", "!!!.e30.c2ln"] {
            assert!(!crit_free(bad), "{bad}");
            assert_eq!(JoseHeader::of_token(bad), None, "{bad}");
        }
        for not_a_header in ["[1,2]", r#"{"alg":"HS256""#, "not json", r#"{"typ":"JWT"}"#] {
            assert_eq!(JoseHeader::of_token(&token(not_a_header)), None);
        }
        // Base64url of something that is no JSON header and cannot name
        // `crit`: the scan lets it through to the verifier, which refuses it.
        assert!(crit_free(&token("not json")));
        assert!(!crit_free(&token(r#"{"crit":[],"alg":"#)));
    }

    #[test]
    fn typ_is_absent_a_string_or_refused() {
        let typ = |header: Value| {
            JoseHeader::of_token(&token(&header.to_string()))
                .expect("a header")
                .typ
        };
        assert_eq!(typ(json!({ "alg": "RS256" })), Typ::Absent);
        assert_eq!(
            typ(json!({ "alg": "RS256", "typ": "at+jwt" })),
            Typ::Text("at+jwt".to_owned())
        );
        for odd in [json!(null), json!(1), json!(["at+jwt"]), json!({})] {
            assert_eq!(typ(json!({ "alg": "RS256", "typ": odd })), Typ::NotText);
        }
        let header =
            JoseHeader::of_token(&token(r#"{"alg":"Ed25519","kid":7}"#)).expect("a header");
        assert_eq!((header.alg.as_str(), header.kid), ("Ed25519", None));
        assert_eq!(JoseHeader::of_token(&token(r#"{"alg":1}"#)), None);
    }
}
