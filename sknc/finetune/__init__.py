"""sknc.finetune (under construction)."""
