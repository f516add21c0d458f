"""Video in and out: probing, frames from video (steps 1-2), video from frames (step 7)."""
