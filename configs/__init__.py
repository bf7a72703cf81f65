"""Experiment configs: one file per experiment, read by path."""
