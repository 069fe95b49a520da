//! Who is calling: the client certificate's sha256 is looked up in the store on every call, which is also the
//! revocation check. The gate (`gate.rs`) does this before a request is read and hands the services the
//! [`Caller`].

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
    /// The address the call came from.
    pub from: String,
}

/// The caller the gate admitted for this request.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| internal("a call reached a service without passing the gate"))
}

/// Look up the certificate with this sha256: known, not revoked, not expired.
pub fn authenticate(store: &Store, fingerprint: &str, now: i64) -> Result<Caller, Status> {
    let mut record = store.cert(fingerprint).map_err(internal)?.ok_or_else(|| {
        Status::unauthenticated(format!(
            "the client certificate (sha256 {}) was not issued by this controller",
            &fingerprint[..fingerprint.len().min(16)]
        ))
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
    if let Some(old) = record.replaces.take() {
        // First use of a renewed certificate: the one it replaced is no longer needed.
        if let Some(mut previous) = store.cert(&old).map_err(internal)? {
            previous.revoked = true;
            store.put_cert(&old, &previous).map_err(internal)?;
        }
        store.put_cert(fingerprint, &record).map_err(internal)?;
    }
    Ok(Caller {
        renewal_due: record.renewal_due(now),
        subject: record.subject,
        role: record.role,
        fingerprint: fingerprint.to_owned(),
        from: String::new(),
    })
}

/// Store and I/O failures are the controller's problem, not the caller's.
pub fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "Internal error.");
    Status::internal(e.to_string())
}
