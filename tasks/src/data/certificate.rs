//! `query: cluster.servingCertificate`: the certificate a TLS server
//! presents, read by a handshake of our own.
//!
//! The handshake accepts any certificate: the point is to read one that may
//! be expired, self-signed or about to lapse, which a verifying client would
//! refuse to show. Nothing is sent after the handshake.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};
use x509_parser::extensions::GeneralName;

use super::{DataError, Failure};

/// How long the TCP connection and the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts every certificate (see the module's comment); signatures are
/// still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct Reader {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Reader {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// `host` and `port` of `https://host:port/path`, `host:port` or `[::1]:port`;
/// the port is 443 when not given.
pub fn host_port(address: &str) -> Result<(String, u16), String> {
    let rest = address
        .trim()
        .strip_prefix("https://")
        .unwrap_or(address.trim());
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{address}`: an IPv6 address needs its closing `]`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "`{address}` names no host; write `host:port` or `https://host:port`"
        ));
    }
    let port = match port {
        None => 443,
        Some(p) => p
            .parse()
            .map_err(|_| format!("`{address}`: the port `{p}` is not a number from 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// Connects to `address`, and describes the leaf certificate it presents.
pub(crate) async fn fetch(query: &str, address: &str) -> Result<Value, Failure> {
    let permanent = |message: String| {
        Failure::Permanent(DataError::Api {
            query: query.to_owned(),
            message,
        })
    };
    let (host, port) = host_port(address).map_err(permanent)?;
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| permanent(format!("`{host}` is not a host name or address: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| permanent(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Reader { provider }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failure::Transient(e)),
        Err(_) => {
            return Err(Failure::Transient(format!(
                "no TLS handshake with {host}:{port} within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            )))
        }
    };
    let (_, session) = stream.get_ref();
    let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) else {
        return Err(permanent(format!("{host}:{port} presented no certificate")));
    };
    describe(leaf.as_ref(), &format!("{host}:{port}"), now()).map_err(permanent)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339(timestamp: i64) -> String {
    chrono::DateTime::from_timestamp(timestamp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// What a check sees of a DER certificate, `now` being seconds since the epoch.
pub fn describe(der: &[u8], address: &str, now: i64) -> Result<Value, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("{address} presented a certificate that is not X.509: {e}"))?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns_names.push((*n).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    ip_addresses.extend(ip);
                }
                _ => {}
            }
        }
    }
    let seconds_left = not_after - now;
    Ok(json!({
        "address": address,
        "subject": cert.subject().to_string(),
        "issuer": cert.issuer().to_string(),
        "serial": cert.raw_serial_as_string(),
        "notBefore": rfc3339(not_before),
        "notAfter": rfc3339(not_after),
        // Whole days, rounded down: 29.9 days left is 29.
        "daysLeft": seconds_left.div_euclid(86_400),
        "secondsLeft": seconds_left,
        "expired": seconds_left <= 0,
        "dnsNames": dns_names,
        "ipAddresses": ip_addresses,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            host_port("https://127.0.0.1:6443"),
            Ok(("127.0.0.1".into(), 6443))
        );
        assert_eq!(
            host_port("https://api.example.com/"),
            Ok(("api.example.com".into(), 443))
        );
        assert_eq!(host_port("localhost:8443"), Ok(("localhost".into(), 8443)));
        assert_eq!(host_port("[::1]:6443"), Ok(("::1".into(), 6443)));
        assert!(host_port("https://:6443").is_err());
        assert!(host_port("host:http").is_err());
    }

    #[test]
    fn a_certificate_described() {
        let mut params =
            rcgen::CertificateParams::new(vec!["api.example.com".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([10, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 1, 31);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        // 2026-01-11T12:00:00Z: 19.5 days before notAfter.
        let now = 1_768_132_800;
        let seen = describe(cert.der(), "a:1", now).expect("described");
        assert_eq!(seen["notAfter"], "2026-01-31T00:00:00Z");
        assert_eq!(seen["notBefore"], "2026-01-01T00:00:00Z");
        assert_eq!(seen["daysLeft"], 19);
        assert_eq!(seen["expired"], false);
        assert_eq!(seen["subject"], "CN=kube-apiserver");
        assert_eq!(seen["dnsNames"], json!(["api.example.com"]));
        assert_eq!(seen["ipAddresses"], json!(["10.0.0.1"]));
        let later = describe(cert.der(), "a:1", now + 30 * 86_400).expect("described");
        assert_eq!(later["expired"], true);
        assert_eq!(later["daysLeft"], -11);
        assert!(describe(b"not a certificate", "a:1", now).is_err());
    }
}
