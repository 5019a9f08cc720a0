"""Model families (plain ``torch.nn``, no Lightning): gpt, vit, resnet, timm adapter, fold, convert, pretrained.

Nothing is imported eagerly; build models with ``normlight.create_model(name, **kwargs)``, load pretrained
checkpoints with ``normlight.models.load_pretrained(source, **kwargs)`` and write them back to a peer's
layout with ``normlight.models.export_pretrained(model, path, format=...)``.
"""


def __getattr__(name: str):
    """``load_pretrained`` / ``export_pretrained``, imported on first use."""
    if name in ("load_pretrained", "export_pretrained"):
        from normlight.models import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'normlight.models' has no attribute {name!r}")
