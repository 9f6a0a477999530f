"""The patching engine against TransformerLens's own helpers and slow hook-based references on the same bridge.

The models are small random GPT-2s with a larger init than HF's (0.2 instead of 0.02) and perturbed LayerNorms and
biases: patching effects are then of order 0.1-1, far above the 1e-4 tolerance, and weight processing is exercised.
"""

import pytest
import torch
import transformer_lens.patching as tl_patching

from interp.attribution import agreement, attribution_patch
from interp.errors import InterpError
from interp.models import load_model
from interp.patching import Metric, activation_patch, logit_diff_metric, patch_grid_for_cli, path_patch

TOLERANCE = 1e-4
ANSWER, WRONG = 10, 20


def build_model(directory, n_layer: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(n_layer)
    hf_model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_head=4, n_embd=64, n_positions=64, initializer_range=0.2))
    with torch.no_grad():
        for name, param in hf_model.named_parameters():
            if name.endswith(".bias") or "ln" in name:
                param.add_(0.2 * torch.randn_like(param))
    hf_model.save_pretrained(directory)
    return load_model(str(directory), device="cpu")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("patching-gpt2-2l"), n_layer=2)


@pytest.fixture(scope="module")
def model3(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("patching-gpt2-3l"), n_layer=3)


@pytest.fixture(scope="module")
def tokens():
    """Three prompt pairs of 7 tokens that differ at positions 2 and 4."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 50257, (3, 7), generator=generator)
    corrupt = clean.clone()
    corrupt[:, [2, 4]] = torch.randint(0, 50257, (3, 2), generator=generator)
    return clean, corrupt


def full_logit_diff(logits):
    """The metric as a plain function of the full logits [batch, pos, vocab], as TransformerLens takes it."""
    return (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()


def runs(direction, clean, corrupt):
    """(base tokens, source tokens) of a direction."""
    return (corrupt, clean) if direction == "denoise" else (clean, corrupt)


def assert_close(ours, reference):
    assert ours.shape == reference.shape
    # The reference must vary far more than the tolerance, or agreeing with it would prove nothing.
    assert reference.max() - reference.min() > 100 * TOLERANCE
    assert (ours - reference).abs().max() <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Exact patching against TransformerLens's helpers


TL_HELPERS = {  # (site, by_position) -> TransformerLens helper
    ("resid_pre", True): tl_patching.get_act_patch_resid_pre,
    ("attn_out", True): tl_patching.get_act_patch_attn_out,
    ("mlp_out", True): tl_patching.get_act_patch_mlp_out,
    ("head_out", False): tl_patching.get_act_patch_attn_head_out_all_pos,
    ("head_out", True): tl_patching.get_act_patch_attn_head_out_by_pos,
    ("q", False): tl_patching.get_act_patch_attn_head_q_all_pos,
    ("q", True): tl_patching.get_act_patch_attn_head_q_by_pos,
    ("k", False): tl_patching.get_act_patch_attn_head_k_all_pos,
    ("k", True): tl_patching.get_act_patch_attn_head_k_by_pos,
    ("v", False): tl_patching.get_act_patch_attn_head_v_all_pos,
    ("v", True): tl_patching.get_act_patch_attn_head_v_by_pos,
    ("pattern", False): tl_patching.get_act_patch_attn_head_pattern_all_pos,
    ("pattern", True): tl_patching.get_act_patch_attn_head_pattern_by_pos,
}


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize("site,by_position", list(TL_HELPERS))
def test_equals_transformer_lens_helpers(model, tokens, site, by_position, direction):
    base, source = runs(direction, *tokens)
    _, source_cache = model.run_with_cache(source)
    reference = TL_HELPERS[site, by_position](model, base, source_cache, full_logit_diff)
    if site == "pattern" and by_position:  # TransformerLens: [layer, head, query_pos]; interp: [layer, pos, head]
        reference = reference.permute(0, 2, 1)
    ours = activation_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG), site, direction, by_position=by_position)
    assert_close(ours, reference)


@pytest.mark.parametrize("site", ["resid_pre", "head_out"])
def test_plain_function_of_full_logits_gives_the_same_grid(model, tokens, site):
    fast = activation_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG), site)
    slow = activation_patch(model, *tokens, full_logit_diff, site)
    assert (fast - slow).abs().max() <= TOLERANCE


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_resid_post_equals_generic_transformer_lens_patch(model, tokens, direction):
    base, source = runs(direction, *tokens)
    _, source_cache = model.run_with_cache(source)
    reference = tl_patching.generic_activation_patch(
        model,
        base,
        source_cache,
        full_logit_diff,
        patch_setter=tl_patching.layer_pos_patch_setter,
        activation_name="resid_post",
        index_axis_names=("layer", "pos"),
    )
    assert_close(activation_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG), "resid_post", direction), reference)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_resid_mid_equals_hook_reference(model, tokens, direction):
    """On a TransformerBridge, `hook_resid_mid` is the input of ln2: patching it changes what the MLP reads but
    not the residual that skips the MLP, so TransformerLens's get_act_patch_resid_mid is not a residual-stream
    patch there. The reference replaces the residual by setting the attention output to source resid_mid minus
    base resid_pre (resid_pre of the patched layer is unchanged by the patch)."""
    base, source = runs(direction, *tokens)
    _, source_cache = model.run_with_cache(source)
    _, base_cache = model.run_with_cache(base)
    n_layers, n_pos = model.cfg.n_layers, base.shape[1]
    reference = torch.empty(n_layers, n_pos)
    for layer in range(n_layers):
        wanted = source_cache[f"blocks.{layer}.hook_resid_mid"] - base_cache[f"blocks.{layer}.hook_resid_pre"]
        for position in range(n_pos):

            def patch(attn_out, hook, position=position, wanted=wanted):
                attn_out = attn_out.clone()
                attn_out[:, position] = wanted[:, position]
                return attn_out

            with torch.no_grad():
                logits = model.run_with_hooks(base, fwd_hooks=[(f"blocks.{layer}.hook_attn_out", patch)])
            reference[layer, position] = full_logit_diff(logits)
    assert_close(activation_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG), "resid_mid", direction), reference)


def test_per_prompt_positions_and_answers(model, tokens):
    """Each prompt read at its own position with its own answer; positions after the last read one (5, 6) are
    never computed and their cells hold the unpatched metric."""
    positions, answers, wrongs = torch.tensor([3, 4, 2]), torch.tensor([10, 11, 12]), torch.tensor([20, 21, 22])
    prompt = torch.arange(3)

    def per_prompt(logits):
        return (logits[prompt, positions, answers] - logits[prompt, positions, wrongs]).mean()

    _, clean_cache = model.run_with_cache(tokens[0])
    for site, helper in (
        ("resid_pre", tl_patching.get_act_patch_resid_pre),
        ("head_out", tl_patching.get_act_patch_attn_head_out_by_pos),
    ):
        reference = helper(model, tokens[1], clean_cache, per_prompt)
        ours = activation_patch(model, *tokens, logit_diff_metric(answers, wrongs, positions), site, by_position=True)
        assert_close(ours, reference)


@pytest.mark.parametrize("site", ["resid_pre", "head_out", "mlp_out"])
def test_per_prompt_grids_average_to_the_mean_grid(model, tokens, site):
    """A per-prompt metric keeps a trailing prompt axis: each prompt's cell is the patched logit difference of that
    prompt alone (TransformerLens's helper on the one pair), and the mean over prompts is the mean metric's grid."""
    per_prompt = activation_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG, per_prompt=True), site)
    assert per_prompt.shape[-1] == len(tokens[0])
    assert_close(per_prompt.mean(-1), activation_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG), site))
    if site == "resid_pre":
        _, clean_cache = model.run_with_cache(tokens[0][1:2])
        alone = tl_patching.get_act_patch_resid_pre(model, tokens[1][1:2], clean_cache, full_logit_diff)
        assert_close(per_prompt[..., 1], alone)


def test_chunking_to_a_small_budget_gives_the_same_grid(model, tokens):
    metric = logit_diff_metric(ANSWER, WRONG)
    for site in ("resid_pre", "head_out"):
        default = activation_patch(model, *tokens, metric, site)
        one_row_per_chunk = activation_patch(model, *tokens, metric, site, max_memory=2_100_000)
        assert (default - one_row_per_chunk).abs().max() <= TOLERANCE


def test_budget_too_small_is_refused_before_running(model, tokens):
    calls = []

    def counting(logits):
        calls.append(1)
        return full_logit_diff(logits)

    with pytest.raises(InterpError, match="MiB"):
        activation_patch(model, *tokens, counting, "resid_pre", max_memory=10_000)
    assert not calls


# ---------------------------------------------------------------------------------------------------------------
# Attribution patching against a hand-written gradient x difference on the bridge


ATTRIBUTION_HOOKS = {  # site -> (hook whose gradient is taken, hook whose source - base difference is used)
    "resid_pre": ("blocks.{}.hook_resid_pre", "blocks.{}.hook_resid_pre"),
    # ln2's input on the bridge: its gradient misses the skip connection; d/d resid_mid = d/d attn_out
    "resid_mid": ("blocks.{}.hook_attn_out", "blocks.{}.hook_resid_mid"),
    "resid_post": ("blocks.{}.hook_resid_post", "blocks.{}.hook_resid_post"),
    "attn_out": ("blocks.{}.hook_attn_out", "blocks.{}.hook_attn_out"),
    "mlp_out": ("blocks.{}.hook_mlp_out", "blocks.{}.hook_mlp_out"),
    "head_out": ("blocks.{}.attn.hook_z", "blocks.{}.attn.hook_z"),
    "q": ("blocks.{}.attn.hook_q", "blocks.{}.attn.hook_q"),
    "k": ("blocks.{}.attn.hook_k", "blocks.{}.attn.hook_k"),
    "v": ("blocks.{}.attn.hook_v", "blocks.{}.attn.hook_v"),
    "pattern": ("blocks.{}.attn.hook_pattern", "blocks.{}.attn.hook_pattern"),
}


def attribution_reference(model, base, source, site, by_position):
    _, source_cache = model.run_with_cache(source)
    _, base_cache = model.run_with_cache(base)
    grad_hook, delta_hook = ATTRIBUTION_HOOKS[site]
    names = [grad_hook.format(layer) for layer in range(model.cfg.n_layers)]
    grads = {}

    def keep_grad(grad, hook, name):  # by the name asked for: the bridge reports aliases under other names
        grads[name] = grad.detach().clone()

    with model.hooks(bwd_hooks=[(name, lambda grad, hook, name=name: keep_grad(grad, hook, name)) for name in names]):
        value = full_logit_diff(model(base))
        value.backward()
    rows = []
    for layer, name in enumerate(names):
        delta_name = delta_hook.format(layer)
        product = grads[name] * (source_cache[delta_name] - base_cache[delta_name])
        if site == "pattern":  # [batch, head, query, key] -> [query, head]
            per_position = product.sum((0, 3)).T
        else:  # [batch, pos, (head,) features] -> [pos(, head)]
            per_position = product.sum((0, product.ndim - 1))
        rows.append(per_position if by_position else per_position.sum(0))
    return value.detach() + torch.stack(rows)


@pytest.mark.parametrize("direction", ["denoise", "noise"])
@pytest.mark.parametrize(
    "site,by_position",
    [
        ("resid_pre", True),
        ("resid_mid", True),
        ("resid_post", True),
        ("attn_out", True),
        ("mlp_out", True),
        ("head_out", False),
        ("head_out", True),
        ("q", True),
        ("k", False),
        ("v", True),
        ("pattern", True),
    ],
)
def test_attribution_equals_hand_written_gradient_times_difference(model, tokens, site, by_position, direction):
    base, source = runs(direction, *tokens)
    reference = attribution_reference(model, base, source, site, by_position)
    ours = attribution_patch(model, *tokens, logit_diff_metric(ANSWER, WRONG), site, direction, by_position)
    assert_close(ours, reference)


def test_agreement_reports_correlation_and_difference():
    exact = torch.tensor([[1.0, 2.0], [3.0, float("nan")]])
    assert agreement(exact, exact)["pearson"] == pytest.approx(1.0)
    report = agreement(exact, torch.tensor([[3.0, 2.0], [1.0, 0.0]]))
    assert report["pearson"] == pytest.approx(-1.0)
    assert report["max_abs_diff"] == pytest.approx(2.0)
    assert report["n_cells"] == 3
    with pytest.raises(InterpError, match="shapes"):
        agreement(exact, exact[0])
    with pytest.raises(InterpError, match="fewer than two"):
        agreement(exact[1], exact[1])


# ---------------------------------------------------------------------------------------------------------------
# Path patching against a per-sender loop with hooks


def path_patch_reference(model, clean, corrupt, receivers, senders):
    """Wang et al.'s Algorithm 1, one sender at a time: freeze every head's output to its clean value except the
    sender's (corrupted), record the receivers; rerun clean with only the receivers patched."""
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)
    n_layers = model.cfg.n_layers
    grid = torch.full((n_layers, model.cfg.n_heads), float("nan"))
    receiver_hooks = (
        [f"blocks.{n_layers - 1}.hook_resid_post"]
        if receivers == "resid_final"
        else sorted({f"blocks.{layer}.attn.hook_{kind}" for layer, _, kind in receivers})
    )
    for sender_layer, sender_head in senders:

        def freeze(z, hook):
            frozen = clean_cache[hook.name].clone()
            if hook.name == f"blocks.{sender_layer}.attn.hook_z":
                frozen[:, :, sender_head] = corrupt_cache[hook.name][:, :, sender_head]
            return frozen

        recorded = {}

        def record(activation, hook, name):  # by the name asked for: the bridge reports aliases under others
            recorded[name] = activation.clone()

        with torch.no_grad():
            model.run_with_hooks(
                clean,
                fwd_hooks=[(f"blocks.{layer}.attn.hook_z", freeze) for layer in range(n_layers)]
                + [
                    (name, lambda activation, hook, name=name: record(activation, hook, name))
                    for name in receiver_hooks
                ],
            )
            if receivers == "resid_final":
                logits = model.unembed(model.ln_final(recorded[receiver_hooks[0]]))
            else:

                def patch(activation, hook):
                    activation = activation.clone()
                    for layer, head, kind in receivers:
                        if hook.name == f"blocks.{layer}.attn.hook_{kind}":
                            activation[:, :, head] = recorded[hook.name][:, :, head]
                    return activation

                logits = model.run_with_hooks(clean, fwd_hooks=[(name, patch) for name in receiver_hooks])
        grid[sender_layer, sender_head] = full_logit_diff(logits)
    return grid


@pytest.mark.parametrize(
    "receivers", ["resid_final", [(1, 0, "q"), (2, 3, "k")], [(2, 1, "v"), (2, 2, "q"), (1, 3, "v")]]
)
def test_path_patching_equals_per_sender_reference(model3, tokens, receivers):
    senders = [(layer, head) for layer in range(3) for head in range(4)]
    reference = path_patch_reference(model3, *tokens, receivers, senders)
    ours = path_patch(model3, *tokens, logit_diff_metric(ANSWER, WRONG), receivers)
    assert_close(ours, reference)


def test_path_patching_some_senders_and_a_small_budget(model3, tokens):
    senders = [(0, 1), (0, 3), (1, 2)]
    receivers = [(2, 0, "q"), (2, 1, "k")]
    reference = path_patch_reference(model3, *tokens, receivers, senders)
    ours = path_patch(model3, *tokens, logit_diff_metric(ANSWER, WRONG), receivers, senders, max_memory=3_000_000)
    chosen = torch.zeros(3, 4, dtype=torch.bool)
    chosen[tuple(zip(*senders))] = True
    assert ours[~chosen].isnan().all()
    assert (ours[chosen] - reference[chosen]).abs().max() <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# Mistakes, exceptions, the CLI


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda m, c, k: activation_patch(m, c, k[:, :5], full_logit_diff, "resid_pre"), "7 tokens.*5"),
        (lambda m, c, k: activation_patch(m, c, k[:2], full_logit_diff, "resid_pre"), "3 clean prompts but 2"),
        (lambda m, c, k: activation_patch(m, c, k, full_logit_diff, "resid"), "unknown patching site 'resid'"),
        (lambda m, c, k: activation_patch(m, c, k, full_logit_diff, "z", "backwards"), "unknown patching site"),
        (lambda m, c, k: activation_patch(m, c, k, full_logit_diff, "q", "backwards"), "unknown direction"),
        (
            lambda m, c, k: activation_patch(m, c, k, lambda logits: logits[:, -1, :2], "q"),
            "a scalar or one value per prompt",
        ),
        (lambda m, c, k: activation_patch(m, c, k, logit_diff_metric(1, 2, positions=7), "q"), "position 7"),
        (lambda m, c, k: activation_patch(m, c, k, logit_diff_metric([1, 2], [3, 4]), "q"), "2 answer tokens for 3"),
        (lambda m, c, k: path_patch(m, c, k, full_logit_diff, [(2, 0, "q")]), "receiver layer 2 is out of range"),
        (lambda m, c, k: path_patch(m, c, k, full_logit_diff, [(1, 4, "q")]), "receiver head 4 is out of range"),
        (lambda m, c, k: path_patch(m, c, k, full_logit_diff, [(1, 0, "z")]), "'q'|'k'|'v'"),
        (lambda m, c, k: path_patch(m, c, k, full_logit_diff, "resid"), "unknown receivers"),
        (lambda m, c, k: path_patch(m, c, k, full_logit_diff, "resid_final", [(-1, 0)]), "sender layer -1"),
        (lambda m, c, k: attribution_patch(m, c, k[:, :6], full_logit_diff, "q"), "7 tokens.*6"),
        (lambda m, c, k: attribution_patch(m, c, k, full_logit_diff, "q", max_memory=10_000), "MiB"),
        (lambda m, c, k: attribution_patch(m, c, k, lambda logits: torch.tensor(1.0), "q"), "does not depend"),
        (lambda m, c, k: path_patch(m, c, k, full_logit_diff, "resid_final", max_memory=10_000), "MiB"),
    ],
)
def test_mistakes_raise_interp_error_naming_the_problem(model, tokens, call, message):
    with pytest.raises(InterpError, match=message):
        call(model, *tokens)


def test_an_exception_in_the_metric_leaves_the_model_clean(model, tokens):
    metric = logit_diff_metric(ANSWER, WRONG)
    before_grid = activation_patch(model, *tokens, metric, "head_out")
    with torch.no_grad():
        before_logits = model(tokens[0])
    calls = []

    def failing(logits):
        calls.append(1)
        if len(calls) == 5:  # in the middle of the sweep
            raise RuntimeError("metric failed")
        return metric.fn(logits)

    with pytest.raises(RuntimeError, match="metric failed"):
        activation_patch(model, *tokens, Metric(failing, -1, metric.token_ids), "head_out")
    assert not any(hook_point.has_hooks() for hook_point in model.hook_dict.values())
    with torch.no_grad():
        assert torch.equal(model(tokens[0]), before_logits)
    assert torch.equal(activation_patch(model, *tokens, metric, "head_out"), before_grid)


def test_cli_grid(model):
    clean, corrupt = (
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Paul gave a drink to",
    )
    data = patch_grid_for_cli(model, clean, corrupt, " Mary", " John", "resid_pre")
    assert data["site"] == "resid_pre"
    tokens = model.to_tokens(clean), model.to_tokens(corrupt)
    mary, john = model.to_single_token(" Mary"), model.to_single_token(" John")
    with torch.no_grad():
        for key, prompt in (("clean_metric", tokens[0]), ("corrupt_metric", tokens[1])):
            logits = model(prompt)[0, -1]
            assert data[key] == pytest.approx(float(logits[mary] - logits[john]), abs=TOLERANCE)
    assert len(data["grid"]) == len(data["row_labels"]) == model.cfg.n_layers
    assert len(data["grid"][0]) == len(data["column_labels"]) == tokens[0].shape[1]
    expected = activation_patch(model, *tokens, logit_diff_metric(mary, john), "resid_pre")
    assert torch.tensor(data["grid"]).sub(expected).abs().max() <= TOLERANCE
    heads = patch_grid_for_cli(model, clean, corrupt, " Mary", " John", "head_out", "noise")
    assert torch.tensor(heads["grid"]).shape == (model.cfg.n_layers, model.cfg.n_heads)


@pytest.mark.parametrize(
    "corrupt,answer,site,message",
    [
        (
            "When Mary and John went to the store, Jonathan Smith gave a drink to",
            " Mary",
            "resid_pre",
            "clean prompt is 15 tokens and the corrupt prompt 16",
        ),
        ("When Mary and John went to the store, Paul gave a drink to", " Marylebone", "resid_pre", "answer"),
        ("When Mary and John went to the store, Paul gave a drink to", " Mary", "q", "unknown site 'q'"),
    ],
)
def test_cli_mistakes(model, corrupt, answer, site, message):
    clean = "When Mary and John went to the store, John gave a drink to"
    with pytest.raises(InterpError, match=message):
        patch_grid_for_cli(model, clean, corrupt, answer, " John", site)


def test_cli_patch_command(model, capsys):
    import json

    from interp.cli import main

    clean, corrupt = (
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Paul gave a drink to",
    )
    code = main(
        [
            "patch",
            "--clean",
            clean,
            "--corrupt",
            corrupt,
            "--answer",
            " Mary",
            "--wrong",
            " John",
            "--site",
            "head_out",
            "--model",
            model.interp_source.checkpoint_dir,
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["site"] == "head_out" and len(data["grid"]) == model.cfg.n_layers
    assert (
        main(
            [
                "patch",
                "--clean",
                clean,
                "--corrupt",
                corrupt + " the",
                "--answer",
                " Mary",
                "--wrong",
                " John",
                "--model",
                model.interp_source.checkpoint_dir,
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "corrupt prompt 16" in capsys.readouterr().err
