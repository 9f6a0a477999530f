"""interp: mechanistic interpretability of GPT-2 on TransformerLens hooks.

Primitives, each in a module named for what it does: load (`models`), cache (`cache`), lens (`lens`),
patch (`patching`), attribute (`attribution`), ablate (`ablation`), plot (`plotting`, `views`).
"""

from interp.errors import InterpError
from interp.models import load_model

__all__ = ["InterpError", "load_model"]
