"""Making a model smaller or faster after pretraining: pruning weights, heads and neurons, and int8 inference."""
