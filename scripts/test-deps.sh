#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine of this project's kind:
# a Python venv at .venv with the validators and the official A2A SDK, and Debian tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=()
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
py_pkgs=(kubernetes-validate)
if ! .venv/bin/python -c 'import kubernetes_validate' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check "${py_pkgs[@]}"
fi
echo "test dependencies ready"
