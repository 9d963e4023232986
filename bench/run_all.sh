#!/usr/bin/env bash
# Every figure of bench/README.md, side by side, each benchmark printing its
# targets. About 4 minutes per round on a quiet 2-core machine (11 with --repeat 3); on a shared
# machine run several rounds and read the ratios to the anchors measured in the same round.
# Needs the project's .venv (./scripts/test makes it), wrk, and a Redis on 127.0.0.1:6379.
#   bench/run_all.sh                 # one round
#   bench/run_all.sh --repeat 3      # three rounds (the pipeline's and delivery's medians; the others run 3 times)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "no .venv here: run ./scripts/test once (it makes it), then this again" >&2
  exit 2
fi
command -v wrk >/dev/null || { echo "the benchmarks load the relay with wrk: apt-get install -y wrk" >&2; exit 2; }
# shellcheck disable=SC1091
. .venv/bin/activate
repeat=1
if [ "${1:-}" = "--repeat" ]; then repeat="$2"; fi
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
# The edge against the bare Flask view, Braze requests per record, keeping up, lone records.
python -m bench.pipeline --with-anchors --repeat "$repeat"
# A 100,000-record backlog at Braze 50, 200 and 500 ms; CPU per 1,000 records, and the commit
# before the delivery work (513076e) measured in the same round.
python -m bench.delivery --repeat "$repeat" --baseline 513076e
for _ in $(seq "$repeat"); do
  # skip_unchanged: a daily re-export with 5% of the rows changed; the memory's size.
  python -m bench.reexport
  # Consent while 100,000 track records drain at full speed, with the Procfile's processes.
  python -m bench.consent
done
# The order across lanes: its cost on and off, and an alias creation, identify and delete while
# 100,000 track records drain.
python -m bench.order --repeat "$repeat"
# Where a drain job's CPU goes (in-process, cProfile in every thread).
python -m bench.profile_drain
# A transform at the edge (a segment route against the same route bare), a TD export of 100,000
# rows, and the worker class against slow clients and a long export.
python -m bench.transform --repeat "$repeat"
# Record-level deduplication: the edge with and without a dedup_key, bytes per remembered record,
# workers killed mid-delivery with and without it.
python -m bench.dedup --repeat "$repeat"
python -m bench.export --repeat "$(( repeat < 2 ? 2 : repeat ))"
python -m bench.edge_stall
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg)"
