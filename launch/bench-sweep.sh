#!/usr/bin/env bash
# The speed figures of the README: `alexnet-mpi bench` (W = 1, 1000 classes) for 1 and 2 threads and batches
# 32, 64, 128 in one process, small widths (W = 0.25 and the default job's 0.125, batch 64), Winograd against im2col
# only, then model, data and conv-data/fc-model (owt) parallelism on 2 ranks × 1 thread, each back to back with one
# process × 2 threads (data parallelism as it runs on one node, summing in shared memory, then with the allreduce, and
# with the allreduce left out: its ceiling), and the hybrid layout on 4 ranks. Prints one table row a run; each
# fraction is against the sgemm rate measured in that same run.
# Usage: launch/bench-sweep.sh [--quick | --layouts]   (--quick: batch 128 only; --layouts: only the 2-rank layouts
# against one process)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ALEXNET_MPI:-$(swift build -c release --show-bin-path)/alexnet-mpi}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
batches=(32 64 128)
[[ ${1:-} == --quick ]] && batches=(128)
layouts_only=0
[[ ${1:-} == --layouts ]] && layouts_only=1
row() {  # label, JSON line
  python3 -c '
import json, sys
j = json.loads(sys.argv[2])
notes = []
if "exchange_fraction" in j: notes.append("%s %.1f%% of the step" % ("fc slice exchange" if j.get("mode") == "owt" else "tower exchange", 100 * j["exchange_fraction"]))
if j.get("gradient_sum") == "shared-memory": notes.append("gradients summed in shared memory: one copy of the weights, updated in shares")
elif j.get("allreduce_skipped"): notes.append("gradient sum skipped (--skip-gradient-sum): the step without the allreduce")
elif "allreduce_bytes_per_step" in j: notes.append("allreduce %.0f MB a step, %.0f%% hidden" % (j["allreduce_bytes_per_step"] / 1e6, 100 * j["allreduce_hidden_fraction"]))
print("| %s | %g | %d | %.2f | %.1f | %.1f | %.1f%% | %.2f GB | %s |" % (sys.argv[1], j["width"], j["batch"], j["images_per_second"], j["limit_images_per_second"], j["step_ms"], 100 * j["fraction_of_sgemm_limit"], j["peak_resident_bytes"] / 1e9, "; ".join(notes)))
' "$1" "$2"
}
echo "| layout | W | batch | images/s | sgemm-bound limit | ms/step | fraction of limit | peak memory | notes |"
echo "|---|---|---|---|---|---|---|---|---|"
if (( ! layouts_only )); then
  for threads in 1 2; do
    for b in "${batches[@]}"; do
      row "1 process, $threads thread(s)" "$("$bin" bench --batch "$b" --threads "$threads" | tail -n 1)"
    done
  done
  row "1 process, 2 threads, small width" "$("$bin" bench --width 0.25 --batch 64 --threads 2 --steps 20 | tail -n 1)"
  row "1 process, 2 threads, the default job" "$("$bin" bench --width 0.125 --batch 64 --threads 2 --steps 20 | tail -n 1)"
  # Winograd (conv2–conv5 at W = 1) against im2col + sgemm everywhere, back to back.
  plain=$("$bin" bench --batch 128 --threads 2 --winograd never | tail -n 1)
  fast=$("$bin" bench --batch 128 --threads 2 | tail -n 1)
  row "1 process, 2 threads, im2col + sgemm only (--winograd never)" "$plain"
  row "1 process, 2 threads, Winograd where it pays (the default)" "$fast"
  python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print("| Winograd / im2col only, back to back | | | **%.3f×** | | | | | |" % (b["images_per_second"]/a["images_per_second"]))' "$plain" "$fast"
fi
# Each parallel layout against one process with 2 threads, back to back (the machine is shared: the pair
# shows the ratio under the same noise).
for mode in model data owt; do
  single=$("$bin" bench --batch 128 --threads 2 | tail -n 1)
  other=$(mpirun -np 2 --bind-to core "$bin" bench --mode "$mode" --batch 128 --threads 1 | tail -n 1)
  row "1 process, 2 threads" "$single"
  row "2 ranks × 1 thread, $mode parallel" "$other"
  python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print("| %s parallel / one process, back to back | | | **%.3f×** | | | | | |" % (sys.argv[3], b["images_per_second"]/a["images_per_second"]))' "$single" "$other" "$mode"
  if [[ $mode == data ]]; then
    # The same layout summing with the allreduce, a copy of the model a rank (what spans nodes).
    summed=$(mpirun -np 2 --bind-to core "$bin" bench --mode data --batch 128 --threads 1 --gradient-sum allreduce | tail -n 1)
    row "2 ranks × 1 thread, data parallel, --gradient-sum allreduce" "$summed"
    python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print("| data parallel with the allreduce / one process | | | **%.3f×** | | | | | |" % (b["images_per_second"]/a["images_per_second"]))' "$single" "$summed"
    # The same step without the gradient sum: data parallelism's ceiling on these cores (the allreduce's true cost is
    # the difference, even where it is hidden behind backward).
    bare=$(mpirun -np 2 --bind-to core "$bin" bench --mode data --batch 128 --threads 1 --skip-gradient-sum | tail -n 1)
    row "2 ranks × 1 thread, data parallel without the gradient sum" "$bare"
    python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print("| data parallel without the gradient sum / one process | | | **%.3f×** | | | | | |" % (b["images_per_second"]/a["images_per_second"]))' "$single" "$bare"
  fi
done
(( layouts_only )) || row "4 ranks × 1 thread, hybrid (oversubscribed: 2 cores)" "$(mpirun -np 4 --oversubscribe "$bin" bench --mode hybrid --batch 128 --threads 1 --steps 2 | tail -n 1)"
