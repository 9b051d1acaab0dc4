#!/bin/bash
# reverse_word alone, 3 seeds per variant; /work/tmp/snapH held `git archive 3034813 see` (see/ as at b8a9aae)
cd "$(git rev-parse --show-toplevel)"
run() {  # name, then key=value args
  name=$1; shift
  for s in 0 1 2; do
    d=/work/tmp/var/$name/s$s
    [ -f $d/out/results.json ] && continue
    .venv/bin/python benchmarks/user-tasks/run.py --base embedded --tasks reverse_word --ood none \
      --out $d/out --work $d/work --fresh --source-tree /work/tmp/snapH train.seed=$s "$@" > $d.log 2>&1 || echo "fail $name $s"
    python3 -c "import json;t=json.load(open('$d/out/results.json'))['summary']['tasks'][0];m=t['train_metrics'];print('$name', $s, t['exact_match'], m['steps'], m['best_step'], m['heldout_exact_match'], t['add_seconds'])" >> /work/tmp/var/summary.txt
  done
}
mkdir -p /work/tmp/var
for n in v0 nm0 steps1250 ef003 nogeneral steps1500; do mkdir -p /work/tmp/var/$n; done
run v0
run nm0 reconstruction.near_miss_ratio=0
run steps1250 train.min_steps=1250
run ef003 train.eval_fraction=0.034
run nogeneral reconstruction.general_negatives=none
run steps1500 train.min_steps=1500
echo done >> /work/tmp/var/summary.txt
