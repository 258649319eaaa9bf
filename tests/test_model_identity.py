"""spray/model_identity.py: the classes spray puts inside a user's model keep their module path, which every
model hash holding them contains."""

import ast
import importlib
from pathlib import Path

SPRAY = Path(__file__).resolve().parents[1] / "spray"

#: Classes of spray that can be part of an audited model (model.output's wrapper, P-ClArC's layers, the lab's
#: models): a model hash holds each one's ``module.qualname``, so moving one makes every such model another
#: model for the caches, the flags' checks and ``spray correct`` (a renovation nearly moved OutputSelector).
IN_USER_MODELS = {
    "spray.models.OutputSelector",
    "spray.correct.pclarc.ArtifactProjection",
    "spray.correct.pclarc.ProjectedLayer",
    "spray.lab.cnn.SmallCNN",
    "spray.lab.vit.Block",
    "spray.lab.vit.TinyViT",
}


def _module_classes() -> set[str]:
    """Every class in spray outside the LRP library that subclasses an ``nn.`` module by name."""
    found = set()
    for path in SPRAY.rglob("*.py"):
        rel = path.relative_to(SPRAY.parent).with_suffix("")
        if rel.parts[1] == "lrp":
            continue  # the LRP library's modules live in the canonized copy, never in the hashed model
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Attribute) and isinstance(b.value, ast.Name) and b.value.id == "nn"
                for b in node.bases
            ):
                found.add(".".join(rel.parts) + "." + node.name)
    return found


def test_spray_classes_in_user_models_keep_their_module_path() -> None:
    assert _module_classes() == IN_USER_MODELS  # a new one: add it here, and never move it afterwards
    for name in IN_USER_MODELS:
        module, _, cls = name.rpartition(".")
        assert getattr(importlib.import_module(module), cls).__module__ == module
