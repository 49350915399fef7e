"""Training: the configuration, the trainer loop, checkpoints and gradient-flow
diagnostics recorded while training."""
