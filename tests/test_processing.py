"""Loading processes GPT-2's weights in place: the same weights and activations as TransformerBridge's own
compatibility-mode processing, without holding a second copy."""

import pytest
import torch

from interp.models import load_hf_model, load_model


def bridge_processed_by_transformer_lens(spec, dtype=torch.float32):
    """The reference: the bridge processing a fresh copy of the same weights itself."""
    from transformer_lens.model_bridge import TransformerBridge

    hf_model, tokenizer, source = load_hf_model(spec, dtype, 0)
    bridge = TransformerBridge.boot_transformers(
        source.checkpoint_dir or "gpt2", hf_model=hf_model, tokenizer=tokenizer, device="cpu", dtype=dtype
    )
    bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge.eval()


WEIGHTS = {
    "": ("W_E", "W_pos", "W_U", "b_U"),
    "attn": ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O"),
    "mlp": ("W_in", "b_in", "W_out", "b_out"),
}


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_in_place_processing_equals_the_bridges_own(tiny_checkpoint, dtype, tolerance):
    """A checkpoint whose LayerNorms and biases are perturbed, so that every fold and centring does something."""
    ours, reference = (
        load_model(str(tiny_checkpoint), device="cpu", dtype=dtype),
        bridge_processed_by_transformer_lens(str(tiny_checkpoint), dtype),
    )
    for name in WEIGHTS[""]:
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name), atol=tolerance, rtol=0)
    for layer in range(ours.cfg.n_layers):
        for part in ("attn", "mlp"):
            for name in WEIGHTS[part]:
                torch.testing.assert_close(
                    getattr(getattr(ours.blocks[layer], part), name),
                    getattr(getattr(reference.blocks[layer], part), name),
                    atol=tolerance,
                    rtol=0,
                    msg=f"{layer} {part} {name}",
                )
    tokens = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, cache = ours.run_with_cache(tokens)
        reference_logits, reference_cache = reference.run_with_cache(tokens)
    assert set(cache.keys()) == set(reference_cache.keys())
    for name in cache.keys():
        if "attn_scores" not in name:  # -inf above the diagonal in both
            torch.testing.assert_close(
                cache[name].float(), reference_cache[name].float(), atol=10 * tolerance, rtol=10 * tolerance, msg=name
            )
    torch.testing.assert_close(logits.float(), reference_logits.float(), atol=10 * tolerance, rtol=10 * tolerance)


def storage_bytes(tensors) -> int:
    storages = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def test_loading_holds_no_second_copy_of_the_weights(tiny_checkpoint):
    """Every tensor the bridge holds: the checkpoint's weights once, plus the unembedding (untied from the
    embedding, since the two are centred differently) and its bias."""
    from transformers import GPT2LMHeadModel

    model = load_model(str(tiny_checkpoint), device="cpu")
    weights = sum(p.numel() * p.element_size() for p in GPT2LMHeadModel.from_pretrained(tiny_checkpoint).parameters())
    unembedding = model.W_U.numel() * 4 + model.b_U.numel() * 4
    held = storage_bytes([*model.parameters(), *model.buffers()])
    buffers = storage_bytes(model.buffers())  # the attention masks the checkpoint format carries
    assert held <= weights + unembedding + buffers
