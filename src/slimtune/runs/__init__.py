"""Runs: preparing and carrying out a training run (single or multi-task), and the run directory it writes."""
