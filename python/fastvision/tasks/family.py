"""What a family's application folder provides to the ``fastvision`` command and the demo."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, NamedTuple


class Recipe(NamedTuple):
    """One ``fastvision train NAME``: its help, ``add_arguments(parser)``, ``build(args, config)
    -> fastvision.engine.Task`` and the default epochs on the embedded data."""

    help: str
    add_arguments: Callable
    build: Callable
    epochs: int


@dataclass(frozen=True)
class Family:
    """One folder ``fastvision/tasks/<name>/`` and the modules in it that the command uses:

    * ``recipe.py`` with ``RECIPES: dict[str, Recipe]`` (``fastvision train``) when ``recipes``;
    * ``experiment.py`` with ``add_arguments(parser)`` and ``run(args)`` (``fastvision eval
      <name>``) when ``eval_help`` is set;
    * one module per entry of ``studies`` (``fastvision eval <key>``: the papers' ablations,
      under a name of their own beside the family's ``experiment.py``), each with
      ``add_arguments(parser)`` and ``run(args)``;
    * one module per entry of ``benchmarks`` (``fastvision bench --family <key>``), each with
      ``run(size, device, competitors, repeats, only, log) -> rows``;
    * ``demo.py`` with ``section(out_dir, devices) -> (report lines, check rows, ok)`` (a section of
      ``fastvision demo`` headed ``demo_title``) when ``demo_title`` is set.
    """

    name: str
    recipes: bool = False
    eval_help: str | None = None
    studies: dict[str, tuple[str, str]] = field(default_factory=dict)  # eval name -> (module, help)
    benchmarks: dict[str, str] = field(default_factory=dict)
    demo_title: str | None = None

    def module(self, name: str):
        """The family's module ``name`` (imported on first use: families load only when run)."""
        return importlib.import_module(f"fastvision.tasks.{self.name}.{name}")
