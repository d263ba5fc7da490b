"""The embedded simulator's physics (layer 1: no file I/O). The driver that runs it and writes the field
file is `halopaint.simulation`; see docs/simulator.md.

Modules: cosmology (Eisenstein–Hu P(k), growth D1, D2, f1, f2), ics (hashed Fourier white noise → δ_L),
slabfft (slab-distributed 3D FFT), lpt (2LPT potentials and displacements), assign (distributed
mass-weighted CIC), pm (FastPM N-body), fof (friends-of-friends), grids (serial CIC / NGP),
pipeline (the stages put together), massfunction.
"""
