//! Debian's real `rsyslogd` as a syslog receiver for the forwarder's tests: its own config on a
//! free loopback port (TCP, RFC 5424, octet-counted or not; or TLS through its GnuTLS network
//! stream driver, RFC 5425), every message's MSG part written as one line to a file in its temp
//! dir. Never the system service.

use crate::process::{find_program, free_port, ServerProcess};
use crate::Result;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The certificate rsyslog serves TLS with, and its CA (GnuTLS wants one even when it does not
/// authenticate clients).
pub struct RsyslogTls<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

pub struct Rsyslog {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _process: ServerProcess,
}

impl Rsyslog {
    /// Plain TCP.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// TLS (rsyslog's `gtls` driver, from Debian's rsyslog-gnutls), anonymous clients.
    pub fn start_tls(tls: &RsyslogTls) -> Result<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&RsyslogTls>) -> Result<Self> {
        // Debian installs it in /usr/sbin, which a non-root PATH may lack.
        let sbin = PathBuf::from("/usr/sbin/rsyslogd");
        let program = find_program("rsyslogd", "scripts/deps.sh installs it (apt: rsyslog)")
            .or_else(|missing| {
                if sbin.is_file() {
                    Ok(sbin)
                } else {
                    Err(missing)
                }
            })?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let d = dir.path().display();
        let (global, module) = match tls {
            None => (String::new(), String::new()),
            Some(tls) => (
                format!(
                    " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" \
                     defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                    tls.ca.display(),
                    tls.cert.display(),
                    tls.key.display()
                ),
                " streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\""
                    .to_owned(),
            ),
        };
        let config = format!(
            "global(workDirectory=\"{d}\"{global})\n\
             module(load=\"imtcp\"{module})\n\
             template(name=\"msg\" type=\"string\" string=\"%msg%\\n\")\n\
             ruleset(name=\"verdict\") {{ action(type=\"omfile\" file=\"{d}/messages.log\" template=\"msg\") }}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"verdict\")\n"
        );
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(&conf, config).expect("writing rsyslog.conf");
        let mut command = Command::new(program);
        command
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"));
        let mut process =
            ServerProcess::spawn("rsyslogd", command, dir.path().join("rsyslogd.log"))?;
        process.wait_ready(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(Self {
            port,
            dir,
            _process: process,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The lines received so far.
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("messages.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim_start().to_owned())
            .collect()
    }

    /// The lines received once there are `n` of them (or what arrived within 180 s: a busy
    /// machine may run the forwarder slowly).
    pub fn wait_lines(&self, n: usize) -> Vec<String> {
        let started = Instant::now();
        loop {
            let lines = self.lines();
            if lines.len() >= n || started.elapsed() > Duration::from_secs(180) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The value of `key` in a CEF line's extension (values here hold no spaces).
pub fn cef_value(extension: &str, key: &str) -> String {
    let start = extension
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("{key} missing in {extension}"));
    let value = &extension[start + key.len() + 1..];
    value.split(' ').next().unwrap_or_default().to_owned()
}
