"""sknc.datasets (under construction)."""
