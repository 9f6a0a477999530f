"""Interactive attention views (circuitsvis), saved as self-contained HTML that renders with no network.

circuitsvis's `str(view)` loads its JavaScript from a CDN (blank offline); `view.local_src` inlines the bundle,
so every saved file works from disk, anywhere. In a notebook, `display(HTML(view.local_src))` does the same.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from interp.ablation import Component, check_components
from interp.cache import run_with_selective_cache
from interp.results import atomic_path
from interp.tokens import prompt_tokens, str_tokens

PAGE = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head><body>\n{body}\n</body></html>\n'
)


def attention_view(model, prompt: str, heads: list[tuple[int, int]], *, prepend_bos: bool = True):
    """circuitsvis `attention_heads` view of the given (layer, head)s' attention patterns on one prompt."""
    import circuitsvis

    check_components(model, [Component("head", layer, head) for layer, head in heads])
    tokens = prompt_tokens(model, prompt, prepend_bos=prepend_bos)
    layers = sorted({layer for layer, _ in heads})
    _, cache = run_with_selective_cache(model, tokens, [f"blocks.{l}.attn.hook_pattern" for l in layers])
    patterns = torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0, h] for l, h in heads]).float().cpu()
    return circuitsvis.attention.attention_heads(
        attention=patterns,
        tokens=str_tokens(tokens[0], model.tokenizer),
        attention_head_names=[f"L{l}H{h}" for l, h in heads],
    )


def stable_ids(html: str) -> str:
    """circuitsvis names each view's element with a random id; name it after the page's content instead, so that
    the same view is saved as the same bytes."""
    random_ids = list(dict.fromkeys(re.findall(r"circuits-vis-[0-9a-f]{8}-[0-9a-f]{4}", html)))
    digest = hashlib.sha256(re.sub(r"circuits-vis-[0-9a-f]{8}-[0-9a-f]{4}", "", html).encode()).hexdigest()
    for i, random_id in enumerate(random_ids):
        html = html.replace(random_id, f"circuits-vis-{digest[:8]}-{i:04d}")
    return html


def save_view(view, path: str | Path, title: str = "interp attention view") -> Path:
    """Write a circuitsvis view as a standalone HTML page (JavaScript inlined), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(stable_ids(PAGE.format(title=title, body=view.local_src)), encoding="utf-8")
    return path
