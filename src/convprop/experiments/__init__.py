"""Experiments: sweeps over training options, executors, statistics, the reproduce
report of the paper's studies and the studies beyond it."""
