//! `rpcguard user add|grant|revoke|delete|list|disable|enable|sign-out`:
//! accounts, changed directly in the store; the running servers see each
//! change at their next call and write it to their audit stream.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rpcguard::audit::Event;
use rpcguard_accounts::app;
use rpcguard_accounts::config::Config;
use rpcguard_accounts::user::{Password, Scope, Username};

use super::store::{announce, store_config, where_users_live, StoreArgs};

#[derive(Debug, Args)]
pub(crate) struct ScopeArgs {
    /// Username.
    name: String,
    /// Scopes.
    #[arg(required = true)]
    scopes: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Creates a user; the password is read from the first line of stdin.
    ///
    /// The hash is made at the cost most stored hashes have (the cost the
    /// server verifies unknown users at), so that the account answers a
    /// wrong password as fast as every other one and as an unknown name; on
    /// a store with no hashes yet, at the cost the server last started with
    /// (it publishes it in the store), else 12.
    Add {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
        /// bcrypt cost (default: the cost most stored hashes have, else the server's, else 12).
        #[arg(long, env = "RPCGUARD_BCRYPT_COST", value_parser = clap::value_parser!(u32).range(4..=31))]
        bcrypt_cost: Option<u32>,
    },
    /// Grants Bearer scopes to a user.
    Grant(ScopeArgs),
    /// Revokes Bearer scopes from a user.
    Revoke(ScopeArgs),
    /// Deletes a user (its tokens stop working at once).
    Delete {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists users: name, creation time, scopes, `disabled` or `enabled`,
    /// and the number of live sessions, under a header line.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// One JSON object per user and line, for scripts
        /// (`{"username","created_at","scopes","disabled","sessions"}`).
        #[arg(long)]
        json: bool,
    },
    /// Disables a user: sign_in answers -32004 (after a correct password)
    /// and every session ends at once.
    Disable {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enables a disabled user (ended sessions stay ended).
    Enable {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Ends every session of a user: its access and refresh tokens stop at once.
    SignOut {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_scopes(raw: Vec<String>) -> anyhow::Result<Vec<Scope>> {
    raw.into_iter()
        .map(|s| Scope::parse(s).map_err(anyhow::Error::msg))
        .collect()
}

/// `user grant` (`grant = true`) or `user revoke`.
async fn change_scopes(args: ScopeArgs, grant: bool) -> anyhow::Result<()> {
    let username = Username::parse(args.name).map_err(anyhow::Error::msg)?;
    let scopes = parse_scopes(args.scopes)?;
    let config = store_config(args.store);
    let store = app::open_existing_store(&config).await?;
    let changed = if grant {
        store.grant(&username, &scopes).await
    } else {
        store.revoke(&username, &scopes).await
    };
    let user = match changed {
        Err(rpcguard_accounts::store::StoreError::NotFound) => {
            bail!("no user {username} in {}", where_users_live(&config))
        }
        other => other?,
    };
    let changed: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let event = if grant {
        Event::ScopesGranted
    } else {
        Event::ScopesRevoked
    };
    announce(&*store, event, &user.username, &changed.join(" ")).await;
    if user.scopes.is_empty() {
        println!("{}: no scopes", user.username);
    } else {
        println!("{}: {}", user.username, user.scopes.join(" "));
    }
    Ok(())
}

/// `user disable` (`disabled = true`) or `user enable`.
async fn set_disabled(name: String, store: StoreArgs, disabled: bool) -> anyhow::Result<()> {
    let username = Username::parse(name).map_err(anyhow::Error::msg)?;
    let config = store_config(store);
    let store = app::open_existing_store(&config).await?;
    let now = rpcguard_accounts::clock::unix_now().context("clock before 1970")?;
    match store
        .set_disabled(&username, disabled, i64::try_from(now)?)
        .await
    {
        Err(rpcguard_accounts::store::StoreError::NotFound) => {
            bail!("no user {username} in {}", where_users_live(&config))
        }
        Err(other) => return Err(other.into()),
        Ok(ended) if disabled => {
            let detail = format!("{} sessions ended", ended.len());
            announce(&*store, Event::AccountDisabled, username.as_str(), &detail).await;
            println!("{username}: disabled, {} sessions ended", ended.len())
        }
        Ok(_) => {
            announce(&*store, Event::AccountEnabled, username.as_str(), "").await;
            println!("{username}: enabled")
        }
    }
    Ok(())
}

pub(crate) async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            store,
            bcrypt_cost,
        } => {
            let username = Username::parse(name).map_err(anyhow::Error::msg)?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                bail!("no password on standard input: echo 'a password' | rpcguard user add {username}");
            }
            let password = Password::parse(line).map_err(anyhow::Error::msg)?;
            let store = app::open_existing_store(&store_config(store)).await?;
            let bcrypt_cost = match bcrypt_cost {
                Some(cost) => cost,
                None => {
                    let servers = store
                        .setting(app::BCRYPT_COST_SETTING)
                        .await?
                        .and_then(|cost| cost.parse().ok())
                        .unwrap_or(Config::new(".").bcrypt_cost);
                    rpcguard_accounts::auth::password::prevailing_cost(
                        &store.password_hash_costs().await?,
                        servers,
                    )
                }
            };
            let hasher =
                rpcguard_accounts::auth::password::PasswordHasher::new(bcrypt_cost, 1, 1).await?;
            let hash = hasher.hash(&password).await?;
            let now = rpcguard_accounts::clock::unix_now().context("clock before 1970")?;
            match store
                .create_user(&username, &hash, i64::try_from(now)?)
                .await
            {
                Ok(user) => println!("created {}", user.username),
                Err(rpcguard_accounts::store::StoreError::UsernameTaken) => {
                    bail!("username {username} is taken")
                }
                Err(other) => return Err(other.into()),
            }
        }
        UserCommand::Grant(args) => change_scopes(args, true).await?,
        UserCommand::Revoke(args) => change_scopes(args, false).await?,
        UserCommand::Delete { name, store } => {
            let username = Username::parse(name).map_err(anyhow::Error::msg)?;
            let config = store_config(store);
            let store = app::open_existing_store(&config).await?;
            if !store.delete_user(&username).await? {
                bail!("no user {username} in {}", where_users_live(&config));
            }
            announce(&*store, Event::AccountDeleted, username.as_str(), "").await;
            println!("deleted {username}");
        }
        UserCommand::List { store, json } => {
            let store = app::open_existing_store(&store_config(store)).await?;
            let now =
                i64::try_from(rpcguard_accounts::clock::unix_now().context("clock before 1970")?)?;
            let sessions: std::collections::HashMap<String, u64> =
                store.live_session_counts(now).await?.into_iter().collect();
            if !json {
                println!("USERNAME\tCREATED\tSCOPES\tSTATE\tSESSIONS");
            }
            for user in store.list_users().await? {
                let public = user.public();
                let live = sessions
                    .get(&user.username.to_ascii_lowercase())
                    .copied()
                    .unwrap_or(0);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "username": public.username,
                            "created_at": public.created_at,
                            "scopes": user.scopes,
                            "disabled": user.disabled,
                            "sessions": live,
                        })
                    );
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{live}",
                        public.username,
                        public.created_at,
                        if user.scopes.is_empty() {
                            "-".to_owned()
                        } else {
                            user.scopes.join(" ")
                        },
                        if user.disabled { "disabled" } else { "enabled" },
                    );
                }
            }
        }
        UserCommand::Disable { name, store } => set_disabled(name, store, true).await?,
        UserCommand::Enable { name, store } => set_disabled(name, store, false).await?,
        UserCommand::SignOut { name, store } => {
            let username = Username::parse(name).map_err(anyhow::Error::msg)?;
            let config = store_config(store);
            let store = app::open_existing_store(&config).await?;
            if store.find_user(username.as_str()).await?.is_none() {
                bail!("no user {username} in {}", where_users_live(&config));
            }
            let now = rpcguard_accounts::clock::unix_now().context("clock before 1970")?;
            let ended = store
                .end_sessions(username.as_str(), None, i64::try_from(now)?)
                .await?;
            let detail = format!("{} sessions ended", ended.len());
            announce(&*store, Event::SessionsEnded, username.as_str(), &detail).await;
            println!("{username}: {} sessions ended", ended.len());
        }
    }
    Ok(())
}
