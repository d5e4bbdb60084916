"""Whether a cluster launcher config can run a training config: the head takes no training worker, some
worker type holds one, the worker types together hold them all, and every custom resource a worker type
advertises is one the training config asks for (otherwise the type is never used, or is meant for a
job the config does not describe)."""

from __future__ import annotations

import math
from typing import Any

from recfound.config import RAY_BUILTIN_RESOURCES
from recfound.train.placement import worker_resources


def _describe(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{key}: {amount:g}" for key, amount in resources.items()) + "}"


def _workers_per_node(advertised: dict[str, float], per_worker: dict[str, float]) -> int:
    return min(math.floor(advertised.get(key, 0.0) / amount + 1e-9) for key, amount in per_worker.items())


def check_fit(cluster: dict[str, Any], config: Any) -> list[str]:
    """The reasons the launcher config `cluster` (prepared: `load_launcher_config`) cannot run the training
    config `config` (a RunConfig), one line each naming the key; empty when it can. A node type's
    resources count as declared: AWS can fill in an empty `resources` from the instance type, but only
    when `ray up` launches, so the shipped configs declare them."""
    types, head = cluster["available_node_types"], cluster["head_node_type"]
    per_worker = worker_resources(config.train)
    problems = []
    head_resources = types[head].get("resources", {})
    if head_resources.get("GPU") != 0:
        problems.append(f"available_node_types.{head}.resources: the head must advertise GPU: 0 (it runs the job "
                        "drivers, the scheduler actor and the MLflow server; no training worker may land on it)")
    elif _workers_per_node(head_resources, per_worker):  # e.g. a CPU-only job: Ray would place workers there
        problems.append(f"available_node_types.{head}.resources: the head {_describe(head_resources)} holds a training "
                        f"worker {_describe(per_worker)}: ask each worker for a GPU (train.use_gpu) or for a resource "
                        "only the worker types advertise (train.worker_resource)")
    per_node = {name: _workers_per_node(node_type.get("resources", {}), per_worker)
                for name, node_type in types.items() if name != head}
    for name in per_node:
        for key in types[name].get("resources", {}):
            if key not in RAY_BUILTIN_RESOURCES and key not in per_worker:
                problems.append(f"available_node_types.{name}.resources.{key}: advertised, but the training config "
                                f"does not ask for it (train.worker_resource is {config.train.worker_resource!r})")
    if not any(per_node.values()):
        unadvertised = [key for key in per_worker if key not in RAY_BUILTIN_RESOURCES
                        and not any(key in types[name].get("resources", {}) for name in per_node)]
        why = (f"no worker type advertises {', '.join(unadvertised)}, which train.worker_resource asks for"
               if unadvertised else "declare each type's resources")
        problems.append(f"available_node_types.{'|'.join(per_node) or '<worker types>'}.resources: no worker type "
                        f"holds one training worker {_describe(per_worker)} ({why})")
        return problems
    # Each type up to its own max_workers nodes, and all types together up to the global max_workers.
    capacity = min(sum(count * types[name].get("max_workers", cluster["max_workers"]) for name, count in per_node.items()),
                   cluster["max_workers"] * max(per_node.values()))
    if capacity < config.train.min_workers:
        problems.append(f"max_workers: the worker types hold at most {capacity} training worker(s) of "
                        f"{_describe(per_worker)}, the job asks for {config.train.describe_workers()}")
    return problems
