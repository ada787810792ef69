//! Tool-list changes announced outside any request, so the gateway's server→client streams have
//! something real to carry.
//!
//! SIGHUP toggles *maintenance*: `long_task` is withdrawn from `tools/list` (and refused), or
//! offered again. Every client is told with `notifications/tools/list_changed`: handshake-era
//! sessions through their peer (rmcp delivers it on the session's GET stream), 2026-07-28 clients
//! through their `subscriptions/listen` streams.

use rmcp::{Peer, RoleServer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// The tool withdrawn during maintenance.
pub const MAINTENANCE_TOOL: &str = "long_task";

pub struct ToolChanges {
    maintenance: AtomicBool,
    sessions: Mutex<Vec<Peer<RoleServer>>>,
    subscriptions: broadcast::Sender<()>,
}

impl Default for ToolChanges {
    fn default() -> Self {
        Self {
            maintenance: AtomicBool::new(false),
            sessions: Mutex::new(Vec::new()),
            subscriptions: broadcast::channel(16).0,
        }
    }
}

impl ToolChanges {
    /// Whether `tool` is withdrawn right now.
    pub fn withdrawn(&self, tool: &str) -> bool {
        tool == MAINTENANCE_TOOL && self.maintenance.load(Ordering::SeqCst)
    }

    /// Remembers an initialized handshake-era session.
    pub fn add_session(&self, peer: Peer<RoleServer>) {
        self.sessions.lock().expect("sessions lock").push(peer);
    }

    /// A receiver that wakes on every change, for one `subscriptions/listen` stream.
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.subscriptions.subscribe()
    }

    /// Toggles maintenance and tells every client; sessions that are gone are forgotten.
    pub async fn toggle(&self) {
        let now = !self.maintenance.fetch_xor(true, Ordering::SeqCst);
        eprintln!(
            "work-memory: maintenance {}",
            if now { "on" } else { "off" }
        );
        let sessions = {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            sessions.retain(|peer| !peer.is_transport_closed());
            sessions.clone()
        };
        for peer in sessions {
            let _ = peer.notify_tool_list_changed().await;
        }
        let _ = self.subscriptions.send(());
    }
}
