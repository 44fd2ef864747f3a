#!/usr/bin/env bash
# The input pipeline's figures: `prepare` on a folder of 500 × 375 JPEG files (ILSVRC's typical photo size), images/s
# a core; the loader (crop, flip, colour noise, mean) images/s a core; and how long a training step of the paper's
# network (W = 1, batch 128) waits for its data with the background prefetcher, as a share of the step.
# Usage: launch/data-bench.sh [--images N] [--threads T] [--steps S] [--keep DIR]
#   --images N   JPEG files to make and prepare (default 1000)
#   --threads T  threads for prepare and the loader (default 1: a core's rate) and for training (default: all cores)
#   --steps S    training steps at W = 1, batch 128 (default 6)
#   --keep DIR   work in DIR and keep it (default: a temporary folder, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ALEXNET_MPI:-$(swift build -c release --show-bin-path)/alexnet-mpi}
images=1000 threads=1 steps=6 keep=""
while (($#)); do
  case $1 in
    --images) images=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "data-bench.sh: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ -x $bin ]] || { echo "data-bench.sh: $bin not found; build first (swift build -c release)" >&2; exit 1; }
if [[ -n $keep ]]; then work=$keep; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores)"
echo "== $images JPEG files of 500×375 (the embedded shapes, stretched; quality 90)"
"$bin" export-embedded --format folders --out "$work/photos" --count "$images" --image-size 500x375
rm -rf "$work/store"
echo "== prepare, $threads thread(s)"
"$bin" prepare "$work/photos" "$work/store" --threads "$threads" | grep -E "decoded and resized|images of"
echo "== loader, $threads thread(s), batches of 128"
"$bin" bench-loader --data "$work/store" --threads "$threads" | head -n 1
echo "== training, W = 1, batch 128, $steps steps, prefetching (the data wait is what the step waited for its batch)"
"$bin" train --data "$work/store" --width 1 --batch 128 --steps "$steps" | grep -E "^time per step|^done"
