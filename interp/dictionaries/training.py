"""Dictionaries trained with sparsify (eai-sparsify's `Trainer`: its TopK encoder, initialisation, optimiser,
dead-latent bookkeeping and checkpoint format), on activations streamed from the bridge.

sparsify hooks modules of a Hugging Face model by name. `Taps` stands in for that model: its forward runs the
engine over the bridge's weights and passes each activation asked for, as the model computes it when served by
the hub (uncentred: `interp.dictionaries.splice`), through an identity module named for its TransformerLens hook,
where sparsify's hook reads it. A transcoder's tap receives the MLP's input (after ln_2's affine map, as sparsify
reads a Hugging Face MLP's input) and its output. The checkpoints are sparsify's own (`cfg.json` +
`sae.safetensors` per hookpoint), which `interp.dictionaries.formats` reads back.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from interp.dictionaries.dictionary import Convention, Site
from interp.dictionaries.splice import Splice
from interp.errors import InterpError

SAE_SITES = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


class Tap(nn.Module):
    """Identity on an activation (an autoencoder's), or on (input, output) of a transcoder's MLP."""

    def forward(self, x, output=None):
        return x if output is None else output


def training_sites(hooks: list[str], transcode: bool) -> list[Site]:
    sites = [Site.parse(hook) for hook in hooks]
    for site in sites:
        if transcode and site.kind != "mlp_out" or not transcode and site.kind not in SAE_SITES:
            raise InterpError(
                f"{site.hook}: interp trains transcoders of the MLP (blocks.L.hook_mlp_out) and autoencoders of "
                f"{', '.join(f'blocks.L.hook_{kind}' for kind in SAE_SITES)}"
            )
    return sites


class Taps(nn.Module):
    """A stand-in for a Hugging Face causal LM, as much of one as sparsify's Trainer uses (see the module's
    docstring)."""

    def __init__(self, model, hooks: list[str], transcode: bool):
        from interp.engine import Transformer

        super().__init__()
        self.model, self.transcode = model, transcode
        self.engine = Transformer(model, token_ids=torch.zeros(1, dtype=torch.long))
        self.sites = training_sites(hooks, transcode)
        self.base_model = nn.Module()
        self.base_model.blocks = nn.ModuleList(nn.ModuleDict() for _ in range(model.cfg.n_layers))
        for site in self.sites:
            self.base_model.blocks[site.layer][f"hook_{site.kind}"] = Tap()
        self.config = type("Config", (), {"num_hidden_layers": model.cfg.n_layers})()
        self.dummy_inputs = {"input_ids": torch.zeros(1, 4, dtype=torch.long)}

    @property
    def device(self):
        return torch.device(self.model.cfg.device)

    def forward(self, input_ids):
        convention = Convention(centred=False, affine_mlp_input=True)
        taps = {(site.kind, site.layer): self.base_model.blocks[site.layer][f"hook_{site.kind}"] for site in self.sites}

        def visit(splice: Splice, point: str, layer: int, x) -> None:
            if (point, layer) in taps:
                as_trained = splice.as_trained(convention, point, layer, x)
                if self.transcode:
                    taps[point, layer](splice.as_trained(convention, "mlp_in", layer, x), as_trained)
                else:
                    taps[point, layer](as_trained)

        forward_to(self.model, self.engine, input_ids, max(site.layer for site in self.sites), visit)


class StopForward(Exception):
    """Raised past the last layer a forward needs."""


def forward_to(model, engine, tokens: torch.Tensor, last_layer: int, visit) -> None:
    """A forward of `tokens` through layer `last_layer` and no further; `visit(splice, point, layer, x)` sees every
    edit point's activation beside a Splice that knows what processing removed there (`Splice.as_trained`)."""
    from interp.metric_reader import Reader

    splice = Splice([], model.interp_processing, tokens, uncentred=True)

    def tap(point: str, layer: int, x):
        splice(point, layer, x)
        visit(splice, point, layer, x)
        if point == "resid_post" and layer == last_layer:
            raise StopForward
        return x

    positions = torch.zeros(tokens.shape[0], 1, dtype=torch.long, device=tokens.device)
    with contextlib.suppress(StopForward):
        engine.run(tokens, Reader(positions, None, lambda logits: logits.sum()), keep=(), edit=tap)


@dataclass
class TrainingRun:
    """What a run was, beside sparsify's own config.json."""

    hooks: list[str]
    transcode: bool
    n_tokens: int
    context: int
    batch_size: int
    expansion_factor: int
    k: int
    lr: float | None
    seed: int
    text: str | None


def training_tokens(model, n_tokens: int, context: int, seed: int, text: str | None = None) -> torch.Tensor:
    """[n_sequences, context] tokens: the organism's training corpus (seeded), or a text file's tokens."""
    from interp.organism.corpus import token_stream

    if text is None:
        stream = token_stream(n_tokens + context, seed, model.tokenizer)
    else:
        try:
            stream = model.tokenizer(Path(text).read_text())["input_ids"]
        except OSError as error:
            raise InterpError(f"cannot read {text}: {error.strerror}") from None
    n_sequences = min(len(stream), n_tokens) // context
    if n_sequences == 0:
        raise InterpError(f"{len(stream)} tokens are fewer than one context of {context}")
    return torch.tensor(stream[: n_sequences * context]).reshape(n_sequences, context)


def train_dictionaries(
    model,
    hooks: list[str],
    save_dir: str | Path,
    transcode: bool = False,
    n_tokens: int = 200_000,
    context: int = 64,
    batch_size: int = 16,
    expansion_factor: int = 8,
    k: int = 16,
    seed: int = 0,
    text: str | None = None,
    quiet: bool = False,
    tokens: torch.Tensor | None = None,
    max_memory: int | None = None,
    exclude_tokens: list[int] | None = None,
    lr: float | None = 3e-3,
    optimizer: str = "signum",
    auxk_alpha: float = 0.0,
    dead_after: int = 10_000_000,
) -> list[Path]:
    """Train one sparsify dictionary per hook (see the module's docstring) into `save_dir` (which must not exist:
    the run is written beside it and moved there once complete); returns their folders. `max_memory` (bytes):
    refused before training when the estimate (`training_bytes`) is over it. `auxk_alpha`: the weight of sparsify's
    auxiliary loss, which trains features silent for `dead_after` tokens to predict what the others miss (OpenAI's
    value is 1/32; 0, sparsify's default, leaves it off)."""
    with contextlib.redirect_stdout(io.StringIO()):  # sparsify announces on import that Triton is missing
        from sparsify import SaeConfig, TrainConfig, Trainer

    save_dir = Path(save_dir)
    training_sites(hooks, transcode)
    if save_dir.exists():
        raise InterpError(f"{save_dir} exists: remove it or train into another directory")
    if tokens is None:
        tokens = training_tokens(model, n_tokens, context, seed, text)
    needed = training_bytes(model, hooks, transcode, batch_size, tokens.shape[1], expansion_factor, k)
    if max_memory is not None and needed > max_memory:
        raise InterpError(
            f"training needs about {needed / 2**20:.0f} MiB, over the budget of {max_memory / 2**20:.0f} MiB: "
            "fewer hooks, a smaller --batch-size or --expansion-factor"
        )
    partial = save_dir.with_name(save_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    generator = torch.Generator().manual_seed(seed)
    tokens = tokens[torch.randperm(len(tokens), generator=generator)]
    dataset = [{"input_ids": row} for row in tokens]
    taps = Taps(model, hooks, transcode)
    cfg = TrainConfig(
        SaeConfig(expansion_factor=expansion_factor, k=k, transcode=transcode),
        batch_size=batch_size,
        hookpoints=hooks,
        lr=lr,
        optimizer=optimizer,
        auxk_alpha=auxk_alpha,
        dead_feature_threshold=dead_after,
        init_seeds=[seed],
        exclude_tokens=exclude_tokens or [],
        log_to_wandb=False,
        save_dir=str(partial.parent),
        run_name=partial.name,
        save_every=10**9,
    )
    torch.manual_seed(seed)
    quietly = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    with quietly:
        trainer = Trainer(cfg, dataset, taps)
        if quiet:
            trainer_tqdm_off()
        trainer.fit()
    for state in partial.glob("*.pt"):  # the optimiser's state, for resuming: not part of the dictionaries
        state.unlink()
    run = TrainingRun(
        hooks, transcode, int(tokens.numel()), tokens.shape[1], batch_size, expansion_factor, k, lr, seed, text
    )
    (partial / "training.json").write_text(json.dumps(run.__dict__, indent=1) + "\n")
    partial.rename(save_dir)
    return [save_dir / hook for hook in cfg.hookpoints]


def training_bytes(model, hooks, transcode: bool, batch_size: int, context: int, expansion_factor: int, k: int) -> int:
    """What training holds at once, roughly: each dictionary's parameters four times (weights, gradients, the
    optimiser's state, a copy), and per step the model's forward over the batch and, per hook, the activations,
    the pre-activations and the top-k."""

    d_in = model.cfg.d_model
    d_sae = d_in * expansion_factor
    parameters = len(hooks) * 4 * 4 * (2 * d_in * d_sae + d_sae + 2 * d_in)
    tokens = batch_size * context
    per_hook = 4 * tokens * (3 * d_in + d_sae + 2 * k)
    forward = 4 * tokens * (10 * d_in + 2 * model.cfg.d_mlp + 2 * model.cfg.n_heads * context)
    return parameters + len(hooks) * per_hook + forward


def trainer_tqdm_off() -> None:
    import sparsify.trainer

    original = sparsify.trainer.tqdm
    sparsify.trainer.tqdm = lambda *args, **kwargs: original(*args, **{**kwargs, "disable": True})
