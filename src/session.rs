//! Sessions: what `sign_in` opens, `refresh` renews, and `sign_out`,
//! `change_password`, reuse detection, disabling an account and
//! `rpcguard user sign-out` end.
//!
//! - A session has an id (128 random bits, 32 hex digits), named by the
//!   claim `sid` of every access token issued in it. The Bearer check asks
//!   for the session on every call; the server's store answers from its
//!   exact in-memory state ([`CachedStore`](crate::store::CachedStore)), so
//!   an ended session stops its access tokens at the very next call, with
//!   no database round trip per call.
//! - Refresh tokens are opaque: 256 bits from the OS-seeded CSPRNG,
//!   base64url (43 characters). The store keeps only their SHA-256, so a
//!   leaked database gives no usable refresh token; and checking one costs a
//!   hash and an indexed read, never bcrypt, so a flood of made-up refresh
//!   tokens is cheap to refuse. A malformed one is refused before any read.
//! - Rotation (RFC 9700 §4.14.2): every `refresh` makes the presented token
//!   dead and issues the next one. Which of two concurrent `refresh` calls
//!   with one token wins is decided by one conditional `UPDATE` (the
//!   session's generation moves on only if it is still the presented
//!   token's); the loser, and anyone presenting a rotated token later, is
//!   treated as a thief: the whole session ends (`revoked_token`).
//! - The scopes a session may use are limited when `sign_in` asked for a
//!   list (`scope_limit`); at every call the scopes in force are those the
//!   user holds *now* ∩ that limit.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Length of a refresh token: 32 bytes in unpadded base64url.
pub const REFRESH_TOKEN_CHARS: usize = 43;

/// A session as the auth check needs it, shared and free of secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// The session id (claim `sid`).
    pub id: String,
    /// The account it belongs to (checked against the token's `uid`).
    pub account_id: String,
    /// The account's lower-cased name.
    pub username_key: String,
    /// The scopes the session may use (`None`: no limit), sorted.
    pub scope_limit: Option<Vec<String>>,
    /// Ended for good (sign-out, reuse, password change, disabled, CLI).
    pub ended: bool,
}

impl SessionState {
    /// The scopes in force for a caller holding `held` now: `held` ∩ the
    /// session's limit (all of `held` when there is no limit).
    pub fn scopes_in_force<'a>(&'a self, held: &'a [String]) -> impl Iterator<Item = &'a str> {
        held.iter()
            .filter(move |scope| {
                self.scope_limit
                    .as_ref()
                    .is_none_or(|limit| limit.binary_search(scope).is_ok())
            })
            .map(String::as_str)
    }
}

/// A session to open ([`UserStore::open_session`](crate::store::UserStore::open_session)).
#[derive(Clone, Copy)]
pub struct NewSession<'a> {
    /// The account's name (any case).
    pub username: &'a str,
    /// The account's id: the session opens only if it is still this account.
    pub account_id: &'a str,
    /// The new session's id ([`new_session_id`]).
    pub session_id: &'a str,
    /// The scopes the session may use (`None`: no limit), sorted.
    pub scope_limit: Option<&'a [String]>,
    /// The hash of its first refresh token ([`new_refresh_token`]).
    pub refresh_hash: &'a str,
    /// Now, Unix seconds.
    pub now: i64,
    /// When the first refresh token expires, Unix seconds.
    pub refresh_expires_at: i64,
    /// The account's credentials epoch when its password was verified
    /// ([`StoredUser::epoch`](crate::store::StoredUser::epoch)): the session
    /// opens only if it is still this one (no password change, disable or
    /// end of every session committed meanwhile).
    pub epoch: i64,
    /// Most live sessions of the account: the oldest beyond it are ended
    /// when this one opens (`0`: no bound).
    pub max_sessions: u32,
}

impl std::fmt::Debug for NewSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("username", &self.username)
            .field("session_id", &self.session_id)
            .field("scope_limit", &self.scope_limit)
            .finish_non_exhaustive()
    }
}

/// What a caller can make the server keep per session and per account,
/// each with a flag of `rpcguard serve`. The README's Limits section gives
/// the worst-case bytes per account that follow from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Most scopes one `sign_in` may list (`--max-sign-in-scopes`).
    pub max_scopes: usize,
    /// Most bytes of those scopes together, separators counted
    /// (`--max-sign-in-scope-bytes`).
    pub max_scope_bytes: usize,
    /// Most live sessions per account (`--max-sessions-per-account`): a
    /// `sign_in` beyond it ends the account's oldest sessions, so the newest
    /// sign-in always works and a forgotten device drops out. `0`: no bound.
    pub max_sessions: u32,
    /// Rotated-out refresh tokens kept per session for reuse detection
    /// (`--refresh-history`): at least the last this many, at most twice as
    /// many (older ones are deleted in bulk every this many rotations).
    /// Presenting a token older than that is `invalid_token`, not reuse.
    pub refresh_history: u32,
}

impl SessionLimits {
    /// The default bound on scopes per `sign_in`.
    pub const DEFAULT_MAX_SCOPES: usize = 16;
    /// The default bound on their bytes.
    pub const DEFAULT_MAX_SCOPE_BYTES: usize = 512;
    /// The default bound on live sessions per account.
    pub const DEFAULT_MAX_SESSIONS: u32 = 50;
    /// The default number of rotated refresh tokens kept per session.
    pub const DEFAULT_REFRESH_HISTORY: u32 = 8;

    /// Checks the scopes a `sign_in` asks for against the bounds: `Err`
    /// names the bound (for `-32602`), never the scopes.
    pub fn check_scopes<S: AsRef<str>>(&self, scopes: &[S]) -> Result<(), String> {
        if scopes.len() > self.max_scopes {
            return Err(format!(
                "scopes: at most {} scopes per sign_in (--max-sign-in-scopes); got {}",
                self.max_scopes,
                scopes.len()
            ));
        }
        let bytes = scopes
            .iter()
            .map(|s| s.as_ref().len())
            .sum::<usize>()
            .saturating_add(scopes.len().saturating_sub(1));
        if bytes > self.max_scope_bytes {
            return Err(format!(
                "scopes: at most {} bytes of scopes per sign_in (--max-sign-in-scope-bytes); got {bytes}",
                self.max_scope_bytes
            ));
        }
        Ok(())
    }
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_scopes: Self::DEFAULT_MAX_SCOPES,
            max_scope_bytes: Self::DEFAULT_MAX_SCOPE_BYTES,
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
            refresh_history: Self::DEFAULT_REFRESH_HISTORY,
        }
    }
}

/// A presented refresh token as stored, found by its hash
/// ([`UserStore::find_refresh`](crate::store::UserStore::find_refresh)):
/// what `refresh` needs to draw from the session's budget before it
/// rotates anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// The token's session.
    pub session_id: String,
    /// The token's generation.
    pub generation: i64,
    /// When the token expires, Unix seconds.
    pub expires_at: i64,
    /// The session's current generation.
    pub current: i64,
    /// Whether the session has ended.
    pub ended: bool,
    /// The lower-cased name of the session's user.
    pub username_key: String,
}

/// What presenting a refresh token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the session's current one: it is dead now and the
    /// session goes on with the new one.
    Rotated(SessionState),
    /// No such token (never issued, or purged).
    Unknown,
    /// The token was current but past its expiry.
    Expired,
    /// The token's session had already ended.
    Ended,
    /// The token had already been rotated (or lost a race to rotate it):
    /// reuse. The session was ended now.
    Reused {
        /// The session that was ended.
        session_id: String,
        /// The lower-cased name of the session's user, for the log.
        username_key: String,
    },
}

/// A new session id: 128 random bits as 32 hex digits.
pub fn new_session_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A new refresh token and the hash the store keeps of it.
pub fn new_refresh_token() -> (String, String) {
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let hash = hash_hex(&token);
    (token, hash)
}

/// The stored hash of a presented refresh token, or `None` when it cannot
/// be one of ours (wrong length or alphabet): refused without a read.
pub fn refresh_token_hash(token: &str) -> Option<String> {
    let well_formed = token.len() == REFRESH_TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| hash_hex(token))
}

fn hash_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Joins scopes with spaces (RFC 6749 §3.3), as stored and as `Token.scope`.
pub fn join_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> String {
    scopes.into_iter().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_and_only_their_hash_is_kept() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), REFRESH_TOKEN_CHARS);
        assert_eq!(refresh_token_hash(&a), Some(hash_a.clone()));
        assert_eq!(hash_a.len(), 64);
        assert!(!hash_a.contains(&a));
        for bad in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", &a[..42]),
            &format!("{}.", &a[..42]),
        ] {
            assert_eq!(refresh_token_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn scopes_in_force_are_held_now_within_the_limit() {
        let mut session = SessionState {
            id: "s".into(),
            account_id: "a".into(),
            username_key: "alice".into(),
            scope_limit: None,
            ended: false,
        };
        let held = vec!["admin".to_owned(), "scope1".to_owned()];
        assert_eq!(
            session.scopes_in_force(&held).collect::<Vec<_>>(),
            ["admin", "scope1"]
        );
        session.scope_limit = Some(vec!["reader".into(), "scope1".into()]);
        assert_eq!(
            session.scopes_in_force(&held).collect::<Vec<_>>(),
            ["scope1"]
        );
        session.scope_limit = Some(Vec::new());
        assert_eq!(session.scopes_in_force(&held).count(), 0);
    }
}
