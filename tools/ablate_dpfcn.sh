#!/bin/sh
# DP-FCN ablation at one data and training budget: deformable parts + localization refinement (DP-FCN),
# deformable parts without the refinement, and rigid position-sensitive pooling (R-FCN).
# Each run trains STEPS steps from scratch on the data and split of configs/train_dpfcn.yaml, on CROP-px
# crops (smaller than the shipped model's 256, so that three runs fit in a short budget); the validation
# scores (drone AP50 per sensor on the held-out clips) are the last "validation" line of
# runs/ablation/*/log.txt.
#   sh tools/ablate_dpfcn.sh [STEPS] [CROP]      (1500 steps at 128 px: about 6 minutes a run on 2 cores)
set -e
STEPS=${1:-1500}
CROP=${2:-128}
for v in "dpfcn dpfcn.deformable=true dpfcn.refine=true" \
         "norefine dpfcn.deformable=true dpfcn.refine=false" \
         "rfcn dpfcn.deformable=false dpfcn.refine=false"; do
  set -- $v
  name=$1; shift
  .venv/bin/dronetrack train configs/train_dpfcn.yaml out=runs/ablation/$name export=null \
    optim.steps=$STEPS optim.eval_every=$STEPS data.crop=$CROP "$@" > /dev/null
  echo "$name: $(grep validation runs/ablation/$name/log.txt | tail -1)"
done
