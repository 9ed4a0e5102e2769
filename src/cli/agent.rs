//! `kpilot agent`: the node agent, serving until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use kpilot_tasks::agent::{read_token, AgentConfig, AgentServer, TlsSource};

use super::Usage;
use crate::Exit;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// File holding the token every request must carry (Authorization: Bearer).
    #[arg(long, env = "KPILOT_AGENT_TOKEN_FILE")]
    token_file: PathBuf,
    /// PEM certificate chain [default: a self-signed certificate generated at start].
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Write the certificate's SHA-256 fingerprint (sha256:HEX) to this file once listening.
    #[arg(long)]
    fingerprint_file: Option<PathBuf>,
    /// The most step bodies running at once; more wait their turn.
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// The node's name [default: the host name].
    #[arg(long, env = "KPILOT_NODE_NAME")]
    name: Option<String>,
    /// The directory step processes start in [default: the current directory].
    #[arg(long)]
    workdir: Option<PathBuf>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<Exit> {
    if args.max_concurrent == 0 {
        return Err(Usage("--max-concurrent is 0; write 1 or more".into()).into());
    }
    let token = read_token(&args.token_file).map_err(|e| Usage(e.to_string()))?;
    let name = args.name.unwrap_or_else(host_name);
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => TlsSource::Files { cert, key },
        _ => {
            let mut names = vec![name.clone(), "localhost".to_owned()];
            if !args.listen.ip().is_unspecified() {
                names.push(args.listen.ip().to_string());
            }
            TlsSource::SelfSigned { names }
        }
    };
    let workdir = match args.workdir {
        Some(d) => d,
        None => std::env::current_dir()
            .map_err(|e| Usage(format!("the current directory cannot be read: {e}")))?,
    };
    let server = AgentServer::bind(AgentConfig {
        name: name.clone(),
        listen: args.listen,
        token,
        tls,
        max_concurrent: args.max_concurrent,
        workdir,
    })
    .await
    .map_err(|e| Usage(e.to_string()))?;
    let addr = server.local_addr()?;
    let fingerprint = server.fingerprint().to_owned();
    if let Some(path) = &args.fingerprint_file {
        // Written whole, then renamed, so a reader never sees half of it.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{fingerprint}\n"))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    crate::outln!("kpilot agent {name} listening on {addr}")?;
    crate::outln!("certificate {fingerprint}")?;
    tracing::info!(%addr, %fingerprint, "agent {name} listening");
    server.serve(shutdown()).await;
    tracing::info!("agent {name} stopped");
    Ok(Exit::Passed)
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
