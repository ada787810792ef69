//! Agent sessions.
//!
//! A handshake-era session starts at `initialize`, is named by the `Mcp-Session-Id` the gateway
//! issues, belongs to the agent that opened it (another agent's key never reaches it: 404), and
//! ends at DELETE or after `session_idle_secs` without requests. A stateless (2026-07-28) request
//! gets a session for its single exchange, keyed by the client-supplied `X-Verdict-Session`
//! header or else derived as `agent/client-name` (see README "Agent sessions").

use crate::mcp::ClientInfo;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Capacity of a session's server→client notification stream (GET /mcp); slow readers lag.
const NOTICE_CAPACITY: usize = 64;

#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub agent: String,
    /// "http" or "stdio".
    pub transport: &'static str,
    pub remote_addr: String,
    client: RwLock<ClientInfo>,
    inflight: Mutex<HashMap<String, CancellationToken>>,
    notices: broadcast::Sender<Value>,
    last_seen: Mutex<Instant>,
}

impl Session {
    pub fn new(
        id: String,
        agent: String,
        transport: &'static str,
        remote_addr: String,
        client: ClientInfo,
    ) -> Self {
        Self {
            id,
            agent,
            transport,
            remote_addr,
            client: RwLock::new(client),
            inflight: Mutex::new(HashMap::new()),
            notices: broadcast::channel(NOTICE_CAPACITY).0,
            last_seen: Mutex::new(Instant::now()),
        }
    }

    pub fn client(&self) -> ClientInfo {
        self.client.read().expect("client lock").clone()
    }

    pub fn set_client(&self, client: ClientInfo) {
        *self.client.write().expect("client lock") = client;
    }

    /// Registers an in-flight request so `notifications/cancelled` can reach it.
    pub fn track(self: &Arc<Self>, request_id: &Value) -> Inflight {
        let key = request_id.to_string();
        let token = CancellationToken::new();
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(key.clone(), token.clone());
        Inflight {
            session: Arc::clone(self),
            key,
            token,
        }
    }

    /// Cancels the in-flight request with this id, if any.
    pub fn cancel(&self, request_id: &Value) -> bool {
        let token = self
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&request_id.to_string());
        token.map(|t| t.cancel()).is_some()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.notices.subscribe()
    }

    fn touch(&self) {
        *self.last_seen.lock().expect("last_seen lock") = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_seen.lock().expect("last_seen lock").elapsed()
    }
}

/// An in-flight request; unregisters itself when dropped.
#[derive(Debug)]
pub struct Inflight {
    session: Arc<Session>,
    key: String,
    pub token: CancellationToken,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.session
            .inflight
            .lock()
            .expect("inflight lock")
            .remove(&self.key);
    }
}

/// Live handshake-era sessions.
#[derive(Debug)]
pub struct Sessions {
    map: RwLock<HashMap<String, Arc<Session>>>,
    idle: Duration,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            idle,
        }
    }

    pub fn insert(&self, session: Session) -> Arc<Session> {
        let session = Arc::new(session);
        self.map
            .write()
            .expect("sessions lock")
            .insert(session.id.clone(), Arc::clone(&session));
        session
    }

    /// The session with this id, if it exists and belongs to `agent`.
    pub fn get(&self, id: &str, agent: &str) -> Option<Arc<Session>> {
        let session = self.map.read().expect("sessions lock").get(id).cloned()?;
        (session.agent == agent).then(|| {
            session.touch();
            session
        })
    }

    pub fn remove(&self, id: &str, agent: &str) -> bool {
        let mut map = self.map.write().expect("sessions lock");
        match map.get(id) {
            Some(s) if s.agent == agent => map.remove(id).is_some(),
            _ => false,
        }
    }

    /// Sends a notification to every session's GET stream (e.g. `tools/list_changed`).
    pub fn broadcast(&self, notification: &Value) {
        for session in self.map.read().expect("sessions lock").values() {
            let _ = session.notices.send(notification.clone());
        }
    }

    /// Drops sessions idle for longer than the configured limit; returns how many.
    pub fn reap_idle(&self) -> usize {
        let mut map = self.map.write().expect("sessions lock");
        let before = map.len();
        map.retain(|_, s| s.idle_for() < self.idle);
        before - map.len()
    }

    /// Live sessions of one agent.
    pub fn count_for(&self, agent: &str) -> usize {
        self.map
            .read()
            .expect("sessions lock")
            .values()
            .filter(|s| s.agent == agent)
            .count()
    }

    pub fn len(&self) -> usize {
        self.map.read().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
