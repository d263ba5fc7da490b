#!/usr/bin/env bash
# A model on 16 training boxes (issue #17: at least 16 boxes from the embedded simulator), the shipped
# recipe of docs/model-card.md repeated on the larger data set, at z = 0 (default) or Z = 0.5 / 1:
#   [Z=0.5] bash jobs/train_z0_16.sh [RUNDIR]   (default runs/z016, runs/z0.5-16, runs/z1-16; resumable)
#
# Data: `halopaint simulate --grid 64 --box 256 --seed S --redshift Z`, training seeds 1–15 and 101 (16 boxes,
# 16 × (256 Mpc/h)³ ≈ 0.27 (Gpc/h)³), validation seed 201; the held-out seeds 9001/9002 are never used here.
# Stages (each resumable with --resume; the fused training path, `--train-path auto` on CPU):
#   1. Poisson pretraining: warm start from the old stage-1 bundle (z = 0: git 42944cf, the supervised shipped
#      model trained on 3 boxes; z = 0.5 / 1: the shipped 3-box model of that z as of git 7fe99ab, itself
#      supervised), SUP_STEPS steps on all four bins (32³ patches, lr 1e-3, EMA 0.98), count-calibrated.
#   2. WGAN-GP + Poisson (W = 1000) fine-tuning from it, ADV_STEPS iterations per bin (bins 0,1 and 2,3 as two
#      one-thread runs side by side), merged, count-calibrated on the 16 boxes.
#   3. The count model (dispersion law, mass slopes, velocity law) fitted on the 16 boxes.
# Selection rule, fixed before any look at validation or held-out boxes: the bundle after the last step of
# stage 2 (ADV_STEPS = 800, the stage rule 2 chose for the 3-box model) — no choice among stages.
# Shipping rule, fixed before the validation look: the 16-box bundle replaces the shipped model of its z
# (engine/data/default_model.pt, default_model_z0.5.pt, default_model_z1.0.pt; for z = 0.5 / 1 the rule was
# fixed before those runs started) iff on the validation seed 201 at that z (a) its summed painted field
# meets the paper's bar (max|T−1| ≤ 0.1 for k ≤ 0.2 h/Mpc, r_c(0.1) above and s below the 2LPT
# baseline's) and (b) its integer realizations
# (jobs/bench/per_bin_realizations.py --truth sim-z$Z-201.h5) meet at least as many of the per-bin
# (bin × {T, r_c, s, variance, P(n ≥ 2)}) criteria as the current shipped bundle's on the same box.
# Held-out evaluation (seeds 9001, 9002) comes after, once, whatever it shows: docs/model-card.md.
# Outcomes: z = 0 and z = 0.5 shipped; z = 1 not (validation: summed r_c 0.961 below the 2LPT 0.962, s/s_2LPT
# 1.26, 0.99, 1.07), so the 3-box z = 1 model stays.
# Mean-map rule (jobs/fit_count_model.py --mean-map isotonic, added after the first held-out look, which
# found bin 3's P(n ≥ 2) 2.6× the truth's), fixed before the count model with a mean map was evaluated on any box: it
# replaces the shipped count model (same generators) iff on the validation seed 201 its realizations meet
# at least as many per-bin criteria as the shipped one's and P(n ≥ 2) in strictly more bins (or in as many,
# with a smaller Σ_bins |ln P(n ≥ 2) ratio|). Held-out seeds 9001/9002 are then evaluated once.
# Outcome: 16/20 criteria against 17/20 (bin 3's P(n ≥ 2) 2.25 → 1.41, but bin 0's T and s fail): rejected,
# stage 3 keeps the default --mean-map none; held-out boxes were not looked at with it.
# Per-bin mean-map rule (--mean-map where-needed), fixed 2026-12-07 before that law was fitted or evaluated on
# any box, but after the all-bin mean map's validation look above (so not blind to it: bin 0 lost T there,
# bins 2 and 3 gained): the law uses the mean map in bin b only where the dispersion law about the painted mean
# cannot reproduce the truth's second factorial moment on the training boxes — its expected sum n(n−1) (the
# narrowest integer law where the target is narrower than any law of mean μ) exceeds the truth's by more than
# 5 %. It replaces the shipped count model of each z (same generators) under the mean-map rule above (at
# least as many per-bin criteria on validation seed 201 at that z, and P(n ≥ 2) in strictly more bins or in as
# many with a smaller sum over bins of |ln P(n ≥ 2) ratio|); the held-out seeds are then evaluated once per z.
# Outcome (runs/pbmm): mean map in bins 0, 2, 3 at z = 0 (law/truth sum n(n−1) 1.10, 1.00, 1.12, 2.37), all four
# at z = 0.5, bins 2, 3 at z = 1. Validation 201: z = 0 18/20 against 17/20, P(n ≥ 2) in 3 bins each, sum
# |ln ratio| 0.57 < 1.08: replaces; z = 0.5 17/20 < 18/20 and z = 1 19/20 = 19/20 with sum |ln ratio| 0.61 >
# 0.56: do not. Held-out z = 0 (2 boxes × 2): bin 3's P(n ≥ 2) 2.57 → 1.06, all bins' P(n ≥ 2) inside 25 %,
# but bin 0's s misses (1.07 in one k-bin, 19/20 as before) and the catalogue's real-space P0 falls to 0.84–0.88
# of the FoF halos' (all bins; bin 0 0.78–0.84: the mean map's regression dilution lowers the bias), which
# breaks issue #18's 15 % bar the shipped law meets. The rule did not look at the catalogue's clustering; it
# should have. Not shipped (a decision the held-out boxes informed, so none of its figures is claimed for a
# shipped model); docs/model-card.md.
# Cell-conserving mean-map rule (--mean-map where-needed --mean-cell 4), fixed 2026-12-07 before that law was
# written, fitted or evaluated: the bins the where-needed rule picks get the isotonic map, rescaled inside each
# aligned 4³-voxel cell (16 Mpc/h, below the 31 Mpc/h of k = 0.2 h/Mpc) to keep the painted total of the cell,
# so halos move only between voxels of one cell and the large-scale field stays the painted one. It replaces
# the shipped z = 0 count model iff on validation seed 201 (a) the mean-map rule above holds and (b) the
# catalogues (2 realizations, jobs/bench/sample_catalogue.py against the FoF halos, all bins) have no more
# k-cells outside the RSD bars (real- and redshift-space P0 within 15 %, P2/P0 within 25 %, 0.05–0.2 h/Mpc)
# than the shipped law's. Held out: fresh seeds 9101/9102 (never simulated before this rule), once, whatever
# they show; 9001/9002 are reported beside them but were seen by the where-needed law.
# Outcome: replaces at z = 0 (validation (a) 17/20 = 17/20, sum |ln P(n ≥ 2) ratio| 0.52 < 1.08; (b) 0 k-cells
# outside against 1); held out 9101/9102: 18/20 (previous law 19/20), bin 3's P(n ≥ 2) 2.46 → 1.28, RSD 24/24.
# The same law and rule at z = 0.5 and z = 1 (fixed 2026-12-07 before those fits): fitted on each z's training
# boxes of its shipped bundle (z = 0.5: the 16 boxes; z = 1: seeds 1, 2, 101), judged on validation 201 at that
# z against the shipped law of that z; held out on fresh seeds 9101/9102 at that z, once.
# Outcome (2026-12-07, rerun from scratch on regenerated boxes): validation 201 (a) z = 0.5 18/20 against 18/20,
# P(n ≥ 2) in 3 bins against 2 (sum |ln ratio| 0.84 against 1.77); z = 1 20/20 against 19/20, P(n ≥ 2) in 4
# bins against 3; (b) RSD k-cells outside: z = 0.5 0 against 0, z = 1 2 against 3. Both replace the shipped
# laws (engine/data/default_model_z0.5.pt, default_model_z1.0.pt). Held out once on fresh 9101/9102: 19/20 at
# both z (previous laws 18/20, 19/20), bin 3's P(n ≥ 2) 2.38 (4.17) and 1.44 (1.83); RSD z = 0.5 24/24, z = 1
# 23/24 per P0 statistic (previous law the same).
# Longer z = 1 rule, fixed 2026-12-07 before the run (after the 800-step z = 1 bundle's validation look, which
# is why it exists): the z = 1 run continued to ADV_STEPS=1600 from its 800-step checkpoints, nothing else
# changed (`cp -r runs/z1-16 runs/z1-16-1600; Z=1 ADV_STEPS=1600 bash jobs/train_z0_16.sh runs/z1-16-1600`),
# the bundle after step 1600, judged by the shipping rule above against the shipped 3-box z = 1 model; the
# held-out seeds are evaluated once if it ships. Outcome (validation 201): summed max|T−1| 0.029, r_c 0.963 against
# the 2LPT 0.962, but s/s_2LPT 1.31, 0.94, 1.10: the summed bar fails again; not shipped, not held out.
# Mean-cap rule (--mean-cap where-needed, one halo per voxel), fixed 2026-12-07 23:20 UTC before that law was
# fitted or evaluated on any box: the shipped cell law of each z refitted on the same training boxes
# (`--mean-map where-needed --mean-cell 4 --mean-cap where-needed`), which caps the law's mean at 1 halo per
# voxel inside the 4³ cells (excess water-filled into the cell's other voxels, cell totals kept) in the bins
# whose cell law still expects more than 1.05× the truth's Σ n(n−1) on the training boxes. It replaces the
# shipped count model of a z iff on validation seed 201 at that z (a) it meets at least as many per-bin
# criteria as the shipped law and P(n ≥ 2) in strictly more bins, or in as many with a smaller Σ_bins |ln P(n ≥ 2)
# ratio|, and (b) its catalogues have no more RSD k-cells outside the bars than the shipped law's. Held out
# once on fresh seeds 9301/9302 at that z (never simulated before this rule), whatever they show.
# Outcome (2026-12-08): capped bin 3 at z = 0 and 0.5 (cell-law pair excess 1.163, 1.688), no bin at z = 1
# (1.025: law unchanged). Validation 201: z = 0 17/20 = 17/20, P(n ≥ 2) in 3 bins each, Σ|ln| 0.555 > 0.519:
# not shipped; z = 0.5 17/20 = 17/20, P(n ≥ 2) in 4 bins against 3 (bin 3 1.632 → 1.079), RSD 0 = 0: shipped
# (engine/data/default_model_z0.5.pt). Held out z = 0.5 on 9301/9302: 19/20 (previous law 18/20), bin 3's
# P(n ≥ 2) 1.816 → 1.103.
# Cross-bin rule, fixed 2026-12-07 23:25 UTC before that law was refitted on the 16 boxes or evaluated on seed
# 201: at z = 0, after the mean-cap rule's decision, the cross-bin law (`python jobs/fit_cross_bin_law.py
# BUNDLE --boxes <the 16 training boxes> --draws 4`) fitted on top of the z = 0 law then shipped. It replaces
# that law iff on validation seed 201, 2 realizations: (a) and (b) of the mean-cap rule hold against it, and
# (c) the summed field's pooled bispectrum (`jobs/eval_z0_16.sh bispec` on seed 201) has at least as many cells
# within 20 % and closer than the baseline, and a smaller max |B/B_true − 1| at (0.6, 0.7) h/Mpc. Both
# decisions are made on seed 201 before the fresh held-out seeds 9301/9302 are looked at.
# Outcome (2026-12-08): 16/20 against 17/20, 1 RSD k-cell outside against 0, summed bispectrum 0 of 10 cells
# against 1 and 0.595 against 0.542 at (0.6, 0.7): not shipped, not held out.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
z="${Z:-0}"
case "$z" in
    0) tag=z016; init_ref=42944cf:engine/data/default_model.pt ;;
    0.5|1) tag=z$z-16; init_ref=7fe99ab:engine/data/default_model_z$(printf %.1f "$z").pt ;;
    *) echo "train_z0_16.sh: Z must be 0, 0.5 or 1, got $z" >&2; exit 2 ;;
esac
run="${1:-$root/runs/$tag}"
data="${DATA:-$root/runs/v2}"
sup_steps="${SUP_STEPS:-200}"
adv_steps="${ADV_STEPS:-800}"
export OMP_NUM_THREADS=1
mkdir -p "$run" "$data"
seeds="1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 101"
boxes=()
for s in $seeds 201; do
    f="$data/sim-z$z-$s.h5"
    [ -f "$f" ] || halopaint simulate --quiet --grid 64 --box 256 --seed "$s" --redshift "$z" --out "$f"
    [ "$s" = 201 ] || boxes+=("$f")
done
val="$data/sim-z$z-201.h5"

[ -f "$run/stage1-old.pt" ] || git -C "$root" show "$init_ref" > "$run/stage1-old.pt"
halopaint train --quiet --data "${boxes[@]}" --validation "$val" --out "$run/sup.pt" --steps "$sup_steps" \
    --patch 32 --mass-bins all --seed 7 --supervised-weight 1 --adversarial-weight 0 --lr 1e-3 --ema 0.98 \
    --init "$run/stage1-old.pt" --checkpoint-every 10 --validate-every 50 --resume
[ -f "$run/sup-cal.pt" ] || python "$root/jobs/calibrate_counts.py" --model "$run/sup.pt" --data "${boxes[@]}" \
    --out "$run/sup-cal.pt"

adv() {
    halopaint train --quiet --data "${boxes[@]}" --validation "$val" --out "$run/adv-$1.pt" --steps "$adv_steps" \
        --patch 32 --mass-bins "$2" --seed 7 --supervised-weight 1000 --adversarial-weight 1 \
        --init "$run/sup-cal.pt" --checkpoint-every 25 --validate-every 100 --resume
}
adv 01 0,1 & p1=$!
adv 23 2,3 & p2=$!
wait $p1 && wait $p2
python "$root/jobs/merge_bundles.py" --out "$run/adv-merged.pt" "$run/adv-01.pt" "$run/adv-23.pt" \
    --init-of "$run/sup-cal.pt" --summary "z = $z, 16 training boxes: Poisson pretraining, WGAN-GP + Poisson (W = 1000) $adv_steps it/bin, calibrated"
python "$root/jobs/calibrate_counts.py" --model "$run/adv-merged.pt" --data "${boxes[@]}" --out "$run/adv-cal.pt"
python "$root/jobs/fit_count_model.py" "$run/adv-cal.pt" --boxes "${boxes[@]}" --out "$run/default_model.pt"
echo "bundle: $run/default_model.pt (validate on seed 201, then copy into engine/data/ to ship)" >&2
