//! Keeping an HTTP upstream's server→gateway stream open for as long as its session lives.
//!
//! Without it, what an upstream sends outside a request (`notifications/tools/list_changed`
//! after its tools change, a `ping`) would never arrive: a Streamable HTTP server can only send
//! those on the stream the client opened for them. The stream is opened right after each
//! handshake ([`super::Upstream::mode`]) and reopened with backoff when it drops; a reopened
//! stream triggers a catalog refresh, since nothing missed meanwhile is replayed. It stops for
//! good when the upstream offers no such stream, and gives way to the next session's when the
//! session expires or is renegotiated.

use super::http::{HttpTransport, StreamEnd};
use super::Mode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

pub async fn run(transport: Arc<HttpTransport>, mode: Mode, stop: CancellationToken) {
    let mut retry = FIRST_RETRY;
    let mut reopening = false;
    loop {
        let ended = tokio::select! {
            _ = stop.cancelled() => return,
            ended = transport.stream_once(&mode, reopening) => ended,
        };
        match ended {
            StreamEnd::Unsupported(why) => {
                tracing::info!(%why, "upstream offers no server-to-client stream");
                return;
            }
            StreamEnd::Expired => {
                tracing::info!("upstream session expired; the next request renegotiates");
                // A refresh is such a request, so announcements resume without waiting for one.
                transport.resync();
                return;
            }
            StreamEnd::Closed { opened, why } => {
                tracing::debug!(%why, opened, "upstream stream closed; reopening");
                if opened {
                    retry = FIRST_RETRY;
                }
            }
        }
        reopening = true;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}
