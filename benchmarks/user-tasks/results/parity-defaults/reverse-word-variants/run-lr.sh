#!/bin/bash
# reverse_word alone, seed 0, one learning rate per run; /work/tmp/snapS held `git archive 5995e30 see`
# (see/ as at b8a9aae, train.lr's default then 1e-3). The 1e-3 run is v0/seed0.
cd "$(git rev-parse --show-toplevel)"
for lr in 0.002 0.003 0.005; do
  d=/work/tmp/lr/$lr/s0
  mkdir -p $d
  [ -f $d/out/results.json ] && continue
  .venv/bin/python benchmarks/user-tasks/run.py --base embedded --tasks reverse_word --ood none \
    --out $d/out --work $d/work --fresh --source-tree /work/tmp/snapS train.seed=0 train.lr=$lr > $d.log 2>&1 || echo "fail $lr"
done
