"""sknc.metrics (under construction)."""
