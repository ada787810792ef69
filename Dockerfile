# One image with every Verdict binary (gateway, auditor, query, the `verdict` CLI and the sample
# `work-memory` MCP server); docker-compose.yml runs each with the same command line as
# scripts/demo does locally.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && mkdir /out \
 && cp target/release/verdict target/release/verdict-gateway target/release/verdict-auditor \
       target/release/verdict-query target/release/work-memory /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/verdict verdict \
 && mkdir -p /var/lib/verdict/journal /keys && chown -R verdict /var/lib/verdict /keys
COPY --from=build /out/ /usr/local/bin/
USER verdict
WORKDIR /var/lib/verdict
