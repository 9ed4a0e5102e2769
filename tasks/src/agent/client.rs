//! Reaching one agent: its certificate pinned (or checked against the
//! inventory's CA), the inventory's token on every request.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kpilot_engine::TaskOutput;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;

use super::inventory::{Agent, Inventory};
use super::{AgentError, RunEvent, RunRequest};

/// How long a request may wait for a TCP and TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence after which a running attempt's agent counts as gone (it sends a
/// heartbeat every second).
const SILENCE: Duration = Duration::from_secs(15);

/// A client for one agent.
#[derive(Clone)]
pub struct AgentClient {
    name: String,
    address: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish()
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned, whatever names it has.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the agent's certificate has fingerprint {}, not the one the inventory pins",
                super::fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The causes of an error, joined: reqwest's own message is rarely the useful part.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl AgentClient {
    /// A client for `agent` of `inventory`.
    pub fn new(inventory: &Inventory, agent: &Agent) -> Result<Self, AgentError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Tls(e.to_string()))?;
        let tls = match (agent.fingerprint, &inventory.ca_pem) {
            (Some(fingerprint), _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint,
                    provider,
                }))
                .with_no_client_auth(),
            (None, Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| AgentError::Tls(format!("the CA: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| AgentError::Tls(format!("the CA: {e}")))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (None, None) => {
                return Err(AgentError::Inventory {
                    path: inventory.path.clone(),
                    message: format!("agent `{}` has no fingerprint and no CA", agent.name),
                })
            }
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            // Shorter than the agent's 30 s header timeout, which closes idle connections.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| AgentError::Tls(chain(&e)))?;
        Ok(AgentClient {
            name: agent.name.clone(),
            address: agent.address.clone(),
            token: inventory.token.clone(),
            http,
        })
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.address)
    }

    fn who(&self) -> String {
        format!("agent {} ({})", self.name, self.address)
    }

    /// Whether the agent answers `/v1/health` within `limit`.
    pub async fn healthy(&self, limit: Duration) -> Result<(), String> {
        let resp = self
            .http
            .get(self.url("/v1/health"))
            .bearer_auth(&self.token)
            .timeout(limit)
            .send()
            .await
            .map_err(|e| format!("{} cannot be reached: {}", self.who(), chain(&e)))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{} answered {}", self.who(), resp.status()))
        }
    }

    /// Asks the agent for `node.PATH`.
    pub async fn node(&self, path: &str) -> Result<serde_json::Value, String> {
        let resp = self
            .http
            .get(self.url("/v1/node"))
            .query(&[("path", path)])
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("{} cannot be reached: {}", self.who(), chain(&e)))?;
        let status = resp.status();
        let value: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("{}: reading node.{path}: {}", self.who(), chain(&e)))?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!(
                "{} refused node.{path} ({status}): {}",
                self.who(),
                value["error"].as_str().unwrap_or("no reason given")
            ))
        }
    }

    /// Runs one attempt on the agent. Dropping the future closes the
    /// connection, and the agent then kills the attempt's processes.
    pub async fn run(&self, request: &RunRequest) -> TaskOutput {
        let resp = match self
            .http
            .post(self.url("/v1/run"))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return TaskOutput::failed(format!(
                    "{} cannot be reached: {}",
                    self.who(),
                    chain(&e)
                ))
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return TaskOutput::failed(format!(
                "{} refused the attempt ({status}): {reason}",
                self.who()
            ));
        }
        let mut body = resp.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
                Err(_) => {
                    return TaskOutput::failed(format!(
                        "{} went away during the attempt: no word from it for {}s",
                        self.who(),
                        SILENCE.as_secs()
                    ))
                }
                Ok(None) => {
                    return TaskOutput::failed(format!(
                        "{} went away during the attempt: the connection closed before the result",
                        self.who()
                    ))
                }
                Ok(Some(Err(e))) => {
                    return TaskOutput::failed(format!(
                        "{} went away during the attempt: {}",
                        self.who(),
                        chain(&e)
                    ))
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            pending.extend_from_slice(&chunk);
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                match serde_json::from_slice::<RunEvent>(&line) {
                    Ok(RunEvent::Heartbeat) => {}
                    Ok(RunEvent::Done { output }) => return output.into(),
                    Err(e) => {
                        return TaskOutput::failed(format!(
                            "{} sent a line that is not an event: {e}",
                            self.who()
                        ))
                    }
                }
            }
        }
    }
}
