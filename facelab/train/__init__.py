"""Training: data from aligned facesets, augmentation, losses, optimisers, checkpoints, the loop."""
