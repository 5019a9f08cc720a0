"""``create_model``: a preset name (``gpt-tiny``, ``vit-small``, ``resnet20``) or ``timm:<name>`` -> a model."""

from __future__ import annotations

from typing import Any

from normlight.models.timm_adapter import create_timm_model
from normlight.norms.factory import check_site_overrides, norm_scope
from normlight.registry import call_with_context, resolve


def create_model(name: str, **kwargs: Any):
    """Build a model by preset name (``gpt-tiny``, ``vit-small``, ``resnet20``) or ``timm:<name>``.

    Per-site norm options (``norm_kwargs={"sites": {...}}``) must name sites at which the model builds a norm.
    """
    with norm_scope() as built:
        if name.lower().startswith("timm:"):
            model = create_timm_model(name.split(":", 1)[1], **kwargs)
        else:
            factory, label = resolve("models", name)
            model = call_with_context(factory, label, (), kwargs, {})
    for key in ("norm_kwargs", "qk_norm_kwargs"):
        check_site_overrides(kwargs.get(key), built.records, key)
    return model
