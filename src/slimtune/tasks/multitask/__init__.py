"""Several tasks over one frozen base, seen by the trainer as one task.

specs      `--tasks NAME=TYPE:TRAIN[:DEV]` and `--weights NAME=W,...` parsed and checked
model      MultiTaskModel (task models over one base) and PerTaskMethods (one method instance per task)
objective  LossWeights (fixed, or uncertainty weighting) and MultiTask (the trainer's loss and dev score)
files      one task of a saved multi-task adapter, as a plain single-task adapter (eval, predict, serve)
"""
