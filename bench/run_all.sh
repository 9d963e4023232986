#!/usr/bin/env bash
# Every figure side by side: the anchors, the relay with batching on and off, lone records, the
# delivery ceiling, and which targets of /work/shared/BENCHMARKS.md pass. About 90 s per round.
#   bench/run_all.sh                 # one round
#   bench/run_all.sh --repeat 3      # medians of three rounds (about 4.5 min)
#   bench/run_all.sh --json          # machine-readable
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
. .venv/bin/activate
exec python -m bench.pipeline --with-anchors --ceiling "$@"
