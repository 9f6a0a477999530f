"""Edge attribution at GPT-2 small's shape, side by side with TransformerLens 4.3, in one process on one batch.

    python benchmarks/discovery.py [--model planted:ioi] [--n 32] [--exact-edges 256] [--threads N]

Measured on the same N IOI pairs (the paper's p_IOI / p_ABC) and the same metric (logit difference IO - S at END):
- TransformerLens 4.3's edge attribution (`transformer_lens.tools.analysis.attribution_patching`, granularity
  "edge"): it scores each pair on its own and each edge at each position. Its convention is the denoising one
  (gradient on the corrupted run, clean - corrupted activations), ours MIB's (gradient on the clean run,
  corrupted - clean), so it is called with the pairs swapped, and its per-position scores are summed over
  positions: the two are then the same numbers (`max_abs_diff_vs_tl`);
- our EAP, our EAP-IG (5 steps), and exact patching of a seeded sample of edges (edges per second).
The anchor is one forward of the N clean prompts through the bridge, measured in the same run. The last line is
`speedup eap_vs_tl=<x>x eap_ig_s=<s> exact_edges_per_s=<r> max_abs_diff_vs_tl=<d>`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.circuits.ioi import Protocol  # noqa: E402
from interp.edge_scores import edge_scores  # noqa: E402
from interp.graph import Graph, transformer_lens_edge_name  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.patching import logit_diff_metric  # noqa: E402


def transformer_lens_edge_scores(model, clean, corrupt) -> tuple[torch.Tensor, float]:
    """TransformerLens 4.3's edge attribution in our convention (pairs swapped, positions summed, [writers,
    readers] like ours), and the seconds its own calls took (the conversion here is not counted)."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    def metric(logits, i):
        end = clean.positions["END"][i]
        return logits[0, end, clean.io_ids[i]] - logits[0, end, clean.s_ids[i]]

    graph = Graph.of(model)
    scores = torch.zeros(graph.n_writers, graph.n_readers)
    index: dict[tuple, tuple[int, int]] = {}
    seconds = 0.0
    for i in range(len(clean)):  # its metric reads one pair: the pair's own answer and position
        start = time.perf_counter()
        result = attribution_patch(
            model,
            corrupt.tokens[i : i + 1],
            clean.tokens[i : i + 1],
            lambda logits, i=i: metric(logits, i),
            EdgeAttributionConfig(granularity="edge"),
        )
        seconds += time.perf_counter() - start
        for (writer, reader), score in result.edge_scores.items():
            key = (writer.kind, writer.layer, writer.head, reader.kind, reader.layer, reader.head)
            if key not in index:
                index[key] = graph.edge_index(transformer_lens_edge_name(writer, reader))
            scores[index[key]] += score / len(clean)
    return scores, seconds


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def run_benchmark(
    model_spec: str = "planted:ioi", quiet: bool = False, n: int = 32, exact_edges: int = 256, seed: int = 0
) -> dict:
    """Run every method once on the same batch; print a report ending with the summary line unless quiet."""
    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    model = load_model(model_spec)
    clean, corrupt = Protocol().datasets(model, n, seed)
    metric = logit_diff_metric(clean.io_ids, clean.s_ids, clean.positions["END"])
    graph = Graph.of(model)
    with torch.inference_mode():
        anchors = [timed(lambda: model(clean.tokens))[1] for _ in range(3)]
    anchor = statistics.median(anchors)
    say(
        f"{model_spec}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}; "
        f"{graph.n_edges} edges; {n} pairs of up to {clean.tokens.shape[1]} tokens; {torch.get_num_threads()} "
        f"threads; device {model.cfg.device}; one forward of the {n} prompts: {anchor:.3f} s"
    )

    eap, eap_s = timed(lambda: edge_scores(model, clean.tokens, corrupt.tokens, metric, "eap"))
    say(
        f"interp EAP:        {eap_s:8.2f} s  ({eap_s / anchor:5.1f} anchors; chunks of {eap.chunk_prompts} prompts, "
        f"{eap.memory_estimate / 2**20:.0f} MiB estimated)"
    )
    eap_ig, eap_ig_s = timed(lambda: edge_scores(model, clean.tokens, corrupt.tokens, metric, "eap-ig", steps=5))
    say(f"interp EAP-IG (5): {eap_ig_s:8.2f} s  ({eap_ig_s / anchor:5.1f} anchors; {eap_ig_s / eap_s:.2f}x EAP)")
    sample = random.Random(seed).sample(graph.edge_names(), min(exact_edges, graph.n_edges))
    exact, exact_s = timed(lambda: edge_scores(model, clean.tokens, corrupt.tokens, metric, "exact", edges=sample))
    say(f"interp exact:      {exact_s:8.2f} s  for {len(sample)} edges ({len(sample) / exact_s:.1f} edges/s)")
    tl, tl_s = transformer_lens_edge_scores(model, clean, corrupt)
    say(f"TransformerLens:   {tl_s:8.2f} s  ({tl_s / anchor:5.1f} anchors)")

    difference = float((tl - eap.scores).abs().max())
    real = graph.real
    report = {
        "model": model_spec,
        "n": n,
        "threads": torch.get_num_threads(),
        "device": str(model.cfg.device),
        "forward_seconds": anchor,
        "eap_seconds": eap_s,
        "eap_ig_seconds": eap_ig_s,
        "tl_seconds": tl_s,
        "exact_seconds": exact_s,
        "exact_edges": len(sample),
        "exact_edges_per_second": len(sample) / exact_s,
        "speedup_eap_vs_tl": tl_s / eap_s,
        "eap_ig_vs_eap": eap_ig_s / eap_s,
        "max_abs_diff_vs_tl": difference,
        "largest_abs_score": float(eap.scores[real].abs().max()),
        "memory_estimate_bytes": {"eap": eap.memory_estimate, "eap_ig": eap_ig.memory_estimate},
        "peak_cuda_bytes": {"eap": eap.peak_memory, "eap_ig": eap_ig.peak_memory},
    }
    say(
        f"EAP vs TransformerLens: max |difference| {difference:.2e} (largest |score| {report['largest_abs_score']:.3f})"
    )
    say(
        f"speedup eap_vs_tl={report['speedup_eap_vs_tl']:.1f}x eap_ig_s={eap_ig_s:.2f} "
        f"exact_edges_per_s={report['exact_edges_per_second']:.1f} max_abs_diff_vs_tl={difference:.2e}"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="planted:ioi")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--exact-edges", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_benchmark(args.model, n=args.n, exact_edges=args.exact_edges)


if __name__ == "__main__":
    main()
