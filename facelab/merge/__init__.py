"""Step 6: put the model's faces back into the dst frames."""
