"""The training engine: the pipeline of stages, one stage's loop, the module the engine wraps, the
learning-rate schedule, signals, fault injection and the metrics log."""
