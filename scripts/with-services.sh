#!/usr/bin/env bash
# Runs a command with the services the tests talk to, then stops what it
# started. Used by `make test` and `make bench`:
#   scripts/with-services.sh cargo test --workspace …
# - Redis at $REDIS_URL (default redis://127.0.0.1:6379): installed and
#   started when it does not answer (scripts/test-services.sh).
# - A Kafka-protocol broker: tansu 0.6.0 (Apache-2.0, written in Rust),
#   installed once into $TANSU_ROOT with cargo, started on a free loopback
#   port with in-memory storage, exported as KAFKA_BROKERS, stopped on exit.
#   Skipped when KAFKA_BROKERS is already set (a broker you run yourself).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-services.sh
# Thousands of WebSocket connections in the tests and benchmarks.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

TANSU_VERSION=0.6.0
TANSU_ROOT="${TANSU_ROOT:-$HOME/.cache/docproc/tansu}"
TANSU="$TANSU_ROOT/bin/tansu"
tansu_pid=""
cleanup() { if [ -n "$tansu_pid" ]; then kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [ -z "${KAFKA_BROKERS:-}" ]; then
	if ! "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
		echo "services: installing tansu $TANSU_VERSION into $TANSU_ROOT (once per machine; several minutes)"
		CARGO_TARGET_DIR="$TANSU_ROOT/build" cargo install tansu --version "$TANSU_VERSION" \
			--features dynostore --locked --root "$TANSU_ROOT" --quiet
		rm -rf "$TANSU_ROOT/build"
	fi
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	log="${TMPDIR:-/tmp}/docproc-tansu-$port.log"
	"$TANSU" broker --storage-engine memory://tansu/ \
		--listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
		>"$log" 2>&1 &
	tansu_pid=$!
	for _ in $(seq 1 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
		kill -0 "$tansu_pid" 2>/dev/null || { echo "services: tansu exited; see $log" >&2; cat "$log" >&2; exit 1; }
		sleep 0.1
	done
	export KAFKA_BROKERS="127.0.0.1:$port"
	echo "services: tansu $TANSU_VERSION at $KAFKA_BROKERS (log $log)"
fi

"$@"
