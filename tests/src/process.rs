//! Child processes owned by a test: a free port to give them, a log file to read when they fail,
//! and a kill on drop so no server outlives its test.

use crate::{HarnessError, Result};
use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago. The OS hands out ephemeral ports round-robin, so
/// the brief window before the server binds it is not reused by a parallel test in practice.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Finds `program` on `PATH` or in `~/.cargo/bin` (where `cargo install` puts tansu).
pub fn find_program(program: &str, hint: &'static str) -> Result<PathBuf> {
    let cargo_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(cargo_bin)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or_else(|| HarnessError::Missing {
            program: program.into(),
            hint,
        })
}

/// A running server process whose output goes to `log`.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Self> {
        let io = |source| HarnessError::Io {
            what: format!("starting {name}"),
            source,
        };
        let out = File::create(&log).map_err(io)?;
        let err = out.try_clone().map_err(io)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io)?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    /// The process id (0 once it was reaped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// True once the process has exited (it is reaped here).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }

    /// Waits until `ready` returns true, or fails with the tail of the log.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if ready() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(self.not_ready(timeout, format!("exited with {status}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.not_ready(timeout, "timed out".into()))
    }

    fn not_ready(&self, timeout: Duration, why: String) -> HarnessError {
        HarnessError::NotReady {
            what: format!("{} ({why})", self.name),
            secs: timeout.as_secs(),
            log: self.log_tail(30),
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `signal` (a `kill` name such as `HUP`) to the process, if it runs.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `timeout` before killing it.
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal("TERM");
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when something accepts TCP connections on the loopback port.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/PID/stat` (clock ticks
/// of 1/100 s, Linux's fixed `USER_HZ`); `None` when it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The fields of `/proc/PID/stat` after the command name, from the state (field 3) on.
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// How long a one-shot command a test runs (the `verdict` CLI, `--migrate-only`, a gateway that
/// should refuse to start) may take. Far above any healthy run; it exists so a child that hangs
/// fails its own test with its stderr instead of holding the whole CI run until its deadline.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// [`Command::output`] with a deadline: the child and its own children are killed once `timeout`
/// has passed, and the error says which program hung and what it had written to stderr.
pub trait OutputWithin {
    fn output_within(&mut self, timeout: Duration) -> std::io::Result<Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self, timeout: Duration) -> std::io::Result<Output> {
        // Its own process group, so a hung child's children die with it and free the pipes.
        let mut child = std::os::unix::process::CommandExt::process_group(self, 0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                child.wait()?;
                let stderr = stderr.join().unwrap_or_default();
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{:?} was killed after {} s; its stderr:\n{}",
                        self.get_program(),
                        timeout.as_secs(),
                        String::from_utf8_lossy(&stderr)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

/// Reads a child's pipe to its end on a thread of its own, so a full pipe never stalls the child.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_hangs_is_killed_and_named() {
        let started = Instant::now();
        let err = Command::new("sh")
            .args(["-c", "echo waiting >&2; sleep 60"])
            .output_within(Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            err.to_string().contains("\"sh\" was killed after 1 s"),
            "{err}"
        );
        assert!(err.to_string().contains("waiting"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_command_that_finishes_gives_its_output() {
        let out = Command::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .output_within(COMMAND_TIMEOUT)
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}
