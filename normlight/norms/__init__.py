"""Built-in norm plugins, one family per module, registered through the ``normlight.norms`` entry points.

Nothing is imported here: each plugin module loads only when its norm is selected or listed with
``normlight plugins list --load``. Every module maps ``(..., C) -> (..., C)``.

Token / channel norms (over the feature dim of one sample):
    layernorm          LayerNorm           (Ba et al. 2016)                    layernorm.py
    rmsnorm            RMSNorm, partial p  (Zhang & Sennrich 2019)             rmsnorm.py
    crmsnorm           compressed RMSNorm  (Jiang et al. 2023, Pre-CRMSNorm)   rmsnorm.py
    scalenorm          ScaleNorm           (Nguyen & Salazar 2019)             scalenorm.py
    l2norm             unit L2 norm        (Loshchilov et al. 2024, nGPT)      scalenorm.py
    dyt                Dynamic Tanh        (Zhu et al. 2025)                   dyt.py
    identity           no normalization    (norm-free baseline)                identity.py
    layernorm_scaling  LN/RMS * 1/sqrt(l)  (Sun et al. 2025, Curse of Depth)   layernorm_scaling.py

Per-sample norms over positions (need ndim >= 3; CNN maps and token sequences):
    groupnorm, instancenorm  (Wu & He 2018; Ulyanov et al. 2016)           groupnorm.py
    grn                      Global Response Norm (Woo et al. 2023)          grn.py

Batch-statistic norms (``uses_batch_statistics = True``): batchnorm, powernorm, unifiednorm, repbn,
prepbn, bcn, evonorm_b0, evonorm_s0 (batchnorm.py, powernorm.py, unifiednorm.py, repbn.py, bcn.py, evonorm.py).

Shared rule: float16/bfloat16 inputs are normalized with statistics in float32 and cast back (_common.py).

Each norm's ``forward`` dispatches to its fast path (``_fast_token.py``, ``_fast_group.py``,
``_fast_batch.py``; switch and compiled kernels in ``fast.py``); the eager code after the dispatch is
the reference implementation the fast paths are tested against.
"""
