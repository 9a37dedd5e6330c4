#!/usr/bin/env bash
# Runs the Python protocol test against a real server: starts the given agentflow-sandbox binary on
# a free loopback port with a config (default: tests/python/config.json, bash and rag only), waits
# for /health, runs test_protocol.py, calls /shutdown, and checks that the server exited 0.
# Builds nothing.
#
#   tests/python/run.sh target/debug/agentflow-sandbox [config.json]
#
# Closes with "N passed, M failed" (the Python checks plus shutdown and exit status); exits 1 on
# any failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${1:?usage: run.sh <agentflow-sandbox binary> [config.json]}"
config="${2:-$here/config.json}"
export AGENTFLOW_RAG_CORPUS="${AGENTFLOW_RAG_CORPUS:-$repo/backends/rag/corpus/agentflow-docs.jsonl}"

if [[ ! -x "$bin" ]]; then
  echo "run.sh: $bin is not an executable (build it first: cargo build --features http)"
  echo "0 passed, 1 failed"
  exit 1
fi

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
log="$(mktemp -t agentflow-protocol-server.XXXXXX)"

"$bin" serve --config "$config" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
server=$!
cleanup() {
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null
    wait "$server" 2>/dev/null
  fi
  rm -f "$log"
}
trap cleanup EXIT

passed=0
failed=0
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
pass() { echo "PASS $1"; passed=$((passed + 1)); }

# Wait for /health (the server may warm up or index first), watching that it has not died.
if python3 - "$url" "$server" <<'PY'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(2)
    time.sleep(0.05)
sys.exit(1)
PY
then
  pass "server answers /health at $url"
else
  fail "server did not answer /health at $url; its log:"
  cat "$log"
  echo "$passed passed, $failed failed"
  exit 1
fi

output="$(python3 "$here/test_protocol.py" "$url" 2>&1)"
status=$?
echo "$output"
summary="$(printf '%s\n' "$output" | tail -n 1)"
if [[ "$summary" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  passed=$((passed + BASH_REMATCH[1]))
  failed=$((failed + BASH_REMATCH[2]))
  if [[ $status -ne 0 && ${BASH_REMATCH[2]} -eq 0 ]]; then fail "test_protocol.py exited $status"; fi
else
  fail "test_protocol.py did not finish (exit $status)"
fi

# /shutdown answers first, then the server stops and exits 0.
if answer="$(python3 - "$url" <<'PY'
import json, os, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/shutdown", data=b'{"force": false, "cleanup_sessions": true}',
                             method="POST", headers={"Content-Type": "application/json"})
key = os.environ.get("AGENTFLOW_API_KEY")
if key:
    req.add_header("Authorization", "Bearer " + key)
with urllib.request.urlopen(req, timeout=60) as r:
    v = json.loads(r.read())
print(json.dumps(v))
sys.exit(0 if v.get("code") == 0 and "sessions_cleaned" in v.get("data", {}) else 1)
PY
)"; then
  pass "/shutdown answered $answer"
else
  fail "/shutdown: $answer"
fi

exit_code=""
for _ in $(seq 1 600); do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server"
    exit_code=$?
    break
  fi
  sleep 0.05
done
if [[ "$exit_code" == "0" ]]; then
  pass "server exited 0 after /shutdown"
else
  fail "server exit status after /shutdown: ${exit_code:-still running after 30 s}; its log:"
  cat "$log"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
