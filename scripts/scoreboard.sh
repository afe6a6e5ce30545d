#!/usr/bin/env bash
# The first scoreboard: collect, train, evaluate on highway and racetrack (about 10 minutes per
# scenario on 2 CPU cores). Results in runs/score/SCENARIO/eval/report.md.
#   bash scripts/scoreboard.sh [highway racetrack ...]
set -euo pipefail
for sc in "${@:-highway racetrack}"; do
  for s in $sc; do
    out=runs/score/$s
    driving collect scenario=$s episodes=60 out=$out/data -q
    driving train dataset=$out/data out=$out/run steps=3000 batch_size=64 eval.every=1000 eval.episodes=4 -q
    driving eval $out/run/checkpoints/best scenario=$s episodes=20 videos=1 out=$out/eval -q
  done
done
