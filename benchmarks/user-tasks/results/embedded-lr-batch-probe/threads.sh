#!/bin/bash
# reverse_word alone, first expert, seed 0: torch's default threads (2 here) against one, interleaved twice
cd /work/tmp/rclone
P=/work/main/.venv/bin/python
for rep in 1 2; do
  for t in 2 1; do
    start=$(date +%s)
    OMP_NUM_THREADS=$t $P benchmarks/user-tasks/run.py --base embedded --tasks reverse_word --ood none \
      --out /work/tmp/thr-$t-$rep/out --work /work/tmp/thr-$t-$rep/work --fresh --source-tree /work/tmp/rclone > /work/tmp/thr-$t-$rep.log 2>&1
    echo "threads=$t rep=$rep rc=$? $(( $(date +%s) - start )) s"
  done
done
