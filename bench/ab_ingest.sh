#!/bin/bash
# A/B of bench/ingest.py between two checkouts (here: /work/main = before, /work/wt-pipe = after),
# interleaved so that background load falls on both alike. Results: bench/results/ingest-one-pipeline.md
for rep in 1 2 3; do
  for side in main wt-pipe; do
    cd /work/$side
    PYTHONPATH=/work/$side/src flock /tmp/pixquery-bench.lock /work/main/.venv/bin/python bench/ingest.py --model /work/main/models/random-vit-b-32 --limit 300 --reps 1 --out /tmp/bench-$side-$rep > /tmp/bench-$side-$rep.log 2>&1
    echo "$side $rep $(grep -i 'end to end\|ratio\|images/s' /tmp/bench-$side-$rep.log | tail -3 | tr '\n' ' ')"
  done
done
