"""Stage 1: multi-agent spatio-temporal masked-reconstruction pretraining (masking, targets, loss)."""
