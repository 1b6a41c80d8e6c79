//! Operator policy: who may call what, and how often, decided by the
//! operator at start (and on reload) rather than by the code.
//!
//! A [`Policy`] changes a server's methods without rebuilding it:
//!
//! - per method, a requirement that replaces the declared one in a scheme
//!   (`scopes`: all needed; `any_of`: one of several scope sets suffices),
//!   or `enabled = false` (the method answers `-32601` and leaves the
//!   document);
//! - rate limits: `per_caller` (secured methods, per authenticated subject)
//!   and `per_ip` (public methods, and calls refused `-32001`, per client
//!   address), each overridable per method.
//!
//! Give it to the server in [`ServerConfig::policy`](crate::ServerConfig);
//! the [`PolicyHandle`](crate::server::PolicyHandle) of
//! [`RunningServer::policy`](crate::RunningServer::policy) replaces it while
//! the server runs. It is usually read from a TOML file ([`Policy::load`]):
//!
//! ```toml
//! [methods.get_caller]
//! scopes = ["reader"]                     # replaces the declared Bearer scopes (all needed)
//!
//! [methods.require_scopes]
//! any_of = [["admin"], ["scope1", "scope2"]]   # one of these sets suffices
//!
//! [methods.sign_up]
//! enabled = false                          # answers -32601 and leaves the document
//!
//! [methods."rpc.discover"]
//! scopes = []                              # any signed-in caller
//!
//! [limits]
//! per_caller = "600/min"                   # every secured method, per subject
//! per_ip = "1200/min"                      # public methods, per client address
//!
//! [limits.methods.sign_up]
//! per_ip = "5/min"                         # replaces the global per_ip for sign_up
//! ```
//!
//! The whole format:
//!
//! - `[methods.NAME]`: `scopes = [..]` or `any_of = [[..], ..]` (not both;
//!   `any_of` must not be empty, so a policy cannot make a secured method
//!   public), `scheme = "Bearer"` (the scheme these replace; default
//!   `Bearer`; alternatives in other schemes are kept), `enabled = bool`
//!   (default `true`; `rpc.discover` cannot be disabled).
//! - `[limits]`: `per_caller`, `per_ip` (rates, [`Rate`]), `max_keys` (most
//!   callers or addresses tracked per budget, default 100,000).
//! - `[limits.methods.NAME]`: `per_caller`, `per_ip`: the method's own
//!   budget, instead of the global one (it does not also draw from it).
//!   `per_caller` on a method that is public (under the policy) is an
//!   error: no caller is authenticated for a public method, so it could
//!   never apply (e.g. `refresh`: give it `per_ip`).
//! - `empty = true` (top level): the file means to set nothing.
//!
//! Any other key, a malformed rate or scope, or (when the server starts or
//! takes a new policy) a method the API does not declare or a scheme the
//! security function does not provide is an error naming the file, the line
//! and the key ([`PolicyError`]).
//!
//! **Fail-closed.** A file that sets nothing (empty, only comments, or cut
//! before its first entry by a half-finished write) is refused unless it
//! says `empty = true`, at start and on reload alike: a reload never drops
//! every restriction in force by accident, and the policy in force stays
//! (the refusal says why). A policy built in code ([`Policy::new`]) is
//! explicit as it is.
//!
//! **Budgets.** A budget is kept per server process: N instances behind a
//! load balancer allow N times each rate. Keys are the caller's scheme and
//! subject for `per_caller`, and the client address (IPv6 by /64) for
//! `per_ip`: packing calls into a batch or spreading them over WebSocket
//! sessions gets no extra budget. Which budget a call draws from:
//!
//! | call | budget |
//! |---|---|
//! | secured method, caller authenticated (let in, or refused `-32099`) | `per_caller` |
//! | secured method, no valid credential (`-32001`) | `per_ip` |
//! | public method | `per_ip` |
//!
//! An empty budget answers `-32005` with `retry_after_s`
//! ([`crate::limit`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use std::sync::Arc;

use crate::api::MethodDecl;
use crate::limit::Rate;
use crate::security::{MethodSecurity, Requirement, BEARER};

/// What the server's `rpc.discover` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Discover {
    /// The whole document, to every caller (the default).
    #[default]
    All,
    /// Only the methods the caller may call: the public ones, and the
    /// secured ones whose requirement its credentials meet. Credentials
    /// that do not authenticate count as none. `GET /openrpc.json` then
    /// answers what an anonymous caller sees.
    Caller,
}

impl std::str::FromStr for Discover {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Discover::All),
            "caller" => Ok(Discover::Caller),
            other => Err(format!("`{other}`: expected `all` or `caller`")),
        }
    }
}

/// An operator policy (see the module docs). `Default` changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Overrides by method name.
    pub methods: BTreeMap<String, MethodPolicy>,
    /// Rate limits.
    pub limits: Limits,
    /// Where it came from, for messages.
    origin: Origin,
}

/// The overrides of one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodPolicy {
    /// Replaces the declared alternatives of `scheme` with these (any one
    /// suffices); `None` keeps the declared requirement.
    pub any_of: Option<Vec<Vec<String>>>,
    /// The scheme `any_of` is about (default Bearer).
    pub scheme: String,
    /// `false`: the method answers `-32601` and is not in the document.
    pub enabled: bool,
}

impl Default for MethodPolicy {
    fn default() -> Self {
        MethodPolicy {
            any_of: None,
            scheme: BEARER.name().to_owned(),
            enabled: true,
        }
    }
}

impl MethodPolicy {
    /// The alternatives it puts in place of the declared ones of its
    /// scheme, if it replaces them.
    pub fn requirements(&self) -> Option<Vec<Requirement>> {
        self.any_of.as_ref().map(|sets| {
            sets.iter()
                .map(|scopes| Requirement::new(&self.scheme, &scopes[..]))
                .collect()
        })
    }
}

/// Rate limits (see the module docs for which call draws from which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Calls of secured methods per authenticated subject.
    pub per_caller: Option<Rate>,
    /// Calls of public methods (and refused calls of secured ones) per
    /// client address.
    pub per_ip: Option<Rate>,
    /// A method's own budgets, replacing the global ones for it.
    pub methods: BTreeMap<String, MethodLimits>,
    /// Most keys (callers or addresses) each budget tracks.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_caller: None,
            per_ip: None,
            methods: BTreeMap::new(),
            max_keys: crate::limit::DEFAULT_MAX_KEYS,
        }
    }
}

/// One method's own budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodLimits {
    /// Instead of [`Limits::per_caller`].
    pub per_caller: Option<Rate>,
    /// Instead of [`Limits::per_ip`].
    pub per_ip: Option<Rate>,
}

/// Where a policy came from: the file's name and the line of each method
/// entry, for error messages.
#[derive(Debug, Clone, Default, PartialEq)]
struct Origin {
    file: Option<PathBuf>,
    /// `(table, method)` to its line: table is `methods` or
    /// `limits.methods`.
    lines: BTreeMap<(&'static str, String), usize>,
}

/// A policy that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", location(file.as_deref(), *line))]
pub struct PolicyError {
    /// The file, when the policy was read from one.
    pub file: Option<PathBuf>,
    /// The line (1-based), when known.
    pub line: Option<usize>,
    /// What is wrong, naming the key.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// `empty = true`: the file means to set nothing.
    empty: Option<Spanned<bool>>,
    #[serde(default)]
    methods: BTreeMap<Spanned<String>, RawMethod>,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMethod {
    scopes: Option<Vec<Scope>>,
    any_of: Option<Vec<Vec<Scope>>>,
    scheme: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    per_caller: Option<RateText>,
    per_ip: Option<RateText>,
    max_keys: Option<usize>,
    #[serde(default)]
    methods: BTreeMap<Spanned<String>, RawMethodLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMethodLimits {
    per_caller: Option<RateText>,
    per_ip: Option<RateText>,
}

/// A rate as written (`"600/min"`), checked while the file is read so that
/// the error carries its line.
struct RateText(Rate);

impl<'de> Deserialize<'de> for RateText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map(RateText)
            .map_err(|err| serde::de::Error::custom(format!("`{text}` is not a rate: {err}")))
    }
}

/// A Bearer scope (RFC 6749 §3.3: printable ASCII but space, `"` and `\`).
struct Scope(String);

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let valid = !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if valid {
            Ok(Scope(text))
        } else {
            Err(serde::de::Error::custom(
                "a scope is 1 to 128 printable ASCII characters, without spaces, `\"` or `\\`",
            ))
        }
    }
}

/// A file that sets nothing is refused unless it says `empty = true`, so
/// that an empty or cut file (written half-way when the server started or
/// got SIGHUP) never passes for "no policy" and silently lifts every
/// restriction; and `empty = true` with entries is a contradiction.
fn check_empty_on_purpose(
    text: &str,
    empty: Option<Spanned<bool>>,
    sets_something: bool,
) -> Result<(), PolicyError> {
    let line = empty.as_ref().map(|e| line_of(text, e.span().start));
    let said_empty = empty.is_some_and(|e| *e.get_ref());
    let message = match (sets_something, said_empty) {
        (false, false) => {
            "the file sets nothing (no [methods.*] or [limits] entry): an empty or \
                           cut file is not taken for a policy; write `empty = true` to run \
                           without one"
        }
        (true, true) => "`empty = true`, but the file has entries: remove one or the other",
        _ => return Ok(()),
    };
    Err(PolicyError {
        file: None,
        line,
        message: message.to_owned(),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `FILE:LINE`, `FILE`, `policy:LINE` or `policy`.
fn location(file: Option<&Path>, line: Option<usize>) -> String {
    let file = file.map_or_else(|| "policy".to_owned(), |f| f.display().to_string());
    match line {
        Some(line) => format!("{file}:{line}"),
        None => file,
    }
}

impl Policy {
    /// An empty policy (changes nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|err| PolicyError {
            file: Some(path.to_owned()),
            line: None,
            message: format!("cannot read it ({})", crate::error::io_cause(&err)),
        })?;
        let mut policy = Self::parse(&text).map_err(|mut err| {
            err.file = Some(path.to_owned());
            err
        })?;
        policy.origin.file = Some(path.to_owned());
        Ok(policy)
    }

    /// Reads a policy from TOML text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| line_of(text, span.start));
            let at = line
                .and_then(|l| text.lines().nth(l - 1))
                .map(|l| format!(" (at `{}`)", l.trim()))
                .unwrap_or_default();
            PolicyError {
                file: None,
                line,
                message: format!("{}{at}", err.message().trim_end()),
            }
        })?;
        let mut origin = Origin::default();
        let mut methods = BTreeMap::new();
        for (name, entry) in raw.methods {
            let line = line_of(text, name.span().start);
            let name = name.into_inner();
            let refuse = |message: String| PolicyError {
                file: None,
                line: Some(line),
                message: format!("methods.\"{name}\": {message}"),
            };
            let any_of = match (entry.scopes, entry.any_of) {
                (Some(_), Some(_)) => {
                    return Err(refuse("give `scopes` or `any_of`, not both".into()))
                }
                (Some(scopes), None) => Some(vec![scopes]),
                (None, Some(sets)) if sets.is_empty() => {
                    return Err(refuse(
                        "`any_of` is empty (it would make the method public); use `scopes = []` for any signed-in caller".into(),
                    ))
                }
                (None, sets) => sets,
            };
            let enabled = entry.enabled.unwrap_or(true);
            if !enabled && name == crate::api::DISCOVER {
                return Err(refuse(
                    "cannot be disabled (restrict it with `scopes` instead)".into(),
                ));
            }
            let policy = MethodPolicy {
                any_of: any_of.map(|sets| {
                    sets.into_iter()
                        .map(|set| set.into_iter().map(|s| s.0).collect())
                        .collect()
                }),
                scheme: entry.scheme.unwrap_or_else(|| BEARER.name().to_owned()),
                enabled,
            };
            origin.lines.insert(("methods", name.clone()), line);
            methods.insert(name, policy);
        }
        let sets_limits = raw.limits.per_caller.is_some()
            || raw.limits.per_ip.is_some()
            || raw.limits.max_keys.is_some()
            || !raw.limits.methods.is_empty();
        check_empty_on_purpose(text, raw.empty, !methods.is_empty() || sets_limits)?;
        let mut limits = Limits {
            per_caller: raw.limits.per_caller.map(|r| r.0),
            per_ip: raw.limits.per_ip.map(|r| r.0),
            max_keys: raw
                .limits
                .max_keys
                .unwrap_or(crate::limit::DEFAULT_MAX_KEYS),
            methods: BTreeMap::new(),
        };
        if limits.max_keys == 0 {
            return Err(PolicyError {
                file: None,
                line: None,
                message: "limits.max_keys: must be at least 1".into(),
            });
        }
        for (name, entry) in raw.limits.methods {
            let line = line_of(text, name.span().start);
            let name = name.into_inner();
            origin.lines.insert(("limits.methods", name.clone()), line);
            limits.methods.insert(
                name,
                MethodLimits {
                    per_caller: entry.per_caller.map(|r| r.0),
                    per_ip: entry.per_ip.map(|r| r.0),
                },
            );
        }
        Ok(Policy {
            methods,
            limits,
            origin,
        })
    }

    /// The file it was read from, if any.
    pub fn file(&self) -> Option<&Path> {
        self.origin.file.as_deref()
    }

    /// Checks every name against the declared methods and the schemes of
    /// the security function.
    pub(crate) fn validate(&self, methods: &[&str], schemes: &[&str]) -> Result<(), PolicyError> {
        let known = || methods.join(", ");
        for (name, entry) in &self.methods {
            if !methods.contains(&name.as_str()) {
                return Err(self.error(
                    "methods",
                    name,
                    format!("no such method (the server declares: {})", known()),
                ));
            }
            if entry.any_of.is_some() && !schemes.contains(&entry.scheme.as_str()) {
                return Err(self.error(
                    "methods",
                    name,
                    format!(
                        "scheme `{}` is not one the security function provides ({})",
                        entry.scheme,
                        schemes.join(", ")
                    ),
                ));
            }
        }
        for name in self.limits.methods.keys() {
            if !methods.contains(&name.as_str()) {
                return Err(self.error(
                    "limits.methods",
                    name,
                    format!("no such method (the server declares: {})", known()),
                ));
            }
        }
        Ok(())
    }

    /// `decl` as this policy has it: its requirement replaced where the
    /// policy says so, its caller resolved on public calls when
    /// `resolve_caller` (`rpc.discover` in caller mode); `None` when the
    /// policy disables it.
    pub(crate) fn apply(
        &self,
        decl: &Arc<MethodDecl>,
        resolve_caller: bool,
    ) -> Option<Arc<MethodDecl>> {
        let overrides = self.methods.get(decl.name.as_ref());
        if overrides.is_some_and(|o| !o.enabled) {
            return None;
        }
        let mut decl = decl.clone();
        if let Some(replacing) = overrides.and_then(MethodPolicy::requirements) {
            let bearer = BEARER;
            let scheme = overrides.map_or(bearer.name(), |o| o.scheme.as_str());
            let kept: Vec<Requirement> = decl
                .security
                .alternatives()
                .iter()
                .filter(|alt| alt.scheme != scheme)
                .cloned()
                .collect();
            Arc::make_mut(&mut decl).security =
                MethodSecurity::any_of(replacing.into_iter().chain(kept));
        }
        if resolve_caller && decl.security.is_public() && !decl.optional_caller {
            Arc::make_mut(&mut decl).optional_caller = true;
        }
        Some(decl)
    }

    /// Refuses a `per_caller` budget of `[limits.methods.NAME]` when the
    /// method is public under this policy (`public`): no caller is
    /// authenticated for a public method, so the budget could never apply
    /// (its calls draw from `per_ip`).
    pub(crate) fn check_budgets(&self, name: &str, public: bool) -> Result<(), PolicyError> {
        let own_per_caller = self
            .limits
            .methods
            .get(name)
            .is_some_and(|limits| limits.per_caller.is_some());
        if public && own_per_caller {
            return Err(self.error(
                "limits.methods",
                name,
                "`per_caller` cannot apply: the method is public, so no caller is \
                 authenticated for it and its calls draw from `per_ip` (set `per_ip`, or \
                 secure the method with [methods.NAME] scopes)"
                    .replace("NAME", name),
            ));
        }
        Ok(())
    }

    fn error(&self, table: &'static str, name: &str, why: String) -> PolicyError {
        PolicyError {
            file: self.origin.file.clone(),
            line: self.origin.lines.get(&(table, name.to_owned())).copied(),
            message: format!("{table}.\"{name}\": {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[methods.get_caller]
scopes = ["reader"]

[methods.require_scopes]
any_of = [["admin"], ["scope1", "scope2"]]

[methods.sign_up]
enabled = false

[methods."rpc.discover"]
scopes = []

[limits]
per_caller = "600/min"
per_ip = "1200/min"

[limits.methods.sign_up]
per_ip = "5/min"
"#;

    #[test]
    fn the_design_example_reads() {
        let policy = Policy::parse(EXAMPLE).expect("valid");
        assert_eq!(
            policy.methods["get_caller"].any_of,
            Some(vec![vec!["reader".to_owned()]])
        );
        assert_eq!(
            policy.methods["require_scopes"]
                .requirements()
                .expect("replaced")
                .len(),
            2
        );
        assert!(!policy.methods["sign_up"].enabled);
        assert_eq!(
            policy.methods["rpc.discover"].any_of,
            Some(vec![Vec::<String>::new()])
        );
        assert_eq!(policy.limits.per_caller, "600/min".parse().ok());
        assert_eq!(
            policy.limits.methods["sign_up"].per_ip,
            "5/min".parse().ok()
        );
        let methods = ["rpc.discover", "get_caller", "require_scopes", "sign_up"];
        policy.validate(&methods, &["Bearer"]).expect("names known");
    }

    fn error(text: &str) -> PolicyError {
        Policy::parse(text).expect_err(text)
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let e = error("[limits]\nper_caller = \"6oo/min\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("per_caller"), "{e}");
        let e = error("[methods.x]\nscopes = [\"a\"]\nscope = [\"b\"]\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("unknown field `scope`"), "{e}");
        let e = error("[limits]\nper_ipp = \"1/s\"\n");
        assert!(e.message.contains("per_ipp"), "{e}");
        let e = error("\n\n[methods.x]\nscopes = []\nany_of = [[\"a\"]]\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("methods.\"x\""), "{e}");
        let e = error("[methods.x]\nany_of = []\n");
        assert!(e.message.contains("empty"), "{e}");
        let e = error("[methods.x]\nscopes = [\"has space\"]\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[methods.\"rpc.discover\"]\nenabled = false\n");
        assert!(e.message.contains("cannot be disabled"), "{e}");
        let e = error("[unknown]\n");
        assert_eq!(e.line, Some(1), "{e}");
        let e = error("[limits]\nmax_keys = 0\n");
        assert!(e.message.contains("max_keys"), "{e}");
    }

    #[test]
    fn a_file_that_sets_nothing_must_say_so() {
        for nothing in [
            "",
            "\n",
            "# the policy\n",
            "[limits]\n",
            "[methods]\n",
            "empty = false\n",
        ] {
            let e = error(nothing);
            assert!(e.message.contains("`empty = true`"), "{nothing:?}: {e}");
        }
        let empty = Policy::parse("# no policy, on purpose\nempty = true\n").expect("explicit");
        assert_eq!(empty.methods, BTreeMap::new());
        assert_eq!(empty.limits, Limits::default());
        let e = error("empty = true\n\n[methods.sign_up]\nenabled = false\n");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("has entries"), "{e}");
        // One entry is enough, whichever.
        for one in [
            "[methods.x]\nenabled = true\n",
            "[limits]\nmax_keys = 10\n",
            "[limits]\nper_ip = \"1/s\"\n",
            "[limits.methods.x]\n",
        ] {
            Policy::parse(one).expect(one);
        }
    }

    #[test]
    fn per_caller_on_a_public_method_is_refused_naming_the_entry() {
        let policy = Policy::parse(
            "[limits]\nper_caller = \"1/s\"\n\n[limits.methods.refresh]\nper_ip = \"1/s\"\nper_caller = \"1/s\"\n",
        )
        .expect("parses");
        let e = policy.check_budgets("refresh", true).expect_err("public");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("limits.methods.\"refresh\""), "{e}");
        assert!(e.message.contains("public"), "{e}");
        // Secured, or only per_ip, or the global per_caller: fine.
        policy.check_budgets("refresh", false).expect("secured");
        policy
            .check_budgets("sign_in", true)
            .expect("no own per_caller");
        let per_ip = Policy::parse("[limits.methods.refresh]\nper_ip = \"1/s\"\n").expect("parses");
        per_ip.check_budgets("refresh", true).expect("per_ip");
    }

    #[test]
    fn unknown_methods_and_schemes_are_named_with_their_line() {
        let policy = Policy::parse(
            "[methods.get_caller]\nscopes = []\n\n[limits.methods.nope]\nper_ip = \"1/s\"\n",
        )
        .expect("parses");
        let e = policy
            .validate(&["rpc.discover", "get_caller"], &["Bearer"])
            .expect_err("nope");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(
            e.message
                .contains("limits.methods.\"nope\": no such method"),
            "{e}"
        );
        let policy = Policy::parse("[methods.get_caller]\nscheme = \"Bearr\"\nscopes = []\n")
            .expect("parses");
        let e = policy
            .validate(&["get_caller"], &["Bearer"])
            .expect_err("scheme");
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("Bearr"), "{e}");
    }
}
