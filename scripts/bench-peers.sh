#!/usr/bin/env bash
# a2a beside two peers, the same work in one run, on this machine; prints a Markdown table.
#
#   sudo scripts/bench-peers.sh            (root: agents run in cgroups; takes minutes)
#
# - a 1,000-task DAG (10 layers × 100, each task after the first layer waiting for tasks i and
#   i+1 of the layer before) and a fan 1 → 998 → 1, every task an echo: `a2a run -f` of a
#   generated workflow against a2a's demo agent (an embedded control plane, started and
#   stopped by the run) vs a Prefect flow of the same tasks and dependencies (the local
#   engine with the temporary local server it starts itself, no Prefect Cloud);
# - 100 and 500 agents started, each a long-running `sleep` that first stamps the time it
#   runs: `a2a apply` to a running `a2a serve` vs supervisord (launched with the programs
#   configured; and `supervisorctl start all` on a running supervisord);
# - a crashed agent restarted (SIGKILL → the new process stamps), 20 agents each once;
# - the floors, measured in the same run: N processes started and put in limited cgroups of
#   their own (the floor of `cargo bench --bench node_spawn`, here in Python, so a little
#   higher), a loopback TCP round trip, 4 KiB + fdatasync.
#
# Prefect and supervisord go into a throwaway venv (pip); A2A_PEERS_VENV=DIR uses or makes
# a venv there instead and keeps it. Everything else lives in a temporary directory that is
# removed at the end, with every process and cgroup the script started. Not part of
# `cargo test`: it takes minutes and needs the package registry.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
repo=$(pwd)

PREFECT_VERSION=3.9.1
SUPERVISOR_VERSION=4.3.0
CRASHES=20

say() { printf '%s\n' "bench-peers: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[ "$(id -u)" = 0 ] || die "run as root: agents are started in cgroups of their own"
[ -d /sys/fs/cgroup ] || die "no /sys/fs/cgroup: a2a's agents need cgroups"
command -v python3 >/dev/null || die "python3 is needed (for Prefect, supervisord and the timing helper)"
command -v cargo >/dev/null || die "cargo is needed to build a2a"
((BASH_VERSINFO[0] >= 5)) || die "bash 5 or later is needed (\$EPOCHREALTIME)"

work=$(mktemp -d "${TMPDIR:-/tmp}/a2a-peers.XXXXXX")
chmod 755 "$work"
stamps="$work/stamps" # where every started process writes "name pid time"; agents may write here
mkdir "$stamps"
chmod 777 "$stamps" # agents run as uids of their own (no sticky bit: they append to root's files)
# A file of stamps every uid may append to.
stamp_file() { install -m 666 /dev/null "$1"; }
top="a2a-peers-$$"     # the cgroup top of a2a serve
run_top="$top-run"     # the cgroup top of a2a run's embedded control plane
floor_top="$top-floor" # the floor's cgroups
serve_pid="" sv_pid=""
export A2A_HOME="$work/home"
mkdir -m 700 "$A2A_HOME"

# Stops what this script started: the daemon's agents (deleted through it), the daemon, the
# peers, every process that stamped, and the cgroups under this run's tops.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +eu
  if [ -n "$serve_pid" ] && kill -0 "$serve_pid" 2>/dev/null; then
    for f in "$work"/agents-*.yaml; do
      [ -f "$f" ] && timeout 120 "$a2a" delete -f "$f" --wait --ignore-not-found >/dev/null 2>&1
    done
    kill -TERM "$serve_pid" 2>/dev/null
  fi
  if [ -n "$sv_pid" ] && kill -0 "$sv_pid" 2>/dev/null; then
    timeout 60 "$venv/bin/supervisorctl" -c "$work/supervisord.conf" shutdown >/dev/null 2>&1
    kill -TERM "$sv_pid" 2>/dev/null
  fi
  # The timed command in flight (a2a run or a Prefect flow), in a process group of its own.
  local child=""
  [ -f "$work/child.pid" ] && child=$(cat "$work/child.pid")
  [ -n "$child" ] && kill -TERM -- "-$child" 2>/dev/null
  sleep 1
  for p in "$serve_pid" "$sv_pid"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  [ -n "$child" ] && kill -KILL -- "-$child" 2>/dev/null
  # Every stamped process still running its marked `sleep`, by pid.
  [ -x "${py:-}" ] && "$py" "$helper" reap "$stamps"/* 2>/dev/null
  # Processes left in this run's cgroups (none, when the daemons stopped them), then the cgroups.
  local d pid
  local t tops=()
  for t in "$top" "$run_top" "$floor_top"; do tops+=(/sys/fs/cgroup/*/"$t" /sys/fs/cgroup/"$t"); done
  for d in "${tops[@]}"; do
    [ -d "$d" ] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
  done
  sleep 0.5
  for d in "${tops[@]}"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  rm -rf "${work:?}" # (an A2A_PEERS_VENV lives elsewhere and stays)
  [ "$rc" = 0 ] || say "failed (exit $rc); everything it started is stopped and removed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- build, venv
say "building a2a (cargo build --release)"
nice cargo build --release --locked --quiet || die "cargo build --release failed"
a2a="$repo/target/release/a2a"

venv="${A2A_PEERS_VENV:-$work/venv}"
if ! "$venv/bin/python" -c "import prefect, supervisor" 2>/dev/null; then
  say "installing prefect $PREFECT_VERSION and supervisor $SUPERVISOR_VERSION into $venv (pip)"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install -q --disable-pip-version-check "prefect==$PREFECT_VERSION" "supervisor==$SUPERVISOR_VERSION" ||
    die "pip could not install prefect and supervisor"
fi
py="$venv/bin/python"

# ---------------------------------------------------------------------------- the helper
helper="$work/helper.py"
cat >"$helper" <<'PY'
"""Timing for bench-peers.sh: stamps, crashes, floors, a command's run."""
import os, re, signal, socket, statistics, subprocess, sys, time

MARK = "a2a-peers-sleep"

def lines(path):
    try:
        with open(path) as f:
            out = []
            for l in f:
                p = l.split()
                try:
                    out.append((p[0], int(p[1]), float(p[2].replace(",", "."))))
                except (IndexError, ValueError):
                    pass
            return out
    except FileNotFoundError:
        return []

def first_per_name(path):
    seen = {}
    for name, pid, t in lines(path):
        seen.setdefault(name, (pid, t))
    return seen

def wait_stamps(path, n, t0, timeout):
    """Prints the seconds from t0 until the n-th name's first stamp."""
    deadline = time.time() + timeout
    while True:
        seen = first_per_name(path)
        if len(seen) >= n:
            print(f"{max(t for _, t in seen.values()) - t0:.4f}")
            return
        if time.time() > deadline:
            sys.exit(f"{len(seen)} of {n} processes ran within {timeout} s ({path})")
        time.sleep(0.05)

def crash(path, k, timeout):
    """SIGKILLs the first k stamped processes one by one; prints the median, p90 and max ms
    from the kill to the new process's stamp."""
    names = list(first_per_name(path))[:k]
    ms = []
    for name in names:
        pid = [p for n, p, _ in lines(path) if n == name][-1]
        time.sleep(0.3)  # the start settled, as a crash in use would find it
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = t0 + timeout
        while True:
            new = [(p, t) for n, p, t in lines(path) if n == name and p != pid and t > t0]
            if new:
                ms.append((new[0][1] - t0) * 1e3)
                break
            if time.time() > deadline:
                sys.exit(f"{name} did not run again within {timeout} s of SIGKILL")
            time.sleep(0.0005)
    report(ms)

def report(ms):
    ms.sort()
    at = lambda q: ms[round((len(ms) - 1) * q)]
    print(f"{at(0.5):.1f} {at(0.9):.1f} {ms[-1]:.1f}")

def spawn_floor(stamp_script, path, k):
    """The same program as the agents, spawned directly, k times: spawn → it stamps."""
    ms = []
    for i in range(k):
        t0 = time.time()
        p = subprocess.Popen(["bash", stamp_script, path], env={**os.environ, "A2A_AGENT": f"f{i}"},
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            got = [t for n, _, t in lines(path) if n == f"f{i}"]
            if got:
                ms.append((got[0] - t0) * 1e3)
                break
            time.sleep(0.0002)
        p.kill()
        p.wait()
    report(ms)

def cgroup_floor(n, top):
    """Milliseconds to start n `sleep`s, each in limited cgroups of its own (mkdir in every
    hierarchy a2a uses, the limits, spawn, the pid written to cgroup.procs): the floor of
    benches/node_spawn.rs, with Python's own cost per process in it."""
    root = "/sys/fs/cgroup"
    v2 = os.path.exists(f"{root}/cgroup.controllers")
    if v2:
        dirs = [f"{root}/{top}"]
    else:
        dirs, seen = [], set()
        for h in ["memory", "cpu", "pids", "cpuacct", "freezer"]:
            real = os.path.realpath(f"{root}/{h}")
            if os.path.isdir(real) and real not in seen:
                seen.add(real)
                dirs.append(f"{root}/{h}/{top}")
    for d in dirs:
        os.mkdir(d)
    if v2:
        with open(f"{root}/{top}/cgroup.subtree_control", "w") as f:
            f.write("+memory +cpu +pids")
    def limits(d):
        if v2:
            return [("memory.max", "268435456"), ("cpu.max", "50000 100000"), ("pids.max", "64")]
        kind = os.path.basename(os.path.dirname(d))
        return {"memory": [("memory.limit_in_bytes", "268435456")], "cpu": [("cpu.cfs_quota_us", "50000")],
                "pids": [("pids.max", "64")]}.get(kind, [])
    children = []
    t = time.perf_counter()
    for i in range(n):
        procs = []
        for d in dirs:
            c = f"{d}/p{i}"
            os.mkdir(c)
            for name, value in limits(d):
                with open(f"{c}/{name}", "w") as f:
                    f.write(value)
            procs.append(f"{c}/cgroup.procs")
        p = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        for f in procs:
            with open(f, "w") as w:
                w.write(str(p.pid))
        children.append(p)
    elapsed = time.perf_counter() - t
    for p in children:
        p.kill()
        p.wait()
    for d in dirs:
        for i in range(n):
            for _ in range(100):  # a cgroup is busy for a moment after its last process died
                try:
                    os.rmdir(f"{d}/p{i}")
                    break
                except OSError:
                    time.sleep(0.01)
        os.rmdir(d)
    print(f"{elapsed * 1e3:.0f}")

def rtt(n):
    """Median µs of a 1-byte TCP round trip over loopback, to another process."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    pid = os.fork()
    if pid == 0:
        c, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while (b := c.recv(1)):
            c.sendall(b)
        os._exit(0)
    c = socket.create_connection(srv.getsockname())
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    us = []
    for _ in range(n):
        t = time.perf_counter()
        c.sendall(b"x")
        c.recv(1)
        us.append((time.perf_counter() - t) * 1e6)
    c.close()
    os.waitpid(pid, 0)
    us = us[n // 10:]  # warm-up
    print(f"{statistics.median(us):.0f}")

def fsync(directory, n):
    """Median µs of 4 KiB written in place + fdatasync."""
    path = os.path.join(directory, "fsync.probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    buf = os.urandom(4096)
    os.pwrite(fd, buf, 0)
    os.fsync(fd)
    us = []
    for _ in range(n):
        t = time.perf_counter()
        os.pwrite(fd, buf, 0)
        os.fdatasync(fd)
        us.append((time.perf_counter() - t) * 1e6)
    os.close(fd)
    os.unlink(path)
    print(f"{statistics.median(us):.0f}")

def timed(log, pattern, cmd):
    """Runs cmd (its own process group), output to log; prints wall seconds and the seconds
    until the first output line matching pattern (or -1). The command finds its start time
    in A2A_PEERS_T0."""
    rx = re.compile(pattern)
    pidfile = os.path.join(os.path.dirname(log), "child.pid")
    first = None
    with open(log, "w") as out:
        t0 = time.time()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, text=True, errors="replace",
                             env={**os.environ, "A2A_PEERS_T0": repr(t0)})
        with open(pidfile, "w") as f:
            f.write(str(p.pid))
        for line in p.stdout:
            if first is None and rx.search(line):
                first = time.time() - t0
            out.write(line)
        rc = p.wait()
    wall = time.time() - t0
    os.unlink(pidfile)
    if rc != 0:
        sys.exit(f"{' '.join(cmd[:3])} … exited {rc}; see the end of its output:\n" + open(log).read()[-3000:])
    print(f"{wall:.3f} {first if first is not None else -1:.3f}")

def reap(paths):
    for path in paths:
        for _, pid, _ in lines(path):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[0] == MARK.encode():
                        os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "stamps": wait_stamps(args[0], int(args[1]), float(args[2]), float(args[3]))
elif cmd == "crash": crash(args[0], int(args[1]), float(args[2]))
elif cmd == "spawn-floor": spawn_floor(args[0], args[1], int(args[2]))
elif cmd == "rtt": rtt(int(args[0]))
elif cmd == "cgroup-floor": cgroup_floor(int(args[0]), args[1])
elif cmd == "fsync": fsync(args[0], int(args[1]))
elif cmd == "timed": timed(args[0], args[1], args[2:])
elif cmd == "reap": reap(args)
else: sys.exit(f"unknown helper command {cmd}")
PY

# The agents' program, the same for a2a and supervisord: stamp, then sleep until killed.
cat >"$stamps/stamp.sh" <<'SH'
echo "${A2A_AGENT:-$SUPERVISOR_PROCESS_NAME} $$ $EPOCHREALTIME" >>"$1"
exec -a a2a-peers-sleep sleep 86400
SH
chmod 644 "$stamps/stamp.sh"

now() { date +%s.%N; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.1f×", b / a; else print "—" }'; }
# Seconds, as "1.23 s" or "456 ms".
dur() { awk -v s="$1" 'BEGIN { if (s < 0) print "—"; else if (s >= 10) printf "%.1f s", s; else if (s >= 1) printf "%.2f s", s; else printf "%.0f ms", s * 1000 }'; }
load() { cut -d' ' -f1 /proc/loadavg; }
loads=()

# ---------------------------------------------------------------------------- floors
say "floors: 100 and 500 processes into cgroups, loopback round trip, fdatasync"
floor100=$("$py" "$helper" cgroup-floor 100 "$floor_top")
floor500=$("$py" "$helper" cgroup-floor 500 "$floor_top")
rtt_us=$("$py" "$helper" rtt 2000)
fsync_us=$("$py" "$helper" fsync "$work" 200)
restart_floor=$("$py" "$helper" spawn-floor "$stamps/stamp.sh" "$stamps/floor" "$CRASHES")
loads+=("$(load)")

# ---------------------------------------------------------------------------- workflows
# The same DAGs as files: a2a's (one Agent, the demo agent's echo skill, and a Workflow).
"$py" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def agent(concurrency):
    return f"""apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {{name: echo}}
spec:
  command: ["a2a", "demo-agent", "--skill", "echo"]
  maxConcurrentTasks: {concurrency}
  resources:
    limits: {{memory: 512Mi, pids: 64}}
"""
def workflow(name, tasks):
    out = [f"---\napiVersion: a2a.dev/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  tasks:\n"]
    for t, deps in tasks:
        d = f", dependsOn: {json.dumps(deps)}" if deps else ""
        out.append(f"    - {{name: {t}, agent: echo, message: \"task {t}\"{d}}}\n")
    return "".join(out)
layers = [(f"l{l}-{i}", [f"l{l-1}-{i}", f"l{l-1}-{(i+1)%100}"] if l else []) for l in range(10) for i in range(100)]
fan = [("root", [])] + [(f"t{i}", ["root"]) for i in range(998)] + [("join", [f"t{i}" for i in range(998)])]
open(f"{work}/layers.yaml", "w").write(agent(100) + workflow("layers", layers))
open(f"{work}/fan.yaml", "w").write(agent(998) + workflow("fan", fan))
PY

# Prefect's: a flow of the same tasks, each waiting for the same others (wait_for).
cat >"$work/flow.py" <<'PY'
import os, sys, threading, time
from prefect import flow, task

first = []
lock = threading.Lock()

@task
def echo(msg):
    with lock:
        if not first:
            first.append(time.time())
    return msg

@flow
def layers():
    prev = []
    for l in range(10):
        cur = []
        for i in range(100):
            deps = [prev[i], prev[(i + 1) % 100]] if prev else []
            cur.append(echo.submit(f"task l{l}-{i}", wait_for=deps))
        prev = cur
    return [f.result() for f in prev]

@flow
def fan():
    root = echo.submit("task root")
    mid = [echo.submit(f"task t{i}", wait_for=[root]) for i in range(998)]
    return echo.submit("task join", wait_for=mid).result()

@flow
def warm_up():
    return echo.submit("warm up").result()

t0 = float(os.environ["A2A_PEERS_T0"])
{"layers": layers, "fan": fan, "warm_up": warm_up}[sys.argv[1]]()
print(f"first task ran after {first[0] - t0:.3f} s")
PY

export PREFECT_HOME="$work/prefect"
unset PREFECT_API_URL PREFECT_API_KEY
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=300 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1

# "wall first": the command's wall time and when its output first reported a task.
timed() {
  local log="$1" pattern="$2"
  shift 2
  "$py" "$helper" timed "$log" "$pattern" "$@" || die "$(basename "$log" .log) failed"
}

run_a2a() {
  A2A_HOME="$work/run-home" timed "$work/a2a-$1.log" ': (Running|Succeeded)' \
    "$a2a" run -f "$work/$1.yaml" --cgroup-top "$run_top" --timeout 600s
}
run_prefect() {
  local out wall first
  out=$(timed "$work/prefect-$1.log" '^first task ran after' "$py" "$work/flow.py" "$1")
  wall=${out% *}
  first=$(sed -nE 's/^first task ran after ([0-9.]+) s$/\1/p' "$work/prefect-$1.log")
  echo "$wall ${first:--1}"
}

mkdir -m 700 "$work/run-home"
say "Prefect's database, made once before the timed flows (a warm-up flow)"
run_prefect warm_up >/dev/null
declare -A wf_a2a wf_prefect
for shape in layers fan; do
  say "workflow $shape: a2a run"
  wf_a2a[$shape]=$(run_a2a "$shape")
  loads+=("$(load)")
  say "workflow $shape: Prefect"
  wf_prefect[$shape]=$(run_prefect "$shape")
  loads+=("$(load)")
done

# ---------------------------------------------------------------------------- agents
agents_yaml() { # N FILE-OF-STAMPS
  local i
  # A budget of their own, as benches/node_agents.rs gives its agents: the host's budget
  # (memory 8Gi) would admit only some of 500 limits of 64Mi.
  cat <<EOF
apiVersion: a2a.dev/v1alpha1
kind: ResourceBudget
metadata: {name: peers}
spec:
  limits: {memory: 64Gi}
EOF
  for ((i = 0; i < $1; i++)); do
    cat <<EOF
---
apiVersion: a2a.dev/v1alpha1
kind: Agent
metadata: {name: s$i}
spec:
  command: ["bash", "$stamps/stamp.sh", "$2"]
  writablePaths: ["$stamps"]
  budget: peers
  resources:
    limits: {memory: 64Mi, pids: 32}
EOF
  done
}

say "a2a serve"
"$a2a" serve --port 0 --gateway-port 0 --cgroup-top "$top" >"$work/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 300); do
  "$a2a" get agents >/dev/null 2>&1 && break
  kill -0 "$serve_pid" 2>/dev/null || die "a2a serve exited: $(tail -5 "$work/serve.log")"
  sleep 0.2
done
"$a2a" get agents >/dev/null 2>&1 || die "a2a serve did not answer within 60 s: $(tail -5 "$work/serve.log")"

declare -A start_a2a start_sv_cold start_sv_warm
for n in 100 500; do
  agents_yaml "$n" "$stamps/a2a-$n" >"$work/agents-$n.yaml"
  stamp_file "$stamps/a2a-$n"
  sleep 2
  say "$n agents: a2a apply"
  t0=$(now)
  "$a2a" apply -f "$work/agents-$n.yaml" >/dev/null || die "a2a apply of $n agents failed"
  start_a2a[$n]=$("$py" "$helper" stamps "$stamps/a2a-$n" "$n" "$t0" 300) || die "a2a: not every agent of $n ran"
  loads+=("$(load)")
  if [ "$n" = 100 ]; then
    say "a crashed agent: a2a ($CRASHES SIGKILLs)"
    crash_a2a=$("$py" "$helper" crash "$stamps/a2a-$n" "$CRASHES" 60) || die "the crash test failed"
  fi
  "$a2a" delete -f "$work/agents-$n.yaml" --wait >/dev/null || die "a2a delete of $n agents failed"
done
kill -TERM "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
serve_pid=""

mkdir -p "$work/sv/logs"
sv_conf() { # N AUTOSTART
  cat <<EOF
[unix_http_server]
file=$work/sv/sock
[supervisord]
logfile=$work/sv/supervisord.log
pidfile=$work/sv/supervisord.pid
childlogdir=$work/sv/logs
nodaemon=true
minfds=8192
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://$work/sv/sock
[program:s]
command=bash $stamps/stamp.sh $stamps/sv
process_name=s%(process_num)d
numprocs=$1
autostart=$2
autorestart=true
startsecs=0
EOF
}
svctl() { "$venv/bin/supervisorctl" -c "$work/supervisord.conf" "$@"; }
sv_stop() {
  svctl shutdown >/dev/null || true
  for _ in $(seq 600); do kill -0 "$sv_pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$sv_pid" 2>/dev/null && die "supervisord did not shut down within 60 s"
  wait "$sv_pid" 2>/dev/null || true
  sv_pid=""
}
for n in 100 500; do
  sleep 2
  say "$n agents: supervisord, launched with the programs configured"
  sv_conf "$n" true >"$work/supervisord.conf"
  stamp_file "$stamps/sv"
  t0=$(now)
  "$venv/bin/supervisord" -c "$work/supervisord.conf" >>"$work/sv/out.log" 2>&1 &
  sv_pid=$!
  start_sv_cold[$n]=$("$py" "$helper" stamps "$stamps/sv" "$n" "$t0" 300) || die "supervisord: not every program of $n ran"
  loads+=("$(load)")
  if [ "$n" = 100 ]; then
    say "a crashed agent: supervisord ($CRASHES SIGKILLs)"
    crash_sv=$("$py" "$helper" crash "$stamps/sv" "$CRASHES" 60) || die "the crash test failed"
  fi
  sv_stop

  say "$n agents: supervisorctl start all, on a running supervisord"
  sv_conf "$n" false >"$work/supervisord.conf"
  stamp_file "$stamps/sv"
  "$venv/bin/supervisord" -c "$work/supervisord.conf" >>"$work/sv/out.log" 2>&1 &
  sv_pid=$!
  for _ in $(seq 300); do svctl pid >/dev/null 2>&1 && break; sleep 0.2; done
  svctl pid >/dev/null 2>&1 || die "supervisord did not answer within 60 s: $(tail -5 "$work/sv/supervisord.log")"
  sleep 2
  t0=$(now)
  svctl start all >/dev/null || die "supervisorctl start all failed"
  start_sv_warm[$n]=$("$py" "$helper" stamps "$stamps/sv" "$n" "$t0" 300) || die "supervisord: not every program of $n ran"
  loads+=("$(load)")
  sv_stop
done

# ---------------------------------------------------------------------------- the table
mem=$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cgv=v2; else cgv=v1; fi
lmin=$(printf '%s\n' "${loads[@]}" | sort -g | head -1)
lmax=$(printf '%s\n' "${loads[@]}" | sort -g | tail -1)
a2a_version=$("$a2a" version --short 2>/dev/null || echo "?")
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo "?")
split() { echo "${1%% *}"; }
second() { echo "${1#* }"; }
restart() { read -r med p90 max <<<"$1"; echo "median $med ms (p90 $p90, max $max)"; }

cat <<EOF
### Against peers ($(date -u +%Y-%m-%d), \`scripts/bench-peers.sh\`)

Machine: $(nproc) cores, $mem, Linux $(uname -r), cgroup $cgv; load average $lmin–$lmax during the
run (1-minute, sampled after each measure). a2a $a2a_version ($commit, release); Prefect $PREFECT_VERSION,
supervisor $SUPERVISOR_VERSION, Python $("$py" -c 'import platform; print(platform.python_version())').

| work | a2a | peer | peer ÷ a2a | floor (same run) | a2a's side in \`benches/\` |
|---|---|---|---|---|---|
| 1,000-task DAG (10 layers × 100, echo), end to end | $(dur "$(split "${wf_a2a[layers]}")") (\`a2a run -f\`) | $(dur "$(split "${wf_prefect[layers]}")") (Prefect) | $(ratio "$(split "${wf_a2a[layers]}")" "$(split "${wf_prefect[layers]}")") | — | \`cargo bench --bench workflow -- layers 10 100\` |
| … its first task ran | ≤ $(dur "$(second "${wf_a2a[layers]}")") | $(dur "$(second "${wf_prefect[layers]}")") | $(ratio "$(second "${wf_a2a[layers]}")" "$(second "${wf_prefect[layers]}")") | — | same |
| fan 1 → 998 → 1 (echo), end to end | $(dur "$(split "${wf_a2a[fan]}")") (\`a2a run -f\`) | $(dur "$(split "${wf_prefect[fan]}")") (Prefect) | $(ratio "$(split "${wf_a2a[fan]}")" "$(split "${wf_prefect[fan]}")") | — | \`cargo bench --bench workflow -- fan 998\` |
| … its first task ran | ≤ $(dur "$(second "${wf_a2a[fan]}")") | $(dur "$(second "${wf_prefect[fan]}")") | $(ratio "$(second "${wf_a2a[fan]}")" "$(second "${wf_prefect[fan]}")") | — | same |
| 100 agents started → every process running | $(ms "${start_a2a[100]}") ms (\`a2a apply\` to \`a2a serve\`) | $(ms "${start_sv_cold[100]}") ms (\`supervisord\` launched) | $(ratio "${start_a2a[100]}" "${start_sv_cold[100]}") | $floor100 ms (fork/exec into cgroups) | \`A2A_BENCH_N=100 cargo bench --bench node_agents\` |
| … the peer already running | same | $(ms "${start_sv_warm[100]}") ms (\`supervisorctl start all\`) | $(ratio "${start_a2a[100]}" "${start_sv_warm[100]}") | same | same |
| 500 agents started → every process running | $(ms "${start_a2a[500]}") ms | $(ms "${start_sv_cold[500]}") ms (\`supervisord\` launched) | $(ratio "${start_a2a[500]}" "${start_sv_cold[500]}") | $floor500 ms | \`A2A_BENCH_N=500 cargo bench --bench node_agents\` |
| … the peer already running | same | $(ms "${start_sv_warm[500]}") ms (\`supervisorctl start all\`) | $(ratio "${start_a2a[500]}" "${start_sv_warm[500]}") | same | same |
| a crashed agent: SIGKILL → new process running ($CRASHES agents) | $(restart "$crash_a2a") | $(restart "$crash_sv") (autorestart) | $(ratio "${crash_a2a%% *}" "${crash_sv%% *}") | $(restart "$restart_floor") (spawned directly) | \`cargo bench --bench node_restart\` |
| floor: loopback TCP round trip, 1 byte (Python) | — | — | — | $rtt_us µs | \`cargo bench --bench apiserver\` |
| floor: 4 KiB written in place + \`fdatasync\` (Python, in \`\$TMPDIR\`) | — | — | — | $fsync_us µs | \`cargo bench --bench apiserver\` |
EOF
say "done"
