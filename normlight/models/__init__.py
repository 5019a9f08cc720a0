"""Model families (plain ``torch.nn``, no Lightning): gpt, vit, resnet, timm adapter, fold, convert.

Nothing is imported eagerly; build models with ``normlight.create_model(name, **kwargs)``.
"""
