#!/bin/bash
# reverse_word, remove_vowels, count_vowels in sequence, variants of lr and batch size
cd /work/tmp/rclone
P=/work/main/.venv/bin/python
for v in "base:" "lr6:train.lr=0.006" "b32:train.batch_size=32"; do
  name=${v%%:*}; args=${v#*:}
  start=$(date +%s)
  $P benchmarks/user-tasks/run.py --base embedded --tasks reverse_word remove_vowels count_vowels --ood none \
     --out /work/tmp/mini-$name/out --work /work/tmp/mini-$name/work --fresh --source-tree /work/tmp/rclone $args > /work/tmp/mini-$name.log 2>&1
  echo "$name rc=$? $(( $(date +%s) - start )) s"
done
