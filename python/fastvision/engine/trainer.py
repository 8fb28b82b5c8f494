"""The one training loop of fastvision: every model family plugs in a :class:`Task`.

The engine owns what is common: device and ``torchrun`` DDP set-up (gloo on CPU, NCCL on CUDA),
sharded shuffling, the per-step learning-rate (and other) schedules, the tqdm progress bar,
evaluation, checkpoints (``checkpoint_last.pt`` every epoch, ``model_best.pt`` on improvement),
``metrics.json``, ``curves.png`` and exact resume. A family supplies a :class:`Task`: its model,
data, optimiser, schedules, loss (``training_step``) and metrics (``evaluate``).

With ``world_size`` processes the global batch stays ``config.batch_size`` (each process takes
``batch_size / world_size``), as the official single-GPU recipes use it. After training the engine
compares the replicas' parameters and buffers across processes and records the largest difference
in ``metrics.json`` (``replica_max_abs_diff``; 0 when DDP works).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .distributed import DistContext, broadcast_object, init_distributed, shutdown_distributed
from .reporting import plot_curves, write_metrics

__all__ = ["TrainConfig", "Task", "fit", "unwrap", "load_checkpoint_model", "CHECKPOINT", "BEST_WEIGHTS"]

CHECKPOINT = "checkpoint_last.pt"
BEST_WEIGHTS = "model_best.pt"
METRICS = "metrics.json"
CURVES = "curves.png"


@dataclass
class TrainConfig:
    """What every recipe shares; a recipe's own options live on its :class:`Task`."""

    out_dir: str = "fastvision-train"
    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 64
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    resume: bool = False
    max_steps_per_epoch: int | None = None  # for smoke runs and tests
    eval_every: int = 1
    progress: bool = True


class Task:
    """A model family's part of training. Override the methods; defaults are noted."""

    name: str = "task"
    monitor: str = "val_loss"  # key of evaluate()'s result used to pick model_best.pt
    monitor_mode: str = "min"  # "min" or "max"
    find_unused_parameters: bool = False

    def model_spec(self) -> dict:
        """``{"name": registry name, "kwargs": builder kwargs}`` stored in checkpoints so that
        :func:`load_checkpoint_model` can rebuild the trained module."""
        raise NotImplementedError

    def build_model(self, device: torch.device) -> nn.Module:
        """The trainable module (the engine wraps it in DDP when distributed)."""
        raise NotImplementedError

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        """(train, validation or None)."""
        raise NotImplementedError

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def schedules(self) -> dict[str, Callable[[int], float]]:
        """Named per-step schedules ``samples_seen -> value``; ``"lr"`` sets the optimiser's
        learning rate; others reach :meth:`apply_schedules`. Default: none."""
        return {}

    def apply_schedules(self, model: nn.Module, values: dict[str, float]) -> None:
        """Apply the non-lr schedule values (BN momentum, temperature, ...). Default: nothing."""

    def training_step(self, model: nn.Module, batch, step: int) -> tuple[torch.Tensor, dict]:
        """Loss of one batch (on the engine's device) and a dict of scalars to log."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict:
        """Validation metrics (model in eval mode). Default: none."""
        return {}

    def inference_module(self, model: nn.Module) -> nn.Module:
        """The part of the trainable module that :meth:`model_spec` describes and whose weights
        are saved as ``"model"`` (what :func:`load_checkpoint_model` rebuilds). Default: all of it.
        A task that trains extra modules (e.g. distillation adapters) returns the inner model;
        the whole trainable module's weights then go to ``checkpoint_last.pt`` as
        ``"training_model"`` for resuming."""
        return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def load_checkpoint_model(path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the module a training run saved (``checkpoint_last.pt`` or ``model_best.pt``)
    and load its weights; returns ``(module in eval mode, checkpoint metadata)``."""
    from fastvision.models import get_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    from fastvision.weights import read_weights_file

    ckpt = read_weights_file(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_spec" not in ckpt:
        raise RuntimeError(f"{str(path)!r} is not a fastvision training checkpoint "
                           "(expected the keys 'model' and 'model_spec')")
    spec = ckpt["model_spec"]
    model = get_model(spec["name"], **spec.get("kwargs", {}))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"checkpoint {str(path)!r} does not match {spec['name']}: {err}") from err
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "training_model")}
    return model.to(device).eval(), meta


def _move(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_move(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def _better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def _replica_max_abs_diff(ctx: DistContext, model: nn.Module) -> float:
    """Largest |difference| of any parameter or buffer between this rank and rank 0."""
    flat = torch.cat([t.detach().float().flatten().cpu() for t in
                      list(model.parameters()) + list(model.buffers())])
    if not ctx.enabled:
        return 0.0
    reference = flat.clone().to(ctx.device)
    dist.broadcast(reference, src=0)
    diff = (flat.to(ctx.device) - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def fit(task: Task, config: TrainConfig) -> dict:
    """Train ``task`` as ``config`` says; returns the metrics record (also in ``metrics.json``)."""
    ctx = init_distributed(config.device)
    try:
        return _fit(task, config, ctx)
    finally:
        shutdown_distributed(ctx)


def _fit(task: Task, config: TrainConfig, ctx: DistContext) -> dict:
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    if config.batch_size < 1 or config.batch_size % ctx.world_size:
        raise ValueError(f"batch_size ({config.batch_size}) must be a positive multiple of the "
                         f"number of processes ({ctx.world_size})")
    if task.monitor_mode not in ("min", "max"):
        raise ValueError(f"monitor_mode must be 'min' or 'max', got {task.monitor_mode!r}")
    out = Path(config.out_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    device = ctx.device
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = task.build_model(device).to(device)
    optimizer = task.optimizer(model)
    schedules = task.schedules()

    start_epoch, step, samples, history, best = 0, 0, 0, [], None
    ckpt_path = out / CHECKPOINT
    if config.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("task") != task.name:
            raise RuntimeError(f"cannot resume: {str(ckpt_path)!r} was written by task "
                               f"{ckpt.get('task')!r}, not {task.name!r}")
        model.load_state_dict(ckpt.get("training_model", ckpt["model"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, samples = ckpt["epoch"], ckpt["step"], ckpt["samples"]
        history, best = ckpt["history"], ckpt["best"]
    elif config.resume and ctx.is_main and config.progress:
        print(f"[fastvision] no checkpoint at {ckpt_path}; starting from scratch")

    train_model = model
    if ctx.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters)

    train_set, val_set = task.datasets()
    per_rank_batch = config.batch_size // ctx.world_size
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=config.seed, drop_last=True)
    # drop_last as the official loops (num_batches = size // batch); every step sees a full batch.
    loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, drop_last=True,
                        num_workers=config.num_workers, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise ValueError(f"the training set ({len(train_set)} samples) is smaller than one batch "
                         f"({config.batch_size})")
    val_loader = None
    if val_set is not None:
        val_loader = DataLoader(val_set, batch_size=config.eval_batch_size, shuffle=False,
                                num_workers=config.num_workers)

    record: dict[str, Any] = {
        "task": task.name, "model_spec": task.model_spec(), "config": dataclasses.asdict(config),
        "world_size": ctx.world_size, "device": str(device), "history": history,
    }
    steps_per_epoch = len(loader) if config.max_steps_per_epoch is None else min(
        len(loader), config.max_steps_per_epoch)
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        torch.manual_seed(config.seed * 100_003 + epoch * 1009 + ctx.rank)  # dropout etc.
        train_model.train()
        sums: dict[str, float] = {}
        bar = None
        if ctx.is_main and config.progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"{task.name} {epoch + 1}/{config.epochs}",
                       leave=False, dynamic_ncols=True)
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch:
                break
            values = {name: fn(samples) for name, fn in schedules.items()}
            if "lr" in values:
                for group in optimizer.param_groups:
                    group["lr"] = values["lr"]
            task.apply_schedules(model, values)
            loss, logs = task.training_step(train_model, _move(batch, device), step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{task.name}: loss is {loss.item()} at epoch {epoch + 1}, "
                                         f"step {step}; lower the learning rate or check the data")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            samples += config.batch_size
            logs = {"loss": loss.detach(), **logs}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if bar is not None:
            bar.close()
        if ctx.enabled:
            # DDP syncs buffers (BN statistics) at the start of each forward, so after the last
            # step every rank holds its own shard's update: take rank 0's, as DDP would next.
            for buf in model.buffers():
                dist.broadcast(buf, src=0)
        entry = {"epoch": epoch + 1, "step": step, "samples": samples,
                 "lr": optimizer.param_groups[0]["lr"]}
        entry.update({f"train_{k}": v / steps_per_epoch for k, v in sums.items()})
        if val_loader is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            metrics = None
            if ctx.is_main:
                model.eval()
                metrics = {f"val_{k}": float(v) for k, v in
                           task.evaluate(model, val_loader, device).items()}
            entry.update(broadcast_object(ctx, metrics))
        entry["time_s"] = time.perf_counter() - t0
        history.append(entry)
        improved = False
        if task.monitor in entry:
            improved = _better(entry[task.monitor], best, task.monitor_mode)
            if improved:
                best = entry[task.monitor]
        elif task.monitor.startswith("train_") or val_loader is None:
            improved = True  # nothing to compare: the latest epoch is the best we know
        if ctx.is_main:
            exported = task.inference_module(model)
            state = {"task": task.name, "model_spec": task.model_spec(),
                     "model": exported.state_dict(), "epoch": epoch + 1, "step": step,
                     "samples": samples, "history": history, "best": best, "monitor": task.monitor}
            if improved:
                torch.save(state, out / BEST_WEIGHTS)
            resume_state = {**state, "optimizer": optimizer.state_dict()}
            if exported is not model:
                resume_state["training_model"] = model.state_dict()
            torch.save(resume_state, out / (CHECKPOINT + ".tmp"))
            (out / (CHECKPOINT + ".tmp")).replace(ckpt_path)
            record["best"] = {"monitor": task.monitor, "value": best}
            write_metrics(out / METRICS, record)
            plot_curves(out / CURVES, history, f"{task.name} ({ctx.world_size} process"
                        f"{'es' if ctx.world_size > 1 else ''}, {device})")
            summary = ", ".join(f"{k} {v:.4g}" for k, v in entry.items()
                                if k not in ("epoch", "step", "samples") and isinstance(v, float))
            if config.progress:
                print(f"[{task.name}] epoch {epoch + 1}/{config.epochs}: {summary}", flush=True)
    record["replica_max_abs_diff"] = _replica_max_abs_diff(ctx, model)
    record["best"] = {"monitor": task.monitor, "value": best}
    if ctx.is_main:
        write_metrics(out / METRICS, record)
    return record
