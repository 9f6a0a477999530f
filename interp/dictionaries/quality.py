"""How well a dictionary reconstructs its activation, with SAE Lens's basic metrics (its `evals`, which SAEBench's
core evaluation also reports), over a batch of token sequences:

- fraction of variance explained: 1 - E|x - x_hat|^2 / (E|x|^2 - |E x|^2), expectations pooled over all tokens,
  x in the dictionary's own convention (for a transcoder, the MLP's output);
- L0: the mean number of active features per token; dead features: those active on no token (density 0);
- next-token cross-entropy of the model as it is, with the reconstruction spliced in (the error dropped) and with
  the activation zero-ablated, and the loss recovered, (CE_zero - CE_spliced) / (CE_zero - CE_clean) (SAE Lens's
  ce_loss_score); the KL divergence of each from the clean next-token distribution and kl_div_score,
  (KL_zero - KL_spliced) / KL_zero.

As SAE Lens's evals do, special tokens (GPT-2's <|endoftext|>) are left out: the statistics skip their positions,
the reconstruction is not spliced in there (zero ablation is, at every position), and the losses skip the
predictions made from them. Scores are ratios of token means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from interp.dictionaries.dictionary import Dictionary
from interp.dictionaries.splice import run_spliced, splice_for


@dataclass
class Quality:
    fraction_variance_explained: float
    l0: float
    dead_features: int
    d_sae: int
    loss_clean: float
    loss_spliced: float
    loss_zero_ablated: float
    kl_spliced: float
    kl_zero_ablated: float
    n_tokens: int

    @property
    def loss_recovered(self) -> float:
        gap = self.loss_zero_ablated - self.loss_clean
        return (self.loss_zero_ablated - self.loss_spliced) / gap if gap else float("nan")

    @property
    def kl_div_score(self) -> float:
        return (self.kl_zero_ablated - self.kl_spliced) / self.kl_zero_ablated if self.kl_zero_ablated else float("nan")

    def as_dict(self) -> dict:
        return {**self.__dict__, "loss_recovered": self.loss_recovered, "kl_div_score": self.kl_div_score}


def next_token_losses(
    logits: Tensor, clean: tuple[Tensor, Tensor], tokens: Tensor, kept: Tensor
) -> tuple[float, float]:
    """(sum of next-token cross-entropies, sum of KL(clean || these)) over the predictions from kept positions;
    `clean`: the clean run's (log-probs, probs) at those predictions."""
    log_probs = logits[:, :-1][kept[:, :-1]].float().log_softmax(-1)
    ce = -log_probs.gather(-1, tokens[:, 1:][kept[:, :-1]][:, None])[:, 0]
    clean_log_probs, clean_probs = clean
    kl = (clean_probs * (clean_log_probs - log_probs)).sum(-1)
    return float(ce.sum()), float(kl.sum())


@torch.inference_mode()
def reconstruction_quality(
    model, dictionary: Dictionary, tokens: Int[Tensor, "n pos"], batch_size: int = 8, special: int | None = None
) -> Quality:
    """SAE Lens's basic metrics of one dictionary over `tokens` (see the module's docstring); `special`: the token
    left out (default: the tokenizer's <|endoftext|>)."""
    from interp.engine import Transformer

    tf = Transformer(model)
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=model.cfg.device)
    special = model.tokenizer.bos_token_id if special is None else special
    residual_squares, sums, squares, n_tokens, l0 = 0.0, 0.0, 0.0, 0, 0.0
    fired = torch.zeros(dictionary.d_sae, dtype=torch.bool, device=model.cfg.device)
    ce = {"exact": 0.0, "reconstruction": 0.0, "zero": 0.0}
    kl = dict(ce)
    n_predictions = 0
    for batch in tokens.split(batch_size):
        kept = batch != special
        clean = None
        for output in ce:
            splice = splice_for(model, batch, [dictionary], output=output, keep_nodes=output == "exact", mask=kept)
            logits = run_spliced(tf, batch, splice)
            if clean is None:  # the exact run is the model's own
                clean_log_probs = logits[:, :-1][kept[:, :-1]].float().log_softmax(-1)
                clean = (clean_log_probs, clean_log_probs.exp())
            batch_ce, batch_kl = next_token_losses(logits, clean, batch, kept)
            ce[output] += batch_ce
            kl[output] += batch_kl
            if output != "exact":
                continue
            n_predictions += int(kept[:, :-1].sum())
            nodes = splice.nodes[0]
            reconstruction = dictionary.decode(nodes.features, nodes.input)
            x, x_hat = (reconstruction + nodes.error)[kept].double(), reconstruction[kept].double()
            features = nodes.features[kept]
            residual_squares += float((x - x_hat).square().sum())
            sums, squares = sums + x.sum(0), squares + float(x.square().sum())
            l0 += float((features > 0).sum())
            fired |= (features > 0).any(0)
            n_tokens += len(features)
    total_variance = squares / n_tokens - float(sums.square().sum()) / n_tokens**2
    return Quality(
        1 - residual_squares / n_tokens / total_variance,
        l0 / n_tokens,
        int((~fired).sum()),
        dictionary.d_sae,
        ce["exact"] / n_predictions,
        ce["reconstruction"] / n_predictions,
        ce["zero"] / n_predictions,
        kl["reconstruction"] / n_predictions,
        kl["zero"] / n_predictions,
        n_tokens,
    )
