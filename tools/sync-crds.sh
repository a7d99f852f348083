#!/usr/bin/env bash
# Copy the CRDs (single source: crds/*.yaml) into the Helm chart (charts/adaptinf/crds/), byte for
# byte, removing chart CRDs that no longer exist in crds/.
#   tools/sync-crds.sh           sync
#   tools/sync-crds.sh --check   only report drift (exit 1 when the chart differs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/crds"
dst="$root/charts/adaptinf/crds"
check=0
[[ "${1:-}" == "--check" ]] && check=1

shopt -s nullglob
drift=0
mkdir -p "$dst"
for f in "$src"/*.yaml; do
  name="$(basename "$f")"
  if ! cmp -s "$f" "$dst/$name"; then
    drift=1
    if (( check )); then echo "drift: charts/adaptinf/crds/$name differs from crds/$name"; else cp "$f" "$dst/$name"; echo "synced $name"; fi
  fi
done
for f in "$dst"/*; do
  name="$(basename "$f")"
  if [[ ! -e "$src/$name" ]]; then
    drift=1
    if (( check )); then echo "drift: charts/adaptinf/crds/$name has no crds/$name"; else rm -f "$f"; echo "removed $name"; fi
  fi
done
if (( check && drift )); then echo "fix: tools/sync-crds.sh"; exit 1; fi
exit 0
