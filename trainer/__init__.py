"""TurboTrain trainer: data pipeline, losses, balancer rules, training loop, evaluation."""
