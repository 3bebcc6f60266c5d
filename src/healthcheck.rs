//! `qikchat-relay healthcheck [PATH]`: the container's health probe, for images without a shell
//! or curl (Docker's `HEALTHCHECK`, Compose). Kubernetes does not need it: it probes over HTTP.
//!
//! It sends `GET PATH` (default `/healthz`) to the relay's own `RELAY_LISTEN_ADDR` (an unspecified
//! address such as `0.0.0.0` is probed on loopback) and succeeds on a 200, within [`TIMEOUT`].

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Probes `path` on the address the relay listens on; `Err` says why it is not healthy.
pub fn check(listen_addr: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!(
            "{path:?}: the path must start with / and hold no spaces"
        ));
    }
    let mut addr: SocketAddr = listen_addr
        .parse()
        .map_err(|_| format!("RELAY_LISTEN_ADDR {listen_addr:?} is not an ip:port address"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    match status(addr, path) {
        Ok(200) => Ok(()),
        Ok(status) => Err(format!("GET {path} answered {status}")),
        Err(e) => Err(format!("GET {path} on {addr} failed: {e}")),
    }
}

/// Sends one HTTP/1.1 request and returns the status code of the answer.
fn status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: qikchat-relay-healthcheck\r\nConnection: close\r\n\r\n"
    )?;
    // "HTTP/1.1 200 OK": the status code is bytes 9..12 of the status line.
    let mut head = [0u8; 12];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    std::str::from_utf8(&head[..read])
        .ok()
        .filter(|line| line.starts_with("HTTP/1.") && line.len() == 12)
        .and_then(|line| line[9..12].parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}
