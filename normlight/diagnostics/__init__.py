"""Stability diagnostics: one module per diagnostic, bundled by :class:`StabilityDiagnostics` (``callback.py``).

attention.py       attention entropy and max logit per layer
batch_stats.py     batch-statistics fluctuation of batch-statistic norms
block_influence.py 1 - cos(h_in, h_out) per block (ShortGPT)
grad_norm.py       global and per-block gradient norms
loss_spikes.py     loss-spike score and divergence guard
plugin_state.py    scalars a plugin exposes through diagnostics() (GeM p, DWA weights, gates, drop rates)
residual.py        residual-stream RMS per layer, massive activations
summary.py         the end-of-run ``summary/...`` metrics
throughput.py      items per second, peak memory
"""

from normlight.diagnostics.callback import StabilityDiagnostics

__all__ = ["StabilityDiagnostics"]
