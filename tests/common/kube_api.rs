//! A stand-in for the Kubernetes API server: the Lease endpoints the instance slots use
//! (GET, LIST with `labelSelector`, POST, PUT with `resourceVersion` conflicts, DELETE
//! with preconditions), answering with the API's own JSON (k8s-openapi types) and its
//! `Status` bodies for 404, 409 and 422. No real API server can run on the test machines.
//!
//! Each replica talks through its own [`Door`], whose [`Fault`] the test sets: refused or
//! dropped connections, a delay before the request is applied or before its answer, a
//! status (500, 403), or a malformed body. A door serves either over loopback HTTP
//! ([`Door::listen`], for the real kube client's whole HTTP stack) or in-process
//! ([`Door::client`], a tower service under the real kube client, for paused time).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ListMeta, Status, StatusCause, StatusDetails, Time,
};
use serde_json::{Value, json};

const PREFIX: &str = "/apis/coordination.k8s.io/v1/namespaces/";

/// What a door does to the requests through it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Nothing: the API answers.
    #[default]
    None,
    /// The connection is closed before the request is read (a partition, the API
    /// server down).
    Refuse,
    /// The request is read and applied, then the connection drops without an answer.
    DropAfterApply,
    /// Reads are answered; writes are applied, then the connection drops unanswered.
    UnansweredWrites,
    /// The request reaches the store this much later.
    Delay(Duration),
    /// The answer leaves this much later (the request was applied on time).
    SlowReply(Duration),
    /// The API answers with this status (500, 503, 403), applying nothing.
    Status(u16),
    /// The API answers 200 with a body that is not the object asked for.
    Malformed,
}

#[derive(Default)]
struct Store {
    /// (namespace, name) → Lease.
    leases: BTreeMap<(String, String), Lease>,
    version: u64,
    /// Every verb used, by door.
    verbs: BTreeSet<&'static str>,
    writes: u64,
    lists: u64,
    /// 409 answers (a create that found the name taken, an update or delete with a
    /// stale version).
    conflicts: u64,
}

/// The API server's state, shared by every door.
#[derive(Clone, Default)]
pub struct ApiServer {
    store: Arc<Mutex<Store>>,
}

/// One replica's way in.
#[derive(Clone)]
pub struct Door {
    api: ApiServer,
    fault: Arc<Mutex<Fault>>,
}

impl ApiServer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn door(&self) -> Door {
        Door {
            api: self.clone(),
            fault: Arc::default(),
        }
    }

    /// Every Lease in `namespace`, by name.
    pub fn leases(&self, namespace: &str) -> BTreeMap<String, Lease> {
        let store = self.store.lock().unwrap();
        store
            .leases
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, name), lease)| (name.clone(), lease.clone()))
            .collect()
    }

    /// Each slot Lease's holder identity, by name.
    pub fn holders(&self, namespace: &str) -> BTreeMap<String, Option<String>> {
        self.leases(namespace)
            .into_iter()
            .map(|(name, l)| (name, l.spec.and_then(|s| s.holder_identity)))
            .collect()
    }

    /// The holder identity of Lease `name`, if it exists and names one.
    pub fn holder(&self, namespace: &str, name: &str) -> Option<String> {
        self.holders(namespace).remove(name).flatten()
    }

    /// Puts a Lease in as an operator would (`kubectl apply`), with a new version.
    pub fn put(&self, namespace: &str, mut lease: Lease) {
        let mut store = self.store.lock().unwrap();
        store.version += 1;
        lease.metadata.resource_version = Some(store.version.to_string());
        lease.metadata.namespace = Some(namespace.into());
        let name = lease.metadata.name.clone().unwrap();
        store.leases.insert((namespace.into(), name), lease);
    }

    /// Deletes a Lease as an operator would.
    pub fn remove(&self, namespace: &str, name: &str) -> bool {
        let mut store = self.store.lock().unwrap();
        store
            .leases
            .remove(&(namespace.into(), name.into()))
            .is_some()
    }

    /// The verbs used so far (`get`, `list`, `create`, `update`, `delete`).
    pub fn verbs(&self) -> BTreeSet<&'static str> {
        self.store.lock().unwrap().verbs.clone()
    }

    /// 409 answers so far.
    pub fn conflicts(&self) -> u64 {
        self.store.lock().unwrap().conflicts
    }

    /// Writes (create, update, delete) and lists so far.
    pub fn load(&self) -> (u64, u64) {
        let store = self.store.lock().unwrap();
        (store.writes, store.lists)
    }

    /// Answers one request: the Lease endpoints, as the API server would.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
        };
        let mut parts = rest.split('/');
        let (Some(ns), Some("leases")) = (parts.next(), parts.next()) else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
        };
        let name = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
        }
        let mut store = self.store.lock().unwrap();
        let key = |name: &str| (ns.to_owned(), name.to_owned());
        match (method.clone(), name) {
            (Method::GET, None) => {
                store.verbs.insert("list");
                store.lists += 1;
                let selector = query.and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("labelSelector="))
                        .map(percent_decode)
                });
                let wanted: Vec<(String, String)> = match selector.as_deref() {
                    None | Some("") => Vec::new(),
                    Some(sel) => match parse_selector(sel) {
                        Some(w) => w,
                        None => {
                            return status(
                                400,
                                "BadRequest",
                                &format!("unable to parse requirement: {sel}"),
                                None,
                            );
                        }
                    },
                };
                let items: Vec<Value> = store
                    .leases
                    .iter()
                    .filter(|((n, _), _)| n == ns)
                    .filter(|(_, l)| {
                        let labels = l.metadata.labels.clone().unwrap_or_default();
                        wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                    .map(|(_, l)| serde_json::to_value(l).unwrap())
                    .collect();
                let list = json!({
                    "kind": "LeaseList",
                    "apiVersion": "coordination.k8s.io/v1",
                    "metadata": ListMeta { resource_version: Some(store.version.to_string()), ..ListMeta::default() },
                    "items": items,
                });
                json_response(200, &list)
            }
            (Method::GET, Some(name)) => {
                store.verbs.insert("get");
                match store.leases.get(&key(&name)) {
                    Some(l) => json_response(200, &serde_json::to_value(l).unwrap()),
                    None => not_found(&name),
                }
            }
            (Method::POST, None) => {
                store.verbs.insert("create");
                let mut lease = match parse_lease(body) {
                    Ok(l) => l,
                    Err(answer) => return *answer,
                };
                let Some(name) = lease.metadata.name.clone().filter(|n| valid_name(n)) else {
                    return invalid(
                        lease.metadata.name.as_deref().unwrap_or(""),
                        "metadata.name",
                        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                    );
                };
                if store.leases.contains_key(&key(&name)) {
                    store.conflicts += 1;
                    return status(
                        409,
                        "AlreadyExists",
                        &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                        Some(&name),
                    );
                }
                store.version += 1;
                store.writes += 1;
                lease.metadata.resource_version = Some(store.version.to_string());
                lease.metadata.uid = Some(format!("uid-{}", store.version));
                lease.metadata.namespace = Some(ns.to_owned());
                lease.metadata.creation_timestamp =
                    Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
                store.leases.insert(key(&name), lease.clone());
                json_response(201, &serde_json::to_value(&lease).unwrap())
            }
            (Method::PUT, Some(name)) => {
                store.verbs.insert("update");
                let mut lease = match parse_lease(body) {
                    Ok(l) => l,
                    Err(answer) => return *answer,
                };
                if lease.metadata.name.as_deref() != Some(name.as_str()) {
                    return status(
                        400,
                        "BadRequest",
                        "the name of the object does not match the name on the URL",
                        Some(&name),
                    );
                }
                let Some(current) = store.leases.get(&key(&name)).cloned() else {
                    return not_found(&name);
                };
                match lease.metadata.resource_version.as_deref() {
                    None | Some("") => {
                        return invalid(
                            &name,
                            "metadata.resourceVersion",
                            "must be specified for an update",
                        );
                    }
                    Some(rv) if Some(rv) != current.metadata.resource_version.as_deref() => {
                        store.conflicts += 1;
                        return conflict(&name);
                    }
                    Some(_) => {}
                }
                store.version += 1;
                store.writes += 1;
                lease.metadata.resource_version = Some(store.version.to_string());
                lease.metadata.uid = current.metadata.uid.clone();
                lease.metadata.namespace = Some(ns.to_owned());
                lease.metadata.creation_timestamp = current.metadata.creation_timestamp;
                store.leases.insert(key(&name), lease.clone());
                json_response(200, &serde_json::to_value(&lease).unwrap())
            }
            (Method::DELETE, Some(name)) => {
                store.verbs.insert("delete");
                let Some(current) = store.leases.get(&key(&name)).cloned() else {
                    return not_found(&name);
                };
                let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let pre = &options["preconditions"];
                let mismatch = |field: &str, have: &Option<String>| {
                    pre[field]
                        .as_str()
                        .is_some_and(|want| Some(want) != have.as_deref())
                };
                if mismatch("resourceVersion", &current.metadata.resource_version)
                    || mismatch("uid", &current.metadata.uid)
                {
                    store.conflicts += 1;
                    return status(
                        409,
                        "Conflict",
                        &format!(
                            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": Precondition failed"
                        ),
                        Some(&name),
                    );
                }
                store.writes += 1;
                store.leases.remove(&key(&name));
                let done = Status {
                    status: Some("Success".into()),
                    details: Some(details(&name)),
                    ..Status::default()
                };
                json_response(200, &with_kind(serde_json::to_value(&done).unwrap()))
            }
            _ => status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ),
        }
    }
}

impl Door {
    /// What this door does to requests from now on.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    fn fault(&self) -> Fault {
        self.fault.lock().unwrap().clone()
    }

    /// Answers through the fault: `None` means the connection drops.
    async fn answer(
        &self,
        method: Method,
        path: String,
        query: Option<String>,
        body: Bytes,
    ) -> Option<Response<Full<Bytes>>> {
        match self.fault() {
            Fault::None => Some(self.api.handle(&method, &path, query.as_deref(), &body)),
            Fault::Refuse => None,
            Fault::DropAfterApply => {
                let _ = self.api.handle(&method, &path, query.as_deref(), &body);
                None
            }
            Fault::UnansweredWrites => {
                let answer = self.api.handle(&method, &path, query.as_deref(), &body);
                (method == Method::GET).then_some(answer)
            }
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                Some(self.api.handle(&method, &path, query.as_deref(), &body))
            }
            Fault::SlowReply(d) => {
                let answer = self.api.handle(&method, &path, query.as_deref(), &body);
                tokio::time::sleep(d).await;
                Some(answer)
            }
            Fault::Status(403) => Some(status(
                403,
                "Forbidden",
                "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:shop:orders\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"shop\"",
                None,
            )),
            Fault::Status(code) => Some(status(
                code,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out",
                None,
            )),
            Fault::Malformed => Some(
                Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"kind":"LeaseList","items":[{"metadata":42,"spec":"x"}]}"#,
                    )))
                    .unwrap(),
            ),
        }
    }

    /// The real kube client, over a tower service in this process (no sockets: paused
    /// time runs it). A dropped connection is a transport error, as hyper reports one.
    pub fn client(&self, namespace: &str) -> kube::Client {
        kube::Client::new(InProcess(self.clone()), namespace)
    }

    /// Serves this door over HTTP on 127.0.0.1 (port 0); returns its URL.
    pub async fn listen(&self) -> String {
        self.serve(None).await
    }

    /// The same over TLS with `tls` (an `https://` base URL for a client).
    pub async fn listen_tls(&self, tls: tokio_rustls::TlsAcceptor) -> String {
        self.serve(Some(tls)).await
    }

    async fn serve(&self, tls: Option<tokio_rustls::TlsAcceptor>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let door = self.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if door.fault() == Fault::Refuse {
                    drop(stream);
                    continue;
                }
                let door = door.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let door = door.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let answer = door
                                    .answer(
                                        parts.method,
                                        parts.uri.path().to_owned(),
                                        parts.uri.query().map(str::to_owned),
                                        body,
                                    )
                                    .await;
                                // No answer: fail the connection, so the client sees it drop.
                                answer.ok_or_else(|| std::io::Error::other("connection dropped"))
                            }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                        None => {
                            let io = hyper_util::rt::TokioIo::new(stream);
                            let _ = http.serve_connection(io, service).await;
                        }
                    }
                });
            }
        });
        format!("{scheme}://{addr}")
    }
}

/// A door as the kube client's transport.
#[derive(Clone)]
struct InProcess(Door);

impl tower::Service<Request<kube::client::Body>> for InProcess {
    type Response = Response<Full<Bytes>>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let door = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            door.answer(
                parts.method,
                parts.uri.path().to_owned(),
                parts.uri.query().map(str::to_owned),
                body,
            )
            .await
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset by peer",
                )
            })
        })
    }
}

/// A Lease from a request body, or the API server's 400 for one it cannot read.
fn parse_lease(body: &[u8]) -> Result<Lease, Box<Response<Full<Bytes>>>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            400,
            "BadRequest",
            &format!("the body of the request was in an unknown format: {e}"),
            None,
        ))
    })
}

fn with_kind(mut v: Value) -> Value {
    v["kind"] = json!("Status");
    v["apiVersion"] = json!("v1");
    v
}

fn json_response(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn details(name: &str) -> StatusDetails {
    StatusDetails {
        name: Some(name.into()),
        group: Some("coordination.k8s.io".into()),
        kind: Some("leases".into()),
        ..StatusDetails::default()
    }
}

fn status(code: u16, reason: &str, message: &str, name: Option<&str>) -> Response<Full<Bytes>> {
    let s = Status {
        status: Some("Failure".into()),
        code: Some(i32::from(code)),
        reason: Some(reason.into()),
        message: Some(message.into()),
        details: name.map(details),
        metadata: ListMeta::default(),
    };
    json_response(code, &with_kind(serde_json::to_value(&s).unwrap()))
}

fn not_found(name: &str) -> Response<Full<Bytes>> {
    status(
        404,
        "NotFound",
        &format!("leases.coordination.k8s.io \"{name}\" not found"),
        Some(name),
    )
}

fn conflict(name: &str) -> Response<Full<Bytes>> {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        Some(name),
    )
}

fn invalid(name: &str, field: &str, why: &str) -> Response<Full<Bytes>> {
    let s = Status {
        status: Some("Failure".into()),
        code: Some(422),
        reason: Some("Invalid".into()),
        message: Some(format!(
            "Lease.coordination.k8s.io \"{name}\" is invalid: {field}: Invalid value: {why}"
        )),
        details: Some(StatusDetails {
            causes: Some(vec![StatusCause {
                field: Some(field.into()),
                message: Some(why.into()),
                reason: Some("FieldValueInvalid".into()),
            }]),
            ..details(name)
        }),
        ..Status::default()
    };
    json_response(422, &with_kind(serde_json::to_value(&s).unwrap()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// `k=v,k2=v2` (equality only: what the slots send).
fn parse_selector(sel: &str) -> Option<Vec<(String, String)>> {
    sel.split(',')
        .map(|req| {
            let (k, v) = req.split_once('=')?;
            let v = v.strip_prefix('=').unwrap_or(v);
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
