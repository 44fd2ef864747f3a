#!/usr/bin/env bash
# The speed figures of the README: `alexnet-mpi bench` (W = 1, 1000 classes) for 1 and 2 threads and batches
# 32, 64, 128 in one process, then model parallelism on 2 ranks × 1 thread against one process × 2 threads,
# back to back. Prints one table row a run; each fraction is against the sgemm rate measured in that same run.
# Usage: launch/bench-sweep.sh [--quick]   (--quick: batch 128 only)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${ALEXNET_MPI:-$(swift build -c release --show-bin-path)/alexnet-mpi}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
batches=(32 64 128)
[[ ${1:-} == --quick ]] && batches=(128)
row() {  # label, JSON line
  python3 -c 'import json,sys; j=json.loads(sys.argv[2]); print("| %s | %d | %.2f | %.1f | %.1f | %.1f%% |%s" % (sys.argv[1], j["batch"], j["images_per_second"], j["limit_images_per_second"], j["step_ms"], 100*j["fraction_of_sgemm_limit"], (" exchange %.1f%% of the step" % (100*j["exchange_fraction"])) if "exchange_fraction" in j else ""))' "$1" "$2"
}
echo "| layout | batch | images/s | sgemm-bound limit | ms/step | fraction of limit |"
echo "|---|---|---|---|---|---|"
for threads in 1 2; do
  for b in "${batches[@]}"; do
    row "1 process, $threads thread(s)" "$("$bin" bench --batch "$b" --threads "$threads" | tail -n 1)"
  done
done
# Model parallel against one process, back to back, twice (the machine is shared: pairs show the noise).
for pair in 1 2; do
  single=$("$bin" bench --batch 128 --threads 2 | tail -n 1)
  model=$(mpirun -np 2 --bind-to core "$bin" bench --mode model --batch 128 --threads 1 | tail -n 1)
  row "1 process, 2 threads (pair $pair)" "$single"
  row "2 ranks × 1 thread, model parallel (pair $pair)" "$model"
  python3 -c 'import json,sys; a=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); print("|  pair %s: model parallel / one process = %.3f× | | | | | |" % (sys.argv[3], b["images_per_second"]/a["images_per_second"]))' "$single" "$model" "$pair"
done
