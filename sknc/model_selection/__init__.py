"""sknc.model_selection (under construction)."""
