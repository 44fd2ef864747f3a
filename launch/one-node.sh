#!/usr/bin/env bash
# Model parallelism on this machine: two ranks, one tower and one core each.
# Usage: launch/one-node.sh [train options…]
set -euo pipefail
root=()
[[ $(id -u) -eq 0 ]] && root=(--allow-run-as-root)
exec mpirun "${root[@]}" -np 2 --bind-to core alexnet-mpi train --mode model --threads 1 "$@"
