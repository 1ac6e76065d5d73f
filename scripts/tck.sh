#!/usr/bin/env bash
# Runs the official A2A TCK (Technology Compatibility Kit) against `a2a demo-agent` and prints
# the pass rate of its mandatory (MUST) requirements.
#
# The TCK is on no package registry, so fetch it by hand once, on its A2A 1.0 branch:
#   git clone --branch 1.0-dev https://github.com/a2aproject/a2a-tck /path/to/a2a-tck
# then:
#   A2A_TCK_DIR=/path/to/a2a-tck scripts/tck.sh
#
# Environment:
#   A2A_TCK_DIR        the TCK checkout (required; nothing is cloned)
#   A2A_TCK_VENV       the TCK's own Python venv (default: $A2A_TCK_DIR/.venv; created and
#                      filled from its pyproject.toml when missing)
#   A2A_TCK_LEVEL      must (default), should, may, or all
#   A2A_TCK_TRANSPORT  jsonrpc (default), http_json, or all (every binding the card declares:
#                      the demo agent declares JSON-RPC and HTTP+JSON). The names are the
#                      TCK's own (`run_tck.py --transport`).
#   A2A_TCK_MIN        fail (exit 1) when the MUST pass rate is below this percentage
#   A2A_BIN            the a2a binary (default: built with cargo, debug profile)
#
# The agent runs with --tck-scenarios: the TCK's `tck-input-required-…` messages start the
# `ask` skill (a task that waits in input-required), and message ids are not deduplicated,
# because the TCK reuses one id for every task of a scenario. The TCK's reports (JSON, HTML,
# JUnit) land in $A2A_TCK_DIR/reports. Not part of `cargo test`: it needs the hand-fetched TCK.
set -euo pipefail
cd "$(dirname "$0")/.."

tck=${A2A_TCK_DIR:-}
if [ -z "$tck" ] || [ ! -f "$tck/run_tck.py" ]; then
  echo "tck.sh: set A2A_TCK_DIR to a checkout of the A2A TCK (branch 1.0-dev); it has no run_tck.py at '${tck}'" >&2
  exit 2
fi
tck=$(cd "$tck" && pwd)
venv=${A2A_TCK_VENV:-$tck/.venv}
level=${A2A_TCK_LEVEL:-must}
transport=${A2A_TCK_TRANSPORT:-jsonrpc}
case "$level" in must|should|may|all) ;; *) echo "tck.sh: A2A_TCK_LEVEL must be must, should, may or all, not '$level'" >&2; exit 2 ;; esac
case "$transport" in jsonrpc|http_json|all) ;; *) echo "tck.sh: A2A_TCK_TRANSPORT must be jsonrpc, http_json or all, not '$transport'" >&2; exit 2 ;; esac

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import tck, pytest, httpx, grpc, jsonschema" 2>/dev/null; then
  echo "tck.sh: installing the TCK's Python dependencies into $venv" >&2
  (cd "$tck" && "$venv/bin/pip" install -q --disable-pip-version-check -e .)
fi

bin=${A2A_BIN:-}
if [ -z "$bin" ]; then
  cargo build --quiet --bin a2a >&2
  bin=target/debug/a2a
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
log=$(mktemp -t a2a-tck-agent.XXXXXX.log)
"$bin" demo-agent --port "$port" --tck-scenarios 2>"$log" &
agent=$!
trap 'kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url/.well-known/agent-card.json" 2>/dev/null; then
    break
  fi
  kill -0 "$agent" 2>/dev/null || { echo "tck.sh: the demo agent exited; its log:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.1
done

args=(--sut-host "$url")
[ "$transport" != all ] && args+=(--transport "$transport")
[ "$level" != all ] && args+=(--level "$level")
echo "tck.sh: agent at $url (log: $log); running: run_tck.py ${args[*]}" >&2
rc=0
(cd "$tck" && "$venv/bin/python" run_tck.py "${args[@]}") >&2 || rc=$?

report="$tck/reports/compatibility.json"
[ -f "$report" ] || { echo "tck.sh: the TCK wrote no $report (exit $rc)" >&2; exit 1; }
"$venv/bin/python" - "$report" "${A2A_TCK_MIN:-}" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
reqs = report["per_requirement"].values()
for level in ("MUST", "SHOULD", "MAY"):
    mine = [r for r in reqs if r["level"] == level]
    counted = [r for r in mine if r["status"] in ("PASS", "FAIL")]
    if not counted:
        continue
    passed = sum(r["status"] == "PASS" for r in counted)
    skipped = sum(r["status"] == "SKIPPED" for r in mine)
    print(f"{level}: {passed}/{len(counted)} requirements pass ({100 * passed / len(counted):.1f}%), "
          f"{skipped} skipped (not declared by the card, or another binding)")
for rid, r in sorted(report["per_requirement"].items()):
    if r["status"] == "FAIL":
        print(f"  FAIL {rid} ({r['level']}): {(r['errors'] or [''])[0]}")
must = report["summary"]["must_compatibility"]
print(f"MUST pass rate (TCK): {must}")
minimum = sys.argv[2]
if minimum and float(must.rstrip("%")) < float(minimum):
    print(f"below the minimum of {minimum}%", file=sys.stderr)
    sys.exit(1)
PY
