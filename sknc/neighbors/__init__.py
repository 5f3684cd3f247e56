"""sknc.neighbors (under construction)."""
