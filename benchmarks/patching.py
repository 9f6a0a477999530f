"""interp's patching engine against TransformerLens's patching helpers: same process, model, batch and metric.

    python benchmarks/patching.py [--model random:gpt2] [--prompts 8] [--tokens 16] [--threads N]

Times TransformerLens's `get_act_patch_resid_pre` and `get_act_patch_attn_head_out_all_pos` (each with the clean
`run_with_cache` it needs, under torch.inference_mode, their fastest setting) against interp's `activation_patch`
for the same grids (its two base runs included), and attribution patching for both grids; checks that the exact
grids agree. Then a fresh process, started with glibc's mmap threshold fixed (so freed tensors go back to the OS at
once and the resident set follows live tensors, not the allocator's history), measures the peak memory of each of
interp's sweeps against one `run_with_cache` on the same batch: the rise of its peak resident set (Linux).
`random:gpt2` has GPT-2 small's shapes, hence its compute. The last line printed is
`speedup resid_pre=<x>x head_out=<y>x attribution_vs_exact=<z>x max_abs_diff=<d>`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from interp.attribution import agreement, attribution_patch  # noqa: E402
from interp.models import load_model  # noqa: E402
from interp.patching import activation_patch, logit_diff_metric  # noqa: E402

ANSWER, WRONG = 1000, 2000  # any two tokens: the metric is logit(ANSWER) - logit(WRONG) at the last position
SITES = ("resid_pre", "head_out")


def resident_bytes(field: str) -> int | None:
    """VmRSS (now) or VmHWM (peak) of this process, None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Start a fresh peak-RSS measurement: give freed heap back to the OS, then reset VmHWM to the current RSS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn):
    """(result, seconds, peak bytes above the resident set at the start, or None where it cannot be measured)."""
    measurable = reset_peak()
    before = resident_bytes("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = resident_bytes("VmHWM")
    return result, seconds, (peak - before) if measurable and peak and before else None


def load_batch(model_spec: str, n_prompts: int, n_tokens: int, seed: int):
    """(model, clean tokens, corrupt tokens, metric), warmed up: first calls pay for lazy initialisation."""
    model = load_model(model_spec, device="cpu")
    generator = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, model.cfg.d_vocab, (n_prompts, n_tokens), generator=generator)
    corrupt = torch.randint(0, model.cfg.d_vocab, (n_prompts, n_tokens), generator=generator)
    metric = logit_diff_metric(ANSWER, WRONG)
    with torch.inference_mode():
        model(clean[:1, :2])
        activation_patch(model, clean[:1, :2], corrupt[:1, :2], metric, "resid_pre")
    return model, clean, corrupt, metric


def peak_memory(model_spec: str, n_prompts: int, n_tokens: int, seed: int) -> dict:
    """Peak resident-set rise of one run_with_cache and of interp's sweeps (run in the fresh child process)."""
    model, clean, corrupt, metric = load_batch(model_spec, n_prompts, n_tokens, seed)

    def cached_run():
        with torch.inference_mode():
            return model.run_with_cache(clean)[1]

    cache, _, cache_peak = measure(cached_run)
    # Bridge hooks alias one another (blocks.0.hook_in is blocks.0.hook_resid_pre): count each storage once.
    cache_bytes = sum(
        {tensor.untyped_storage().data_ptr(): tensor.untyped_storage().nbytes() for tensor in cache.values()}.values()
    )
    del cache
    report = {"run_with_cache": {"peak_bytes": cache_peak, "cache_bytes": cache_bytes}}
    for site in SITES:
        report[site] = {
            "interp": measure(lambda: activation_patch(model, clean, corrupt, metric, site))[2],
            "attribution": measure(lambda: attribution_patch(model, clean, corrupt, metric, site))[2],
        }
    return report


def peak_memory_in_fresh_process(model_spec: str, n_prompts: int, n_tokens: int, seed: int) -> dict | None:
    """peak_memory() in a child process whose allocator serves every block above 64 KiB by mmap (glibc's default
    threshold grows with the largest block freed, after which freed tensors stay resident). None on failure."""
    import json
    import os
    import subprocess

    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    command = [
        sys.executable,
        __file__,
        "--model",
        model_spec,
        "--prompts",
        str(n_prompts),
        "--tokens",
        str(n_tokens),
        "--seed",
        str(seed),
        "--threads",
        str(torch.get_num_threads()),
        "--peak-memory-json",
    ]
    child = subprocess.run(command, env=environment, capture_output=True, text=True)
    if child.returncode != 0:
        return None
    return json.loads(child.stdout.strip().splitlines()[-1])


def run_benchmark(
    model_spec: str = "random:gpt2", quiet: bool = False, n_prompts: int = 8, n_tokens: int = 16, seed: int = 0
) -> dict:
    """Run the comparison; print a report ending with the summary line unless quiet; return every number."""
    import transformer_lens.patching as tl_patching

    say = (lambda *args: None) if quiet else (lambda *args: print(*args, flush=True))
    model, clean, corrupt, metric = load_batch(model_spec, n_prompts, n_tokens, seed)

    def full_logit_diff(logits):  # what TransformerLens takes: a function of the full logits
        return (logits[:, -1, ANSWER] - logits[:, -1, WRONG]).mean()

    def transformer_lens(helper):
        with torch.inference_mode():
            return helper(model, corrupt, model.run_with_cache(clean)[1], full_logit_diff)

    say(
        f"{model_spec}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, d_model {model.cfg.d_model}; "
        f"{n_prompts} prompts x {n_tokens} tokens; {torch.get_num_threads()} threads"
    )
    helpers = dict(zip(SITES, (tl_patching.get_act_patch_resid_pre, tl_patching.get_act_patch_attn_head_out_all_pos)))
    report = {
        "model": model_spec,
        "prompts": n_prompts,
        "tokens": n_tokens,
        "threads": torch.get_num_threads(),
        "sites": {},
    }
    for site, helper in helpers.items():
        say(f"{site}: TransformerLens ...")
        reference, tl_seconds, _ = measure(lambda: transformer_lens(helper))
        say(f"{site}: interp exact ...")
        exact, exact_seconds, _ = measure(lambda: activation_patch(model, clean, corrupt, metric, site))
        say(f"{site}: interp attribution ...")
        estimate, attribution_seconds, _ = measure(lambda: attribution_patch(model, clean, corrupt, metric, site))
        report["sites"][site] = {
            "transformer_lens_seconds": tl_seconds,
            "interp_seconds": exact_seconds,
            "attribution_seconds": attribution_seconds,
            "speedup": tl_seconds / exact_seconds,
            "max_abs_diff": float((exact - reference).abs().max()),
            "attribution_agreement": agreement(exact, estimate),
        }
    say("peak memory (fresh process) ...")
    report["peak_memory"] = peak_memory_in_fresh_process(model_spec, n_prompts, n_tokens, seed)

    resid, heads = report["sites"]["resid_pre"], report["sites"]["head_out"]
    report["attribution_vs_exact"] = (resid["interp_seconds"] + heads["interp_seconds"]) / (
        resid["attribution_seconds"] + heads["attribution_seconds"]
    )
    report["max_abs_diff"] = max(resid["max_abs_diff"], heads["max_abs_diff"])
    report["summary"] = (
        f"speedup resid_pre={resid['speedup']:.1f}x head_out={heads['speedup']:.1f}x "
        f"attribution_vs_exact={report['attribution_vs_exact']:.1f}x "
        f"max_abs_diff={report['max_abs_diff']:.1e}"
    )

    def mib(n):
        return "n/a" if n is None else f"{n / 2**20:.0f} MiB"

    memory = report["peak_memory"]
    cache_peak = memory and memory["run_with_cache"]["peak_bytes"]
    if memory:
        say(
            f"run_with_cache: peak +{mib(cache_peak)} (the cache itself {mib(memory['run_with_cache']['cache_bytes'])})"
        )
    for site, row in report["sites"].items():
        fit = row["attribution_agreement"]
        say(
            f"{site}: TransformerLens {row['transformer_lens_seconds']:.2f} s, interp {row['interp_seconds']:.2f} s "
            f"({row['speedup']:.1f}x), attribution {row['attribution_seconds']:.2f} s; attribution vs exact: "
            f"pearson {fit['pearson']:.3f}, max |diff| {fit['max_abs_diff']:.3g}"
        )
        if memory and memory[site]["interp"] is not None and cache_peak:
            say(
                f"{site}: peak memory: interp +{mib(memory[site]['interp'])} "
                f"({memory[site]['interp'] / cache_peak:.2f}x run_with_cache), attribution "
                f"+{mib(memory[site]['attribution'])}"
            )
    say(report["summary"])
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2", help="model spec (default: random:gpt2)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--peak-memory-json", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_memory_json:
        import json

        print(json.dumps(peak_memory(args.model, args.prompts, args.tokens, args.seed)))
        return
    run_benchmark(args.model, n_prompts=args.prompts, n_tokens=args.tokens, seed=args.seed)


if __name__ == "__main__":
    main()
