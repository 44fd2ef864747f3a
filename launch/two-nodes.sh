#!/usr/bin/env bash
# Runs the model-parallel job on two nodes from a hostfile: one rank (one tower) a node, over TCP.
# Usage: launch/two-nodes.sh HOSTFILE [--threads CORES_PER_NODE] [train options…]
# Both nodes need alexnet-mpi on PATH (./install.sh on each) and any --data at the same path.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
hostfile=${1:?usage: launch/two-nodes.sh HOSTFILE [train options…]}
shift
[[ -r $hostfile ]] || { echo "launch/two-nodes.sh: cannot read hostfile $hostfile" >&2; exit 1; }
root=()
[[ $(id -u) -eq 0 ]] && root=(--allow-run-as-root)
exec mpirun "${root[@]}" -np 2 --hostfile "$hostfile" --map-by ppr:1:node --bind-to none \
  --tune "$here/cluster-configs/openmpi-tcp.conf" \
  alexnet-mpi train --mode model "$@"
