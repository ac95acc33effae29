#!/usr/bin/env bash
# The ablation: iterative against pure-clue against pure-decision, same seeds and budget, then one comparison.
#
#   bash experiments/ablation/run.sh                  # the tiny config's budget (30 steps each)
#   bash experiments/ablation/run.sh --steps 4        # a short budget, to try it out
#   bash experiments/ablation/run.sh --base configs/qwen2.5-vl-7b.yaml
#
# All three runs land in the base config's MLflow experiment; the table and figure go to compare/ablation/.
set -euo pipefail
cd "$(dirname "$0")/../.."
base=configs/tiny.yaml
steps=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) steps=(--trainer.max_steps "$2" --eval.every_n_steps "$(( ($2 + 1) / 2 ))"); shift 2 ;;
    --base) base="$2"; shift 2 ;;
    *) echo "usage: $0 [--steps N] [--base CONFIG]" >&2; exit 2 ;;
  esac
done
experiment=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1])).get('experiment', 'vzero'))" "$base")
for mode in iterative pure_clue pure_decision; do
  vzero fit --config "$base" --config "experiments/ablation/$mode.yaml" "${steps[@]}"
done
vzero compare --experiment "$experiment" --runs iterative pure_clue pure_decision --out compare/ablation
