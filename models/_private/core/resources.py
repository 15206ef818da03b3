"""What a Ray actor or Serve replica asks the scheduler for, written once for every layer."""

from __future__ import annotations

from typing import Any

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, field_validator, model_validator

from models._private.core.config import ConfigModel

__all__ = ["ResourcesConfig", "scheduler_demand"]


class ResourcesConfig(ConfigModel):
    """What one Ray actor (an agent host, a model replica) asks the scheduler for."""

    num_cpus: NonNegativeFloat | None = Field(
        None, description="Logical CPUs reserved per actor; None keeps Ray's actor default (0 while running)."
    )
    num_gpus: NonNegativeFloat = Field(
        0.0, description="GPUs per actor; a fraction below 1 lets actors share a GPU, above 1 must be whole."
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type the node must have, e.g. 'A100' or 'L4'."
    )
    memory_mb: PositiveInt | None = Field(
        None, description="Heap memory reserved per actor, in MiB (Ray's `memory` resource)."
    )
    custom: dict[str, PositiveFloat] = Field(
        default_factory=dict, description="Custom Ray resources per actor, e.g. {'edge': 1}."
    )

    @field_validator("num_gpus")
    @classmethod
    def _whole_above_one(cls, v: float) -> float:
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"num_gpus above 1 must be a whole number, got {v}")
        return v

    @model_validator(mode="after")
    def _accelerator_needs_gpu(self) -> ResourcesConfig:
        if self.accelerator_type and self.num_gpus == 0:
            raise ValueError(
                f"accelerator_type ({self.accelerator_type!r}) needs num_gpus > 0 (num_gpus is 0)"
            )
        return self

    def ray_options(self) -> dict[str, Any]:
        """The keyword arguments for `ActorClass.options(...)` (and Serve's `ray_actor_options`)."""
        opts: dict[str, Any] = {}
        if self.num_cpus is not None:
            opts["num_cpus"] = self.num_cpus
        if self.num_gpus:
            opts["num_gpus"] = self.num_gpus
        if self.accelerator_type:
            opts["accelerator_type"] = self.accelerator_type
        if self.memory_mb:
            opts["memory"] = self.memory_mb * 2**20
        if self.custom:
            opts["resources"] = dict(self.custom)
        return opts


def scheduler_demand(opts: dict[str, Any]) -> dict[str, float]:
    """The resources Ray's scheduler needs free on one node for an actor with options `opts`."""
    # With no resources named, Ray places an actor on a node with a CPU; with some, on those.
    named = any(opts.get(k) for k in ("num_gpus", "memory", "resources"))
    demand = {"CPU": opts.get("num_cpus", 0.0 if named else 1.0)}
    if opts.get("num_gpus"):
        demand["GPU"] = opts["num_gpus"]
    if opts.get("accelerator_type"):
        demand[f"accelerator_type:{opts['accelerator_type']}"] = 0.001
    if opts.get("memory"):
        demand["memory"] = opts["memory"]
    demand.update(opts.get("resources", {}))
    return {k: v for k, v in demand.items() if v}
