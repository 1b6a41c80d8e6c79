//! Tests of requirements, identities and the bearer header.

use super::credentials::parse_bearer;
use super::*;
use crate::error::AuthFailure;
use crate::RpcError;

const OPS: Scheme = Scheme::api_key("Ops", "x-ops-key");

fn bob() -> Caller {
    BEARER.caller("bob", ["profile"])
}

fn ops_bot() -> Caller {
    Caller::new("ops-bot", "Ops", ["deploy"])
}

fn reason(result: Result<Option<&Caller>, RpcError>) -> &'static str {
    match result {
        Err(RpcError::Unauthenticated(failure)) => failure.as_str(),
        other => panic!("expected -32001, got {other:?}"),
    }
}

#[test]
fn made_request_ids_read_as_the_prefix_and_the_counter_in_hex() {
    assert_eq!(RequestId::made(0x0a1b_2c3d, 0).as_str(), "0a1b2c3d-0");
    assert_eq!(RequestId::made(0xffff_ffff, 0x2f).as_str(), "ffffffff-2f");
    assert_eq!(
        RequestId::made(1, u64::MAX).to_string(),
        "00000001-ffffffffffffffff"
    );
    assert_eq!(RequestId::given("req-1").as_str(), "req-1");
}

#[test]
fn the_alternative_that_is_met_gives_the_caller_never_a_merge() {
    let both = Identities::new().found(bob()).found(ops_bot());
    let ops_only = OPS.require(["deploy"]);
    let caller = ops_only.check(&both).expect("ops key").expect("caller");
    assert_eq!(
        (caller.subject.as_str(), caller.scheme.as_str()),
        ("ops-bot", "Ops")
    );
    assert!(!caller.has_scope("profile"));
    // Bob's token cannot borrow the key's scope for a Bearer requirement.
    let bearer_deploy = BEARER.require(["deploy"]);
    assert!(matches!(
        bearer_deploy.check(&both),
        Err(RpcError::PermissionDenied(missing)) if missing["Bearer"] == ["deploy"]
    ));
}

#[test]
fn alternatives_are_tried_in_declared_order() {
    let both = Identities::new()
        .found(BEARER.caller("bob", ["deploy"]))
        .found(ops_bot());
    let bearer_first = BEARER.require(["deploy"]).or(OPS.require(["deploy"]));
    let ops_first = OPS.require(["deploy"]).or(BEARER.require(["deploy"]));
    let subject = |s: &MethodSecurity| s.check(&both).ok().flatten().map(|c| c.subject.clone());
    assert_eq!(subject(&bearer_first).as_deref(), Some("bob"));
    assert_eq!(subject(&ops_first).as_deref(), Some("ops-bot"));
    // Only one met: that one, whatever the order.
    let lacking = Identities::new().found(bob()).found(ops_bot());
    assert_eq!(
        bearer_first
            .check(&lacking)
            .ok()
            .flatten()
            .map(|c| c.subject.as_str()),
        Some("ops-bot")
    );
}

#[test]
fn refusals_say_why() {
    let signed_in = BEARER.require(());
    assert_eq!(reason(signed_in.check(&Identities::new())), "missing_token");
    let key_only = Identities::new().found(ops_bot());
    assert_eq!(reason(signed_in.check(&key_only)), "wrong_scheme");
    let expired = key_only
        .clone()
        .refused(BEARER.name(), AuthFailure::ExpiredToken);
    assert_eq!(reason(signed_in.check(&expired)), "expired_token");
    // A refused credential of a scheme the method does not accept is
    // not the method's business.
    let bad_key = Identities::new().refused("Ops", AuthFailure::InvalidToken);
    assert_eq!(reason(signed_in.check(&bad_key)), "missing_token");
    let bad_key_good_token = bad_key.found(bob());
    assert!(signed_in.check(&bad_key_good_token).is_ok());
}

#[test]
fn public_methods_get_the_first_identity() {
    let found = Identities::new().found(ops_bot()).found(bob());
    let caller = MethodSecurity::public().check(&found).expect("public");
    assert_eq!(caller.map(|c| c.subject.as_str()), Some("ops-bot"));
    assert!(MethodSecurity::public()
        .check(&Identities::new())
        .expect("public")
        .is_none());
}

#[test]
fn one_outcome_per_scheme_identity_first() {
    let found = Identities::new()
        .refused(BEARER.name(), AuthFailure::InvalidToken)
        .found(bob())
        .found(BEARER.caller("eve", ["admin"]))
        .refused(BEARER.name(), AuthFailure::ExpiredToken);
    let caller = found.get(BEARER.name()).and_then(Result::ok).expect("bob");
    assert_eq!(caller.subject, "bob");
    assert_eq!(found.callers().count(), 1);
}

#[test]
fn bearer_header_is_the_scheme_one_space_and_a_b64token() {
    for good in ["Bearer abc.DEF-_~+/=", "bearer x", "BEARER 0"] {
        assert!(parse_bearer(good.as_bytes()).is_ok(), "{good}");
    }
    assert_eq!(parse_bearer(b"Bearer a.b.c"), Ok("a.b.c"));
    for bad in [
        &b"Bearer"[..],
        b"Bearer ",
        b"Bearer  abc",
        b"Bearer\tabc",
        b"Basic abc",
        b"Bearerabc",
        b"Bearer ab c",
        b"Bearer ab\"c",
        b"Bearer \xc3\xa9",
        b"Bearer a,b",
    ] {
        assert_eq!(
            parse_bearer(bad),
            Err(AuthFailure::InvalidToken),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn signed_in_is_bearer_with_no_scopes() {
    assert_eq!(BEARER.require(()), BEARER.require(Vec::<String>::new()));
    assert_eq!(
        OPS.require(()).alternatives(),
        [Requirement::new("Ops", ())]
    );
}

#[test]
fn any_of_several_scope_sets_in_one_scheme() {
    let either = BEARER
        .require(["admin", "root"])
        .or(BEARER.require(["scope1", "scope2"]));
    assert_eq!(either.schemes().collect::<Vec<_>>(), ["Bearer"]);
    let admit = |scopes: &[&str]| {
        let found = Identities::new().found(BEARER.caller("bob", scopes));
        either.check(&found).map(|c| c.is_some())
    };
    assert!(matches!(admit(&["admin", "root"]), Ok(true)));
    assert!(matches!(admit(&["scope1", "scope2"]), Ok(true)));
    // Partial scopes of both: the alternative lacking the fewest is named.
    match admit(&["scope1"]) {
        Err(RpcError::PermissionDenied(missing)) => assert_eq!(missing["Bearer"], ["scope2"]),
        other => panic!("{other:?}"),
    }
    // Equals: the first declared.
    match admit(&[]) {
        Err(RpcError::PermissionDenied(missing)) => {
            assert_eq!(missing["Bearer"], ["admin", "root"])
        }
        other => panic!("{other:?}"),
    }
    // Adding an alternative twice changes nothing.
    assert_eq!(
        either.clone().or(BEARER.require(["scope2", "scope1"])),
        either
    );
}
