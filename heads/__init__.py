"""Stage 2: light IQA heads, losses, metrics and training from cached features."""
