"""Checkpoints: engine state and the train state, resolving what a user points at, exported weights
and run directories."""
