//! `rollcall users add|list|revoke` (and `rollcall-controller user add`, the same with DATA/admin): personal
//! credentials with a role. The key is made here and never sent; the bundle folder is what the person gets.

use std::path::Path;

use clap::{Subcommand, ValueEnum};
use rollcall_proto::v1;
use serde_json::json;

use super::output::{ago, print_json, table, when};
use super::{rpc, usage, AdminClient};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Everything.
    Admin,
    /// Reads everything and may retry devices; nothing else.
    Tech,
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Issue personal credentials (ca.crt, client.crt, client.key, controller) into a new folder.
    Add {
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Folder to write the credentials to (created; must not hold credentials already).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// People with their role and certificates.
    List,
    /// Revoke every certificate of a person; their open connections are closed.
    Revoke { name: String },
}

pub async fn run(cmd: UsersCmd, client: &AdminClient, json: bool) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::Add { name, role, out } => add(client, &name, role, &out, json).await,
        UsersCmd::List => {
            let resp = client
                .rpc
                .clone()
                .list_users(v1::ListUsersRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            let state = |u: &v1::UserInfo| {
                if u.revoked {
                    "revoked"
                } else if u.not_after_unix <= resp.now_unix {
                    "expired"
                } else {
                    "valid"
                }
            };
            if json {
                let users: Vec<_> = resp
                    .users
                    .iter()
                    .map(|u| {
                        json!({"name": u.name, "role": u.role, "fingerprint": u.fingerprint,
                               "issued_at": u.issued_at_unix, "not_after": u.not_after_unix,
                               "state": state(u)})
                    })
                    .collect();
                print_json(&json!({ "users": users }));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = resp
                .users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.role.clone(),
                        state(u).to_owned(),
                        u.fingerprint[..u.fingerprint.len().min(16)].to_owned(),
                        ago(u.issued_at_unix, resp.now_unix),
                        when(u.not_after_unix, resp.now_unix),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["USER", "ROLE", "STATE", "CERTIFICATE", "ISSUED", "EXPIRES"],
                    &rows
                )
            );
            Ok(())
        }
        UsersCmd::Revoke { name } => {
            let resp = client
                .rpc
                .clone()
                .revoke_user(v1::RevokeUserRequest { name: name.clone() })
                .await
                .map_err(rpc)?
                .into_inner();
            if json {
                print_json(
                    &json!({"user": name, "certificates_revoked": resp.certificates_revoked,
                                   "connections_closed": resp.connections_closed}),
                );
            } else {
                println!(
                    "{name}: {} certificate(s) revoked, {} open connection(s) closed.",
                    resp.certificates_revoked, resp.connections_closed
                );
            }
            Ok(())
        }
    }
}

pub async fn add(
    client: &AdminClient,
    name: &str,
    role: RoleArg,
    out: &Path,
    json: bool,
) -> anyhow::Result<()> {
    if out.join("client.key").exists() || out.join("client.crt").exists() {
        return Err(usage(format!(
            "{} already holds credentials; give a new folder",
            out.display()
        )));
    }
    let (key, csr_der) = rollcall_proto::tls::key_and_csr(name)
        .map_err(|e| anyhow::anyhow!("cannot make a key pair: {e}"))?;
    let resp = client
        .rpc
        .clone()
        .add_user(v1::AddUserRequest {
            name: name.to_owned(),
            role: match role {
                RoleArg::Admin => v1::UserRole::Admin,
                RoleArg::Tech => v1::UserRole::Tech,
            } as i32,
            csr_der,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let write = |file: &str, text: &str, mode: u32| {
        crate::error::write_atomic(&out.join(file), text.as_bytes(), mode)
    };
    write("client.key", &key.serialize_pem(), 0o600)?;
    write("client.crt", &resp.certificate_pem, 0o644)?;
    write("ca.crt", &resp.ca_certificate_pem, 0o644)?;
    write("controller", &format!("{}\n", client.url), 0o644)?;
    let role = match role {
        RoleArg::Admin => "admin",
        RoleArg::Tech => "tech",
    };
    if json {
        print_json(
            &json!({"user": name, "role": role, "creds": out.display().to_string(),
                           "fingerprint": resp.fingerprint, "not_after": resp.not_after_unix}),
        );
    } else {
        println!(
            "Credentials for {name} ({role}) written to {}: give them that folder; they run `rollcall --creds {}` (or copy it to ~/.config/rollcall).",
            out.display(),
            out.display()
        );
    }
    Ok(())
}
