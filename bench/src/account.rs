//! The benchmark's account on rpcguard: created once, before any load, and
//! the tokens the scenarios send.

use anyhow::{bail, Context};

use crate::load;
use crate::server::ServerProcess;

/// The benchmark account's username.
pub const USER: &str = "benchuser";
/// The account the sign_in flood signs in as: its own, so that the live
/// sessions it opens (the server ends an account's oldest past its limit)
/// never end the session of [`USER`]'s token, which the load uses.
pub const FLOOD_USER: &str = "benchflood";
/// The benchmark account's password.
pub const PASSWORD: &str = "bench password 1";

/// The account's credentials as the scenarios send them.
pub struct Account {
    /// A valid access token of [`USER`].
    pub token: String,
    /// [`Account::token`] with its signature spoiled.
    pub invalid_token: String,
}

impl Account {
    /// Signs [`USER`] up on rpcguard, signs in for a token, and checks that
    /// the baseline answers `ping`.
    pub async fn set_up(
        rpcguard: &ServerProcess,
        baseline: &ServerProcess,
    ) -> anyhow::Result<Account> {
        sign_up(rpcguard, USER).await?;
        sign_up(rpcguard, FLOOD_USER).await?;
        let token = sign_in(rpcguard, USER).await?;
        check_baseline_ping(baseline).await?;
        Ok(Account {
            invalid_token: spoil_signature(&token),
            token,
        })
    }
}

/// Signs [`USER`] up on another rpcguard server and returns a token.
pub async fn token_on(rpcguard: &ServerProcess) -> anyhow::Result<String> {
    sign_up(rpcguard, USER).await?;
    sign_in(rpcguard, USER).await
}

/// Signs `username` up on rpcguard with [`PASSWORD`].
pub async fn sign_up(rpcguard: &ServerProcess, username: &str) -> anyhow::Result<()> {
    let sign_up = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"sign_up","params":{{"username":"{username}","password":"{PASSWORD}"}}}}"#
    );
    let (status, body) = load::call_once(rpcguard.addr, &sign_up, None).await?;
    if status != 200 || !body.contains("\"result\"") {
        bail!("sign_up of {username} failed: HTTP {status} {body}");
    }
    Ok(())
}

/// Signs `username` in with [`PASSWORD`]; returns its access token.
pub async fn sign_in(rpcguard: &ServerProcess, username: &str) -> anyhow::Result<String> {
    let sign_in = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"sign_in","params":["{username}","{PASSWORD}"]}}"#
    );
    let (status, body) = load::call_once(rpcguard.addr, &sign_in, None).await?;
    let answer: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("sign_in answered HTTP {status} {body}"))?;
    let token = answer["result"]["access_token"]
        .as_str()
        .with_context(|| format!("sign_in answered {body}"))?;
    Ok(token.to_owned())
}

async fn check_baseline_ping(baseline: &ServerProcess) -> anyhow::Result<()> {
    let (status, body) = load::call_once(
        baseline.addr,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        None,
    )
    .await?;
    if status != 200 || !body.contains("\"result\"") {
        bail!("baseline ping failed: HTTP {status} {body}");
    }
    Ok(())
}

/// The token with the first character of its signature changed: well
/// formed, so the server runs the whole HMAC check before refusing it.
fn spoil_signature(token: &str) -> String {
    let signature_at = token.rfind('.').map(|i| i + 1).unwrap_or(0);
    let (head, signature) = token.split_at(signature_at);
    let mut chars = signature.chars();
    match chars.next() {
        Some(first) => {
            let changed = if first == 'A' { 'B' } else { 'A' };
            format!("{head}{changed}{}", chars.as_str())
        }
        None => token.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::spoil_signature;

    #[test]
    fn spoils_the_first_character_of_the_signature_only() {
        assert_eq!(spoil_signature("h.p.Abc"), "h.p.Bbc");
        assert_eq!(spoil_signature("h.p.xyz"), "h.p.Ayz");
        assert_eq!(spoil_signature("h.p."), "h.p.");
        assert_eq!(spoil_signature("noDots"), "AoDots");
    }
}
