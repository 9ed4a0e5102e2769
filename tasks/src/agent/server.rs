//! `kpilot agent`: HTTPS on one address, a bearer token checked before any
//! handler runs, step bodies run with this crate's task kinds.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kpilot_engine::store::Facts;
use kpilot_engine::{InstanceId, ParseContext, RunId, StepId, TaskContext, TaskRegistry};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{info, info_span, warn, Instrument as _};

use super::{AgentError, RunEvent, RunRequest, WireOutput, HEARTBEAT};

/// Where the agent's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (`--tls-cert`, `--tls-key`).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A certificate generated at start for these names; clients pin its fingerprint.
    SelfSigned {
        /// Subject alternative names (host names or IP addresses).
        names: Vec<String>,
    },
}

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent's name, in logs and `/v1/health`.
    pub name: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The token every request must carry.
    pub token: String,
    /// The certificate.
    pub tls: TlsSource,
    /// The most step bodies running at once; more wait.
    pub max_concurrent: usize,
    /// The directory step processes start in.
    pub workdir: PathBuf,
}

/// A bound agent, ready to serve.
pub struct AgentServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    fingerprint: String,
    state: Arc<AgentState>,
}

struct AgentState {
    name: String,
    token: String,
    slots: Arc<Semaphore>,
    workdir: PathBuf,
    registry: TaskRegistry,
}

/// The peer of a connection, for logs.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl AgentServer {
    /// Loads or generates the certificate and binds the address.
    pub async fn bind(config: AgentConfig) -> Result<Self, AgentError> {
        let (certs, key) = match &config.tls {
            TlsSource::Files { cert, key } => {
                let certs = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| AgentError::Tls(format!("certificate {}: {e}", cert.display())))?;
                if certs.is_empty() {
                    return Err(AgentError::Tls(format!(
                        "{} holds no PEM certificate",
                        cert.display()
                    )));
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| AgentError::Tls(format!("private key {}: {e}", key.display())))?;
                (certs, key)
            }
            TlsSource::SelfSigned { names } => {
                let generated = rcgen::generate_simple_self_signed(names.clone())
                    .map_err(|e| AgentError::Tls(format!("generating a certificate: {e}")))?;
                let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
                (vec![generated.cert.der().clone()], key)
            }
        };
        let fingerprint = super::fingerprint(certs[0].as_ref());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| AgentError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(AgentServer {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            fingerprint,
            state: Arc::new(AgentState {
                name: config.name,
                token: config.token,
                slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
                workdir: config.workdir,
                registry: crate::registry(),
            }),
        })
    }

    /// The SHA-256 fingerprint of the certificate served, `sha256:HEX`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The address bound (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr, AgentError> {
        self.listener
            .local_addr()
            .map_err(|source| AgentError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let state = Arc::clone(&self.state);
        let authed = Router::new()
            .route("/v1/health", get(health))
            .route("/v1/run", post(run))
            .route("/v1/node", get(node))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                authenticate,
            ))
            .with_state(state);
        tokio::pin!(shutdown);
        loop {
            let (tcp, addr) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let router = authed.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        warn!(peer = %addr, "refused a connection: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        warn!(peer = %addr, "refused a connection: TLS handshake timed out");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |mut req: Request<_>| {
                    req.extensions_mut().insert(ConnectInfo(Peer(addr)));
                    let mut router = router.clone();
                    async move {
                        use tower::Service as _;
                        let req = req.map(Body::new);
                        router.call(req).await
                    }
                });
                // A client that never finishes its headers is dropped.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                if let Err(e) = conn.await {
                    info!(peer = %addr, "connection ended: {e}");
                }
            });
        }
    }
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Refuses, and logs, any request without the right bearer token: no handler
/// sees it.
async fn authenticate(
    State(state): State<Arc<AgentState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let reason = match given {
        None => Some("no bearer token"),
        Some(t) if !super::same_secret(t.as_bytes(), state.token.as_bytes()) => Some("wrong token"),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        warn!(
            %peer,
            method = %req.method(),
            path = %req.uri().path(),
            "refused request: {reason}"
        );
        return problem(StatusCode::UNAUTHORIZED, format!("unauthorized: {reason}"));
    }
    next.run(req).await
}

async fn not_found(req: Request) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {} {}", req.method(), req.uri().path()),
    )
}

async fn health(State(state): State<Arc<AgentState>>) -> Response {
    Json(serde_json::json!({
        "name": state.name,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct NodeQuery {
    path: String,
}

async fn node(
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    query: Result<Query<NodeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return problem(
            StatusCode::BAD_REQUEST,
            "write the query as /v1/node?path=sysctl",
        );
    };
    info!(%peer, path = %query.path, "node query");
    match crate::node::query(&query.path).await {
        Ok(value) => Json(value).into_response(),
        Err(e @ crate::node::NodeError::UnknownPath { .. }) => {
            problem(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Aborts a spawned attempt when the answer's stream is dropped (the client
/// went away): dropping the attempt's future kills its process group.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn line(event: &RunEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn run(
    State(state): State<Arc<AgentState>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: Result<Json<RunRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(r) => r,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("bad run request: {e}")),
    };
    let ids = (
        RunId::parse(&request.run_id),
        StepId::parse(&request.step_id),
    );
    let (run_id, step_id) = match ids {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => return problem(StatusCode::BAD_REQUEST, e),
    };
    let Some(kind) = state.registry.get(&request.kind) else {
        return problem(
            StatusCode::BAD_REQUEST,
            format!(
                "this agent cannot run `{}` bodies; it knows {}",
                request.kind,
                state.registry.names().join(", ")
            ),
        );
    };
    let names: Vec<String> = request.params.keys().cloned().collect();
    let task = match kind.parse(
        &request.body,
        &ParseContext {
            step_id: step_id.as_str(),
            params: &names,
        },
    ) {
        Ok(t) => t,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("step {step_id}: {e}")),
    };
    let span = info_span!(
        "step",
        run.id = %run_id,
        step.id = %step_id,
        node.name = %request.instance,
        attempt = request.attempt,
    );
    info!(parent: &span, %peer, kind = %request.kind, "attempt accepted");
    let ctx = TaskContext {
        facts: Facts::in_memory(run_id.clone()),
        ledger: kpilot_engine::store::Ledger::in_memory(run_id.clone()),
        retried: false,
        run_id,
        step_id,
        instance: InstanceId::named(request.instance),
        attempt: request.attempt,
        params: Arc::new(request.params.into_iter().collect::<BTreeMap<_, _>>()),
        workdir: state.workdir.clone(),
    };
    let timeout = request.timeout_ms.map(Duration::from_millis);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let slots = Arc::clone(&state.slots);
    let attempt = async move {
        let work = async {
            let Ok(_slot) = slots.acquire_owned().await else {
                return kpilot_engine::TaskOutput::failed("the agent is shutting down");
            };
            info!("attempt started");
            let started = std::time::Instant::now();
            let out = match timeout {
                Some(limit) => match tokio::time::timeout(limit, task.run(&ctx)).await {
                    Ok(out) => out,
                    Err(_) => kpilot_engine::TaskOutput::failed(format!(
                        "timed out after {} on the agent",
                        humantime::format_duration(limit)
                    )),
                },
                None => task.run(&ctx).await,
            };
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                failed = out.failure.is_some(),
                "attempt finished"
            );
            out
        };
        tokio::pin!(work);
        let mut tick = tokio::time::interval(HEARTBEAT);
        let out = loop {
            tokio::select! {
                out = &mut work => break out,
                _ = tick.tick() => {
                    if tx.send(line(&RunEvent::Heartbeat)).await.is_err() {
                        warn!("the client went away: the attempt is stopped");
                        return;
                    }
                }
            }
        };
        let _ = tx
            .send(line(&RunEvent::Done {
                output: WireOutput::from(out),
            }))
            .await;
    }
    .instrument(span);
    let guard = AbortOnDrop(tokio::spawn(attempt));
    let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), (rx, guard)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
