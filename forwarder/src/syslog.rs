//! RFC 5424 syslog messages over TCP with octet-counting framing (RFC 6587 §3.4.1): the length
//! prefix lets a payload hold any byte, and rsyslog, syslog-ng and SIEM collectors read it. Over
//! TLS (RFC 5425) the frames are the same, octet counting being that RFC's only framing.
//!
//! `<PRI>1 - HOST verdict - MSGID - MSG`: facility 13 (log audit); severity 4 (warning) for
//! refusals and errors, 6 (informational) otherwise; the timestamp is left to the receiver (the
//! event time travels in the payload); MSGID is the decision or event kind.

use crate::tls::TlsClient;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

const FACILITY_LOG_AUDIT: u8 = 13;

/// A TCP or TLS connection to a syslog receiver.
pub struct SyslogSender {
    stream: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    hostname: String,
}

impl SyslogSender {
    /// Connects to `address`, through a TLS handshake when `tls` is given.
    pub async fn connect(address: &str, tls: Option<&TlsClient>) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(address).await?;
        let stream: Box<dyn AsyncWrite + Send + Unpin> = match tls {
            Some(tls) => Box::new(tls.connect(tcp).await?),
            None => Box::new(tcp),
        };
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty() && h.is_ascii() && !h.contains(' '))
            .unwrap_or_else(|| "-".into());
        Ok(Self {
            stream: BufWriter::new(stream),
            hostname,
        })
    }

    /// Writes one message and flushes it to the socket.
    pub async fn send(&mut self, msgid: &str, warning: bool, payload: &str) -> std::io::Result<()> {
        let frame = frame(&self.hostname, msgid, warning, payload);
        self.stream.write_all(frame.as_bytes()).await?;
        self.stream.flush().await
    }
}

/// One octet-counted RFC 5424 frame.
fn frame(hostname: &str, msgid: &str, warning: bool, payload: &str) -> String {
    let severity = if warning { 4 } else { 6 };
    let pri = FACILITY_LOG_AUDIT * 8 + severity;
    let msgid: String = msgid
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    let msgid = if msgid.is_empty() { "-".into() } else { msgid };
    let message = format!("<{pri}>1 - {hostname} verdict - {msgid} - {payload}");
    format!("{} {message}", message.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_count_octets_of_the_whole_message() {
        let frame = super::frame("host", "deny", true, "CEF:0|é");
        let (len, message) = frame.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), message.len());
        assert_eq!(message, "<108>1 - host verdict - deny - CEF:0|é");
    }
}
