//! Hostile input and authentication, against the real binary and ClickHouse: quotes,
//! backslashes, SQL fragments and LIKE metacharacters in every filter field give exact (often
//! empty) answers, never a ClickHouse error; NUL bytes and invalid enums are INVALID_ARGUMENT;
//! non-UTF-8 strings are refused by the protobuf decoder before the service sees them; requests
//! without a valid token are UNAUTHENTICATED while health stays open.

use verdict_proto::pb::{self, DecisionKind, RiskClass};
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::audit_rows::{self, Call};
use verdict_tests::query::{authed, QueryService, TOKEN};
use verdict_tests::ClickHouse;

const NASTY: &[&str] = &[
    "'",
    "\"",
    "\\",
    "\\'",
    "' OR 1=1 --",
    "') OR ('1'='1",
    "%",
    "_",
    "*",
    "?",
    "a?b",
    "x\\' OR 1=1 --",
    "`; DROP TABLE events; --",
    "日本語",
];

/// An agent and a tool whose names contain every metacharacter.
const ODD_AGENT: &str = "o'brien\"\\%_*?";
const ODD_TOOL: &str = "tool%_\\x";

async fn attempts(
    client: &mut pb::audit_query_client::AuditQueryClient<tonic::transport::Channel>,
    filter: pb::EventFilter,
) -> Result<Vec<(String, String)>, tonic::Status> {
    let response = client
        .who_tried(authed(
            pb::WhoTriedRequest {
                filter: Some(filter),
                grouped: true,
                limit: 0,
            },
            TOKEN,
        ))
        .await?;
    Ok(response
        .into_inner()
        .attempts
        .into_iter()
        .map(|a| (a.agent_id, a.tool))
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_filters_are_values_never_sql() {
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let db = clickhouse.client();
    audit_rows::migrate(&db).await.unwrap();
    let mut writer = ChainWriter::new("gw-1", SecretKey::from_seed(&[6; 32]));
    let mut events = Vec::new();
    for (agent, tool) in [
        (ODD_AGENT, ODD_TOOL),
        ("plain", "toolXYZx"),
        ("plain", "list_work_memories"),
    ] {
        events.push(
            writer.append(
                Call {
                    time_unix_nanos: 1_750_000_000_000_000_000 + events.len() as i64,
                    agent,
                    session: "s",
                    tool,
                    risk: RiskClass::Write,
                    arguments_json: r#"{"action":"it's \"quoted\"","path":"C:\\dir"}"#,
                    targets: &[("session_id", "o'brien")],
                    decision: DecisionKind::Deny,
                    reason: "quote ' and backslash \\ in a reason",
                }
                .body(),
            ),
        );
    }
    audit_rows::store_events(&db, &events).await.unwrap();
    let service = QueryService::start(&clickhouse.url(), None, "").expect("verdict-query");
    let mut client = service.client().await;

    for nasty in NASTY {
        let text = nasty.to_string();
        let filters = [
            pb::EventFilter {
                agents: vec![text.clone()],
                ..Default::default()
            },
            pb::EventFilter {
                tools: vec![text.clone()],
                ..Default::default()
            },
            pb::EventFilter {
                upstreams: vec![text.clone()],
                ..Default::default()
            },
            pb::EventFilter {
                chain_ids: vec![text.clone()],
                ..Default::default()
            },
            pb::EventFilter {
                reason_contains: format!("{text}{text}zz"),
                ..Default::default()
            },
            pb::EventFilter {
                targets: vec![pb::TargetMatch {
                    name: text.clone(),
                    value: text.clone(),
                }],
                ..Default::default()
            },
            pb::EventFilter {
                arguments: vec![pb::ArgumentMatch {
                    key: text.clone(),
                    value: text.clone(),
                }],
                ..Default::default()
            },
        ];
        for filter in filters {
            let got = attempts(&mut client, filter.clone())
                .await
                .unwrap_or_else(|e| panic!("{nasty:?} in {filter:?}: {e}\n{}", service.log_tail()));
            let expected: Vec<(String, String)> = match (*nasty, filter.tools.is_empty()) {
                // Globs: `*` matches every tool, `?` every one-character tool (none).
                ("*", false) => vec![
                    ("plain".into(), "list_work_memories".into()),
                    ("plain".into(), "toolXYZx".into()),
                    (ODD_AGENT.into(), ODD_TOOL.into()),
                ],
                _ => vec![],
            };
            assert_eq!(got, expected, "{nasty:?} in {filter:?}");
        }
    }

    // Exact matches on values full of metacharacters find exactly the odd row.
    let odd = vec![(ODD_AGENT.to_owned(), ODD_TOOL.to_owned())];
    let exact = [
        pb::EventFilter {
            agents: vec![ODD_AGENT.into()],
            ..Default::default()
        },
        pb::EventFilter {
            tools: vec![ODD_TOOL.into()],
            ..Default::default()
        },
        // The glob's `%`, `_` and `\` are literal; only `*` is a wildcard.
        pb::EventFilter {
            tools: vec!["tool%_\\*".into()],
            ..Default::default()
        },
        pb::EventFilter {
            agents: vec![ODD_AGENT.into()],
            targets: vec![pb::TargetMatch {
                name: "session_id".into(),
                value: "o'brien".into(),
            }],
            arguments: vec![pb::ArgumentMatch {
                key: "action".into(),
                value: "it's \"quoted\"".into(),
            }],
            reason_contains: "quote ' and backslash \\".into(),
            ..Default::default()
        },
    ];
    for filter in exact {
        assert_eq!(
            attempts(&mut client, filter.clone()).await.unwrap(),
            odd,
            "{filter:?}"
        );
    }

    // NUL bytes and unknown enum values: INVALID_ARGUMENT naming the field.
    let invalid = [
        (
            pb::EventFilter {
                agents: vec!["a\0b".into()],
                ..Default::default()
            },
            "agents",
        ),
        (
            pb::EventFilter {
                tools: vec!["\0".into()],
                ..Default::default()
            },
            "tools",
        ),
        (
            pb::EventFilter {
                arguments: vec![pb::ArgumentMatch {
                    key: "k".into(),
                    value: "v\0".into(),
                }],
                ..Default::default()
            },
            "arguments.value",
        ),
        (
            pb::EventFilter {
                decisions: vec![42],
                ..Default::default()
            },
            "decisions",
        ),
        (
            pb::EventFilter {
                risks: vec![0],
                ..Default::default()
            },
            "risks",
        ),
        (
            pb::EventFilter {
                time: Some(pb::TimeRange {
                    from_unix_nanos: 10,
                    to_unix_nanos: 5,
                }),
                ..Default::default()
            },
            "time",
        ),
    ];
    for (filter, field) in invalid {
        let err = attempts(&mut client, filter).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }

    // A forged page token with a 1 MB chain id: INVALID_ARGUMENT, never sent to ClickHouse.
    use base64::Engine;
    let forged = serde_json::json!({"time": 1, "chain_id": "c".repeat(1 << 20), "seq": 1});
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    let err = client
        .search(authed(
            pb::SearchRequest {
                page_size: 10,
                page_token: token,
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Non-UTF-8 bytes in a string field: the request is refused while decoding (tonic answers
    // INTERNAL for a message it cannot decode), before any service code or SQL runs.
    let err = raw_who_tried(&service, b"\xff\xfeagent").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.message().contains("UTF-8"), "{}", err.message());
    // The service is unharmed.
    assert_eq!(
        attempts(
            &mut client,
            pb::EventFilter {
                agents: vec![ODD_AGENT.into()],
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        odd
    );
}

/// `WhoTriedRequest` with `filter.agents` as raw bytes (the wire format of a string field).
#[derive(Clone, PartialEq, prost::Message)]
struct RawFilter {
    #[prost(bytes = "vec", repeated, tag = "2")]
    agents: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawWhoTried {
    #[prost(message, optional, tag = "1")]
    filter: Option<RawFilter>,
}

async fn raw_who_tried(
    service: &QueryService,
    agent: &[u8],
) -> Result<pb::WhoTriedResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(service.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let request = authed(
        RawWhoTried {
            filter: Some(RawFilter {
                agents: vec![agent.to_vec()],
            }),
        },
        TOKEN,
    );
    let codec = tonic_prost::ProstCodec::<RawWhoTried, pb::WhoTriedResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/verdict.v1.AuditQuery/WhoTried");
    grpc.unary(request, path, codec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_token_are_unauthenticated() {
    let clickhouse = ClickHouse::start().expect("clickhouse");
    audit_rows::migrate(&clickhouse.client()).await.unwrap();
    let service = QueryService::start(&clickhouse.url(), None, "").expect("verdict-query");
    let mut client = service.client().await;
    let request = || pb::ListChainHeadsRequest {};

    let err = client
        .list_chain_heads(tonic::Request::new(request()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    for token in [
        "wrong-token",
        "",
        "test-query-token2",
        &TOKEN[..TOKEN.len() - 1],
    ] {
        let err = client
            .list_chain_heads(authed(request(), token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "token {token:?}");
    }
    let mut basic = tonic::Request::new(request());
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {TOKEN}").parse().unwrap());
    assert_eq!(
        client.list_chain_heads(basic).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let err = client
        .export(tonic::Request::new(pb::ExportRequest {
            filter: None,
            format: 1,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // The right token works; health needs none.
    assert!(client
        .list_chain_heads(authed(request(), TOKEN))
        .await
        .unwrap()
        .into_inner()
        .heads
        .is_empty());
    let channel = tonic::transport::Channel::from_shared(service.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "verdict.v1.AuditQuery".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}
