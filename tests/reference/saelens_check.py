"""interp's reading of SAE Lens folders checked against SAE Lens's own classes (sae-lens 6.54.12), which cannot be
installed beside interp (it pins transformer-lens 3.x). Two steps, two environments; see README.md here.

    write OUT     (SAE Lens's env) for each case, build the SAE with SAE Lens's classes and random weights at GPT-2
                  small's width (768 -> 3072), save it with SAE Lens's `save_model` into OUT/<case>/, reload it with
                  `SAE.load_from_disk`, and save its encode(x), decode(encode(x)) and forward(x) on seeded inputs
                  x [64, 768] into OUT/<case>/reference.safetensors
    compare OUT   (interp's env) read each OUT/<case>/ with `interp.dictionaries.load_dictionary`, recompute, print
                  the largest differences relative to the reference's scale; exit 1 if any exceeds 1e-5 (or a folder
                  is not read)

interp's `decode(features, x)` includes a skip transcoder's skip connection (SAE Lens's `forward` adds it, its
`decode` does not): the "decode" column compares interp's decode with the skip removed to SAE Lens's decode, the
"forward" column interp's `dictionary(x)` to SAE Lens's forward.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

D_IN, D_SAE, N_TOKENS, SEED = 768, 3072, 64, 0
TOLERANCE = 1e-5
SAE_HOOK, TRANSCODER_HOOK, TRANSCODER_HOOK_OUT = (
    "blocks.8.hook_resid_pre",
    "blocks.8.ln2.hook_normalized",
    "blocks.8.hook_mlp_out",
)
# case -> (SAE Lens architecture, config options)
CASES = {
    "standard": ("standard", {}),
    "topk": ("topk", {"k": 32}),
    "topk_rescale_acts_by_decoder_norm": ("topk", {"k": 32, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("jumprelu", {}),
    "gated": ("gated", {}),
    "transcoder": ("transcoder", {}),
    "skip_transcoder": ("skip_transcoder", {}),
    "jumprelu_transcoder": ("jumprelu_transcoder", {}),
    "jumprelu_skip_transcoder": ("jumprelu_skip_transcoder", {}),
    "standard_layer_norm": ("standard", {"normalize_activations": "layer_norm"}),
    "topk_layer_norm": ("topk", {"k": 32, "normalize_activations": "layer_norm"}),  # OpenAI's v5 gpt2 SAEs
    "standard_constant_norm_rescale": ("standard", {"normalize_activations": "constant_norm_rescale"}),
    "transcoder_layer_norm": ("transcoder", {"normalize_activations": "layer_norm"}),
}


def gpt2_like_inputs(seed: int = SEED) -> torch.Tensor:
    """[64, 768]: a shared offset plus noise, per-token norms 15..45 (GPT-2 small's residual stream's order)."""
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(N_TOKENS, D_IN, generator=gen) + 0.5 * torch.randn(D_IN, generator=gen)
    return x / x.norm(dim=-1, keepdim=True) * (15 + 30 * torch.rand(N_TOKENS, 1, generator=gen))


def write(out: Path) -> None:
    import sae_lens
    from sae_lens import SAE
    from sae_lens.saes import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        SkipTranscoder,
        SkipTranscoderConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
        Transcoder,
        TranscoderConfig,
    )
    from sae_lens.saes.sae import SAEMetadata
    from safetensors.torch import save_file

    classes = {
        "standard": (StandardSAE, StandardSAEConfig),
        "topk": (TopKSAE, TopKSAEConfig),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
        "gated": (GatedSAE, GatedSAEConfig),
        "transcoder": (Transcoder, TranscoderConfig),
        "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig),
        "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig),
        "jumprelu_skip_transcoder": (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig),
    }
    x = gpt2_like_inputs()
    for index, (case, (architecture, options)) in enumerate(CASES.items()):
        sae_class, config_class = classes[architecture]
        transcoder = architecture.endswith("transcoder")
        if transcoder:
            metadata = SAEMetadata(
                model_name="gpt2-small",
                hook_name=TRANSCODER_HOOK,
                hook_name_out=TRANSCODER_HOOK_OUT,
                hook_head_index=None,
            )
            cfg = config_class(
                d_in=D_IN, d_sae=D_SAE, d_out=D_IN, apply_b_dec_to_input=False, metadata=metadata, **options
            )
        else:
            metadata = SAEMetadata(model_name="gpt2-small", hook_name=SAE_HOOK, hook_head_index=None)
            cfg = config_class(d_in=D_IN, d_sae=D_SAE, metadata=metadata, **options)
        sae = sae_class(cfg)
        randomise(sae, seed=SEED + 100 + index)
        folder = out / case
        sae.save_model(folder)
        loaded = SAE.load_from_disk(folder)  # what SAE Lens reads back from the folder is the reference
        assert type(loaded) is sae_class, (type(loaded), sae_class)
        with torch.no_grad():
            features = loaded.encode(x)
            decoded = loaded.decode(features)
            forward = loaded(x)
            torch.testing.assert_close(sae.encode(x), features)
        save_file(
            {"x": x, "encode": features, "decode": decoded, "forward": forward},
            folder / "reference.safetensors",
            metadata={"sae_lens": sae_lens.__version__, "torch": torch.__version__, "architecture": architecture},
        )
        l0 = (features != 0).sum(-1).float().mean().item()
        print(f"wrote {folder} ({type(loaded).__name__}, L0 {l0:.1f})")


def randomise(sae, seed: int) -> None:
    """Every parameter drawn (no zero biases, non-unit decoder rows, positive thresholds) so that about 5% of the
    3072 features fire on an input of norm ~30."""
    gen = torch.Generator().manual_seed(seed)
    draws = {
        "W_enc": lambda s: torch.randn(*s, generator=gen) / D_IN**0.5,
        "b_enc": lambda s: torch.randn(*s, generator=gen) * 0.3 - 1.6,
        "W_dec": lambda s: torch.randn(*s, generator=gen) / s[-1] ** 0.5 * (0.5 + torch.rand(s[0], 1, generator=gen)),
        "b_dec": lambda s: torch.randn(*s, generator=gen) * 0.3,
        "threshold": lambda s: torch.rand(*s, generator=gen),
        "b_gate": lambda s: torch.randn(*s, generator=gen) * 0.3 - 1.6,
        "b_mag": lambda s: torch.randn(*s, generator=gen) * 0.3,
        "r_mag": lambda s: torch.randn(*s, generator=gen) * 0.2,
        "W_skip": lambda s: torch.randn(*s, generator=gen) * 0.5 / D_IN**0.5,
    }
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(draws[name](tuple(param.shape)))


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp(min=1e-12)).item()


def compare(out: Path) -> int:
    import dataclasses

    from safetensors import safe_open
    from safetensors.torch import load_file

    from interp.dictionaries import load_dictionary
    from interp.errors import InterpError

    folders = sorted(p.parent for p in out.glob("*/reference.safetensors"))
    if not folders:
        print(f"no */reference.safetensors under {out}: run `write` first")
        return 1
    columns = f"{'encode':>9} {'decode':>9} {'forward':>9} {'L0':>6} {'L0 diff':>7}"
    header = f"{'case':34} {'interp reads':33} {columns}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for folder in folders:
        reference = load_file(folder / "reference.safetensors")
        with safe_open(folder / "reference.safetensors", "pt") as f:
            versions = f.metadata()
        x = reference["x"]
        try:
            dictionary = load_dictionary(folder)
        except InterpError as error:
            print(f"{folder.name:34} ERROR: {error}")
            failures += 1
            continue
        with torch.no_grad():
            features = dictionary.encode(x)
            no_skip = dataclasses.replace(dictionary, W_skip=None)
            errors = {
                "encode": relative(features, reference["encode"]),
                "decode": relative(no_skip.decode(reference["encode"], x), reference["decode"]),
                "forward": relative(dictionary(x), reference["forward"]),
            }
        l0 = (reference["encode"] != 0).sum(-1).float().mean().item()
        pattern = ((features != 0) != (reference["encode"] != 0)).sum().item()
        reads = f"{dictionary.architecture}{' transcoder' if dictionary.is_transcoder else ''}"
        if dictionary.W_skip is not None:
            reads += "+skip"
        if dictionary.normalize_activations != "none":
            reads += f" ({dictionary.normalize_activations})"
        ok = max(errors.values()) <= TOLERANCE and pattern == 0
        failures += not ok
        print(
            f"{folder.name:34} {reads:33} {errors['encode']:9.1e} {errors['decode']:9.1e} {errors['forward']:9.1e}"
            f" {l0:6.1f} {pattern:7d}  {'ok' if ok else 'FAIL'}"
        )
    made_by = f"sae_lens {versions.get('sae_lens')}, torch {versions.get('torch')}"
    print(f"\nreference: {made_by}; relative tolerance {TOLERANCE}")
    print(f"{len(folders) - failures} of {len(folders)} cases agree" + ("" if not failures else f", {failures} FAIL"))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["write", "compare"])
    parser.add_argument("out", type=Path, help="folder of the cases (written by `write`, read by `compare`)")
    args = parser.parse_args(argv)
    if args.step == "write":
        args.out.mkdir(parents=True, exist_ok=True)
        write(args.out)
        (args.out / "cases.json").write_text(json.dumps(CASES, indent=1))
        return 0
    return compare(args.out)


if __name__ == "__main__":
    sys.exit(main())
