#!/usr/bin/env bash
# Evaluation of a 16-box model made by jobs/train_z0_16.sh (the model card's figures), at z = 0 or Z = 0.5 / 1:
#   [Z=…] bash jobs/eval_z0_16.sh validation [RUNDIR]   seed 201: the shipped bundle of that z vs the new one,
#                                                       the shipping rule's inputs
#   [Z=…] [SEEDS="9101 9102"] bash jobs/eval_z0_16.sh heldout [RUNDIR]
#                                                       seeds 9001/9002 (or SEEDS), once, with the shipped bundle of that z
#                                                       (--model default): painted-field statistics, per-bin
#                                                       realizations, RSD multipoles vs FoF
#   [Z=…] [MODEL=B.pt] bash jobs/eval_z0_16.sh rsdval [RUNDIR]  seed 201: the catalogues' multipoles vs FoF,
#                                                       the shipped law against MODEL (default RUNDIR's bundle)
#   [Z=…] [SEEDS="9101 9102"] MODEL=B.pt bash jobs/eval_z0_16.sh lawcompare [RUNDIR]
#                                                       after heldout: the per-bin realizations and the
#                                                       catalogues' RSD cells of the count law of MODEL (e.g. the
#                                                       law shipped before, `git show REV:engine/data/…`) on the
#                                                       same painted held-out boxes, files *-law.*
#   [Z=…] [SEEDS="9101 9102"] bash jobs/eval_z0_16.sh bispec [RUNDIR]
#                                                       the bispectrum bar on SEEDS × 2 realizations of the
#                                                       shipped bundle (MODEL=B.pt: B's count law), pooled
#                                                       (jobs/bench/bispectrum_table.py)
#   bash jobs/eval_z0_16.sh extras [RUNDIR]             z = 0: Ω_m variants and the bispectrum of 9002 r0 (after heldout)
# RUNDIR defaults to runs/z016 (z = 0), runs/z0.5-16, runs/z1-16; the N-body and 2LPT boxes are read from $DATA
# (default runs/v2), made by `halopaint simulate --grid 64 --box 256 --seed S --redshift Z [--omega-m X]
# [--lpt-only]` (see docs/model-card.md); heldout makes the --lpt-only boxes it lacks.
# validation compares with the bundle shipped as of OLD_COMMIT (z = 0: d28a4ad, the 3-box model; z = 0.5 / 1:
# 7fe99ab, the 3-box models).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:?validation | heldout | rsdval | lawcompare | bispec | extras}"
z="${Z:-0}"
case "$z" in
    0) tag=z016; shipped=engine/data/default_model.pt; old_commit=d28a4ad ;;
    0.5|1) tag=z$z-16; shipped=engine/data/default_model_z$(printf %.1f "$z").pt; old_commit=7fe99ab ;;
    *) echo "eval_z0_16.sh: Z must be 0, 0.5 or 1, got $z" >&2; exit 2 ;;
esac
run="$(cd "${2:-$root/runs/$tag}" && pwd)"
[ -z "${MODEL:-}" ] || MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"   # before the cd below
V="$(cd "${DATA:-$root/runs/v2}" && pwd)"
summary="$root/jobs/bench/painted_summary.py"
export OMP_NUM_THREADS=1
cd "$run"
catalogues() {  # PAINTED MODEL LPT TRUTH SAMPLED JSON [FIG]: realizations 0 and 1 with catalogues → SAMPLED-rR.h5,
                # their multipoles against TRUTH's FoF halos → JSON-rR.json/.txt (figures FIG-rR)
  local r figs=()
  for r in 0 1; do
    [ -z "${7:-}" ] || figs=(--figures "$7-r$r")
    halopaint sample -q "$1" --out "$5-r$r.h5" --force --seed $r --model "$2" --density "$3" --catalogue
    python "$root"/jobs/bench/sample_catalogue.py --sampled "$5-r$r.h5" --truth "$4" --multipoles-grid 128 "${figs[@]}" --json "$6-r$r.json" > "$6-r$r.txt" 2>&1
  done
}
validation() {
[ -f old_model.pt ] || git -C "$root" show "${OLD_COMMIT:-$old_commit}:$shipped" > old_model.pt
val=$V/sim-z$z-201.h5
ev() {  # name model
  rm -rf val-$1.h5 val-$1.h5.parts; halopaint paint -q --model "$2" --density $val --out val-$1.h5
  rm -rf spec-$1; halopaint spectra val-$1.h5 --reference $val --density $val --out spec-$1 --thetas 0 --no-figures --quiet
  python "$summary" spec-$1 --label "$1 " --groups sum
  python "$root"/jobs/bench/per_bin_realizations.py --truth $val --model "$2" --json perbin-$1.json > perbin-$1.txt 2>&1
}
ev old old_model.pt
ev new default_model.pt
}
heldout() {
seeds="${SEEDS:-9001 9002}"
for s in $seeds; do
  truth=$V/sim-z$z-$s.h5
  rm -rf ho-painted-$s.h5 ho-painted-$s.h5.parts spec-ho-$s
  halopaint paint -q --model default --density $truth --out ho-painted-$s.h5
  halopaint spectra ho-painted-$s.h5 --reference $truth --density $truth --out spec-ho-$s --thetas 0 --no-figures --quiet
  python "$summary" spec-ho-$s --label "seed $s " --painted ho-painted-$s.h5 --truth $truth
done
python "$root"/jobs/bench/per_bin_realizations.py --truth $(for s in $seeds; do printf "$V/sim-z$z-$s.h5 "; done) --json perbin-heldout.json > perbin-heldout.txt 2>&1
for s in $seeds; do
  lpt=$V/lpt-z$z-$s.h5
  [ -f $lpt ] || halopaint simulate --quiet --grid 64 --box 256 --seed $s --redshift $z --lpt-only --out $lpt
  catalogues ho-painted-$s.h5 default $lpt $V/sim-z$z-$s.h5 ho-sampled-$s rsd-$s fig-rsd-$s
done
python "$root"/jobs/bench/rsd_cells.py $(for s in $seeds; do printf "rsd-$s-r0.json rsd-$s-r1.json "; done) | tee rsd-cells.txt
}
rsdval() {  # the catalogues' multipoles on validation seed 201: the shipped law vs MODEL (default: RUNDIR's bundle)
val=$V/sim-z$z-201.h5
lpt=$V/lpt-z$z-201.h5
[ -f $lpt ] || halopaint simulate --quiet --grid 64 --box 256 --seed 201 --redshift $z --lpt-only --out $lpt
rm -rf val-painted.h5 val-painted.h5.parts
halopaint paint -q --model default --density $val --out val-painted.h5
for name in shipped new; do
  model=$root/$shipped; [ $name = new ] && model="${MODEL:-$run/default_model.pt}"
  catalogues val-painted.h5 "$model" $lpt $val val-sampled-$name val-rsd-$name
  python "$root"/jobs/bench/rsd_cells.py val-rsd-$name-r0.json val-rsd-$name-r1.json | tee val-rsd-$name.txt
done
}
lawcompare() {
seeds="${SEEDS:-9001 9002}"
model="${MODEL:?lawcompare needs MODEL=bundle.pt}"
python "$root"/jobs/bench/per_bin_realizations.py --truth $(for s in $seeds; do printf "$V/sim-z$z-$s.h5 "; done) --model "$model" --json perbin-law.json > perbin-law.txt 2>&1
for s in $seeds; do
  catalogues ho-painted-$s.h5 "$model" $V/lpt-z$z-$s.h5 $V/sim-z$z-$s.h5 law-sampled-$s rsd-law-$s
done
python "$root"/jobs/bench/rsd_cells.py $(for s in $seeds; do printf "rsd-law-$s-r0.json rsd-law-$s-r1.json "; done) | tee rsd-cells-law.txt
}
bispec() {
seeds="${SEEDS:-9001 9002}"
dirs=()
for s in $seeds; do
  truth=$V/sim-z$z-$s.h5
  [ -f ho-painted-$s.h5 ] || halopaint paint -q --model default --density $truth --out ho-painted-$s.h5
  for r in 0 1; do
    halopaint sample -q ho-painted-$s.h5 --out bs-sampled-$s-r$r.h5 --force --seed $r --model "${MODEL:-default}"
    rm -rf bispec-$s-r$r
    halopaint spectra bs-sampled-$s-r$r.h5 --reference $truth --density $truth --bispectrum 0.2,0.3 --bispectrum 0.6,0.7 --thetas 12 --format json --out bispec-$s-r$r --no-figures --quiet
    dirs+=(bispec-$s-r$r)
  done
done
python "$root"/jobs/bench/bispectrum_table.py "${dirs[@]}" --json bispec-pooled.json | tee bispec-pooled.txt
}
extras() {
[ "$z" = 0 ] || { echo "extras: z = 0 only" >&2; exit 2; }
for om in 0.275 0.355; do
  rm -rf ho-painted-om$om-9001.h5 ho-painted-om$om-9001.h5.parts
  halopaint paint -q --density $V/sim-om$om-9001.h5 --model default --allow-mismatch --out ho-painted-om$om-9001.h5
done
python "$root"/jobs/bench/omega_m_variants.py ho-painted-9001.h5:$V/sim-z0-9001.h5 \
  ho-painted-om0.275-9001.h5:$V/sim-om0.275-9001.h5 ho-painted-om0.355-9001.h5:$V/sim-om0.355-9001.h5 > omega_m.txt 2>&1
rm -rf bispec-9002
halopaint spectra ho-sampled-9002-r0.h5 --reference $V/sim-z0-9002.h5 --density $V/sim-z0-9002.h5 --bispectrum 0.2,0.3 --bispectrum 0.6,0.7 --thetas 12 --format json --out bispec-9002 --no-figures --quiet
python "$root"/jobs/bench/bispectrum_table.py bispec-9002 > bispec.txt 2>&1
}
"$what"
