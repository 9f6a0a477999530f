"""Sweeps shared out to Ray workers give the single-process results (to 1e-5), on the organism and on
random:gpt2; a worker killed mid-run fails the run in one line and leaves no results file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from interp.models import load_model
from interp.workers import ModelRecipe, RayWorkers, Workers, fill_in, interleave

ray = pytest.importorskip("ray", reason="the Ray tests need interp[ray]")

PROVENANCE = {"workers", "ray_address", "worker_devices", "command", "torch_threads"}
IOI_PROMPTS = (
    "When Mary and John went to the store, John gave a drink to",
    "When Mary and John went to the store, Anna gave a drink to",
)


def assert_same(single, shared, where="results"):
    """Equal structure, equal values to 1e-5 (relative above 1: the results file keeps 6 significant digits)."""
    if isinstance(single, dict):
        assert set(single) == set(shared), where
        for key in set(single) - PROVENANCE:
            assert_same(single[key], shared[key], f"{where}.{key}")
    elif isinstance(single, (list, tuple)):
        assert len(single) == len(shared), where
        for i, (a, b) in enumerate(zip(single, shared)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(single, float):
        assert abs(single - shared) <= 1e-5 * max(1.0, abs(single)), (where, single, shared)
    else:
        assert single == shared, where


def test_shards_interleave_and_fill_in():
    assert interleave(range(7), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert interleave(range(2), 4) == [[0], [1]]
    nan = float("nan")
    merged = fill_in([torch.tensor([1.0, nan, nan]), torch.tensor([nan, 2.0, nan])])
    assert merged[:2].tolist() == [1.0, 2.0] and merged[2].isnan()


@pytest.fixture(scope="module")
def organism():
    return load_model("organism", device="cpu")


def test_one_worker_is_the_driver_itself(organism):
    workers = Workers(organism)
    assert workers.map(lambda model, shard: (model, shard), [1, 2, 3]) == [(organism, [1, 2, 3])]
    assert workers.map_items(lambda model, shard: [x * 10 for x in shard], [1, 2, 3]) == [10, 20, 30]
    assert workers.describe() == {"workers": 1, "ray_address": None, "worker_devices": ["cpu"]}


@pytest.fixture(scope="module")
def cluster():
    # two models of two workers each: one CPU of the cluster per worker
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def organism_workers(cluster):
    with RayWorkers(ModelRecipe("organism", "cpu", "float32"), 2, quiet=True) as workers:
        yield workers


def test_shared_map_keeps_item_order(organism_workers):
    assert organism_workers.map_items(lambda model, shard: [model.cfg.n_layers * x for x in shard], range(5)) == [
        4 * x for x in range(5)
    ]
    assert organism_workers.describe() == {"workers": 2, "ray_address": "local", "worker_devices": ["cpu", "cpu"]}


def test_a_failure_in_a_worker_is_one_line(organism_workers):
    from interp.errors import InterpError
    from interp.patching import path_patch

    def bad_receivers(model, shard):
        return path_patch(
            model,
            torch.zeros(1, 3, dtype=torch.long),
            torch.zeros(1, 3, dtype=torch.long),
            lambda logits: logits.sum(),
            [(99, 0, "q")],
        )

    with pytest.raises(InterpError, match="receiver"):
        organism_workers.map(bad_receivers, [0, 1])


def test_a_worker_that_cannot_load_the_model_says_why(cluster, tmp_path):
    from interp.errors import InterpError

    with pytest.raises(InterpError, match=f"a Ray worker could not load the model: {tmp_path / 'none'} is not a "):
        RayWorkers(ModelRecipe(str(tmp_path / "none"), "cpu", "float32"), 1, quiet=True)


@pytest.mark.slow
def test_ioi_on_ray_equals_one_process(organism, organism_workers, tmp_path):
    from interp.circuits import ioi

    protocol = ioi.Protocol(names="organism", random_knockouts=3, greedy_steps=2, greedy_candidates=3)
    single = ioi.run(organism, tmp_path / "single", n=24, quiet=True, protocol=protocol)
    shared = ioi.run(organism, tmp_path / "shared", n=24, quiet=True, protocol=protocol, workers=organism_workers)
    assert single["heads"]["name_mover"] and single["forward_passes"] == shared["forward_passes"]
    assert_same(single, shared)
    assert json.loads((tmp_path / "shared" / "results.json").read_text())["workers"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("method", ["eap-ig", "exact"])
def test_discover_on_ray_equals_one_process(organism, organism_workers, tmp_path, method):
    from interp.circuits import discover
    from interp.circuits.ioi import Protocol

    protocol = Protocol(names="organism")
    single = discover.run(organism, tmp_path / "single", method=method, n=8, quiet=True, protocol=protocol)
    shared = discover.run(
        organism, tmp_path / "shared", method=method, n=8, quiet=True, protocol=protocol, workers=organism_workers
    )
    assert_same(single, shared)


@pytest.mark.slow
def test_capitals_on_ray_equals_one_process(organism, organism_workers, tmp_path):
    from interp.circuits import capitals

    options = dict(quiet=True, n_prompts=40, n_texts=5, ablation_ks=[0, 1, 2, 4])
    single = capitals.run(organism, tmp_path / "single", **options)
    shared = capitals.run(organism, tmp_path / "shared", workers=organism_workers, **options)
    assert_same(single, shared)


@pytest.mark.slow
def test_random_gpt2_on_ray_equals_one_process(cluster):
    """GPT-2 small's shape: activation patching of every head, and path patching from every sender."""
    from interp.circuits.ioi import Protocol, discover
    from interp.patching import patch_grid_for_cli

    model = load_model("random:gpt2", device="cpu")
    clean, corrupt = Protocol().datasets(model, 6, 0)
    with RayWorkers(ModelRecipe("random:gpt2", "cpu", "float32"), 2, quiet=True) as workers:
        arguments = (model, *IOI_PROMPTS, " Mary", " John", "head_out")
        assert_same(patch_grid_for_cli(*arguments), patch_grid_for_cli(*arguments, workers=workers))
        single = discover(model, clean, corrupt, quiet=True)
        shared = discover(model, clean, corrupt, quiet=True, workers=workers)
    assert_same(
        {name: grid.tolist() for name, grid in single["grids"].items()},
        {name: grid.tolist() for name, grid in shared["grids"].items()},
    )
    assert not single["grids"]["direct_effect"].isnan().any()


def interp_command(*argv):
    return [str(Path(sys.executable).parent / "interp"), *argv]


@pytest.mark.slow
def test_patch_command_joins_a_running_cluster(cluster):
    """`--ray-address`: the command joins the cluster this test process runs, with two workers of its own."""
    address = ray.get_runtime_context().gcs_address
    argv = [
        "patch",
        "--model",
        "organism",
        "--clean",
        IOI_PROMPTS[0],
        "--corrupt",
        IOI_PROMPTS[1],
        "--answer",
        " Mary",
        "--wrong",
        " John",
        "--json",
        "--device",
        "cpu",
    ]
    single = json.loads(subprocess.run(interp_command(*argv), capture_output=True, text=True, check=True).stdout)
    shared = json.loads(
        subprocess.run(
            interp_command(*argv, "--ray-address", address, "--workers", "2"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert (single["workers"], shared["workers"], shared["ray_address"]) == (1, 2, address)
    assert_same(single, shared)


def model_workers(root: int) -> list[int]:
    """The Ray actors holding a model among the descendants of process `root` (its local cluster's)."""
    listing = [
        line.split(maxsplit=2)
        for line in subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()[
            1:
        ]
    ]
    children: dict[int, list[int]] = {}
    for pid, ppid, *_ in listing:
        children.setdefault(int(ppid), []).append(int(pid))
    descendants, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            descendants.add(child)
            todo.append(child)
    # an actor's process title is ray::ModelWorker, ray::ModelWorker.run while it runs a shard
    return [
        int(pid)
        for pid, _, *args in listing
        if int(pid) in descendants and args and args[0].split(".")[0] == "ray::ModelWorker"
    ]


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_and_writes_nothing(tmp_path):
    out = tmp_path / "ioi"
    run = subprocess.Popen(
        interp_command(
            "ioi",
            "--model",
            "organism",
            "--names",
            "organism",
            "--n",
            "100",
            "--workers",
            "2",
            "--out",
            str(out),
            "--quiet",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while len(model_workers(run.pid)) < 2 and run.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert len(model_workers(run.pid)) == 2, "the Ray workers never started"
    time.sleep(3)  # loading or sweeping: either way the run needs both
    os.kill(model_workers(run.pid)[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith("interp: error: a Ray worker died")
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())
