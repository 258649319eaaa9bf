"""The config reference (docs/config.md), generated from the section models so it cannot drift."""

from __future__ import annotations

from pydantic import BaseModel

from spray.config.audit import AuditConfig
from spray.config.data import TransformConfig


def config_reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the models so it cannot drift."""
    sections: list[tuple[str, type[BaseModel]]] = [("(top level)", AuditConfig)]
    for name, field in AuditConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((name, ann))
    sections.append(("data.transform", TransformConfig))
    out = [
        "# Config reference",
        "",
        "Generated from `spray/config/` by `python -m spray.config > docs/config.md`. Unknown keys are errors.",
        "Relative paths are resolved against the config file's folder.",
        "",
    ]
    for title, model in sections:
        out += [
            f"## `{title}`",
            "",
            (model.__doc__ or "").strip().splitlines()[0],
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for key, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                continue
            tname = (
                str(ann)
                .replace("typing.", "")
                .replace("pathlib.", "")
                .replace("<class '", "")
                .replace("'>", "")
            )
            tname = tname.replace("|", "\\|")  # a bare | would split the markdown table cell
            default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
            out.append(f"| `{key}` | `{tname}` | `{default}` | {f.description or ''} |")
        out.append("")
    return "\n".join(out)
