# Installs what Verdict's tests and demo need and a fresh Debian machine lacks. Sourced by
# scripts/test and scripts/demo; every step is skipped when its tool is already there.
#   - the clippy and rustfmt components (scripts/test checks lints and formatting)
#   - clickhouse-server (Debian package; tests start private instances, never the system service)
#   - zookeeper (Debian package; coordinates the test ClickHouse clusters)
#   - tansu, a Kafka-protocol broker (crates.io; built once, ~15 min on 2 cores)
#   - grpcio for Python (the query API's cross-language client test)
#   - the OCSF validators (a venv under the target dir) and rsyslog with its GnuTLS driver (the
#     forwarder's receiver, plain and TLS)

set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> [%s] %s\033[0m\n' "$(date -u +%T)" "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install $1" >&2; exit 1; }
    echo sudo
  fi
}

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
  say "adding the clippy and rustfmt components"
  rustup component add clippy rustfmt
fi

if ! command -v clickhouse-server >/dev/null 2>&1; then
  say "installing clickhouse-server (apt)"
  SUDO=$(need_root clickhouse-server)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi

if ! command -v tansu >/dev/null 2>&1; then
  say "building the tansu broker (cargo install, about 15 minutes on 2 cores; once per machine)"
  tansu_target=$(mktemp -d)
  CARGO_TARGET_DIR="$tansu_target" cargo install tansu --locked --features dynostore,libsql --quiet
  rm -rf "$tansu_target"
fi

# ZooKeeper: coordination for the replicated ClickHouse cluster the cluster tests start
# (tests/src/cluster.rs runs /usr/share/zookeeper/bin/zkServer.sh with its own config).
if [ ! -x /usr/share/zookeeper/bin/zkServer.sh ]; then
  say "installing zookeeper (apt)"
  SUDO=$(need_root zookeeper)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq zookeeper >/dev/null
fi

# The query API's Python client test (scripts/grpc_client_test.py) generates a grpcio client
# from proto/: pip where Python is user-managed (pyenv, venv), Debian's packages otherwise.
if ! python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  say "installing grpcio and grpcio-tools for the Python client test"
  python3 -m pip install --quiet grpcio grpcio-tools 2>/dev/null || {
    SUDO=$(need_root python3-grpcio)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-grpcio python3-grpc-tools >/dev/null
  }
fi

# The OCSF validators (scripts/ocsf_validate.py): two published packages that ship the OCSF schema
# releases, and jsonschema; pinned, in a venv under the target dir (the tests look there).
ocsf_venv="${CARGO_TARGET_DIR:-target}/ocsf-venv"
if ! "$ocsf_venv/bin/python" -c 'import jsonschema, ocsf_json_schema, ocsf' >/dev/null 2>&1; then
  say "installing the OCSF validators into $ocsf_venv (pip)"
  python3 -m venv "$ocsf_venv" 2>/dev/null || {
    SUDO=$(need_root python3-venv)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$ocsf_venv"
  }
  "$ocsf_venv/bin/pip" install --quiet ocsf-json-schema==1.2.0 pydantic-ocsf==3.0.0 jsonschema==4.26.0
fi

# rsyslog: the real syslog receiver of the forwarder's tests (started by the test on a free port
# with its own config; the system service is never used).
if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ]; then
  say "installing rsyslog (apt)"
  SUDO=$(need_root rsyslog)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rsyslog >/dev/null
fi

# rsyslog's GnuTLS network stream driver (lmnsd_gtls): the TLS syslog receiver of the
# forwarder's syslog-over-TLS test (RFC 5425).
if ! dpkg -s rsyslog-gnutls >/dev/null 2>&1; then
  say "installing rsyslog-gnutls (apt)"
  SUDO=$(need_root rsyslog-gnutls)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rsyslog-gnutls >/dev/null
fi
