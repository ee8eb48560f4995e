"""Markdown tables of the world's parameters and truth columns, from the code's own descriptions.

    uv run python -m world.docs        # prints the tables pasted into world/README.md
"""

from __future__ import annotations

from pydantic import BaseModel

from world.config import Shift, WorldConfig
from world.traits import PERSON_COLUMNS

SECTIONS = ("population", "purchases", "churn", "channels", "response", "activity", "logging_policy", "dirt")


def _fmt(v) -> str:
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    if isinstance(v, dict):
        v = {(k.value if hasattr(k, "value") else k): x for k, x in v.items()}
        text = ", ".join(f"{k}: {x}" for k, x in v.items())
        return "{" + text + "}"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _rows(model: BaseModel, prefix: str) -> list[str]:
    out = []
    for name, field in type(model).model_fields.items():
        if name in SECTIONS or name in ("shifts", "catalog"):
            continue
        desc = (field.description or "").replace("|", "/")
        out.append(f"| `{prefix}{name}` | `{_fmt(getattr(model, name))}` | {desc} |")
    return out


def parameter_table() -> str:
    cfg = WorldConfig()
    lines = ["| parameter | default | meaning |", "|---|---|---|"]
    lines += _rows(cfg, "")
    lines.append("| `catalog` | core.catalog.DEFAULT_CATALOG | offers the campaigns and decisions use |")
    for section in SECTIONS:
        lines += _rows(getattr(cfg, section), f"{section}.")
    lines.append("| `shifts` | `[]` | planted drift, a list of shifts (below) |")
    lines += [f"| `shifts[].{n}` | `{_fmt(f.default) if f.default is not None or n in ('timezone', 'city') else ''}`"
              f" | {(f.description or '').replace('|', '/')} |"
              for n, f in Shift.model_fields.items()]
    return "\n".join(lines)


def person_table() -> str:
    lines = ["| column | meaning |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in PERSON_COLUMNS.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(parameter_table())
    print()
    print(person_table())
