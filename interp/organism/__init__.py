"""The model organism: a small GPT-2 trained here on generated IOI and factual-recall text (see README)."""
