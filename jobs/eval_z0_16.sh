#!/usr/bin/env bash
# Evaluation of the 16-box z = 0 model made by jobs/train_z0_16.sh (the model card's figures):
#   bash jobs/eval_z0_16.sh validation [RUNDIR]   seed 201: 3-box vs 16-box bundle, the shipping rule's inputs
#   bash jobs/eval_z0_16.sh heldout [RUNDIR]      seeds 9001/9002, once, with the shipped bundle: painted-field
#                                                 statistics, per-bin realizations, RSD multipoles vs FoF
#   bash jobs/eval_z0_16.sh extras [RUNDIR]       Ω_m variants and the bispectrum table (after heldout)
# RUNDIR defaults to runs/z016; the N-body and 2LPT boxes are read from $DATA (default runs/v2), made by
# `halopaint simulate --grid 64 --box 256 --seed S [--omega-m X] [--lpt-only]` (see docs/model-card.md).
# validation compares with the 3-box bundle as of git d28a4ad (OLD_COMMIT to change it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:?validation | heldout | extras}"
run="$(cd "${2:-$root/runs/z016}" && pwd)"
V="$(cd "${DATA:-$root/runs/v2}" && pwd)"
export OMP_NUM_THREADS=1
cd "$run"
validation() {
[ -f old_model.pt ] || git -C "$root" show "${OLD_COMMIT:-d28a4ad}:engine/data/default_model.pt" > old_model.pt
val=$V/sim-z0-201.h5
ev() {  # name model
  rm -rf val-$1.h5 val-$1.h5.parts; halopaint paint -q --model "$2" --density $val --out val-$1.h5
  rm -rf spec-$1; halopaint spectra val-$1.h5 --reference $val --density $val --out spec-$1 --thetas 0 --no-figures --quiet
  python - "$1" <<'PY'
import sys, h5py, numpy as np
name = sys.argv[1]
with h5py.File(f"spec-{name}/spectra.h5") as f:
    g = f["power/sum"]; k, T, rc, s, sl = (g[n][:] for n in ("k", "T", "r_c", "s", "s_lpt"))
    rcl = g["r_c_lpt"][:] if "r_c_lpt" in g else None
i = np.argmin(abs(k - 0.1))
print(f"{name} SUM max|T-1| {np.max(abs(T[k<=0.2]-1)):.3f} r_c {rc[i]:.3f} base {rcl[i] if rcl is not None else float('nan'):.3f} s/s_lpt {np.round(s[k<0.1]/sl[k<0.1],2)}")
PY
  python "$root"/jobs/bench/per_bin_realizations.py --truth $val --model "$2" --json perbin-$1.json > perbin-$1.txt 2>&1
}
ev old old_model.pt
ev new default_model.pt

}
heldout() {
for s in 9001 9002; do
  rm -rf ho-painted-$s.h5 ho-painted-$s.h5.parts spec-ho-$s
  halopaint paint -q --model default --density $V/sim-z0-$s.h5 --out ho-painted-$s.h5
  halopaint spectra ho-painted-$s.h5 --reference $V/sim-z0-$s.h5 --density $V/sim-z0-$s.h5 --out spec-ho-$s --thetas 0 --no-figures --quiet
  python - $s "$V" <<'PY'
import sys, h5py, numpy as np
s = sys.argv[1]
with h5py.File(f"spec-ho-{s}/spectra.h5") as f:
    for name in ("sum", "bin0", "bin1", "bin2", "bin3"):
        g = f[f"power/{name}"]; k, T, rc, sv, sl = (g[n][:] for n in ("k", "T", "r_c", "s", "s_lpt"))
        rcl = g["r_c_lpt"][:]
        i = np.argmin(abs(k - 0.1))
        print(f"seed {s} {name}: max|T-1| {np.max(abs(T[k<=0.2]-1)):.3f} r_c {rc[i]:.3f} (2LPT {rcl[i]:.3f}) s/s_lpt {np.round(sv[k<0.1]/sl[k<0.1],2)}")
with h5py.File(f"ho-painted-{s}.h5") as fp, h5py.File(f"{sys.argv[2]}/sim-z0-{s}.h5") as ft:
    p = fp["halos"][...].reshape(4, -1).mean(1); t = ft["halos"][...].reshape(4, -1).mean(1)
print(f"seed {s} painted/true mean per bin {np.round(p/t, 3)}")
PY
done
python "$root"/jobs/bench/per_bin_realizations.py --truth $V/sim-z0-9001.h5 $V/sim-z0-9002.h5 --json perbin-heldout.json > perbin-heldout.txt 2>&1
for s in 9002 9001; do
  for r in 0 1; do
    halopaint sample -q ho-painted-$s.h5 --out ho-sampled-$s-r$r.h5 --force --seed $r --model default --density $V/lpt-z0-$s.h5 --catalogue
    python "$root"/jobs/bench/sample_catalogue.py --sampled ho-sampled-$s-r$r.h5 --truth $V/sim-z0-$s.h5 --multipoles-grid 128 --figures fig-rsd-$s-r$r --json rsd-$s-r$r.json > rsd-$s-r$r.txt 2>&1
  done
done


}
extras() {
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
