"""Dictionaries read from the files users have (`tests/dictionary_layout.py`): SAE Lens 6.x folders of every
architecture against the published formulas written out here, the legacy `gpt2-small-res-jb` folder as a plain folder
and as a release from the Hugging Face cache, sparsify's checkpoints against sparsify's own SparseCoder, and the
one-line errors for what interp does not read. (SAE Lens's own classes: tests/reference/saelens_check.py.)"""

import json
import math

import pytest
import torch
from conftest import use_hf_cache
from dictionary_layout import (
    GPT2_RES_JB,
    GPT2_RES_JB_FOLDERS,
    write_hf_cache_release,
    write_sae_lens_6,
    write_sae_lens_legacy,
    write_sparsify,
)
from safetensors.torch import load_file, save_file

from interp.dictionaries import Convention, Site, load_dictionary
from interp.errors import InterpError

D_IN, D_SAE = 16, 32


def close(actual, expected, tol=1e-5, msg=None):
    """Equal to float32 rounding, relative to the reference's scale."""
    expected = expected.double()
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.double(), expected, rtol=tol, atol=tol * scale, msg=msg)


def saelens_formulas(cfg: dict, weights: dict, x: torch.Tensor):
    """SAE Lens 6.54's inference classes written out (notes §3), in float64 with plain matmuls:
    (encode(x), decode(encode(x)), forward(x)). `cfg` as SAE Lens has it after loading (6.x keys)."""
    w = {name: t.double() for name, t in weights.items()}
    x = x.double()
    arch = cfg["architecture"]
    transcoder = arch.endswith("transcoder")
    d = x.shape[-1]
    # run-time normalisation, in
    norm = cfg.get("normalize_activations", "none")
    if norm == "layer_norm":
        mu = x.sum(-1, keepdim=True) / d
        centred = x - mu
        std = (centred.pow(2).sum(-1, keepdim=True) / (d - 1)).sqrt()  # unbiased, as torch's std
        h = centred / (std + 1e-5)
    elif norm == "constant_norm_rescale":
        c = math.sqrt(d) / x.pow(2).sum(-1, keepdim=True).sqrt()
        h = x * c
    else:
        h = x
    if transcoder:
        assert not cfg["apply_b_dec_to_input"]  # SAE Lens forbids it for transcoders
    elif cfg["apply_b_dec_to_input"]:
        h = h - w["b_dec"]
    # encode
    if arch == "gated":
        gate = (h @ w["W_enc"] + w["b_gate"] > 0).double()
        magnitude = torch.clamp(h @ (w["W_enc"] * torch.exp(w["r_mag"])) + w["b_mag"], min=0)
        f = gate * magnitude
    else:
        pre = h @ w["W_enc"] + w["b_enc"]
        if arch == "topk":
            decoder_norm = w["W_dec"].pow(2).sum(-1).sqrt()
            if cfg.get("rescale_acts_by_decoder_norm"):
                pre = pre * decoder_norm
            values, indices = torch.topk(pre, cfg["k"], dim=-1)  # the k largest RAW pre-activations ...
            f = torch.zeros_like(pre).scatter(-1, indices, torch.clamp(values, min=0))  # ... then ReLU
        elif "jumprelu" in arch:
            f = torch.clamp(pre, min=0) * (pre > w["threshold"]).double()  # strict >
        else:
            f = torch.clamp(pre, min=0)
    # decode
    acts = f / decoder_norm if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm") else f
    out = acts @ w["W_dec"] + w["b_dec"]
    if transcoder:  # no normalisation undone; the skip reads the raw input
        forward = out + x @ w["W_skip"].T if "W_skip" in w else out
        return f, out, forward
    if norm == "layer_norm":
        out = out * std + mu
    elif norm == "constant_norm_rescale":
        out = out / c
    return f, out, out


def inputs(d_in=D_IN, n=48, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=gen) * 1.5 + torch.randn(d_in, generator=gen)


def read_folder(folder):
    return json.loads((folder / "cfg.json").read_text()), load_file(folder / "sae_weights.safetensors")


# (architecture, write_sae_lens_6 options)
SAE_LENS_CASES = {
    "standard": ("standard", {}),
    "topk": ("topk", {"k": 4}),
    "topk-k-over-positives": ("topk", {"k": 24}),  # negatives among the top k: zeroed by the ReLU after top-k
    "topk-rescale": ("topk", {"k": 4, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("jumprelu", {}),
    "gated": ("gated", {}),
    "standard-layer-norm": ("standard", {"normalize_activations": "layer_norm"}),
    "topk-layer-norm": ("topk", {"k": 6, "normalize_activations": "layer_norm"}),  # as OpenAI's v5 SAEs
    "standard-constant-norm": ("standard", {"normalize_activations": "constant_norm_rescale"}),
    "jumprelu-bf16": ("jumprelu", {"dtype": "bfloat16"}),
    "transcoder": ("transcoder", {}),
    "transcoder-layer-norm": ("transcoder", {"normalize_activations": "layer_norm"}),
    "skip-transcoder": ("skip_transcoder", {}),
    "skip-transcoder-narrow-out": ("skip_transcoder", {"d_out": 12}),
    "jumprelu-transcoder": ("jumprelu_transcoder", {}),
    "jumprelu-skip-transcoder": ("jumprelu_skip_transcoder", {}),
}


# SAE Lens's transcoder architectures: interp's encoder of the same formula, with a site_out
READ_AS = {
    "transcoder": "standard",
    "skip_transcoder": "standard",
    "jumprelu_transcoder": "jumprelu",
    "jumprelu_skip_transcoder": "jumprelu",
}


@pytest.mark.parametrize("case", list(SAE_LENS_CASES))
def test_sae_lens_6_folder_encodes_and_decodes_as_the_published_formulas(tmp_path, case):
    architecture, options = SAE_LENS_CASES[case]
    folder = write_sae_lens_6(tmp_path / case, architecture, D_IN, D_SAE, seed=3, **options)
    cfg, weights = read_folder(folder)
    transcoder = architecture.endswith("transcoder")
    if architecture == "jumprelu_skip_transcoder":  # SAE Lens 6.54's JumpReLUSkipTranscoder (see the report)
        try:
            load_dictionary(folder)
        except InterpError as error:
            pytest.fail(f"interp does not read SAE Lens's jumprelu_skip_transcoder: {error}")
    dictionary = load_dictionary(folder)

    assert dictionary.architecture == READ_AS.get(architecture, architecture)
    assert dictionary.source_format == "sae_lens"
    assert dictionary.is_transcoder == transcoder
    if transcoder:
        assert (dictionary.site, dictionary.site_out) == (Site("mlp_in", 8), Site("mlp_out", 8))
        assert dictionary.apply_b_dec_to_input is False
        assert (dictionary.W_skip is not None) == ("skip" in architecture)
    else:
        assert (dictionary.site, dictionary.site_out) == (Site("resid_pre", 8), None)
        assert dictionary.apply_b_dec_to_input is True
    assert dictionary.k == cfg.get("k")
    assert dictionary.normalize_activations == cfg["normalize_activations"]
    assert dictionary.convention.centred is False  # no model_from_pretrained_kwargs: SAE Lens's raw model
    assert dictionary.W_enc.dtype == torch.float32  # bf16 files are read as float32, as SAE Lens's cfg dtype says

    x = inputs()
    features, decoded, forward = saelens_formulas(cfg, weights, x)
    assert 0 < (features != 0).sum() < features.numel()  # the test data switch features both on and off
    if case == "topk-k-over-positives":
        assert ((features != 0).sum(-1) < cfg["k"]).any()
    got = dictionary.encode(x)
    close(got, features)
    assert ((got != 0) == (features != 0)).all()
    # interp's decode adds a skip transcoder's skip connection: SAE Lens's forward
    close(dictionary.decode(features.float(), x), forward)
    close(dictionary(x), forward)
    if "skip" not in architecture:
        close(dictionary.decode(got, x), decoded)


def test_transcoder_without_hook_name_out(tmp_path):
    """SAE Lens's `save_model` writes `hook_name_out` only when the metadata was given one (its smoke test's
    transcoders have none). Such a folder is still a transcoder: interp reads it as one (skip connection kept, the
    output not mapped back through the input's normalisation) or refuses it in one line naming hook_name_out; it must
    not become an autoencoder of the MLP's input that drops the skip."""
    folder = write_sae_lens_6(tmp_path / "skip", "skip_transcoder", D_IN, D_SAE, normalize_activations="layer_norm")
    cfg, weights = read_folder(folder)
    del cfg["metadata"]["hook_name_out"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    try:
        dictionary = load_dictionary(folder)
    except InterpError as error:
        assert "\n" not in str(error) and "hook_name_out" in str(error), str(error)
        return
    assert dictionary.is_transcoder, "a skip_transcoder without hook_name_out was read as an autoencoder"
    close(dictionary(inputs()), saelens_formulas(cfg, weights, inputs())[2])


def test_jumprelu_threshold_is_strict_and_after_the_relu(tmp_path):
    """At x = 0 (b_dec = 0) the pre-activation is b_enc exactly: a feature whose threshold equals it stays off; a
    negative threshold does not let a negative pre-activation through."""
    folder = write_sae_lens_6(tmp_path / "jumprelu", "jumprelu", D_IN, D_SAE, seed=4)
    weights = load_file(folder / "sae_weights.safetensors")
    b_enc = torch.linspace(-1, 1, D_SAE)
    threshold = torch.full((D_SAE,), 0.25)
    threshold[: D_SAE // 2] = -2.0  # negative thresholds under negative pre-activations
    threshold[-4:] = b_enc[-4:]  # pre == threshold
    weights |= {"b_enc": b_enc, "threshold": threshold, "b_dec": torch.zeros(D_IN)}
    save_file(weights, folder / "sae_weights.safetensors")
    features = load_dictionary(folder).encode(torch.zeros(2, D_IN))
    expected = torch.where(b_enc > threshold, b_enc.clamp(min=0), torch.zeros(()))
    assert expected[-4:].eq(0).all() and expected.ne(0).sum() > 0
    torch.testing.assert_close(features, expected.expand(2, -1), rtol=0, atol=0)


def test_sae_lens_5_topk_cfg_reads_as_topk(tmp_path):
    """An SAE Lens 5.x cfg (OpenAI's v5 SAEs as jbloom's repositories hold them): `activation_fn_str` "topk" with
    `activation_fn_kwargs.k`, top-level hook_name, layer_norm normalisation."""
    folder = write_sae_lens_6(tmp_path / "v5_32k_layer_8.pt", "standard", D_IN, D_SAE, seed=5)
    cfg_5 = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "model_name": "gpt2-small",
        "hook_name": "blocks.8.hook_resid_post",
        "hook_layer": 8,
        "hook_head_index": None,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 5},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "sae_lens_training_version": None,
        "prepend_bos": False,
        "dataset_path": "Skylion007/openwebtext",
        "context_size": 64,
        "normalize_activations": "layer_norm",
        "dataset_trust_remote_code": True,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg_5))
    dictionary = load_dictionary(folder)
    assert (dictionary.architecture, dictionary.k, dictionary.site) == ("topk", 5, Site("resid_post", 8))
    assert dictionary.convention.centred is False
    effective = {"architecture": "topk", "k": 5, "apply_b_dec_to_input": True, "normalize_activations": "layer_norm"}
    features, decoded, _ = saelens_formulas(effective, load_file(folder / "sae_weights.safetensors"), inputs())
    close(dictionary.encode(inputs()), features)
    close(dictionary(inputs()), decoded)


@pytest.mark.parametrize(
    "processing, centred, folded",
    [
        (None, False, False),  # SAE Lens's default: {"center_writing_weights": False}
        ({"center_writing_weights": False}, False, False),
        ({"center_writing_weights": True}, True, False),
        ({"center_writing_weights": True, "fold_value_biases": True}, True, True),
        ({}, False, False),
        ({"fold_ln": False}, False, False),
    ],
    ids=["none", "cww-false", "cww-true", "cww-fvb-true", "empty", "fold-ln-false"],
)
def test_sae_lens_processing_is_from_pretrained_no_processing_with_the_files_kwargs(
    tmp_path, processing, centred, folded
):
    """SAE Lens loads the model with `HookedTransformer.from_pretrained_no_processing(**model_from_pretrained_kwargs)`
    (sae_lens/load_model.py), whose defaults are center_writing_weights=False and fold_value_biases=False: a key the
    kwargs do not name is off (TransformerLens 3.9's HookedTransformer.from_pretrained_no_processing)."""
    hook = "blocks.3.attn.hook_z"
    folder = write_sae_lens_6(tmp_path / "z", "standard", D_IN, D_SAE, hook=hook, processing=processing)
    dictionary = load_dictionary(folder)
    assert dictionary.site == Site("z", 3)
    assert dictionary.convention.centred is centred, f"model_from_pretrained_kwargs={processing}"
    assert dictionary.convention.value_biases_folded is folded, f"model_from_pretrained_kwargs={processing}"


# ---------------------------------------------------------------------------------------------------------------
# gpt2-small-res-jb: the legacy layout, a plain folder and a release in the hub cache


@pytest.fixture(scope="module")
def res_jb_cache(tmp_path_factory):
    """The hub cache holding `jbloom/GPT2-Small-SAEs-Reformatted/blocks.8.hook_resid_pre` at its real shapes
    (768 x 24576, 151 MB): written once, read as a folder and as a release."""
    root = tmp_path_factory.mktemp("hf-cache-saes")
    snapshot = write_hf_cache_release(root, GPT2_RES_JB, ["blocks.8.hook_resid_pre"])
    return root, snapshot


def gpt2_like(n=8, norm=30.0, seed=2, d=768):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=-1, keepdim=True) * norm


def check_res_jb(dictionary, folder):
    assert (dictionary.architecture, dictionary.site, dictionary.site_out) == ("standard", Site("resid_pre", 8), None)
    assert (dictionary.d_in, dictionary.d_sae, dictionary.apply_b_dec_to_input) == (768, 24576, True)
    assert dictionary.normalize_activations == "none" and dictionary.source_format == "sae_lens"
    cfg = {"architecture": "standard", "apply_b_dec_to_input": True}  # SAE Lens's conversion of the legacy cfg
    features, decoded, _ = saelens_formulas(cfg, load_file(folder / "sae_weights.safetensors"), gpt2_like())
    got = dictionary.encode(gpt2_like())
    close(got, features)
    close(dictionary(gpt2_like()), decoded)
    assert 5 < (got != 0).sum(-1).float().mean() < 200  # a few dozen features on a GPT-2-sized activation


def test_res_jb_folder_reads_as_a_standard_sae_of_the_raw_model(res_jb_cache):
    """As a plain folder its cfg.json names no processing: SAE Lens's default, an uncentred residual stream."""
    _, snapshot = res_jb_cache
    folder = snapshot / "blocks.8.hook_resid_pre"
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["hook_point"] == "blocks.8.hook_resid_pre" and "model_from_pretrained_kwargs" not in cfg
    assert load_file(folder / "sparsity.safetensors")["sparsity"].shape == (24576,)  # present, and ignored
    dictionary = load_dictionary(folder)
    check_res_jb(dictionary, folder)
    assert dictionary.convention.centred is False


def test_res_jb_release_reads_from_the_offline_cache_with_the_release_override(res_jb_cache, monkeypatch):
    """By SAE Lens's release name the yaml's `model_from_pretrained_kwargs: {center_writing_weights: true}` holds."""
    root, snapshot = res_jb_cache
    use_hf_cache(monkeypatch, root)
    dictionary = load_dictionary("gpt2-small-res-jb/blocks.8.hook_resid_pre")
    check_res_jb(dictionary, snapshot / "blocks.8.hook_resid_pre")
    assert dictionary.convention.centred is True


def test_legacy_folder_with_processing_and_without_sparsity(tmp_path):
    """A copy saved with SAE Lens's override at the top level is centred; sparsity.safetensors changes nothing."""
    with_sparsity = write_sae_lens_legacy(tmp_path / "a", d_in=D_IN, d_sae=64, seed=6)
    without = write_sae_lens_legacy(
        tmp_path / "b", d_in=D_IN, d_sae=64, seed=6, processing={"center_writing_weights": True}
    )
    (without / "sparsity.safetensors").unlink()
    a, b = load_dictionary(with_sparsity), load_dictionary(without)
    assert (a.convention.centred, b.convention.centred) == (False, True)
    x = inputs()
    torch.testing.assert_close(a.encode(x), b.encode(x), rtol=0, atol=0)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def assert_one_line(error, *parts):
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


DOWNLOAD = f"hf download {GPT2_RES_JB} --include 'blocks.3.hook_resid_pre/*'"


def test_release_missing_from_an_empty_cache_says_how_to_download(tmp_path, monkeypatch):
    use_hf_cache(monkeypatch, tmp_path / "empty")
    with pytest.raises(InterpError) as error:
        load_dictionary("gpt2-small-res-jb/blocks.3.hook_resid_pre")
    assert_one_line(error, DOWNLOAD)


def test_release_folder_missing_from_a_listed_snapshot_says_how_to_download(tmp_path, monkeypatch):
    """Another layer was downloaded with a huggingface_hub that caches the repository's tree listing."""
    folders, listed = ["blocks.8.hook_resid_pre"], GPT2_RES_JB_FOLDERS
    write_hf_cache_release(tmp_path, folders=folders, d_in=D_IN, d_sae=64, listed=listed)
    use_hf_cache(monkeypatch, tmp_path)
    assert load_dictionary("gpt2-small-res-jb/blocks.8.hook_resid_pre").d_sae == 64
    with pytest.raises(InterpError) as error:
        load_dictionary("gpt2-small-res-jb/blocks.3.hook_resid_pre")
    assert_one_line(error, DOWNLOAD)


def test_release_folder_missing_from_an_unlisted_snapshot_says_how_to_download(res_jb_cache, monkeypatch):
    """Another layer was downloaded with a huggingface_hub that keeps no tree listing: snapshot_download returns
    the snapshot, which lacks the folder."""
    root, _ = res_jb_cache
    use_hf_cache(monkeypatch, root)
    with pytest.raises(InterpError) as error:
        load_dictionary("gpt2-small-res-jb/blocks.3.hook_resid_pre")
    assert_one_line(error, "blocks.3.hook_resid_pre")
    assert DOWNLOAD in str(error.value), f"the message does not say how to download: {error.value}"


# ---------------------------------------------------------------------------------------------------------------
# sparsify: its own SparseCoder is the reference


SPARSIFY_CASES = {
    "h.8": ("h.8", False, False, Site("resid_post", 8), None),
    "h.8-skip": ("h.8", False, True, Site("resid_post", 8), None),
    "h.8.mlp-transcoder": ("h.8.mlp", True, False, Site("mlp_in", 8), Site("mlp_out", 8)),
    "h.8.mlp-skip-transcoder": ("h.8.mlp", True, True, Site("mlp_in", 8), Site("mlp_out", 8)),
    "transformer.h.5.attn": ("transformer.h.5.attn", False, False, Site("attn_out", 5), None),
    "blocks.2.hook_resid_pre": ("blocks.2.hook_resid_pre", False, False, Site("resid_pre", 2), None),
}


@pytest.mark.parametrize("case", list(SPARSIFY_CASES))
def test_sparsify_folder_encodes_and_decodes_as_sparsify(tmp_path, case):
    from sparsify import SparseCoder

    hookpoint, transcode, skip, site, site_out = SPARSIFY_CASES[case]
    folder = write_sparsify(tmp_path, hookpoint, d_in=D_IN, num_latents=64, k=8, transcode=transcode, skip=skip)
    coder = SparseCoder.load_from_disk(folder)
    dictionary = load_dictionary(folder)
    assert (dictionary.site, dictionary.site_out, dictionary.architecture, dictionary.k) == (site, site_out, "topk", 8)
    assert dictionary.source_format == "sparsify"
    assert dictionary.convention == Convention(centred=False, affine_mlp_input=True)  # the model as the hub serves it

    x = inputs(n=40, seed=7)
    with torch.no_grad():
        top_acts, top_indices, _ = coder.encode(x)
        dense = torch.zeros(len(x), 64).scatter(-1, top_indices, top_acts)
        sae_out = coder(x).sae_out  # decode + the skip connection
        decoded = coder.decode(top_acts, top_indices)
    assert 0 < (dense != 0).sum() < dense.numel()
    features = dictionary.encode(x)
    close(features, dense)
    if not skip:
        close(dictionary.decode(dense, x), decoded)
    # sparsify's forward adds x @ W_skip.T whether or not it transcodes
    skip_msg = "interp's decode drops sparsify's skip connection" if skip else None
    close(dictionary.decode(dense, x), sae_out, msg=skip_msg)
    close(dictionary(x), sae_out, msg=skip_msg)


# ---------------------------------------------------------------------------------------------------------------
# errors: one line, InterpError, saying what is wrong


def test_folder_with_neither_layout(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    (tmp_path / "cfg.json").write_text("{}")
    with pytest.raises(InterpError) as error:
        load_dictionary(tmp_path)
    assert_one_line(error, "sae_weights.safetensors", "sae.safetensors")


def test_unknown_architecture(tmp_path):
    folder = write_sae_lens_6(tmp_path / "mp", "standard", D_IN, D_SAE)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps(cfg | {"architecture": "matching_pursuit"}))
    with pytest.raises(InterpError) as error:
        load_dictionary(folder)
    assert_one_line(error, "matching_pursuit", "standard")


@pytest.mark.parametrize(
    "architecture, tensor",
    [
        ("standard", "W_dec"),
        ("standard", "b_dec"),
        ("standard", "b_enc"),
        ("topk", "b_enc"),
        ("jumprelu", "threshold"),
        ("gated", "r_mag"),
        ("skip_transcoder", "W_skip"),
    ],
)
def test_missing_tensor(tmp_path, architecture, tensor):
    """SAE Lens loads strictly: a tensor the architecture has and the file lacks is an error, not a zero."""
    folder = write_sae_lens_6(tmp_path / architecture, architecture, D_IN, D_SAE)
    weights = load_file(folder / "sae_weights.safetensors")
    del weights[tensor]
    save_file(weights, folder / "sae_weights.safetensors")
    try:
        load_dictionary(folder)
    except InterpError as error:
        assert "\n" not in str(error) and tensor in str(error), str(error)
    else:
        pytest.fail(f"a {architecture} file without {tensor} was read without an error")


def test_sparsify_groupmax_is_refused(tmp_path):
    folder = write_sparsify(tmp_path, "h.8", d_in=D_IN, num_latents=64, k=8, activation="groupmax")
    with pytest.raises(InterpError) as error:
        load_dictionary(folder)
    assert_one_line(error, "groupmax", "TopK")


@pytest.mark.parametrize(
    "spec, parts",
    [
        ("gpt2-small-res-xx/blocks.8.hook_resid_pre", ["not a known SAE Lens release", "gpt2-small-res-jb"]),
        ("gpt2-small-res-jb/blocks.12.hook_resid_pre", ["blocks.12.hook_resid_pre", "blocks.11.hook_resid_post"]),
    ],
)
def test_unknown_release_or_sae_id(spec, parts):
    with pytest.raises(InterpError) as error:
        load_dictionary(spec)
    assert_one_line(error, *parts)


@pytest.mark.parametrize("hook", ["blocks.3.hook_q", "blocks.3.attn.hook_q", "blocks.3.hook_mlp_in"])
def test_hook_interp_cannot_splice(tmp_path, hook):
    folder = write_sae_lens_6(tmp_path / "q", "standard", D_IN, D_SAE, hook=hook)
    with pytest.raises(InterpError) as error:
        load_dictionary(folder)
    assert_one_line(error, hook, "cannot be spliced")


def test_single_head_dictionary_is_refused(tmp_path):
    folder = write_sae_lens_6(tmp_path / "head", "standard", D_IN, D_SAE, hook="blocks.3.attn.hook_z")
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["metadata"]["hook_head_index"] = 2
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InterpError) as error:
        load_dictionary(folder)
    assert_one_line(error, "hook_head_index=2")
