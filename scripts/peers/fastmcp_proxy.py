"""A FastMCP proxy in front of one MCP server, served over Streamable HTTP, for scripts/bench-peers.

    python fastmcp_proxy.py UPSTREAM_URL PORT fresh    # FastMCP's default: create_proxy(URL),
                                                       # a new upstream client/session per request
    python fastmcp_proxy.py UPSTREAM_URL PORT reuse    # one fastmcp.Client, connected once at
                                                       # start, shared by every request

In `fresh` mode `create_proxy` mirrors the front connection's protocol era on the upstream
(a stateless 2026-07-28 call in front is a 2026-07-28 call behind). In `reuse` mode the shared
client negotiates once with its own default (`mode="auto"`: `server/discover`, falling back to
the initialize handshake); FastMCP logs that a connected client is reused "for all requests".
Serves http://127.0.0.1:PORT/mcp with FastMCP's defaults except the log level (warning, so no
access log line per call).
"""

import asyncio
import sys

from fastmcp import Client
from fastmcp.server import create_proxy


async def main(upstream: str, port: int, mode: str) -> None:
    serve = dict(transport="http", host="127.0.0.1", port=port, path="/mcp",
                 log_level="warning", show_banner=False)
    if mode == "fresh":
        await create_proxy(upstream, name="bench-fresh").run_http_async(**serve)
    elif mode == "reuse":
        async with Client(upstream) as client:
            await create_proxy(client, name="bench-reuse").run_http_async(**serve)
    else:
        sys.exit(f"mode: fresh or reuse, not {mode!r}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
