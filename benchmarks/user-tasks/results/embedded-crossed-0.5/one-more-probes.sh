#!/bin/bash
cd /work/tmp/rclone
P=/work/main/.venv/bin/python
W=/work/tmp/us-nm1-s1/work
S="train.seed=1 reconstruction.near_miss_ratio=1.0"
run() { name=$1; task=$2; ev=$3; shift 3; start=$(date +%s)
  $P benchmarks/user-tasks/one_more.py $W $task $S "$@" --out /work/tmp/probe-$name.json --source-tree /work/tmp/rclone --eval $task $ev > /work/tmp/probe-$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - start )) s"; }
run ll-none last_letter "ood_next_letter ood_number_words"
run ll-cr last_letter "ood_next_letter ood_number_words" reconstruction.crossed_ratio=0.5
run ll-cr-25 last_letter "ood_next_letter ood_number_words" reconstruction.crossed_ratio=0.5 train.negative_share=0.25
run add-cr-25 add_numbers "ood_next_letter ood_number_words ood_minutes" reconstruction.crossed_ratio=0.5 train.negative_share=0.25
