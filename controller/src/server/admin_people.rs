//! People: personal client certificates with a role (`rollcall users add|list|revoke`). The CLI makes the key and
//! the CSR; the controller signs for the name and role it is given, and records the certificate, audited.

use std::sync::Arc;

use rollcall_proto::{sha256_hex, v1};
use tonic::{Request, Response, Status};

use super::auth::{caller, internal};
use super::{audit_entry, now, untrusted, Shared};
use crate::store::{CertRecord, Role, Table};

pub(crate) struct People {
    pub shared: Arc<Shared>,
}

/// A person's name: 1-64 of lower-case letters, digits, '.', '_', '-', starting with a letter or digit; not one
/// an agent id could take.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.starts_with("ag-")
}

fn role_of(role: i32) -> Result<Role, Status> {
    match v1::UserRole::try_from(role).unwrap_or(v1::UserRole::Unspecified) {
        v1::UserRole::Admin => Ok(Role::Admin),
        v1::UserRole::Tech => Ok(Role::Tech),
        v1::UserRole::Unspecified => Err(Status::invalid_argument(
            "a person needs a role: admin or tech",
        )),
    }
}

impl People {
    pub async fn add(
        &self,
        req: Request<v1::AddUserRequest>,
    ) -> Result<Response<v1::AddUserResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        let s = &self.shared;
        let name = req.name.trim();
        if !valid_name(name) {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a valid user name (1-64 of a-z, 0-9, '.', '_', '-'; not starting with \"ag-\")",
                untrusted(name)
            )));
        }
        let role = role_of(req.role)?;
        let now = now();
        if let Some((_, existing)) = s
            .store
            .certs_of(name)
            .map_err(internal)?
            .into_iter()
            .find(|(_, c)| !c.revoked && c.not_after > now)
        {
            return Err(Status::already_exists(format!(
                "user {name} exists (role {}); revoke it first with `rollcall users revoke {name}`",
                existing.role.as_str()
            )));
        }
        let issued =
            s.ca.sign_csr(&req.csr_der, name, s.config.user_cert_validity)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let fingerprint = sha256_hex(&issued.der);
        let record = CertRecord {
            subject: name.to_owned(),
            role,
            issued_at: now,
            not_after: issued.not_after,
            revoked: false,
            replaces: None,
            renewed_by: None,
        };
        let entry = audit_entry(
            &caller,
            "user add",
            format!(
                "{name} role {} certificate {}",
                role.as_str(),
                &fingerprint[..16]
            ),
        );
        s.store
            .audited(&entry, |tx| tx.put(Table::Certs, &fingerprint, &record))
            .map_err(internal)?;
        s.store.flush().await.map_err(internal)?;
        Ok(Response::new(v1::AddUserResponse {
            certificate_pem: issued.pem,
            ca_certificate_pem: s.ca.cert_pem().to_owned(),
            not_after_unix: issued.not_after,
            fingerprint,
        }))
    }

    pub async fn list(&self) -> Result<Response<v1::ListUsersResponse>, Status> {
        let mut users: Vec<v1::UserInfo> = self
            .shared
            .store
            .people()
            .map_err(internal)?
            .into_iter()
            .map(|(fp, c)| v1::UserInfo {
                name: c.subject,
                role: c.role.as_str().to_owned(),
                fingerprint: fp,
                issued_at_unix: c.issued_at,
                not_after_unix: c.not_after,
                revoked: c.revoked,
            })
            .collect();
        users.sort_by(|a, b| (&a.name, b.issued_at_unix).cmp(&(&b.name, a.issued_at_unix)));
        Ok(Response::new(v1::ListUsersResponse {
            users,
            now_unix: now(),
        }))
    }

    pub async fn revoke(
        &self,
        req: Request<v1::RevokeUserRequest>,
    ) -> Result<Response<v1::RevokeUserResponse>, Status> {
        let caller = caller(&req)?;
        let name = req.into_inner().name.trim().to_owned();
        let s = &self.shared;
        let now = now();
        let people = s.store.people().map_err(internal)?;
        let live = |(_, c): &&(String, CertRecord)| !c.revoked && c.not_after > now;
        let theirs: Vec<String> = people
            .iter()
            .filter(|(_, c)| c.subject == name)
            .filter(live)
            .map(|(fp, _)| fp.clone())
            .collect();
        if theirs.is_empty() {
            return Err(Status::not_found(format!(
                "no user {} with a valid certificate",
                untrusted(&name)
            )));
        }
        let admins_left = people
            .iter()
            .filter(live)
            .filter(|(_, c)| c.role == Role::Admin && c.subject != name)
            .count();
        if admins_left == 0 {
            return Err(Status::failed_precondition(format!(
                "revoking {name} would leave no admin; add another admin first"
            )));
        }
        let entry = audit_entry(
            &caller,
            "user revoke",
            format!("{name} ({} certificate(s))", theirs.len()),
        );
        s.store.revoke_certs(&theirs, &entry).map_err(internal)?;
        s.store.flush().await.map_err(internal)?;
        let closed = s.connections.close_cert(&theirs);
        Ok(Response::new(v1::RevokeUserResponse {
            certificates_revoked: theirs.len() as u32,
            connections_closed: closed as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["jdoe", "j.doe", "tech-7", "a"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "JDoe", "-x", "ag-123", "a b", "x\n", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
