#!/usr/bin/env bash
# The CLI talks only to ferry.v1.Control (docs/architecture.md): the ferry
# binary must contain no code of the VMM or the migration engine.
set -euo pipefail
ferry="$1"
[ -x "$ferry" ] || { echo "no ferry binary at $ferry"; exit 1; }
syms=$(nm -C "$ferry" | awk '$2 ~ /^[TtWw]$/' )
[ -n "$syms" ] || { echo "nm found no code in $ferry"; exit 1; }
bad=$(printf '%s\n' "$syms" | grep -E 'ferry::(vmm|sys)::|ferry::migration::(SourceSession|DestinationSession|fetch::)' || true)
if [ -n "$bad" ]; then
  echo "ferry links the VMM or the engine:"
  printf '%s\n' "$bad" | head -20
  exit 1
fi
echo "ferry links neither //vmm nor the migration engine ($(printf '%s\n' "$syms" | grep -c 'ferry::') ferry symbols checked)"
