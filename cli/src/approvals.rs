//! `verdict approvals list|approve|reject`: a human decides calls a `require_approval` rule holds,
//! through the gateway's admin API.
//!
//! `approve` and `reject` first fetch the pending call and send back the arguments hash that was
//! shown, so a decision can only apply to the call that was reviewed.

use anyhow::{bail, Context, Result};
use std::process::ExitCode;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;
use verdict_proto::pb::gateway_admin_client::GatewayAdminClient;
use verdict_proto::pb::{self, DecisionKind};

#[derive(clap::Args)]
pub struct Connection {
    /// The gateway's admin API (`[admin] listen`).
    #[arg(
        long,
        env = "VERDICT_ADMIN_URL",
        default_value = "http://127.0.0.1:8781"
    )]
    admin_url: String,
}

/// The environment variable holding an admin token from `[admin] tokens`. It is read from the
/// environment only, never from argv, where every user of the machine could see it.
const TOKEN_ENV: &str = "VERDICT_ADMIN_TOKEN";

fn admin_token() -> Result<String> {
    match std::env::var(TOKEN_ENV) {
        Ok(token) if !token.is_empty() => Ok(token),
        _ => bail!(
            "no admin token: set {TOKEN_ENV} to one of the gateway's [admin] tokens (it is read from the environment only)"
        ),
    }
}

/// A refusal from the admin API in words (not raw tonic text).
fn admin_status(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => anyhow::anyhow!(
            "the gateway refused the admin token in {TOKEN_ENV} ({}); check it against [admin] tokens",
            status.message()
        ),
        code => anyhow::anyhow!("admin API: {code:?}: {}", status.message()),
    }
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Calls waiting for a decision.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Release a held call to its upstream.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Refuse a held call; the agent reads the reason.
    Reject {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn run(command: Command) -> Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        match command {
            Command::List { connection, json } => list(&connection, json).await,
            Command::Approve {
                id,
                reason,
                connection,
            } => decide(&connection, &id, true, reason).await,
            Command::Reject {
                id,
                reason,
                connection,
            } => decide(&connection, &id, false, reason).await,
        }
    })
}

async fn client(connection: &Connection) -> Result<GatewayAdminClient<Channel>> {
    let channel = Channel::from_shared(connection.admin_url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to the admin API at {}", connection.admin_url))?;
    Ok(GatewayAdminClient::new(channel))
}

fn authorized<T>(message: T) -> Result<Request<T>> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {}", admin_token()?)
        .parse()
        .with_context(|| format!("{TOKEN_ENV} is not a valid header value"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

async fn pending(connection: &Connection) -> Result<Vec<pb::PendingApproval>> {
    let request = authorized(pb::ListApprovalsRequest {})?;
    Ok(client(connection)
        .await?
        .list_approvals(request)
        .await
        .map_err(admin_status)?
        .into_inner()
        .approvals)
}

async fn list(connection: &Connection, json: bool) -> Result<ExitCode> {
    let approvals = pending(connection).await?;
    if json {
        for a in &approvals {
            let line = serde_json::json!({
                "approval_id": a.approval_id, "agent": a.agent_id, "session": a.session,
                "upstream": a.upstream, "tool": a.tool, "arguments": a.arguments_json,
                "arguments_sha256": hex::encode(&a.arguments_sha256), "rule": a.rule_id,
                "requested_unix_nanos": a.requested_unix_nanos, "expires_unix_nanos": a.expires_unix_nanos,
            });
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if approvals.is_empty() {
        println!("no calls are waiting for approval");
    }
    for a in &approvals {
        println!(
            "{}  agent {}  session {}",
            a.approval_id, a.agent_id, a.session
        );
        println!(
            "    {}/{}  rule {}  expires in {} s",
            a.upstream,
            a.tool,
            a.rule_id,
            seconds_left(a.expires_unix_nanos)
        );
        println!("    arguments {}", a.arguments_json);
        println!("    arguments sha256 {}", hex::encode(&a.arguments_sha256));
    }
    Ok(ExitCode::SUCCESS)
}

fn seconds_left(expires_unix_nanos: i64) -> i64 {
    (expires_unix_nanos - verdict_proto::now_unix_nanos()).max(0) / 1_000_000_000
}

async fn decide(
    connection: &Connection,
    id: &str,
    approve: bool,
    reason: String,
) -> Result<ExitCode> {
    let Some(held) = pending(connection)
        .await?
        .into_iter()
        .find(|a| a.approval_id == id)
    else {
        bail!("no pending approval {id} (decided, expired, or never existed)");
    };
    let request = authorized(pb::DecideApprovalRequest {
        approval_id: id.to_owned(),
        approve,
        reason,
        arguments_sha256: held.arguments_sha256,
    })?;
    let decided = client(connection)
        .await?
        .decide_approval(request)
        .await
        .map_err(admin_status)?
        .into_inner();
    let what = if decided.decision == DecisionKind::Approved as i32 {
        "approved"
    } else {
        "rejected"
    };
    println!(
        "{what} {id} ({}/{}); recorded as {}:{}",
        held.upstream, held.tool, decided.chain_id, decided.seq
    );
    Ok(ExitCode::SUCCESS)
}
