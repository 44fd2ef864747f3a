#!/usr/bin/env bash
# alexnet-mpi against PyTorch on this machine: `alexnet-mpi bench` and PyTorch's training step of the same network
# (launch/pytorch_step.py), back to back with the same width, classes, batch, threads and steps; then one table:
# images/s of each and their ratio, peak resident memory, parameter counts (they must agree), the libraries, the CPU.
# PyTorch is optional: where it is not installed this says how to install it and exits 0.
# Usage: launch/compare-pytorch.sh [--width 1] [--batch 128] [--threads 2] [--steps 5] [--classes 1000]
#   PYTORCH_PYTHON  a Python with torch, or a venv directory holding one (default: python3, if it imports torch)
#   ALEXNET_MPI     the alexnet-mpi binary (default: this repository's release build, else alexnet-mpi on PATH)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
me=compare-pytorch.sh
usage="usage: launch/$me [--width W] [--batch N] [--threads N] [--steps N] [--classes N]"

width=1 batch=128 threads=2 steps=5 classes=1000
while (($#)); do
  opt=$1 value=
  case $opt in
    -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
    --*=*) value=${opt#*=}; opt=${opt%%=*} ;;
    --width|--batch|--threads|--steps|--classes)
      (($# >= 2)) || { echo "$me: error: $opt needs a value ($usage)" >&2; exit 2; }
      value=$2; shift ;;
  esac
  case $opt in
    --width)
      [[ $value =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] && awk -v w="$value" 'BEGIN { exit !(w > 0 && w <= 16) }' \
        || { echo "$me: error: --width must be a number in (0, 16] (got '$value')" >&2; exit 2; }
      width=$value ;;
    --batch|--threads|--steps|--classes)
      [[ $value =~ ^[1-9][0-9]{0,6}$ ]] || { echo "$me: error: $opt must be a whole number ≥ 1 (got '$value')" >&2; exit 2; }
      printf -v "${opt#--}" '%s' "$value" ;;
    *) echo "$me: error: unknown option '$opt' ($usage)" >&2; exit 2 ;;
  esac
  shift
done

# PyTorch first: without it there is nothing to compare, and bench need not run.
install_hint="python3 -m venv ~/venv-torch && ~/venv-torch/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu (CPU-only wheels; plain 'pip install torch' from PyPI works too, with CUDA libraries), then PYTORCH_PYTHON=~/venv-torch launch/$me"
if [[ -n ${PYTORCH_PYTHON:-} ]]; then
  py=$PYTORCH_PYTHON
  [[ -d $py ]] && py=$py/bin/python
  "$py" -c 'import torch' 2>/dev/null \
    || { echo "$me: error: PYTORCH_PYTHON=$PYTORCH_PYTHON: '$py' cannot import torch; install it, e.g.: $install_hint" >&2; exit 1; }
elif command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
  py=python3
else
  echo "$me: PyTorch is not installed (python3 cannot import torch), so there is nothing to compare with. PyTorch is optional; to compare, install it: $install_hint"
  exit 0
fi

if [[ -n ${ALEXNET_MPI:-} ]]; then
  bin=$ALEXNET_MPI
elif [[ -x $repo/.build/release/alexnet-mpi ]]; then
  bin=$repo/.build/release/alexnet-mpi
elif command -v alexnet-mpi >/dev/null; then
  bin=$(command -v alexnet-mpi)
else
  echo "$me: error: no alexnet-mpi binary: build it (swift build -c release, or ./install.sh --no-run) or set ALEXNET_MPI" >&2
  exit 1
fi
[[ -x $bin ]] || { echo "$me: error: ALEXNET_MPI=$bin is not an executable file" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
setting=(--width "$width" --classes "$classes" --batch "$batch" --threads "$threads" --steps "$steps")
echo "== alexnet-mpi bench ${setting[*]}   ($bin)"
"$bin" bench "${setting[@]}" | tee "$out/bench" \
  || { echo "$me: error: alexnet-mpi bench failed (its message is above)" >&2; exit 1; }
echo
echo "== PyTorch: pytorch_step.py ${setting[*]}   ($py)"
"$py" "$here/pytorch_step.py" "${setting[@]}" --warmup 1 | tee "$out/torch" \
  || { echo "$me: error: pytorch_step.py failed (its message is above)" >&2; exit 1; }
echo

"$py" - "$out/bench" "$out/torch" "$width" "$classes" "$batch" "$threads" "$steps" <<'EOF'
import json, os, sys

def last_json(path):
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"compare-pytorch.sh: error: no JSON line in the output of {'bench' if 'bench' in path else 'pytorch_step.py'}")
    return json.loads(lines[-1])

def cpu():
    """Model name, family/model (and the code name for server parts this table knows), logical CPUs."""
    info, count = {}, 0
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "processor":
                count += 1
            elif k in ("vendor_id", "model name", "cpu family", "model") and k not in info:
                info[k] = v
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    family, model = int(info.get("cpu family", "0")), int(info.get("model", "0"))
    intel = {0x55: "Skylake-SP / Cascade Lake / Cooper Lake", 0x6A: "Ice Lake-SP", 0x8F: "Sapphire Rapids",
             0xCF: "Emerald Rapids", 0xAD: "Granite Rapids", 0xAF: "Sierra Forest"}
    name = None
    if info.get("vendor_id") == "GenuineIntel" and family == 6:
        name = intel.get(model)
    elif info.get("vendor_id") == "AuthenticAMD":
        name = {0x17: "Zen / Zen 2", 0x19: "Zen 3 / Zen 4", 0x1A: "Zen 5"}.get(family)
    code = f": {name}" if name else ""
    return f"{info.get('model name', '?')} (family {family}, model {model} = {model:#x}{code}), {count} logical CPUs"

b, t = last_json(sys.argv[1]), last_json(sys.argv[2])
width, classes, batch, threads, steps = sys.argv[3:8]
blas = next((l[len("BLAS: "):] for l in open(sys.argv[1]).read().splitlines() if l.startswith("BLAS: ")), "?")
gb = lambda x: f"{x / 1e9:.2f} GB"
count = lambda x: f"{x:,}" if isinstance(x, int) else "not reported by this build"
print(f"W = {width}, {classes} classes, batch {batch}, {threads} threads, fastest of {steps} timed steps after 1 warm-up step")
print(f"CPU: {cpu()}")
print()
print("| | alexnet-mpi | PyTorch |")
print("|---|---|---|")
print(f"| images/s | {b['images_per_second']:.2f} | {t['images_per_second']:.2f} |")
print(f"| ms/step, fastest (mean) | {b['step_ms']:.0f} ({b['mean_step_ms']:.0f}) | {t['step_ms']:.0f} ({t['mean_step_ms']:.0f}) |")
print(f"| peak resident memory | {gb(b['peak_resident_bytes'])} | {gb(t['peak_resident_bytes'])} "
      f"({gb(t['resident_after_import_bytes'])} of it on importing torch) |")
print(f"| parameters | {count(b.get('parameters'))} | {count(t['parameters'])} |")
print(f"| library | {blas} | {t['torch_build']} |")
print()
print(f"alexnet-mpi / PyTorch: {b['images_per_second'] / t['images_per_second']:.2f}× the images/s, "
      f"{b['peak_resident_bytes'] / t['peak_resident_bytes']:.2f}× the peak memory")
if isinstance(b.get("parameters"), int) and b["parameters"] != t["parameters"]:
    sys.exit("compare-pytorch.sh: error: the parameter counts differ: the two sides do not train the same network")
EOF
