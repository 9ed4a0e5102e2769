//! Sends UDP datagrams as fast as one socket can, for benchmarking the drop tracer
//! (`scripts/bench-trace` runs it inside a network namespace, towards a port whose packets
//! a firewall rule drops).
//!
//! ```text
//! udp_flood --to 10.231.0.2:7000 --count 1000000 [--size 64]
//! ```
//! Prints one JSON line: datagrams sent, send errors, seconds, packets per second.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let mut to: Option<SocketAddr> = None;
    let mut count: u64 = 100_000;
    let mut size: usize = 64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        let ok = match (arg.as_str(), value.as_deref()) {
            ("--to", Some(v)) => v.parse().map(|v| to = Some(v)).is_ok(),
            ("--count", Some(v)) => v.parse().map(|v| count = v).is_ok(),
            ("--size", Some(v)) => v.parse().map(|v| size = v).is_ok(),
            _ => false,
        };
        if !ok {
            eprintln!("usage: udp_flood --to ADDR:PORT [--count N] [--size BYTES]");
            return ExitCode::from(2);
        }
    }
    let Some(to) = to else {
        eprintln!("usage: udp_flood --to ADDR:PORT [--count N] [--size BYTES]");
        return ExitCode::from(2);
    };
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = match UdpSocket::bind(bind).and_then(|s| s.connect(to).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp_flood: {e}");
            return ExitCode::FAILURE;
        }
    };
    let payload = vec![0x6bu8; size];
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..count {
        match sock.send(&payload) {
            Ok(_) => sent += 1,
            Err(_) => errors += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"errors\":{errors},\"secs\":{secs:.3},\"pps\":{:.0}}}",
        sent as f64 / secs
    );
    ExitCode::SUCCESS
}
