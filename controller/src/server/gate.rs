//! The gate every call passes before any service sees it: who is calling (the client certificate, looked up in
//! the store, which is also the revocation check), whether their role may call this method, how large a request
//! this method may send, and how often a source without a certificate may call. A refused call is answered from
//! here, before its request body is read.
//!
//! The rules for each method are in one table, [`METHODS`]; a method missing from it is refused.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;
use tonic::body::Body;
use tonic::{Code, Status};
use tracing::{info, warn};

use super::auth::{authenticate, Caller};
use super::conn::{OpenCall, Peer};
use super::{now, untrusted, Shared};
use crate::store::Role;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No certificate needed (enrollment); limited per source address.
    Anyone,
    /// An agent's certificate.
    Agent,
    /// A person: admin or tech. Techs read everything and may retry devices.
    Staff,
    /// An admin.
    Admin,
    /// Any certificate this controller issued (repository reads).
    Issued,
}

impl Access {
    fn roles(self) -> &'static [Role] {
        match self {
            Access::Anyone => &[],
            Access::Agent => &[Role::Agent],
            Access::Staff => &[Role::Admin, Role::Tech],
            Access::Admin => &[Role::Admin],
            Access::Issued => &[Role::Agent, Role::Admin, Role::Tech],
        }
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// Methods whose request is a stream: their size is bounded per message by the service and in total by the
/// handler.
const STREAMED: u64 = u64::MAX;

/// Every method: its path, who may call it, the largest request body it accepts, and whether it changes anything
/// (a person's refused change is written to the audit log).
#[rustfmt::skip]
pub(crate) const METHODS: &[(&str, Access, u64, bool)] = &[
    ("/rollcall.v1.AgentService/Enroll", Access::Anyone, 64 * KIB, false),
    ("/rollcall.v1.AgentService/CheckIn", Access::Agent, 8 * MIB, false),
    ("/rollcall.v1.AgentService/Fetch", Access::Issued, 4 * KIB, false),
    ("/rollcall.v1.AgentService/Renew", Access::Agent, 64 * KIB, false),
    ("/rollcall.v1.AgentService/Watch", Access::Agent, 4 * KIB, false),
    ("/rollcall.v1.AdminService/ListAgents", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/GetAgent", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/ListSites", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/CreateToken", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/GetRepository", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/PushPayload", Access::Admin, STREAMED, true),
    ("/rollcall.v1.AdminService/PushMetadata", Access::Admin, 64 * MIB, true),
    ("/rollcall.v1.AdminService/ListPackages", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/CreateRollout", Access::Admin, MIB, true),
    ("/rollcall.v1.AdminService/StartRollout", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/PauseRollout", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/ResumeRollout", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/CancelRollout", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/ApproveRollout", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/DeleteRollout", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/RetryRollout", Access::Staff, 64 * KIB, true),
    ("/rollcall.v1.AdminService/GetRollout", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/ListRollouts", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/UpdateSite", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/EndAgent", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/UnbanHost", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/AddSite", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/ListTokens", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/RevokeToken", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/AddUser", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/ListUsers", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/RevokeUser", Access::Admin, 64 * KIB, true),
    ("/rollcall.v1.AdminService/ListAudit", Access::Staff, 64 * KIB, false),
    ("/rollcall.v1.AdminService/Compliance", Access::Staff, 64 * KIB, false),
];

fn method(path: &str) -> Option<(&'static str, Access, u64, bool)> {
    METHODS.iter().find(|(p, _, _, _)| *p == path).copied()
}

/// The method's short name (`CreateRollout`) for messages.
fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// What the gate decided to let through.
struct Admitted {
    /// `None`: allowed without a certificate.
    caller: Option<Caller>,
    limit: u64,
    changes: bool,
}

/// Decide a call from its path and connection. A person refused for their role is written to the audit log;
/// other refusals are security events (the caller logs them).
fn admit(shared: &Shared, path: &str, peer: Option<&Peer>, now: i64) -> Result<Admitted, Status> {
    let (name, access, limit, changes) = method(path).ok_or_else(|| {
        Status::unimplemented(format!(
            "{} is not a method of this controller",
            untrusted(path)
        ))
    })?;
    let fingerprint = peer.and_then(|p| p.0.fingerprint.as_deref());
    if access == Access::Anyone {
        // A certificate, if presented, is not needed here and not looked at.
        return Ok(Admitted {
            caller: None,
            limit,
            changes,
        });
    }
    let fingerprint = fingerprint.ok_or_else(|| {
        Status::unauthenticated(format!(
            "{} needs a client certificate issued by this controller",
            short(name)
        ))
    })?;
    let mut caller = authenticate(&shared.store, fingerprint, now)?;
    caller.from = peer.map(|p| p.0.addr.to_string()).unwrap_or_default();
    if !access.roles().contains(&caller.role) {
        let status = Status::permission_denied(format!(
            "{} has the {} role; {} needs {}",
            caller.subject,
            caller.role.as_str(),
            short(name),
            role_list(access.roles())
        ));
        if caller.role != Role::Agent {
            refused(shared, &caller, short(name), &status);
        }
        return Err(status);
    }
    Ok(Admitted {
        caller: Some(caller),
        limit,
        changes,
    })
}

/// A person's refused action, in the audit log.
fn refused(shared: &Shared, caller: &Caller, method: &str, status: &Status) {
    let mut entry = super::audit_entry(caller, method, String::new());
    entry.result = status.message().to_owned();
    if let Err(e) = shared.store.audit(&entry) {
        warn!(error = %e, "Writing a refusal to the audit log failed.");
    }
}

/// Calls per second a source without a certificate may make (enrollment, and refused calls of any kind), with
/// bursts of ten seconds' worth.
#[derive(Debug)]
pub(crate) struct Limiter {
    rate: f64,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Calls refused over the limit since the last log line about this source.
    dropped: u64,
    reported: Option<Instant>,
}

/// How often a source over the limit gets a log line.
const REPORT_EVERY: Duration = Duration::from_secs(60);

enum Take {
    Allowed,
    /// Over the limit; `Some(n)`: time to log that `n` calls were refused.
    Limited(Option<u64>),
}

impl Limiter {
    pub fn new(rate: u32) -> Limiter {
        Limiter {
            rate: f64::from(rate.max(1)),
            sources: Mutex::default(),
        }
    }

    fn take(&self, ip: IpAddr, now: Instant) -> Take {
        let burst = self.rate * 10.0;
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() > 100_000 {
            // Forget sources whose bucket has refilled: they are back to where a new one starts.
            sources.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate < burst
            });
        }
        let bucket = sources.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
            dropped: 0,
            reported: None,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Take::Allowed;
        }
        bucket.dropped += 1;
        if bucket
            .reported
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            bucket.reported = Some(now);
            return Take::Limited(Some(std::mem::take(&mut bucket.dropped)));
        }
        Take::Limited(None)
    }
}

/// The tower layer in front of both services.
#[derive(Clone)]
pub(crate) struct Gate {
    pub shared: Arc<Shared>,
}

impl<S> tower::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Gated<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Gated<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let peer = req.extensions().get::<Peer>().cloned();
        let path = req.uri().path().to_owned();
        let limited = |shared: &Shared| -> Option<Status> {
            let peer = peer.as_ref()?;
            match shared.limiter.take(peer.0.addr.ip(), Instant::now()) {
                Take::Allowed => None,
                Take::Limited(report) => {
                    if let Some(n) = report {
                        warn!(peer = %peer.0.addr.ip(), refused = n, "Calls without a valid certificate from this source are over the rate limit; refusing them.");
                    }
                    Some(Status::resource_exhausted(format!(
                        "too many calls without a valid certificate from {}; try again in a minute",
                        peer.0.addr.ip()
                    )))
                }
            }
        };
        let admitted = admit(&self.shared, &path, peer.as_ref(), now());
        let Admitted {
            caller,
            limit,
            changes,
        } = match admitted {
            Ok(a) if a.caller.is_none() => {
                if let Some(status) = limited(&self.shared) {
                    return Box::pin(async move { Ok(status.into_http()) });
                }
                a
            }
            Ok(a) => a,
            Err(status) => {
                // A refusal costs the source as much as an anonymous call, so refusals cannot flood the log.
                let status = limited(&self.shared).unwrap_or_else(|| {
                    let from = peer
                        .as_ref()
                        .map(|p| p.0.addr.to_string())
                        .unwrap_or_default();
                    info!(
                        peer = %from,
                        method = %untrusted(short(&path)),
                        code = ?status.code(),
                        reason = %status.message(),
                        "Call refused."
                    );
                    self.shared.seclog.event(
                        "call refused",
                        "",
                        &from,
                        short(&path),
                        status.message(),
                    );
                    status
                });
                return Box::pin(async move { Ok(status.into_http()) });
            }
        };
        // A person's change that the service refuses is audited with its reason.
        let audit_refusal = caller
            .as_ref()
            .filter(|c| changes && c.role != Role::Agent)
            .cloned();
        if let Some(caller) = caller {
            req.extensions_mut().insert(caller);
        }
        let req = req.map(|body| {
            if limit == STREAMED {
                body
            } else {
                Body::new(Capped {
                    inner: body,
                    left: limit,
                    method: short(&path).to_owned(),
                })
            }
        });
        let open = peer.map(|p| p.0.enter());
        // The clone is ready only if `self.inner` was: take the ready one, leave the clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut resp = inner.call(req).await?;
            normalise(resp.headers_mut());
            if let Some(caller) = audit_refusal {
                if let Some(status) = Status::from_header_map(resp.headers()) {
                    if status.code() != Code::Ok {
                        refused(&shared, &caller, short(&path), &status);
                    }
                }
            }
            Ok(resp.map(|body| Body::new(Finishing { inner: body, open })))
        })
    }
}

/// A request body cut off with `RESOURCE_EXHAUSTED` once it passes its method's limit.
struct Capped {
    inner: Body,
    left: u64,
    method: String,
}

impl HttpBody for Capped {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                let n = data.len() as u64;
                if n > self.left {
                    return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                        "request too large for {}",
                        self.method
                    )))));
                }
                self.left -= n;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call counted as open until it is done, and corrects the status in its
/// trailers.
struct Finishing {
    inner: Body,
    open: Option<OpenCall>,
}

impl HttpBody for Finishing {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match frame {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    normalise(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            }))),
            None => {
                self.open = None;
                Poll::Ready(None)
            }
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// tonic answers a request it cannot decode with `INTERNAL` and one over its size limit with `OUT_OF_RANGE`;
/// for the caller these are `INVALID_ARGUMENT` and `RESOURCE_EXHAUSTED`.
fn normalise(headers: &mut http::HeaderMap) {
    let Some(code) = headers
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
    else {
        return;
    };
    // Most answers are neither: only these two are decoded further.
    if !matches!(code, Code::Internal | Code::OutOfRange) {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let fixed = match code {
        Code::Internal if status.message().starts_with("failed to decode") => Code::InvalidArgument,
        Code::OutOfRange if status.message().contains("message length too large") => {
            Code::ResourceExhausted
        }
        _ => return,
    };
    headers.insert("grpc-status", http::HeaderValue::from(fixed as i32));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rpc in the .proto files has a rule, and no rule names a method that does not exist.
    #[test]
    fn every_method_has_a_rule() {
        let mut declared = Vec::new();
        for (file, service) in [("agent", "AgentService"), ("admin", "AdminService")] {
            let text = std::fs::read_to_string(format!(
                "{}/../proto/proto/rollcall/v1/{file}.proto",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("rpc ") {
                    let name = rest.split('(').next().unwrap().trim();
                    declared.push(format!("/rollcall.v1.{service}/{name}"));
                }
            }
        }
        let mut ruled: Vec<String> = METHODS.iter().map(|(p, _, _, _)| p.to_string()).collect();
        declared.sort();
        ruled.sort();
        assert_eq!(declared, ruled);
    }

    #[test]
    fn sources_over_the_rate_are_refused_and_reported_once_a_minute() {
        let limiter = Limiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(matches!(limiter.take(ip, t0), Take::Allowed));
        }
        assert!(matches!(limiter.take(ip, t0), Take::Limited(Some(1))));
        assert!(matches!(limiter.take(ip, t0), Take::Limited(None)));
        // Another source has its own bucket.
        assert!(matches!(limiter.take(other, t0), Take::Allowed));
        // Half a second later one call is allowed again.
        assert!(matches!(
            limiter.take(ip, t0 + Duration::from_millis(500)),
            Take::Allowed
        ));
        assert!(matches!(
            limiter.take(ip, t0 + Duration::from_millis(500)),
            Take::Limited(None)
        ));
        assert!(matches!(
            limiter.take(ip, t0 + Duration::from_secs(61)),
            Take::Allowed
        ));
    }

    #[test]
    fn decode_failures_and_oversize_get_the_right_codes() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from(13));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("failed to decode Protobuf message: invalid wire type"),
        );
        normalise(&mut h);
        assert_eq!(h["grpc-status"], "3");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from(11));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large: found 9 bytes",
            ),
        );
        normalise(&mut h);
        assert_eq!(h["grpc-status"], "8");
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from(13));
        h.insert("grpc-message", http::HeaderValue::from_static("disk full"));
        normalise(&mut h);
        assert_eq!(h["grpc-status"], "13");
    }
}
