//! Reading claims: the issuer a token names (before it is verified, only to
//! pick its verifier), the claims of a token whose signature verified, and
//! the scopes they grant.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Most scopes taken from one token (a bound on what a token can make us
/// keep; real tokens carry a few dozen at most).
const MAX_SCOPES: usize = 256;

/// The `iss` claim of `token`, read without verifying anything: only to
/// decide which verifier gets the token (which then checks everything,
/// `iss` included). `None` for anything that is not a JWT with a string
/// `iss`.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Issuer<'a> {
        #[serde(borrow)]
        iss: Option<Cow<'a, str>>,
    }
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let issuer: Issuer<'_> = serde_json::from_slice(&bytes).ok()?;
    issuer.iss.map(Cow::into_owned)
}

/// The claims in a token's payload segment (base64url of a JSON object);
/// `None` for anything else.
pub(crate) fn payload(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The scopes at `path` in `claims`.
///
/// `path` names a claim (`scope`, `scp`, `roles`, or a name with dots such
/// as `https://example.com/roles`, tried as one name first) or, split at
/// its dots, a claim inside objects (`realm_access.roles`). The value is a
/// space-separated string (OAuth 2.0's `scope`) or a list of strings
/// (`scp`, `roles`); anything else, or nothing there, gives no scopes.
pub(crate) fn scopes_at(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let value = claims.get(path).or_else(|| {
        let mut names = path.split('.');
        let first = claims.get(names.next()?)?;
        names.try_fold(first, |value, name| value.as_object()?.get(name))
    });
    let mut scopes: Vec<String> = match value {
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter(|scope| !scope.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    scopes.truncate(MAX_SCOPES);
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn scopes_from_a_string_a_list_or_a_path() {
        let keycloak = claims(json!({
            "scope": "openid profile  email",
            "realm_access": { "roles": ["admin", "", 7, "reports"] },
            "resource_access": { "rpc": { "roles": ["call"] } },
            "scp": ["read", "write"],
            "https://example.com/roles": ["ns"],
            "weird": { "roles": "a b" },
            "number": 3
        }));
        assert_eq!(
            scopes_at(&keycloak, "scope"),
            ["openid", "profile", "email"]
        );
        assert_eq!(
            scopes_at(&keycloak, "realm_access.roles"),
            ["admin", "reports"]
        );
        assert_eq!(scopes_at(&keycloak, "resource_access.rpc.roles"), ["call"]);
        assert_eq!(scopes_at(&keycloak, "scp"), ["read", "write"]);
        assert_eq!(scopes_at(&keycloak, "https://example.com/roles"), ["ns"]);
        assert_eq!(scopes_at(&keycloak, "weird.roles"), ["a", "b"]);
        for nothing in ["number", "missing", "realm_access", "scope.x", "", "."] {
            assert!(scopes_at(&keycloak, nothing).is_empty(), "{nothing}");
        }
    }

    #[test]
    fn scopes_are_bounded() {
        let many: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
        let lots = claims(json!({ "scope": many.join(" ") }));
        assert_eq!(scopes_at(&lots, "scope").len(), MAX_SCOPES);
    }

    #[test]
    fn the_issuer_is_read_without_verifying() {
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"iss":"https://kc.example/realms/acme","sub":"x"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://kc.example/realms/acme")
        );
        let no_iss = URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#);
        let number = URL_SAFE_NO_PAD.encode(br#"{"iss":7}"#);
        for token in [
            "".to_owned(),
            "abc".to_owned(),
            "a.!!!.c".to_owned(),
            format!("e30.{no_iss}.sig"),
            format!("e30.{number}.sig"),
        ] {
            assert_eq!(unverified_issuer(&token), None, "{token}");
        }
    }
}
