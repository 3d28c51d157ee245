"""Sharded judge runs on FiftyOne's delegated-operation workers (generic; any judge can opt in).

A judge opts in with two core functions — ``plan(view, num_shards, **params) -> plan`` (a
``grader.runs.create_plan`` document: deterministic id ranges, shared statistics) and
``run_shard(view, plan_id, index, progress=...) -> RunReport`` — and two operators: its
normal operator calls :func:`queue_shards` when ``num_shards > 1``, and a shard operator made
by :func:`make_shard_operator` runs one shard. Workers are FiftyOne's own
(``fiftyone delegated launch`` on each machine, pointed at the same MongoDB with
``FIFTYONE_DATABASE_URI`` and the plugin on ``FIFTYONE_PLUGINS_DIR``); FiftyOne moves each
queued operation QUEUED -> RUNNING atomically, and each shard also holds its own lease
(``grader.runs``), so no two workers ever run the same shard.
"""
from __future__ import annotations

from typing import Any, Callable

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone.operators.delegated import DelegatedOperationService

from ._common import operator_config, progress_callback, report_output

PLUGIN = "@label-grader/label-grader"


def add_shards_input(inputs: types.Object) -> None:
    """The ``num_shards`` field of a shardable judge's form."""
    inputs.int("num_shards", default=1, min=1, label="Shards (delegated workers)",
               description="Above 1: the run is split into this many delegated operations "
                           "(one per shard) that any number of `fiftyone delegated launch` "
                           "workers on the same database run in parallel; results equal a "
                           "single-process run")


def serialized_view(view) -> list[dict]:
    """The view's stages as the App sends them (``[]`` for a whole dataset)."""
    return view._serialize() if hasattr(view, "_dataset") and view is not view._dataset else []


def queue_shards(view, shard_operator: str, plan: dict[str, Any],
                 delegation_target: str | None = None) -> list[str]:
    """Queue one delegated operation of ``shard_operator`` per shard of ``plan``; return ids."""
    svc = DelegatedOperationService()
    uri = shard_operator if shard_operator.startswith("@") else f"{PLUGIN}/{shard_operator}"
    n = plan["num_shards"]
    ds = view._dataset
    ids = []
    for i in range(n):
        rp = {"dataset_name": ds.name, "dataset_id": str(ds._doc.id),
              "view": serialized_view(view),
              "params": {"plan_id": plan["_id"], "shard_index": i}}
        op = svc.queue_operation(operator=uri, label=f"{shard_operator} {i + 1}/{n}",
                                 delegation_target=delegation_target,
                                 context={"request_params": rp})
        ids.append(str(op.id))
    return ids


def make_shard_operator(name: str, label: str, run_shard: Callable[..., Any],
                        output: Callable[[str], types.Property] = report_output
                        ) -> type[foo.Operator]:
    """An unlisted, delegated-only operator running ``run_shard(view, plan_id, index)`` (its
    result's ``to_dict()`` is the operation's result, shown with ``output(title)``)."""

    class ShardOperator(foo.Operator):
        @property
        def config(self):
            cfg = operator_config(name, label, "One shard of a sharded run (queued by the judge)")
            cfg.unlisted = True
            cfg.allow_immediate_execution = False
            cfg.allow_delegated_execution = True
            return cfg

        def resolve_input(self, ctx):
            inputs = types.Object()
            inputs.str("plan_id", required=True, label="Plan id")
            inputs.int("shard_index", required=True, label="Shard index")
            return types.Property(inputs)

        def execute(self, ctx):
            report = run_shard(ctx.view if ctx.view is not None else ctx.dataset,
                               ctx.params["plan_id"], int(ctx.params["shard_index"]),
                               progress=progress_callback(ctx, label))
            return report.to_dict()

        def resolve_output(self, ctx):
            return output(f"{label} results")

    ShardOperator.__name__ = ShardOperator.__qualname__ = (
        "".join(p.title() for p in name.split("_")) + "Operator")
    return ShardOperator
