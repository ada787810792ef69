//! RFC 5424 syslog messages over TCP with octet-counting framing (RFC 6587 §3.4.1): the length
//! prefix lets a payload hold any byte, and rsyslog, syslog-ng and SIEM collectors read it.
//!
//! `<PRI>1 - HOST verdict - MSGID - MSG`: facility 13 (log audit); severity 4 (warning) for
//! refusals and errors, 6 (informational) otherwise; the timestamp is left to the receiver (the
//! event time travels in the payload); MSGID is the decision or event kind.

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

const FACILITY_LOG_AUDIT: u8 = 13;

/// A TCP connection to a syslog receiver.
pub struct SyslogSender {
    stream: BufWriter<TcpStream>,
    hostname: String,
}

impl SyslogSender {
    pub async fn connect(address: &str) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
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
