//! The admin gRPC API (`verdict.v1.GatewayAdmin`): approvers list held calls and decide them.
//!
//! Approvers authenticate with bearer tokens from `[admin] tokens` (separate from agents' keys, so
//! an agent cannot approve its own call); the token's id is the approver recorded in the event.
//! A request with a missing or unknown token is refused and counted into the aggregate refusal
//! event like any unauthenticated request ([`crate::audit::refusals`], rule `admin.auth`); a
//! source over its refusal limit gets RESOURCE_EXHAUSTED.
//! A decision is journaled before the held call is released: an approval that cannot be recorded
//! releases nothing (the call is refused and the approver gets UNAVAILABLE).

use crate::approvals::{DecideError, Resolution};
use crate::audit::{event, Admission, RefusalReason};
use crate::Gateway;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use verdict_proto::pb::gateway_admin_server::{GatewayAdmin, GatewayAdminServer};
use verdict_proto::pb::{self, DecisionKind};
use verdict_service::credentials::Credentials;

pub struct AdminService {
    gateway: Arc<Gateway>,
    tokens: Credentials,
}

impl AdminService {
    pub fn server(gateway: Arc<Gateway>, tokens: Credentials) -> GatewayAdminServer<Self> {
        GatewayAdminServer::new(Self { gateway, tokens })
    }

    /// The approver's id from the request's bearer token.
    fn approver<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Some(approver) = self.tokens.authenticate(authorization) {
            return Ok(approver.to_owned());
        }
        let source = request
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let reason = RefusalReason::AdminToken;
        tracing::debug!(%source, "admin API: refused a missing or unknown token");
        self.gateway.metrics.refused(reason);
        match self.gateway.audit.refusals.note(source, reason) {
            Admission::Refuse => Err(Status::unauthenticated("missing or unknown admin token")),
            Admission::Throttled => Err(Status::resource_exhausted(
                "too many refused requests from this address; retry later",
            )),
        }
    }
}

#[tonic::async_trait]
impl GatewayAdmin for AdminService {
    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        self.approver(&request)?;
        Ok(Response::new(pb::ListApprovalsResponse {
            approvals: self.gateway.approvals.list(),
        }))
    }

    async fn decide_approval(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::DecideApprovalResponse>, Status> {
        let approver = self.approver(&request)?;
        let asked = request.into_inner();
        let claimed = self
            .gateway
            .approvals
            .claim(&asked.approval_id, &asked.arguments_sha256)
            .map_err(|e| match e {
                DecideError::NotFound(_) => Status::not_found(e.to_string()),
                DecideError::ArgumentsDiffer(_) => Status::failed_precondition(e.to_string()),
            })?;
        let kind = if asked.approve {
            DecisionKind::Approved
        } else {
            DecisionKind::Rejected
        };
        let reason = match (asked.reason.trim(), asked.approve) {
            ("", true) => format!("approved by {approver}"),
            ("", false) => format!("rejected by {approver}"),
            (given, _) => given.to_owned(),
        };
        let mut decision = claimed.request.clone();
        decision.decision = kind as i32;
        decision.approver = approver.clone();
        decision.reason = reason.clone();
        // Journaled before the held call is released; if the journal fails, the call is refused
        // and that refusal (an `error` decision) is what the trail records, once it can. A task of
        // its own, so an approver who hangs up mid-decision cannot leave the two out of step.
        let gateway = Arc::clone(&self.gateway);
        let approval_id = asked.approval_id.clone();
        let approve = asked.approve;
        let result = tokio::spawn(async move {
            let recorded = gateway
                .record_or_defer(event::decision_body(decision))
                .await;
            let (approved, seq, reason, result) = match recorded {
                Ok(seq) => (approve, seq, reason, Ok(seq)),
                Err(refused) => (false, 0, refused.clone(), Err(Status::unavailable(refused))),
            };
            tracing::info!(%approval_id, %approver, approved, seq, "approval decided");
            claimed.resolve(Resolution {
                approved,
                approver,
                reason,
                seq,
            });
            result
        })
        .await
        .map_err(|e| Status::internal(format!("deciding the approval failed: {e}")))?;
        let seq = result?;
        Ok(Response::new(pb::DecideApprovalResponse {
            decision: kind as i32,
            chain_id: self.gateway.audit.recorder.chain_id().to_owned(),
            seq,
        }))
    }
}
