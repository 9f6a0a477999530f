"""Where the shards of a sweep run: in this process, or on Ray workers that each hold a replica of the model.

An experiment says *what* to compute on a shard, `fn(model, shard)`, a plain function of a model and a list of
work items (senders, cells, node sets, prompt batches, circuits); a `Workers` says *where*. `Workers(model)` runs
the whole list as one shard on the driver's own model, which is exactly the single-process computation;
`RayWorkers` splits it into one interleaved shard per worker (so that cheap and costly items are spread evenly)
and runs each on a Ray actor that loaded the same model spec once. The driver reduces. Each shard computes its
items as the single process would (same seeds, same batches), so the numbers agree up to the order of float sums.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor
from tqdm import tqdm

from interp.errors import InterpError

Item = TypeVar("Item")
Result = TypeVar("Result")


def interleave(items: Sequence[Item], count: int) -> list[list[Item]]:
    """`count` shards (fewer when there are fewer items), item i in shard i % count."""
    items = list(items)
    return [items[k::count] for k in range(min(count, len(items)))]


def fill_in(grids: Sequence[Tensor]) -> Tensor:
    """One grid from shards' grids that are NaN outside their own entries."""
    merged = grids[0].clone()
    for grid in grids[1:]:
        merged = torch.where(merged.isnan(), grid.to(merged.device), merged)
    return merged


class Workers:
    """One worker: the driver itself, on its own model."""

    count = 1

    def __init__(self, model):
        self.model = model

    def map(
        self, fn: Callable[[object, list[Item]], Result], items: Sequence[Item], what: str = "a sweep"
    ) -> list[Result]:
        """fn(model, shard) for each shard of `items`, in shard order; `what` names the work in progress bars."""
        return [fn(self.model, list(items))] if items else []

    def map_items(
        self, fn: Callable[[object, list[Item]], list[Result]], items: Sequence[Item], what: str = "a sweep"
    ) -> list[Result]:
        """`map` for functions that give one result per item of their shard: the results in the items' order."""
        items, results = list(items), [None] * len(items)
        for k, part in enumerate(self.map(fn, items, what)):
            results[k :: self.count] = part  # shard k holds items k, k + count, ... (`interleave`)
        return results

    def describe(self) -> dict:
        """For the results file."""
        return {"workers": 1, "ray_address": None, "worker_devices": [str(self.model.cfg.device)]}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class ModelRecipe:
    """What a worker loads: the driver's model spec, device (None: the worker's own default) and dtype."""

    spec: str
    device: str | None
    dtype: str
    seed: int = 0


class ModelWorker:
    """A Ray actor's state: one model, loaded once."""

    def __init__(self, recipe: ModelRecipe, threads: int):
        from interp.models import load_model

        torch.set_num_threads(threads)
        self.model = load_model(recipe.spec, device=recipe.device, dtype=recipe.dtype, seed=recipe.seed)

    def ready(self) -> str:
        return str(self.model.cfg.device)

    def run(self, fn, shard):
        return fn(self.model, shard)


class RayWorkers(Workers):
    """`count` Ray actors, each with its own replica of the model. `address` None starts a local cluster of
    `count` one-CPU workers; otherwise joins the running cluster there (one GPU per worker when it has GPUs)."""

    def __init__(self, recipe: ModelRecipe, count: int | None, address: str | None = None, quiet: bool = False):
        try:
            import ray
        except ImportError:
            raise InterpError("--workers and --ray-address need Ray: pip install 'interp[ray]'") from None
        self.ray, self.address, self.quiet = ray, address, quiet
        if count is not None and count < 1:
            raise InterpError(f"--workers must be at least 1, not {count}")
        self.owns_ray = not ray.is_initialized()  # else use the session this process has (notebooks, tests)
        if self.owns_ray:
            start_ray(ray, address, count)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if count is None:
            if not gpus:
                self.close()
                raise InterpError(f"the Ray cluster at {address} has no GPUs: give --workers N")
            count = gpus
        self.count = count
        per_worker = {"num_gpus": 1} if gpus and recipe.device != "cpu" else {"num_cpus": 1}
        if "num_gpus" in per_worker and count > gpus:
            self.close()
            raise InterpError(
                f"{count} workers with one GPU each, but the Ray cluster has {gpus} GPUs: ask for at "
                f"most {gpus}, or --device cpu"
            )
        threads = max(1, int(resources.get("CPU", count)) // count)
        actor = ray.remote(max_restarts=0, **per_worker)(ModelWorker)
        self.actors = [actor.remote(recipe, threads) for _ in range(count)]
        try:
            self.devices = self.collect([a.ready.remote() for a in self.actors], "loading the model")
        except InterpError:
            self.close()
            raise

    def collect(self, refs: list, what: str) -> list:
        """ray.get, with a progress bar over shards, and a dead worker or a failure turned into one line (the
        caller's `with` then stops the workers)."""
        ray = self.ray
        done = {}
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"{what} on {self.count} Ray workers", disable=self.quiet) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                try:
                    done[ready[0]] = ray.get(ready[0])
                except ray.exceptions.RayTaskError as error:
                    cause = error.cause if hasattr(error, "cause") else None
                    if isinstance(cause, InterpError):
                        raise InterpError(str(cause)) from None
                    raise InterpError(f"a Ray worker failed during {what}: {type(cause).__name__}: {cause}") from None
                except ray.exceptions.RayError as error:
                    if getattr(error, "actor_init_failed", False):  # its __init__ raised: loading the model
                        lines = [line for line in str(error).splitlines() if line.strip()]
                        raise InterpError(
                            f"a Ray worker could not load the model: {lines[-1].split('InterpError: ')[-1].strip()}"
                        ) from None
                    raise InterpError(
                        f"a Ray worker died during {what} ({type(error).__name__}); the run was "
                        "stopped and no results were written"
                    ) from None
                bar.update()
        return [done[ref] for ref in refs]

    def map(self, fn, items, what="a sweep"):
        shards = interleave(items, self.count)
        refs = [self.actors[k].run.remote(fn, shard) for k, shard in enumerate(shards)]
        return self.collect(refs, what)

    def describe(self) -> dict:
        return {"workers": self.count, "ray_address": self.address or "local", "worker_devices": self.devices}

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor)
        self.actors = []
        if self.owns_ray and self.ray.is_initialized():
            self.ray.shutdown()


def start_ray(ray, address: str | None, count: int | None) -> None:
    """A local cluster with this machine's cores (at least one per worker: each worker then runs cores / count
    torch threads), or a connection to the cluster at `address`; quiet: the workers' own logs stay in Ray's
    session directory."""
    try:
        if address is None:
            ray.init(
                num_cpus=max(count or 1, os.cpu_count() or 1),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise InterpError(
            f"could not start or join the Ray cluster at {address or 'a new local cluster'}: "
            f"{str(error).splitlines()[0]}"
        ) from None
