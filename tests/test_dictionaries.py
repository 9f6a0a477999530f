"""Dictionaries spliced into the organism: exactness with the error term, the unprocessed model's activations
(checked against Hugging Face's GPT-2 with the dictionary applied by hand in hooks), TransformerLens's hooks for
centred dictionaries, SAE Lens's quality metrics by hand, feature attribution against exact patching and against
interp's (TransformerLens-checked) attribution patching, feature patching, and training with sparsify."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from interp.dictionaries import Convention, Dictionary, Site
from interp.dictionaries.features import FeatureNode, attribute_features, patch_features, steer_features
from interp.dictionaries.quality import reconstruction_quality
from interp.dictionaries.splice import FeatureSelection, run_spliced, splice_for
from interp.engine import Transformer
from interp.errors import InterpError
from interp.models import ORGANISM_DIR

PROMPTS = [
    "When Mary and John went to the store, John gave a drink to",
    "The capital of France is Paris. The capital of Poland is",
]


@pytest.fixture(scope="module")
def organism():
    from interp import load_model

    return load_model("organism")


@pytest.fixture(scope="module")
def hf_organism():
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(ORGANISM_DIR, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokens(organism):
    from interp.tokens import prompt_ids

    rows = [prompt_ids(p, organism.tokenizer, prepend_bos=True)[:12] for p in PROMPTS]
    return torch.tensor(rows)


def random_dictionary(site: str, layer: int, convention: Convention, d_in=128, d_out=128, d_sae=96, seed=0, **kw):
    generator = torch.Generator().manual_seed(seed)
    draw = lambda *shape: torch.randn(*shape, generator=generator)  # noqa: E731
    transcoder = site == "mlp_in"
    return Dictionary(
        draw(d_in, d_sae) / d_in**0.5,
        draw(d_sae) * 0.1 - 0.1,
        draw(d_sae, d_out) / d_sae**0.5 * 4,
        draw(d_out) * 0.3,
        Site(site, layer),
        site_out=Site("mlp_out", layer) if transcoder else None,
        convention=convention,
        apply_b_dec_to_input=not transcoder,
        **kw,
    )


def by_hand(d: Dictionary, x: torch.Tensor) -> torch.Tensor:
    """A standard dictionary's reconstruction, its published formula written out."""
    pre = (x - d.b_dec if d.apply_b_dec_to_input else x) @ d.W_enc + d.b_enc
    return torch.clamp(pre, min=0) @ d.W_dec + d.b_dec


UNCENTRED = Convention(centred=False, value_biases_folded=False, affine_mlp_input=True)
SITES = [("resid_pre", 1), ("resid_mid", 2), ("resid_post", 0), ("attn_out", 1), ("mlp_out", 3), ("mlp_in", 2)]


@pytest.mark.parametrize("convention", [UNCENTRED, Convention(centred=True)], ids=["uncentred", "centred"])
def test_splice_with_error_is_the_model(organism, tokens, convention):
    tf = Transformer(organism)
    with torch.inference_mode():
        reference = run_spliced(tf, tokens, splice_for(organism, tokens, []))
        dictionaries = [random_dictionary(site, layer, convention, seed=i) for i, (site, layer) in enumerate(SITES)]
        dictionaries.append(random_dictionary("z", 2, convention, seed=9))
        exact = run_spliced(tf, tokens, splice_for(organism, tokens, dictionaries))
        changed = run_spliced(tf, tokens, splice_for(organism, tokens, dictionaries, output="reconstruction"))
    torch.testing.assert_close(exact, reference, atol=1e-4, rtol=1e-4)
    assert (changed - reference).abs().max() > 1.0  # the dictionaries are far from exact: the error carries it


def hf_hook(module, d: Dictionary, where: str):
    """A forward hook on a Hugging Face GPT-2 module applying the dictionary by hand: on the output (a block: the
    residual after it; attn / mlp: their outputs), on the input (a block: the residual before it; c_proj: the
    heads' outputs, value biases included), or from the input to the output (a transcoder of the MLP)."""

    def on_output(module, inputs, output):
        if isinstance(output, tuple):
            return (by_hand(d, output[0]), *output[1:])
        return by_hand(d, output)

    def from_input(module, args, output):  # a transcoder: the MLP's output from its input (ln_2's, affine)
        return by_hand(d, args[0])

    def on_input(module, args, kwargs):
        if args:
            return (by_hand(d, args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": by_hand(d, kwargs["hidden_states"])}

    if where == "input":
        return module.register_forward_pre_hook(on_input, with_kwargs=True)
    return module.register_forward_hook(from_input if where == "transcoder" else on_output)


def test_uncentred_dictionaries_read_what_hugging_face_computes(organism, hf_organism, tokens):
    """Spliced without the error, a dictionary of the unprocessed model gives the log-probs of Hugging Face's GPT-2
    with the dictionary applied by hand at the same place: the activations interp gives it are the hub model's."""
    blocks = hf_organism.transformer.h
    cases = {
        ("resid_pre", 1): (blocks[1], "input"),
        ("resid_post", 2): (blocks[2], "output"),
        ("attn_out", 1): (blocks[1].attn, "output"),
        ("mlp_out", 3): (blocks[3].mlp, "output"),
        ("z", 2): (blocks[2].attn.c_proj, "input"),  # the heads' merged outputs, before W_O
        ("mlp_in", 2): (blocks[2].mlp, "transcoder"),
    }
    tf = Transformer(organism)
    for (site, layer), (module, where) in cases.items():
        d = random_dictionary(site, layer, UNCENTRED, seed=layer)
        handle = hf_hook(module, d, where)
        try:
            with torch.inference_mode():
                expected = hf_organism(tokens).logits.log_softmax(-1)
        finally:
            handle.remove()
        with torch.inference_mode():
            got = run_spliced(tf, tokens, splice_for(organism, tokens, [d], output="reconstruction"))
        torch.testing.assert_close(got.log_softmax(-1), expected, atol=2e-4, rtol=1e-4, msg=site)


def test_centred_dictionaries_read_transformer_lens_activations(organism, tokens):
    """A dictionary trained on TransformerLens's processed model reads the bridge's own hooks: spliced without the
    error it gives the logits of the bridge run with the dictionary applied in its hooks."""
    centred = Convention(centred=True)
    for site, hook in (("resid_pre", "blocks.2.hook_resid_pre"), ("mlp_out", "blocks.1.hook_mlp_out")):
        d = random_dictionary(site, int(hook.split(".")[1]), centred)
        with torch.inference_mode():
            expected = organism.run_with_hooks(tokens, fwd_hooks=[(hook, lambda x, hook: by_hand(d, x))])
            got = run_spliced(Transformer(organism), tokens, splice_for(organism, tokens, [d], output="reconstruction"))
        torch.testing.assert_close(got.log_softmax(-1), expected.log_softmax(-1), atol=2e-4, rtol=1e-4)
    assert not organism.hook_dict["blocks.2.hook_resid_pre"].fwd_hooks  # the bridge's hooks are left as they were


def test_quality_metrics_by_hand(organism, hf_organism, tokens):
    """FVE, L0, dead features and the three losses, each computed by hand from Hugging Face's GPT-2 (the hub
    model's activations) with the dictionary applied in hooks; BOS positions left out as SAE Lens does."""
    d = random_dictionary("resid_pre", 2, UNCENTRED)
    quality = reconstruction_quality(organism, d, tokens, batch_size=1)
    bos = organism.tokenizer.bos_token_id
    kept = tokens != bos
    with torch.inference_mode():
        hidden = hf_organism(tokens, output_hidden_states=True).hidden_states[2]
    x = hidden[kept].double()
    pre = (x - d.b_dec.double()) @ d.W_enc.double() + d.b_enc.double()
    features = pre.clamp(min=0)
    x_hat = features @ d.W_dec.double() + d.b_dec.double()
    fve = 1 - (x - x_hat).square().sum(-1).mean() / (x.square().sum(-1).mean() - x.mean(0).square().sum())
    assert quality.fraction_variance_explained == pytest.approx(float(fve), abs=1e-5)
    assert quality.l0 == pytest.approx(float((features > 0).sum(-1).double().mean()))
    assert quality.dead_features == int((~(features > 0).any(0)).sum())

    def loss(hook=None):
        block = hf_organism.transformer.h[2]
        handles = [] if hook is None else [block.register_forward_pre_hook(hook, with_kwargs=True)]
        try:
            with torch.inference_mode():
                logits = hf_organism(tokens).logits
        finally:
            for handle in handles:
                handle.remove()
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
        return float(ce[kept[:, :-1].flatten()].mean())

    def spliced(module, args, kwargs):  # the reconstruction where the token is not BOS
        x = args[0]
        return (torch.where(kept[..., None], by_hand(d, x), x), *args[1:]), kwargs

    def zeroed(module, args, kwargs):
        return (torch.zeros_like(args[0]), *args[1:]), kwargs

    assert quality.loss_clean == pytest.approx(loss(), abs=1e-4)
    assert quality.loss_spliced == pytest.approx(loss(spliced), abs=1e-4)
    assert quality.loss_zero_ablated == pytest.approx(loss(zeroed), abs=1e-4)
    assert quality.loss_recovered == pytest.approx(
        (quality.loss_zero_ablated - quality.loss_spliced) / (quality.loss_zero_ablated - quality.loss_clean)
    )


def test_feature_selection_size_is_known_before_the_run(organism, tokens):
    d = random_dictionary("resid_mid", 1, UNCENTRED)
    for select in (FeatureSelection(top_k=4), FeatureSelection(features=[3, 5, 7], positions=[0, 4])):
        splice = splice_for(organism, tokens, [d], select=select)
        with torch.inference_mode():
            run_spliced(Transformer(organism), tokens, splice)
        kept = splice.kept[0]
        kept = kept if isinstance(kept, tuple) else (kept,)
        assert sum(t.numel() * t.element_size() for t in kept) == select.kept_bytes(*tokens.shape, d.d_sae)
    values, ids = FeatureSelection(top_k=4).take(torch.arange(24.0).reshape(1, 2, 12))
    assert ids.tolist() == [[[11, 10, 9, 8], [11, 10, 9, 8]]]


@pytest.fixture(scope="module")
def ioi_pairs(organism):
    from interp.task_runs import load_task, prepare

    return prepare(organism, load_task("ioi", organism, n=12))


def test_attribution_of_every_node_sums_to_attribution_patching(organism, ioi_pairs):
    """With one interpolation point (the gradient at the corrupted run), a dictionary's features and error at a
    position add up to the gradient times the change of its activation: attribution patching's estimate, which is
    checked against TransformerLens's (tests/test_patching.py)."""
    from dataclasses import replace

    from interp.attribution import attribution_patch

    t = ioi_pairs.tokens
    d = random_dictionary("resid_pre", 2, UNCENTRED)
    found = attribute_features(organism, t.clean, t.corrupt, ioi_pairs.metric, [d], steps=1)
    mean_metric = replace(ioi_pairs.metric, fn=lambda logits: ioi_pairs.metric.fn(logits).mean())
    grid = attribution_patch(organism, t.clean, t.corrupt, mean_metric, "resid_pre")  # [layer, pos]
    per_position = found.features[0].sum(-1) + found.errors[0]
    torch.testing.assert_close(per_position, grid[2] - found.base_value, atol=2e-4, rtol=1e-3)


def test_feature_patching_is_exact(organism, ioi_pairs):
    """Patching one feature through the engine equals a full forward with that feature set by hand."""
    t = ioi_pairs.tokens
    d = random_dictionary("resid_mid", 1, UNCENTRED)
    nodes_clean = splice_for(organism, t.clean, [d], keep_nodes=True)
    with torch.inference_mode():
        run_spliced(Transformer(organism), t.clean, nodes_clean)
    clean_features = nodes_clean.nodes[0].features
    feature = int(clean_features[:, 5].mean(0).argmax())
    node = FeatureNode(0, feature, 5)
    nodes = [node, FeatureNode(0, "error", 5)]
    patched, _ = patch_features(organism, t.clean, t.corrupt, ioi_pairs.metric, [d], nodes)

    def set_feature(index, features, error):
        features = features.clone()
        features[:, 5, feature] = clean_features[:, 5, feature]
        return features, error

    from interp.metric_reader import make_reader

    reader = make_reader(ioi_pairs.metric, *t.corrupt.shape, organism.cfg.device)
    with torch.inference_mode():
        splice = splice_for(organism, t.corrupt, [d], replace=set_feature)
        by_forward = run_spliced(Transformer(organism, reader.token_ids), t.corrupt, splice, reader)
    torch.testing.assert_close(patched[0], by_forward, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(patched[0], patched[1])
    ablated, _ = patch_features(organism, t.clean, t.corrupt, ioi_pairs.metric, [d], [node], ablate=True)
    assert ablated.shape == patched[:1].shape
    with pytest.raises(InterpError, match="features"):
        patch_features(organism, t.clean, t.corrupt, ioi_pairs.metric, [d], [FeatureNode(0, 10_000, 5)])


def test_steering_adds_the_decoder_row(organism, tokens):
    d = random_dictionary("resid_post", 3, Convention(centred=True))
    base = steer_features(organism, tokens, [d], {})
    steered = steer_features(organism, tokens, [d], {FeatureNode(0, 7, 4): 10.0}, add=True)
    assert torch.allclose(base[:, :4], steered[:, :4], atol=1e-5)  # earlier positions are untouched
    assert not torch.allclose(base[:, 4], steered[:, 4], atol=1e-2)


def test_sparsify_training_on_the_bridge(organism, tmp_path):
    """`interp dictionaries train`'s path: sparsify's Trainer on the organism's (uncentred) activations, seeded; its
    checkpoint read back; the memory budget and an existing directory refused."""
    from interp.dictionaries import load_dictionary
    from interp.dictionaries.training import train_dictionaries, training_tokens

    tokens = training_tokens(organism, 8192, 32, seed=3)
    folders = train_dictionaries(
        organism, ["blocks.1.hook_resid_pre"], tmp_path / "run", tokens=tokens, expansion_factor=2, k=8, quiet=True
    )
    written = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert written == ["blocks.1.hook_resid_pre", "config.json", "training.json"]
    assert sorted(p.name for p in folders[0].iterdir()) == ["cfg.json", "sae.safetensors"]
    d = load_dictionary(folders[0])
    read = (d.site.hook, d.architecture, d.k, d.d_sae, d.convention.centred)
    assert read == ("blocks.1.hook_resid_pre", "topk", 8, 256, False)
    assert json.loads((tmp_path / "run" / "training.json").read_text())["n_tokens"] == 8192
    quality = reconstruction_quality(organism, d, tokens[:8])  # 16 steps of training: far from done, not from 0
    assert quality.fraction_variance_explained > 0.3 and quality.l0 <= 8
    with pytest.raises(InterpError, match="exists"):
        train_dictionaries(organism, ["blocks.1.hook_resid_pre"], tmp_path / "run", tokens=tokens, quiet=True)
    with pytest.raises(InterpError, match="budget"):
        train_dictionaries(organism, ["blocks.1.hook_resid_pre"], tmp_path / "other", tokens=tokens, max_memory=2**20)
    assert not (tmp_path / "other").exists() and not (tmp_path / "other.partial").exists()
