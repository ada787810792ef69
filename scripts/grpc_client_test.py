#!/usr/bin/env python3
"""A third-party gRPC client of the Verdict query service, built only from proto/.

Generates Python stubs from proto/verdict/v1/*.proto with grpcio-tools (no checked-in generated
code), calls AuditQuery.WhoTried with a bearer token, and prints the attempts as JSON lines
({"agent_id", "targets", "decision", "chain_id", "seq"}), so a test can compare them with the
Rust client's answer.

Needs: python3 -m pip install grpcio grpcio-tools
Usage: grpc_client_test.py --addr 127.0.0.1:8790 --token TOKEN --tool session_manager --arg action=delete_session
Exit codes: 0 ok, 3 the grpc modules are missing, 1 any other failure.
"""
import argparse
import json
import pathlib
import sys
import tempfile

try:
    import grpc
    from grpc_tools import protoc
except ImportError as missing:  # reported distinctly so a test can tell "not installed" apart
    print(f"missing Python module: {missing.name} (python3 -m pip install grpcio grpcio-tools)", file=sys.stderr)
    sys.exit(3)

ROOT = pathlib.Path(__file__).resolve().parent.parent / "proto"


def generate(out: pathlib.Path) -> None:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    for proto in ("verdict/v1/event.proto", "verdict/v1/witness.proto", "verdict/v1/query.proto"):
        code = protoc.main([
            "grpc_tools.protoc", f"-I{ROOT}", f"-I{include}",
            f"--python_out={out}", f"--grpc_python_out={out}", proto,
        ])
        if code != 0:
            raise SystemExit(f"protoc failed on {proto}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--tool", action="append", default=[])
    parser.add_argument("--arg", action="append", default=[], help="key=value")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        generate(pathlib.Path(tmp))
        sys.path.insert(0, tmp)
        from verdict.v1 import query_pb2, query_pb2_grpc, event_pb2

        request = query_pb2.WhoTriedRequest(
            filter=query_pb2.EventFilter(
                tools=args.tool,
                arguments=[query_pb2.ArgumentMatch(key=k, value=v)
                           for k, v in (a.split("=", 1) for a in args.arg)],
            ),
        )
        with grpc.insecure_channel(args.addr) as channel:
            stub = query_pb2_grpc.AuditQueryStub(channel)
            response = stub.WhoTried(request, metadata=[("authorization", f"Bearer {args.token}")], timeout=30)
        for attempt in response.attempts:
            print(json.dumps({
                "agent_id": attempt.agent_id,
                "targets": [[t.name, t.value] for t in attempt.targets],
                "decision": event_pb2.DecisionKind.Name(attempt.decision),
                "chain_id": attempt.chain_id,
                "seq": attempt.seq,
            }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
