"""`slimtune compare` and `slimtune plan`: the quality / parameters / time / memory trade-off, measured.

settings.py turns the command line into one `slimtune train` command per (method, seed); measure.py runs a
child process and reads its peak resident memory; runner.py runs every (method, seed) once, resuming finished
runs; summary.py folds seeds into mean ± std; report.py and plots.py write CSV, JSON, Markdown and one
self-contained HTML file; probe.py measures a few training steps for `plan`.
"""
