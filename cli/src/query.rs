//! `verdict who-tried | search | summary | export | verify-chain | findings`: a client of the
//! query service's gRPC API (`verdict.v1.AuditQuery`).
//!
//! The service is at `--query-url` (env `VERDICT_QUERY_URL`); the bearer token comes only from
//! the environment (`VERDICT_QUERY_TOKEN`), so it never shows in `ps` or shell history. Output is
//! a table for people, or `--json` (one JSON document, protobuf field names) for scripts.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use unicode_width::UnicodeWidthStr;
use verdict_proto::pb::{self, audit_query_client::AuditQueryClient};
use verdict_proto::pb::{DecisionKind, OutcomeKind, RiskClass};
use verdict_proto::Label;

#[derive(clap::Args)]
pub struct Connection {
    /// Query service address.
    #[arg(
        long,
        env = "VERDICT_QUERY_URL",
        default_value = "http://127.0.0.1:8790"
    )]
    query_url: String,
    /// CA certificate (PEM) to trust for an `https://` query URL, besides the system's roots.
    #[arg(long, env = "VERDICT_QUERY_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for a service that requires one (with --client-key).
    #[arg(long, env = "VERDICT_QUERY_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Client private key (PEM), with --client-cert.
    #[arg(long, env = "VERDICT_QUERY_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which events: every option narrows; repeated options match any of their values.
#[derive(clap::Args, Default)]
pub struct Filter {
    /// Agent id (repeatable).
    #[arg(long = "agent")]
    agents: Vec<String>,
    /// Tool name; `*` and `?` globs allowed (repeatable).
    #[arg(long = "tool")]
    tools: Vec<String>,
    /// read | write | destructive (repeatable).
    #[arg(long = "risk")]
    risks: Vec<String>,
    /// allow | deny | hide | rate_limited | approval_requested | approved | rejected |
    /// approval_expired | error (repeatable).
    #[arg(long = "decision")]
    decisions: Vec<String>,
    /// Target `name=value`, `name=` (any value) or `=value` (any name) (repeatable).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Argument `key=value` (string arguments; all must match); a value with `*` or `?` is a glob
    /// matched ignoring case, e.g. `action=delete*` (repeatable).
    #[arg(long = "arg")]
    arguments: Vec<String>,
    /// Upstream server name (repeatable).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Chain id (repeatable).
    #[arg(long = "chain")]
    chains: Vec<String>,
    /// Substring of the decision reason.
    #[arg(long)]
    reason_contains: Option<String>,
    /// Start: a duration back from now (`90m`, `24h`, `7d`) or Unix seconds.
    #[arg(long, visible_alias = "from")]
    since: Option<String>,
    /// End (exclusive), same forms as --since.
    #[arg(long, visible_alias = "to")]
    until: Option<String>,
}

#[derive(clap::Args)]
pub struct WhoTriedArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filter: Filter,
    /// Also print counts per agent × target.
    #[arg(long)]
    grouped: bool,
    /// Attempts at most (service default 1000).
    #[arg(long, default_value_t = 0)]
    limit: u32,
}

#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filter: Filter,
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// Continue from a previous page's token.
    #[arg(long, default_value = "")]
    page_token: String,
}

#[derive(clap::Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filter: Filter,
    /// agent | tool | risk | decision | upstream (repeatable, in order).
    #[arg(long = "by", default_values_t = ["agent".to_owned(), "decision".to_owned()])]
    by: Vec<String>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filter: Filter,
    /// jsonl | csv | ocsf
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// File to write (`-` for stdout).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct VerifyChainArgs {
    #[command(flatten)]
    connection: Connection,
    /// Chain id.
    #[arg(long)]
    chain: String,
    /// First seq (default: the chain's first stored event).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Last seq (default: the newest stored event).
    #[arg(long, default_value_t = 0)]
    to: u64,
}

#[derive(clap::Args)]
pub struct FindingsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Finding kind, e.g. bad_signature, gap, fork (repeatable).
    #[arg(long = "kind")]
    kinds: Vec<String>,
    #[arg(long = "chain")]
    chains: Vec<String>,
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    #[arg(long, default_value = "")]
    page_token: String,
}

pub enum Command {
    WhoTried(WhoTriedArgs),
    Search(SearchArgs),
    Summary(SummaryArgs),
    Export(ExportArgs),
    VerifyChain(VerifyChainArgs),
    Findings(FindingsArgs),
    Heads(crate::witnessed::HeadsArgs),
    Prove(crate::witnessed::ProveArgs),
    Follow(crate::follow::Args),
}

impl Command {
    fn connection(&self) -> &Connection {
        match self {
            Self::WhoTried(a) => &a.connection,
            Self::Search(a) => &a.connection,
            Self::Summary(a) => &a.connection,
            Self::Export(a) => &a.connection,
            Self::VerifyChain(a) => &a.connection,
            Self::Findings(a) => &a.connection,
            Self::Heads(a) => &a.connection,
            Self::Prove(a) => &a.connection,
            Self::Follow(a) => a.connection(),
        }
    }
}

pub fn run(command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::connect(command.connection()).await?;
        let json = command.connection().json;
        match command {
            Command::WhoTried(args) => who_tried(client, args, json).await,
            Command::Search(args) => search(client, args, json).await,
            Command::Summary(args) => summary(client, args, json).await,
            Command::Export(args) => export(client, args).await,
            Command::VerifyChain(args) => verify_chain(client, args, json).await,
            Command::Findings(args) => findings(client, args, json).await,
            Command::Heads(args) => crate::witnessed::heads(client, args).await,
            Command::Prove(args) => crate::witnessed::prove(client, args).await,
            Command::Follow(args) => crate::follow::run(client, args).await,
        }
    })
}

/// The newest witnessed head of every chain, from the query service at `url` (the token, CA and
/// client certificate from the same environment variables as the query commands).
pub fn newest_heads(url: &str) -> Result<Vec<pb::SignedHead>> {
    let env = |name| std::env::var_os(name).map(PathBuf::from);
    let connection = Connection {
        query_url: url.to_owned(),
        ca_cert: env("VERDICT_QUERY_CA_CERT"),
        client_cert: env("VERDICT_QUERY_CLIENT_CERT"),
        client_key: env("VERDICT_QUERY_CLIENT_KEY"),
        json: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = Client::connect(&connection).await?;
        let request = pb::ListWitnessedHeadsRequest::default();
        Ok(client
            .inner
            .list_witnessed_heads(client.request(request))
            .await
            .map_err(status)?
            .into_inner()
            .heads)
    })
}

/// TLS for an `https://` URL: the system roots plus `--ca-cert`, and a client certificate when
/// given.
fn client_tls(connection: &Connection) -> Result<ClientTlsConfig> {
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = &connection.ca_cert {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&connection.client_cert, &connection.client_key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// The gRPC client with the bearer token attached to every request.
pub(crate) struct Client {
    pub(crate) inner: AuditQueryClient<Channel>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Client {
    pub(crate) async fn connect(connection: &Connection) -> Result<Self> {
        let url = connection.query_url.as_str();
        let token = std::env::var("VERDICT_QUERY_TOKEN")
            .context("set VERDICT_QUERY_TOKEN to a query service token")?;
        let authorization = format!("Bearer {token}")
            .parse()
            .context("VERDICT_QUERY_TOKEN must be printable ASCII")?;
        let mut endpoint = Channel::from_shared(url.to_owned())
            .with_context(|| format!("{url:?} is not a query service URL"))?;
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(client_tls(connection)?)?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to the query service at {url}"))?;
        let inner = AuditQueryClient::new(channel).max_decoding_message_size(64 << 20);
        Ok(Self {
            inner,
            authorization,
        })
    }

    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.authorization.clone());
        request
    }
}

pub(crate) fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("query service: {:?}: {}", err.code(), err.message())
}

impl Filter {
    pub(crate) fn to_proto(&self) -> Result<pb::EventFilter> {
        let enums = |values: &[String], parse: fn(&str) -> Option<i32>, what: &str| {
            values
                .iter()
                .map(|v| parse(v).with_context(|| format!("unknown {what} {v:?}")))
                .collect::<Result<Vec<i32>>>()
        };
        let now = verdict_proto::now_unix_nanos();
        let time = match (&self.since, &self.until) {
            (None, None) => None,
            (since, until) => Some(pb::TimeRange {
                from_unix_nanos: since
                    .as_deref()
                    .map(|s| parse_time(s, now))
                    .transpose()?
                    .unwrap_or(0),
                to_unix_nanos: until
                    .as_deref()
                    .map(|s| parse_time(s, now))
                    .transpose()?
                    .unwrap_or(0),
            }),
        };
        Ok(pb::EventFilter {
            time,
            agents: self.agents.clone(),
            tools: self.tools.clone(),
            // Enum names as stored, from the contract's one name table.
            risks: enums(
                &self.risks,
                |v| RiskClass::from_label(v).map(i32::from),
                "risk",
            )?,
            decisions: enums(
                &self.decisions,
                |v| DecisionKind::from_label(v).map(i32::from),
                "decision",
            )?,
            targets: self
                .targets
                .iter()
                .map(|t| {
                    let (name, value) = t
                        .split_once('=')
                        .with_context(|| format!("--target {t:?}: expected name=value"))?;
                    Ok(pb::TargetMatch {
                        name: name.into(),
                        value: value.into(),
                    })
                })
                .collect::<Result<_>>()?,
            upstreams: self.upstreams.clone(),
            reason_contains: self.reason_contains.clone().unwrap_or_default(),
            arguments: self
                .arguments
                .iter()
                .map(|a| {
                    let (key, value) = a
                        .split_once('=')
                        .with_context(|| format!("--arg {a:?}: expected key=value"))?;
                    Ok(pb::ArgumentMatch {
                        key: key.into(),
                        value: value.into(),
                    })
                })
                .collect::<Result<_>>()?,
            chain_ids: self.chains.clone(),
        })
    }
}

/// A duration back from `now` (`90s`, `30m`, `24h`, `7d`) or Unix seconds, in nanoseconds.
pub(crate) fn parse_time(text: &str, now: i64) -> Result<i64> {
    let unit = |suffix: char| match suffix {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86_400),
        _ => None,
    };
    let last = text.chars().last().context("empty time")?;
    if let Some(seconds) = unit(last) {
        let n: i64 = text[..text.len() - 1]
            .parse()
            .with_context(|| format!("bad duration {text:?}"))?;
        return Ok(now - n * seconds * 1_000_000_000);
    }
    let seconds: i64 = text
        .parse()
        .with_context(|| format!("bad time {text:?}: use 24h, 7d or Unix seconds"))?;
    Ok(seconds * 1_000_000_000)
}

/// `2024-05-01T12:00:00.123Z` for nanoseconds since the epoch (UTC).
fn format_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let millis = nanos.rem_euclid(1_000_000_000) / 1_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `-` for an unset enum name.
fn or_dash(name: &'static str) -> &'static str {
    if name.is_empty() {
        "-"
    } else {
        name
    }
}

fn decision_name(v: i32) -> &'static str {
    or_dash(DecisionKind::label_of(v))
}

/// Prints rows as aligned columns, measured in terminal columns (Hangul and other wide
/// characters take two), so tables stay aligned whatever the arguments and reasons contain.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    print!("{}", render_table(header, rows));
}

fn render_table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.width()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.width());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w.saturating_sub(c.width()))))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn targets(targets: &[pb::Target]) -> String {
    targets
        .iter()
        .map(|t| format!("{}={}", t.name, t.value))
        .collect::<Vec<_>>()
        .join(",")
}

fn attempt_row(a: &pb::Attempt) -> Vec<String> {
    vec![
        format_time(a.time_unix_nanos),
        a.agent_id.clone(),
        a.session.clone(),
        a.tool.clone(),
        targets(&a.targets),
        decision_name(a.decision).to_owned(),
        or_dash(OutcomeKind::label_of(a.outcome)).to_owned(),
        a.rule_id.clone(),
        format!("{}:{}", a.chain_id, a.seq),
        a.verification.clone(),
    ]
}

const ATTEMPT_HEADER: &[&str] = &[
    "TIME",
    "AGENT",
    "SESSION",
    "TOOL",
    "TARGETS",
    "DECISION",
    "OUTCOME",
    "RULE",
    "CHAIN:SEQ",
    "VERIFICATION",
];

fn print_json(value: serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
}

fn attempt_json(a: &pb::Attempt) -> serde_json::Value {
    serde_json::json!({
        "time_unix_nanos": a.time_unix_nanos,
        "agent_id": a.agent_id,
        "session": a.session,
        "client_name": a.client_name,
        "client_version": a.client_version,
        "upstream": a.upstream,
        "tool": a.tool,
        "risk": RiskClass::label_of(a.risk),
        "targets": a.targets.iter().map(|t| serde_json::json!({"name": t.name, "value": t.value})).collect::<Vec<_>>(),
        "decision": DecisionKind::label_of(a.decision),
        "rule_id": a.rule_id,
        "reason": a.reason,
        "outcome": OutcomeKind::label_of(a.outcome),
        "approval_id": a.approval_id,
        "approver": a.approver,
        "chain_id": a.chain_id,
        "seq": a.seq,
        "verification": a.verification,
    })
}

async fn who_tried(mut client: Client, args: WhoTriedArgs, json: bool) -> Result<ExitCode> {
    let request = client.request(pb::WhoTriedRequest {
        filter: Some(args.filter.to_proto()?),
        grouped: args.grouped,
        limit: args.limit,
    });
    let response = client
        .inner
        .who_tried(request)
        .await
        .map_err(status)?
        .into_inner();
    let groups: Vec<serde_json::Value> = response
        .groups
        .iter()
        .map(|g| {
            let target = g.target.clone().unwrap_or_default();
            let counts: serde_json::Map<String, serde_json::Value> = g
                .counts
                .iter()
                .map(|c| (decision_name(c.decision).to_owned(), c.count.into()))
                .collect();
            serde_json::json!({
                "agent_id": g.agent_id,
                "target": {"name": target.name, "value": target.value},
                "counts": counts,
                "first_unix_nanos": g.first_unix_nanos,
                "last_unix_nanos": g.last_unix_nanos,
            })
        })
        .collect();
    if json {
        print_json(serde_json::json!({
            "attempts": response.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
            "groups": groups,
            "truncated": response.truncated,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    table(
        ATTEMPT_HEADER,
        response.attempts.iter().map(attempt_row).collect(),
    );
    if response.truncated {
        println!("(more attempts matched; raise --limit or narrow the filter)");
    }
    if args.grouped {
        println!();
        table(
            &["AGENT", "TARGET", "COUNTS", "FIRST", "LAST"],
            response
                .groups
                .iter()
                .zip(&groups)
                .map(|(g, j)| {
                    let target = g.target.clone().unwrap_or_default();
                    vec![
                        g.agent_id.clone(),
                        format!("{}={}", target.name, target.value),
                        j["counts"].to_string(),
                        format_time(g.first_unix_nanos),
                        format_time(g.last_unix_nanos),
                    ]
                })
                .collect(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn search(mut client: Client, args: SearchArgs, json: bool) -> Result<ExitCode> {
    let request = client.request(pb::SearchRequest {
        filter: Some(args.filter.to_proto()?),
        page_size: args.page_size,
        page_token: args.page_token,
    });
    let response = client
        .inner
        .search(request)
        .await
        .map_err(status)?
        .into_inner();
    let attempts: Vec<pb::Attempt> = response
        .events
        .into_iter()
        .filter_map(|e| e.attempt)
        .collect();
    if json {
        print_json(serde_json::json!({
            "events": attempts.iter().map(attempt_json).collect::<Vec<_>>(),
            "next_page_token": response.next_page_token,
        }));
    } else {
        table(ATTEMPT_HEADER, attempts.iter().map(attempt_row).collect());
        if !response.next_page_token.is_empty() {
            println!("next page: --page-token {}", response.next_page_token);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn summary(mut client: Client, args: SummaryArgs, json: bool) -> Result<ExitCode> {
    let group_by = args
        .by
        .iter()
        .map(|d| {
            Ok(match d.as_str() {
                "agent" => pb::Dimension::Agent,
                "tool" => pb::Dimension::Tool,
                "risk" => pb::Dimension::Risk,
                "decision" => pb::Dimension::Decision,
                "upstream" => pb::Dimension::Upstream,
                other => bail!("unknown dimension {other:?}"),
            } as i32)
        })
        .collect::<Result<Vec<_>>>()?;
    let request = client.request(pb::SummarizeRequest {
        filter: Some(args.filter.to_proto()?),
        group_by,
    });
    let rows = client
        .inner
        .summarize(request)
        .await
        .map_err(status)?
        .into_inner()
        .rows;
    if json {
        print_json(serde_json::json!(rows
            .iter()
            .map(|r| serde_json::json!({"keys": r.keys, "count": r.count}))
            .collect::<Vec<_>>()));
    } else {
        let mut header: Vec<String> = args.by.iter().map(|b| b.to_uppercase()).collect();
        header.push("COUNT".into());
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        table(
            &header,
            rows.into_iter()
                .map(|r| {
                    let mut cells = r.keys;
                    cells.push(r.count.to_string());
                    cells
                })
                .collect(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(mut client: Client, args: ExportArgs) -> Result<ExitCode> {
    let format = match args.format.as_str() {
        "jsonl" => pb::ExportFormat::Jsonl,
        "csv" => pb::ExportFormat::Csv,
        "ocsf" => pb::ExportFormat::Ocsf,
        other => bail!("unknown format {other:?}: jsonl, csv or ocsf"),
    };
    let request = client.request(pb::ExportRequest {
        filter: Some(args.filter.to_proto()?),
        format: format as i32,
    });
    let mut stream = client
        .inner
        .export(request)
        .await
        .map_err(status)?
        .into_inner();
    let mut out: Box<dyn Write> = if args.out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.out)
                .with_context(|| format!("creating {}", args.out.display()))?,
        ))
    };
    let mut bytes = 0usize;
    while let Some(chunk) = stream.message().await.map_err(status)? {
        bytes += chunk.data.len();
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    if args.out.as_os_str() != "-" {
        eprintln!("wrote {bytes} bytes to {}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify_chain(mut client: Client, args: VerifyChainArgs, json: bool) -> Result<ExitCode> {
    let request = client.request(pb::VerifyChainRequest {
        chain_id: args.chain,
        from_seq: args.from,
        to_seq: args.to,
    });
    let report = client
        .inner
        .verify_chain(request)
        .await
        .map_err(status)?
        .into_inner();
    if json {
        print_json(serde_json::json!({
            "chain_id": report.chain_id,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "events": report.events,
            "ok": report.ok,
            "breaks": report.breaks.iter().map(|b| serde_json::json!({
                "kind": b.kind, "seq": b.seq, "last_seq": b.last_seq, "detail": b.detail,
            })).collect::<Vec<_>>(),
            "head": report.head.as_ref().map(|h| serde_json::json!({
                "seq": h.seq, "hash": hex::encode(&h.hash), "key_id": h.key_id, "ended": h.ended,
            })),
        }));
    } else {
        println!(
            "chain {}: seqs {}..={} ({} events): {}",
            report.chain_id,
            report.first_seq,
            report.last_seq,
            report.events,
            if report.ok { "OK" } else { "BROKEN" }
        );
        for b in &report.breaks {
            println!(
                "  {} at seq {}..={}: {}",
                b.kind, b.seq, b.last_seq, b.detail
            );
        }
        if let Some(h) = &report.head {
            println!(
                "  head seq {} hash {} key {}{}",
                h.seq,
                hex::encode(&h.hash),
                h.key_id,
                if h.ended { " (ended)" } else { "" }
            );
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn findings(mut client: Client, args: FindingsArgs, json: bool) -> Result<ExitCode> {
    let request = client.request(pb::ListFindingsRequest {
        time: None,
        kinds: args.kinds,
        chain_ids: args.chains,
        page_size: args.page_size,
        page_token: args.page_token,
    });
    let response = client
        .inner
        .list_findings(request)
        .await
        .map_err(status)?
        .into_inner();
    if json {
        print_json(serde_json::json!({
            "findings": response.findings.iter().map(|f| serde_json::json!({
                "kind": f.kind, "chain_id": f.chain_id, "seq": f.seq, "last_seq": f.last_seq,
                "detail": f.detail, "detected_unix_nanos": f.detected_unix_nanos,
                "kafka_partition": f.kafka_partition, "kafka_offset": f.kafka_offset,
            })).collect::<Vec<_>>(),
            "next_page_token": response.next_page_token,
        }));
    } else {
        table(
            &["DETECTED", "KIND", "CHAIN", "SEQ", "DETAIL"],
            response
                .findings
                .iter()
                .map(|f| {
                    vec![
                        format_time(f.detected_unix_nanos),
                        f.kind.clone(),
                        f.chain_id.clone(),
                        if f.last_seq > f.seq {
                            format!("{}..={}", f.seq, f.last_seq)
                        } else {
                            f.seq.to_string()
                        },
                        f.detail.clone(),
                    ]
                })
                .collect(),
        );
        if !response.next_page_token.is_empty() {
            println!("next page: --page-token {}", response.next_page_token);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_wide_characters_by_display_width() {
        let out = render_table(
            &["REASON", "DECISION"],
            vec![
                vec!["세션은 사람이 삭제합니다".into(), "deny".into()],
                vec!["ok".into(), "allow".into()],
            ],
        );
        // The second column starts at the same terminal column on every line.
        let starts: Vec<usize> = out
            .lines()
            .map(|l| l[..l.rfind(' ').unwrap() + 1].width())
            .collect();
        assert_eq!(starts, [26, 26, 26], "{out}");
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_time(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }

    #[test]
    fn parses_relative_and_absolute_times() {
        let now = 100 * 86_400 * 1_000_000_000;
        assert_eq!(parse_time("1d", now).unwrap(), 99 * 86_400 * 1_000_000_000);
        assert_eq!(parse_time("60", now).unwrap(), 60_000_000_000);
        assert!(parse_time("x", now).is_err());
    }
}
