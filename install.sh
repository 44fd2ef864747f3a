#!/usr/bin/env bash
# Installs what alexnet-mpi needs on Debian (Open MPI, OpenBLAS, libjpeg-turbo, libpng, pkg-config), builds the release binary,
# puts `alexnet-mpi` on PATH (/usr/local/bin), and — unless --no-run — trains the default job.
# Usage: ./install.sh [--no-run] [train options…]
set -euo pipefail
cd "$(dirname "$0")"

run_after=1
if [[ ${1:-} == --no-run ]]; then run_after=0; shift; fi

need=()
for pkg in libopenmpi-dev openmpi-bin libopenblas-dev libturbojpeg0-dev libpng-dev pkg-config; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo_cmd=(); [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  echo "install.sh: installing ${need[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v swift >/dev/null || export PATH="/opt/swift/usr/bin:$PATH"
command -v swift >/dev/null || { echo "install.sh: swift not found; install Swift 6 (e.g. to /opt/swift) first" >&2; exit 1; }

swift build -c release --product alexnet-mpi
bin="$(swift build -c release --show-bin-path)/alexnet-mpi"
if [[ -w /usr/local/bin ]]; then
  ln -sf "$(readlink -f "$bin")" /usr/local/bin/alexnet-mpi
  echo "install.sh: alexnet-mpi -> /usr/local/bin/alexnet-mpi"
else
  echo "install.sh: /usr/local/bin is not writable; add $(dirname "$bin") to PATH"
fi

if ((run_after)); then
  exec "$bin" train "$@"
fi
