"""Library of past highlights: cross-video search, script-driven assembly, templates.

>>> lib = Library.open("mylib")
>>> lib.add_path("goal.mp4", tags=["team-a"], category="soccer")
>>> plan = plan_assembly(load_script("story.txt"), lib)
>>> render_plan(plan, "edit.mp4")

Names load lazily so that ``import library`` (and ``rhl --help``) stays fast.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Library": "library.catalog",
    "LibraryClip": "library.models",
    "LibraryHit": "library.models",
    "Script": "library.models",
    "ScriptStep": "library.models",
    "AssemblyPlan": "library.models",
    "PlanStep": "library.models",
    "MissedEvent": "library.models",
    "load_script": "library.script",
    "parse_script": "library.script",
    "plan_assembly": "library.assemble",
    "render_plan": "library.assemble",
    "save_plan": "library.assemble",
    "load_plan": "library.assemble",
    "plan_srt": "library.assemble",
    "load_script_template": "library.templates",
    "category_queries": "library.templates",
    "list_templates": "library.templates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):  # noqa: ANN202
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'library' has no attribute {name!r}")
