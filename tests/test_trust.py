"""Trust: same command, same bytes; a crash leaves no hook and no half-written file behind."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from interp.ablation import ablated, heads, mlps
from interp.cache import run_with_selective_cache
from interp.circuits.ioi import run as run_ioi
from interp.errors import InterpError
from interp.models import load_model
from interp.results import write_json
from interp.views import attention_view

PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_ioi_twice_gives_identical_results(tmp_path):
    model = load_model("organism", device="cpu")
    run_ioi(model, tmp_path / "a", n=12, seed=3, quiet=True)
    run_ioi(model, tmp_path / "b", n=12, seed=3, quiet=True)
    first, second = (tmp_path / "a" / "results.json").read_bytes(), (tmp_path / "b" / "results.json").read_bytes()
    assert first == second
    data = json.loads(first)
    for key in (
        "model",
        "checkpoint_sha256",
        "versions",
        "seed",
        "git_commit",
        "device",
        "dtype",
        "torch_threads",
        "command",
    ):
        assert key in data, key
    assert "seconds" not in first.decode() and (tmp_path / "a" / "timing.json").exists()


def no_hooks_left(model) -> bool:
    return all(not hook._forward_hooks and not hook._backward_hooks for hook in model.hook_dict.values())


FAILURES = [
    KeyboardInterrupt(),
    torch.OutOfMemoryError("CUDA out of memory (injected)"),
    ValueError("a bad metric (injected)"),
]


@pytest.mark.parametrize("error", FAILURES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("operation", ["cache", "ablation", "view"])
def test_hooks_removed_whatever_escapes(tiny_model, monkeypatch, error, operation):
    """The MLPs raise `error` while a hooked run is in flight."""
    tokens = tiny_model.to_tokens(PROMPT)
    clean = tiny_model(tokens)

    def fail(*args, **kwargs):
        raise error

    with monkeypatch.context() as patch, pytest.raises(type(error)):
        patch.setattr(type(tiny_model.blocks[1].mlp), "forward", fail)
        if operation == "cache":
            run_with_selective_cache(tiny_model, tokens, ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"])
        elif operation == "ablation":
            with ablated(tiny_model, heads([(0, 1)]) + mlps([0])):
                tiny_model(tokens)
        else:
            attention_view(tiny_model, PROMPT, [(0, 0), (1, 1)])
    assert no_hooks_left(tiny_model)
    assert torch.equal(tiny_model(tokens), clean)


WRITER = """
import sys
from interp.results import write_json
data = {"rows": [[i * 0.5] * 200 for i in range(20000)]}
print("ready", flush=True)
while True:
    write_json(sys.argv[1], data)
"""


def test_killed_writer_leaves_a_complete_file_or_none(tmp_path):
    target = tmp_path / "results.json"
    for delay in (0.3, 0.9, 1.7):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if target.exists():
            assert len(json.loads(target.read_text())["rows"]) == 20000


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"value": 1.0})
    with pytest.raises(InterpError, match="a result is nan"):
        write_json(target, {"value": float("nan")})
    assert json.loads(target.read_text()) == {"value": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_unwritable_output_directory(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(InterpError, match="cannot write to"):
        write_json(blocked / "results.json", {"value": 1.0})


def test_git_commit_is_dirty_only_when_code_changed(tmp_path):
    from interp.results import git_commit

    git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    (tmp_path / "interp").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "interp" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "results.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git("rev-parse", "HEAD").stdout.decode().strip()
    (tmp_path / "results" / "results.json").write_text('{"rerun": true}\n')  # an earlier run's output
    assert git_commit(tmp_path) == head
    (tmp_path / "interp" / "code.py").write_text("x = 2\n")
    assert git_commit.__wrapped__(tmp_path) == head + "-dirty"
