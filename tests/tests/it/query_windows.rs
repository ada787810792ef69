//! The read paths built for scale, checked for exactness against a real ClickHouse: pages read
//! in time windows below their anchor (1 hour, 1 day, 7 days, 31 days, then unbounded), and
//! Summarize adds whole hours from the pre-aggregated `event_counts` to the partial hours it
//! counts from rows. 3,000 events spread over 40 days, denser towards now, so every window and
//! every kind of hour edge is crossed; each answer is compared with one computed here from the
//! events themselves.

use std::collections::BTreeMap;
use verdict_proto::pb::{self, DecisionKind, RiskClass};
use verdict_proto::{ChainWriter, SecretKey};
use verdict_tests::audit_rows::{self, Call};
use verdict_tests::query::{authed, who_tried, QueryService, TOKEN};
use verdict_tests::ClickHouse;

const EVENTS: usize = 3_000;
const HOUR: i64 = 3_600_000_000_000;
const DAY: i64 = 24 * HOUR;
const TOOLS: [&str; 3] = ["session_manager", "list_work_memories", "add_work_memory"];
const AGENTS: [&str; 4] = ["agent-a", "agent-b", "agent-c", "agent-d"];
const DECISIONS: [DecisionKind; 3] = [
    DecisionKind::Allow,
    DecisionKind::Deny,
    DecisionKind::Approved,
];

/// One generated event, as the answers should show it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    time: i64,
    chain_id: String,
    seq: u64,
    agent: &'static str,
    tool: &'static str,
    decision: &'static str,
}

/// Event `i` lies `i² · 40 days / EVENTS²` (plus a few odd seconds) before `now`.
fn time_of(i: usize, now: i64) -> i64 {
    let back = (i as i128 * i as i128 * 40 * DAY as i128 / (EVENTS * EVENTS) as i128) as i64;
    now - back - (i as i64 % 7) * 1_000_000_007
}

async fn load(db: &clickhouse::Client, now: i64) -> Vec<Expected> {
    audit_rows::migrate(db).await.unwrap();
    let key = SecretKey::from_seed(&[3; 32]);
    let mut chains = [
        ChainWriter::new("gw-1", key.clone()),
        ChainWriter::new("gw-2", key),
    ];
    let mut expected = Vec::new();
    let mut signed = Vec::new();
    // Oldest first, as a gateway would write them.
    for i in (0..EVENTS).rev() {
        let (agent, tool) = (AGENTS[i % 4], TOOLS[i % 3]);
        let decision = DECISIONS[(i / 3) % 3];
        let time = time_of(i, now);
        let writer = &mut chains[i % 2];
        let event = writer.append(
            Call {
                time_unix_nanos: time,
                agent,
                session: "mcp",
                tool,
                risk: RiskClass::Write,
                arguments_json: "{}",
                targets: &[],
                decision,
                reason: "",
            }
            .body(),
        );
        expected.push(Expected {
            time,
            chain_id: event.chain_id.clone(),
            seq: event.seq,
            agent,
            tool,
            decision: verdict_proto::Label::label(decision),
        });
        signed.push(event);
    }
    for batch in signed.chunks(500) {
        audit_rows::store_events(db, batch).await.unwrap();
    }
    // Newest first, the order of every page: time, then chain id, then seq, all descending.
    expected.sort_by(|a, b| (b.time, &b.chain_id, b.seq).cmp(&(a.time, &a.chain_id, a.seq)));
    expected
}

fn key_of(attempt: &pb::Attempt) -> (i64, String, u64) {
    (
        attempt.time_unix_nanos,
        attempt.chain_id.clone(),
        attempt.seq,
    )
}

fn keys_of(events: &[&Expected]) -> Vec<(i64, String, u64)> {
    events
        .iter()
        .map(|e| (e.time, e.chain_id.clone(), e.seq))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn windowed_pages_and_hourly_counts_are_exact() {
    let clickhouse = ClickHouse::start().expect("clickhouse");
    let now = verdict_proto::now_unix_nanos();
    let expected = load(&clickhouse.client(), now).await;
    let service = QueryService::start(&clickhouse.url(), None, "[limits]\nmax_range_days = 30")
        .expect("verdict-query");
    let mut client = service.client().await;

    // Search pages, unfiltered and by tool: every event once, newest first, across all windows.
    for tools in [vec![], vec!["add_work_memory".to_owned()]] {
        let filter = pb::EventFilter {
            tools: tools.clone(),
            ..Default::default()
        };
        let want: Vec<&Expected> = expected
            .iter()
            .filter(|e| tools.is_empty() || tools[0] == e.tool)
            .collect();
        let mut got = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .search(authed(
                    pb::SearchRequest {
                        filter: Some(filter.clone()),
                        page_size: 70,
                        page_token: token,
                    },
                    TOKEN,
                ))
                .await
                .unwrap()
                .into_inner();
            got.extend(
                page.events
                    .iter()
                    .map(|e| key_of(e.attempt.as_ref().unwrap())),
            );
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(got, keys_of(&want), "tools {tools:?}");
    }

    // WhoTried: the newest attempts of one agent on one tool, within a range ending yesterday.
    let to = now - DAY - 5;
    let filter = pb::EventFilter {
        agents: vec!["agent-c".into()],
        tools: vec!["session_manager".into()],
        time: Some(pb::TimeRange {
            from_unix_nanos: now - 20 * DAY,
            to_unix_nanos: to,
        }),
        ..Default::default()
    };
    let answer = who_tried(&mut client, filter, false, 40).await;
    let want: Vec<&Expected> = expected
        .iter()
        .filter(|e| e.agent == "agent-c" && e.tool == "session_manager")
        .filter(|e| e.time >= now - 20 * DAY && e.time < to)
        .take(40)
        .collect();
    assert_eq!(want.len(), 40, "the scenario has enough attempts");
    assert!(answer.truncated);
    assert_eq!(
        answer.attempts.iter().map(key_of).collect::<Vec<_>>(),
        keys_of(&want)
    );

    // Summarize over ranges with partial hours at both ends, whole hours only, one partial hour,
    // and the default start (30 days back from the end), by agent × decision and by tool.
    let hour_floor = now - now.rem_euclid(HOUR);
    let ranges = [
        (now - 10 * DAY + 17 * 1_000_000_007, now - 3 * HOUR + 11),
        (hour_floor - 30 * HOUR, hour_floor - 2 * HOUR),
        (
            hour_floor - 5 * HOUR + 60_000_000_000,
            hour_floor - 4 * HOUR - 60_000_000_000,
        ),
        // No start: the service counts max_range_days (30 here) back from the end.
        (0, now),
    ];
    for (from, to) in ranges {
        for group_by in [
            vec![pb::Dimension::Agent, pb::Dimension::Decision],
            vec![pb::Dimension::Tool],
        ] {
            let summary = client
                .summarize(authed(
                    pb::SummarizeRequest {
                        filter: Some(pb::EventFilter {
                            decisions: vec![DecisionKind::Allow as i32, DecisionKind::Deny as i32],
                            time: Some(pb::TimeRange {
                                from_unix_nanos: from,
                                to_unix_nanos: to,
                            }),
                            ..Default::default()
                        }),
                        group_by: group_by.iter().map(|&d| d as i32).collect(),
                    },
                    TOKEN,
                ))
                .await
                .unwrap()
                .into_inner();
            let got: BTreeMap<Vec<String>, u64> = summary
                .rows
                .into_iter()
                .map(|r| (r.keys, r.count))
                .collect();
            let (lo, hi) = match from {
                0 => (to - 30 * DAY, to),
                _ => (from, to),
            };
            let mut want: BTreeMap<Vec<String>, u64> = BTreeMap::new();
            for e in expected.iter().filter(|e| e.time >= lo && e.time < hi) {
                if e.decision == "approved" {
                    continue;
                }
                let keys = match group_by.len() {
                    2 => vec![e.agent.to_owned(), e.decision.to_owned()],
                    _ => vec![e.tool.to_owned()],
                };
                *want.entry(keys).or_default() += 1;
            }
            assert!(!want.is_empty(), "range {from}..{to} holds events");
            assert_eq!(got, want, "range {from}..{to}, {group_by:?}");
        }
    }
}
