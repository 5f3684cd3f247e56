"""sknc.features (under construction)."""
