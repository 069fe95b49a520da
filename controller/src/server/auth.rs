//! Who is calling: the client certificate's sha256 is looked up in the store on every call, which is also the
//! revocation check.

use rollcall_proto::sha256_hex;
use tonic::{Request, Status};

use crate::store::{Role, Store};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
    /// sha256 of the certificate used for this call.
    pub fingerprint: String,
    /// That certificate is past half its life.
    pub renewal_due: bool,
}

/// Authenticate the caller of `req` and check it has one of `roles`.
pub fn authorize<T>(
    store: &Store,
    req: &Request<T>,
    roles: &[Role],
    now: i64,
) -> Result<Caller, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("this call needs a client certificate issued by this controller")
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated("this call needs a client certificate issued by this controller")
    })?;
    let fingerprint = sha256_hex(leaf);
    let mut record = store.cert(&fingerprint).map_err(internal)?.ok_or_else(|| {
        Status::unauthenticated("the client certificate is not known to this controller")
    })?;
    if record.revoked {
        return Err(Status::unauthenticated(format!(
            "the certificate of {} has been revoked",
            record.subject
        )));
    }
    if record.not_after <= now {
        return Err(Status::unauthenticated(format!(
            "the certificate of {} has expired",
            record.subject
        )));
    }
    if !roles.contains(&record.role) {
        return Err(Status::permission_denied(format!(
            "{} has the {:?} role; this call needs {}",
            record.subject,
            record.role,
            roles
                .iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    if let Some(old) = record.replaces.take() {
        // First use of a renewed certificate: the one it replaced is no longer needed.
        if let Some(mut previous) = store.cert(&old).map_err(internal)? {
            previous.revoked = true;
            store.put_cert(&old, &previous).map_err(internal)?;
        }
        store.put_cert(&fingerprint, &record).map_err(internal)?;
    }
    Ok(Caller {
        renewal_due: record.renewal_due(now),
        subject: record.subject,
        role: record.role,
        fingerprint,
    })
}

/// Store and I/O failures are the controller's problem, not the caller's.
pub fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "Internal error.");
    Status::internal(e.to_string())
}
