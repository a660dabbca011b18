"""slmbench: train, evaluate and record one fine-tuning run (see bench/run/recipe.py)."""
