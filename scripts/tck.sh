#!/usr/bin/env bash
# Runs the official A2A TCK (Technology Compatibility Kit) against `a2a demo-agent`, directly
# and/or through the host's A2A gateway, and prints the pass rate of its mandatory (MUST)
# requirements for each.
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
#   A2A_TCK_TARGET     direct (default): the demo agent on a port of its own; gateway: the same
#                      agent run by `a2a serve` (an Agent named `tck`), the TCK pointed at the
#                      gateway's /agents/tck/ over TLS with the administrator's token; both:
#                      one after the other, with both scores at the end. The gateway run
#                      needs what `a2a serve` needs (root and cgroups, or A2A_TCK_UNENFORCED=1
#                      for --allow-unenforced).
#   A2A_TCK_MIN        fail (exit 1) when a MUST pass rate is below this percentage
#   A2A_BIN            the a2a binary (default: built with cargo, debug profile)
#
# The agent runs with --tck-scenarios: the TCK's `tck-input-required-…` messages start the
# `ask` skill (a task that waits in input-required), and message ids are not deduplicated,
# because the TCK reuses one id for every task of a scenario. The TCK has no option for a
# bearer token or a private CA: for the gateway run, scripts/tck/sitecustomize.py (on
# PYTHONPATH) gives its HTTP clients the token and the CA, and changes nothing else. The
# TCK's reports (JSON, HTML, JUnit) land in $A2A_TCK_DIR/reports; each run's
# compatibility.json is kept as reports/compatibility-<target>.json. Not part of
# `cargo test`: it needs the hand-fetched TCK.
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
target=${A2A_TCK_TARGET:-direct}
case "$target" in direct|gateway|both) ;; *) echo "tck.sh: A2A_TCK_TARGET must be direct, gateway or both, not '$target'" >&2; exit 2 ;; esac

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

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${serve_home:-}" ]; then
    A2A_HOME=$serve_home "$bin" delete agent tck --wait >/dev/null 2>&1 || true
    [ -n "${serve_pid:-}" ] && { kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; }
    rm -rf "$serve_home"
    # The daemon's (now empty) cgroup top, in every hierarchy.
    for d in /sys/fs/cgroup/a2a-tck-$$ /sys/fs/cgroup/*/a2a-tck-$$; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT

wait_for() { # URL, pid, log, [curl args...]
  local url=$1 pid=$2 log=$3; shift 3
  for _ in $(seq 300); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "tck.sh: process $pid exited; its log:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "tck.sh: $url did not answer; the log:" >&2; cat "$log" >&2; exit 1
}

# Runs the TCK against URL; keeps its report as reports/compatibility-NAME.json.
run_tck() { # NAME URL
  local name=$1 url=$2 rc=0
  local args=(--sut-host "$url")
  rm -f "$tck/reports/compatibility-$name.json"
  [ "$transport" != all ] && args+=(--transport "$transport")
  [ "$level" != all ] && args+=(--level "$level")
  echo "tck.sh: [$name] running: run_tck.py ${args[*]}" >&2
  (cd "$tck" && "$venv/bin/python" run_tck.py "${args[@]}") >&2 || rc=$?
  [ -f "$tck/reports/compatibility.json" ] || { echo "tck.sh: the TCK wrote no report (exit $rc)" >&2; exit 1; }
  cp "$tck/reports/compatibility.json" "$tck/reports/compatibility-$name.json"
  rm -f "$tck/reports/compatibility.json"
}

if [ "$target" = direct ] || [ "$target" = both ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  url="http://127.0.0.1:$port"
  log=$(mktemp -t a2a-tck-agent.XXXXXX.log)
  "$bin" demo-agent --port "$port" --tck-scenarios 2>"$log" &
  pids+=($!)
  wait_for "$url/.well-known/agent-card.json" "${pids[-1]}" "$log"
  echo "tck.sh: [direct] agent at $url (log: $log)" >&2
  run_tck direct "$url"
fi

if [ "$target" = gateway ] || [ "$target" = both ]; then
  serve_home=$(mktemp -d -t a2a-tck-home.XXXXXX)
  chmod 700 "$serve_home"
  serve_log=$serve_home/serve.log
  extra=()
  [ "${A2A_TCK_UNENFORCED:-}" = 1 ] && extra+=(--allow-unenforced)
  "$bin" serve --home "$serve_home" --port 0 --gateway-port 0 --cgroup-top "a2a-tck-$$" "${extra[@]}" >/dev/null 2>"$serve_log" &
  serve_pid=$!
  for _ in $(seq 300); do [ -s "$serve_home/gateway.url" ] && break; sleep 0.1; done
  [ -s "$serve_home/gateway.url" ] || { echo "tck.sh: a2a serve did not start; its log:" >&2; cat "$serve_log" >&2; exit 1; }
  gateway=$(cat "$serve_home/gateway.url")
  cat >"$serve_home/tck-agent.yaml" <<'YAML'
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {name: tck}
spec:
  protocol: a2a
  command: ["a2a", "demo-agent", "--tck-scenarios"]
  maxConcurrentTasks: 64
YAML
  A2A_HOME=$serve_home "$bin" apply -f "$serve_home/tck-agent.yaml" >&2
  url="$gateway/agents/tck"
  wait_for "$url/.well-known/agent-card.json" "$serve_pid" "$serve_log" --cacert "$serve_home/pki/ca.crt"
  echo "tck.sh: [gateway] agent behind $url (daemon log: $serve_log)" >&2
  A2A_TCK_BEARER=$(cat "$serve_home/token") A2A_TCK_CA=$serve_home/pki/ca.crt \
    PYTHONPATH="$PWD/scripts/tck${PYTHONPATH:+:$PYTHONPATH}" run_tck gateway "$url"
fi

failed=0
for name in direct gateway; do
  report="$tck/reports/compatibility-$name.json"
  [ -f "$report" ] || continue
  [ "$target" = both ] || [ "$target" = "$name" ] || continue
  echo "== $name"
  "$venv/bin/python" - "$report" "${A2A_TCK_MIN:-}" <<'PY' || failed=1
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
done
exit $failed
