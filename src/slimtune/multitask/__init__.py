"""Multi-task training: one frozen base, a head per task, adapters shared or per task, learned task weights.

specs      `--tasks NAME=TYPE:TRAIN[:DEV]` and `--weights NAME=W,...` parsed and checked
model      MultiTaskModel (task models over one base) and PerTaskMethods (one method instance per task)
objective  LossWeights (fixed, or uncertainty weighting) and MultiTask (the trainer's loss and dev score)
sampling   which task each batch comes from: proportional or temperature-scaled
run        train_multitask: files to a saved multi-task adapter
files      one task of a saved multi-task adapter, as a plain single-task adapter (eval, predict, serve)
plot       the learned task weights over training, as a PNG
"""
