//! What makes a validly signed token of the issuer acceptable: its times,
//! issuer, audience and subject, and that it is an *access* token, not an
//! ID token the same provider signed with the same key (see the
//! [module](super) docs for the rules, stated once for readers).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::AuthFailure;
use crate::security::jose::Typ;

/// How far in the future an `iat` may be (or [`Expected::leeway`], when
/// larger): the provider's clock and ours may differ by a little.
pub(crate) const IAT_SKEW: Duration = Duration::from_secs(60);

/// The values of a `typ` claim that mean an access token (Keycloak writes
/// `Bearer`; its ID tokens say `ID`, and are refused).
const ACCESS_TOKEN_TYPES: [&str; 3] = ["Bearer", "at+jwt", "application/at+jwt"];

/// Claims that only an OpenID Connect ID token carries (OIDC Core §2,
/// §3.1.3.6, §3.3.2.11; FAPI's `s_hash`): never in an access token.
const ID_TOKEN_CLAIMS: [&str; 4] = ["nonce", "at_hash", "c_hash", "s_hash"];

/// What a token must say to be accepted.
pub(crate) struct Expected<'a> {
    pub(crate) issuer: &'a str,
    pub(crate) audience: &'a str,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub(crate) leeway: u64,
    /// Only tokens whose header says `typ: at+jwt`.
    pub(crate) require_at_jwt: bool,
}

/// Checks the claims of a token whose signature verified, its header's
/// `typ` being `typ`, at `now` (Unix seconds). `expired_token` for an
/// expired token, `invalid_token` for anything else refused.
pub(crate) fn check(
    typ: &Typ,
    claims: &Map<String, Value>,
    expected: &Expected<'_>,
    now: u64,
) -> Result<(), AuthFailure> {
    let invalid = AuthFailure::InvalidToken;
    let exp = claims.get("exp").and_then(numeric_date).ok_or(invalid)?;
    if now > exp.saturating_add(expected.leeway) {
        return Err(AuthFailure::ExpiredToken);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = numeric_date(nbf).ok_or(invalid)?;
        if nbf > now.saturating_add(expected.leeway) {
            return Err(invalid);
        }
    }
    if let Some(iat) = claims.get("iat") {
        let iat = numeric_date(iat).ok_or(invalid)?;
        let skew = expected.leeway.max(IAT_SKEW.as_secs());
        if iat > now.saturating_add(skew) {
            return Err(invalid);
        }
    }
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(invalid);
    }
    let audience_named = match claims.get("aud") {
        Some(Value::String(aud)) => aud == expected.audience,
        Some(Value::Array(auds)) => auds
            .iter()
            .any(|aud| aud.as_str() == Some(expected.audience)),
        _ => false,
    };
    if !audience_named {
        return Err(invalid);
    }
    let subject = claims.get("sub").and_then(Value::as_str);
    if subject.is_none_or(str::is_empty) {
        return Err(invalid);
    }
    if !is_access_token(typ, claims, expected) {
        return Err(invalid);
    }
    Ok(())
}

/// A NumericDate (RFC 7519 §2): a non-negative number of seconds (a
/// fraction is dropped).
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs < u64::MAX as f64)
            // In range and finite: the cast truncates, as intended.
            .map(|secs| secs as u64)
    })
}

/// What the JOSE header's `typ` says the token is.
#[derive(PartialEq, Eq)]
enum Declared {
    /// `at+jwt` (RFC 9068): an access token.
    AccessToken,
    /// Nothing, or the generic `JWT`.
    Untyped,
}

/// Whether the token is an access token by every signal it gives: its
/// header's `typ`, a `typ` claim, and the claims only ID tokens carry.
fn is_access_token(typ: &Typ, claims: &Map<String, Value>, expected: &Expected<'_>) -> bool {
    let declared = match typ {
        Typ::Absent => Declared::Untyped,
        Typ::NotText => return false,
        Typ::Text(typ) => match media_type(typ).as_str() {
            "at+jwt" => Declared::AccessToken,
            "jwt" => Declared::Untyped,
            // Another explicit type (an ID token's, a logout token's):
            // whatever it is, it is not an access token.
            _ => return false,
        },
    };
    let typ_claim = match claims.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(typ.as_str()),
        Some(_) => return false,
    };
    if typ_claim.is_some_and(|typ| {
        !ACCESS_TOKEN_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(typ))
    }) {
        return false;
    }
    if expected.require_at_jwt {
        return declared == Declared::AccessToken;
    }
    // Typed as an access token by the provider (header, or Keycloak's
    // claim): the provider said so, under its signature.
    if declared == Declared::AccessToken || typ_claim.is_some() {
        return true;
    }
    !looks_like_an_id_token(claims, expected.audience)
}

/// `typ` as a media type: lower case, `application/` dropped (RFC 7515
/// §4.1.9 allows both spellings).
fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// An untyped token carrying what only an ID token carries: `nonce`,
/// `at_hash`, `c_hash` or `s_hash`; or `auth_time` with `azp` equal to the
/// configured audience (an ID token is issued *to* its client, `azp`, and
/// says when the user authenticated; an access token names the client that
/// asked for it, which is not this service).
fn looks_like_an_id_token(claims: &Map<String, Value>, audience: &str) -> bool {
    ID_TOKEN_CLAIMS
        .iter()
        .any(|claim| claims.contains_key(*claim))
        || (claims.contains_key("auth_time")
            && claims.get("azp").and_then(Value::as_str) == Some(audience))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://op.example";
    const AUD: &str = "https://rpc.example";

    fn expected(require_at_jwt: bool) -> Expected<'static> {
        Expected {
            issuer: ISS,
            audience: AUD,
            leeway: 0,
            require_at_jwt,
        }
    }

    fn claims(edit: impl FnOnce(&mut Map<String, Value>)) -> Map<String, Value> {
        let mut claims = json!({
            "iss": ISS, "aud": AUD, "sub": "s1", "iat": NOW, "exp": NOW + 60,
            "client_id": "app", "scope": "a b", "jti": "j1",
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        edit(&mut claims);
        claims
    }

    fn text(typ: &str) -> Typ {
        Typ::Text(typ.to_owned())
    }

    fn verdict(typ: &Typ, claims: &Map<String, Value>) -> Result<(), AuthFailure> {
        check(typ, claims, &expected(false), NOW)
    }

    #[test]
    fn at_jwt_in_any_spelling_is_an_access_token() {
        for typ in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/AT+jwt",
        ] {
            assert_eq!(verdict(&text(typ), &claims(|_| {})), Ok(()), "{typ}");
            // Explicitly typed: ID-token-looking claims do not overrule it.
            let nonce = claims(|c| {
                c.insert("nonce".into(), json!("n"));
            });
            assert_eq!(verdict(&text(typ), &nonce), Ok(()), "{typ}");
            assert_eq!(check(&text(typ), &nonce, &expected(true), NOW), Ok(()));
        }
    }

    #[test]
    fn untyped_tokens_are_access_tokens_unless_they_carry_id_token_claims() {
        for typ in [Typ::Absent, text("JWT"), text("application/jwt")] {
            assert_eq!(verdict(&typ, &claims(|_| {})), Ok(()));
            for claim in ["nonce", "at_hash", "c_hash", "s_hash"] {
                let id_token = claims(|c| {
                    c.insert(claim.into(), json!("x"));
                });
                assert_eq!(verdict(&typ, &id_token), Err(AuthFailure::InvalidToken));
            }
            // auth_time alone, or azp alone, or azp naming another client:
            // access tokens may carry these.
            let auth_time = claims(|c| {
                c.insert("auth_time".into(), json!(NOW - 5));
            });
            assert_eq!(verdict(&typ, &auth_time), Ok(()));
            let azp = claims(|c| {
                c.insert("azp".into(), json!(AUD));
            });
            assert_eq!(verdict(&typ, &azp), Ok(()));
            let other_client = claims(|c| {
                c.insert("auth_time".into(), json!(NOW - 5));
                c.insert("azp".into(), json!("app"));
            });
            assert_eq!(verdict(&typ, &other_client), Ok(()));
            // Both, the client being this service: an ID token.
            let id_token = claims(|c| {
                c.insert("auth_time".into(), json!(NOW - 5));
                c.insert("azp".into(), json!(AUD));
            });
            assert_eq!(verdict(&typ, &id_token), Err(AuthFailure::InvalidToken));
            // --oidc-require-at-jwt: no untyped token at all.
            assert_eq!(
                check(&typ, &claims(|_| {}), &expected(true), NOW),
                Err(AuthFailure::InvalidToken)
            );
        }
    }

    #[test]
    fn other_and_non_string_types_are_refused() {
        for typ in [
            Typ::NotText,
            text("id_token+jwt"),
            text("logout+jwt"),
            text("dpop+jwt"),
            text(""),
        ] {
            assert_eq!(
                verdict(&typ, &claims(|_| {})),
                Err(AuthFailure::InvalidToken),
                "{typ:?}"
            );
        }
        for claim in [
            json!(null),
            json!(7),
            json!(["Bearer"]),
            json!("ID"),
            json!("Refresh"),
        ] {
            let typed = claims(|c| {
                c.insert("typ".into(), claim.clone());
            });
            for header in [Typ::Absent, text("at+jwt")] {
                assert_eq!(
                    verdict(&header, &typed),
                    Err(AuthFailure::InvalidToken),
                    "{claim}"
                );
            }
        }
    }

    #[test]
    fn keycloaks_typ_claim_types_an_untyped_token() {
        let keycloak = claims(|c| {
            c.insert("typ".into(), json!("Bearer"));
            c.insert("azp".into(), json!(AUD));
            c.insert("auth_time".into(), json!(NOW - 5));
            c.insert("nonce".into(), json!("n"));
        });
        assert_eq!(verdict(&text("JWT"), &keycloak), Ok(()));
        assert_eq!(
            check(&text("JWT"), &keycloak, &expected(true), NOW),
            Err(AuthFailure::InvalidToken)
        );
    }

    #[test]
    fn times_issuer_audience_and_subject() {
        let at = text("at+jwt");
        let refused = |edit: fn(&mut Map<String, Value>)| verdict(&at, &claims(edit));
        assert_eq!(
            refused(|c| {
                c.insert("exp".into(), json!(NOW - 1));
            }),
            Err(AuthFailure::ExpiredToken)
        );
        assert_eq!(
            refused(|c| {
                c.insert("exp".into(), json!(NOW));
            }),
            Ok(()),
            "valid through its exp second"
        );
        assert_eq!(
            refused(|c| {
                c.insert("exp".into(), json!((NOW + 60) as f64 + 0.5));
            }),
            Ok(())
        );
        let invalid: [fn(&mut Map<String, Value>); 12] = [
            |c| {
                c.remove("exp");
            },
            |c| {
                c.insert("exp".into(), json!("soon"));
            },
            |c| {
                c.insert("exp".into(), json!(-1));
            },
            |c| {
                c.insert("nbf".into(), json!(NOW + 1));
            },
            |c| {
                c.insert("nbf".into(), json!(null));
            },
            |c| {
                c.insert("iat".into(), json!(NOW + 61));
            },
            |c| {
                c.insert("iat".into(), json!("now"));
            },
            |c| {
                c.insert("iss".into(), json!("https://other.example"));
            },
            |c| {
                c.remove("aud");
            },
            |c| {
                c.insert("aud".into(), json!(["app", 7]));
            },
            |c| {
                c.insert("sub".into(), json!(""));
            },
            |c| {
                c.insert("sub".into(), json!(42));
            },
        ];
        for edit in invalid {
            let claims = claims(edit);
            assert_eq!(
                verdict(&at, &claims),
                Err(AuthFailure::InvalidToken),
                "{claims:?}"
            );
        }
        let fine: [fn(&mut Map<String, Value>); 4] = [
            |c| {
                c.insert("iat".into(), json!(NOW + 60));
            },
            |c| {
                c.remove("iat");
            },
            |c| {
                c.insert("nbf".into(), json!(NOW));
            },
            |c| {
                c.insert("aud".into(), json!(["app", AUD]));
            },
        ];
        for edit in fine {
            let claims = claims(edit);
            assert_eq!(verdict(&at, &claims), Ok(()), "{claims:?}");
        }
        // A leeway beyond the iat skew widens it.
        let far = claims(|c| {
            c.insert("iat".into(), json!(NOW + 100));
        });
        let mut lenient = expected(false);
        lenient.leeway = 120;
        assert_eq!(check(&at, &far, &lenient, NOW), Ok(()));
        assert_eq!(verdict(&at, &far), Err(AuthFailure::InvalidToken));
    }
}
