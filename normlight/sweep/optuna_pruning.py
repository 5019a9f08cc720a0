"""The Lightning callback that connects one ``normlight fit`` process to its Optuna trial (``--search optuna``).

The sweep driver asks Optuna for a trial, then starts ``normlight fit`` with this callback appended to the
trainer's callbacks (``--trainer.callbacks+=...``). In the training process the callback opens the same study
from the shared RDB storage and:

- reports the monitored metric (``val/loss``) to the trial after every validation, and stops training when the
  study's pruner says the trial is worse than the others at that step (``trial.should_prune()``);
- stops a diverging run at once: a non-finite training loss prunes the trial without waiting for validation.

Either way it marks the trial (user attribute ``pruned_at_step``); the driver then tells Optuna the trial was
PRUNED. Nothing here touches MLflow: the run itself is recorded by normlight's logger as usual.
"""

from __future__ import annotations

import math

from lightning.pytorch.callbacks import Callback

PRUNED_ATTR = "pruned_at_step"


class OptunaPruning(Callback):
    """Report ``monitor`` to trial ``trial_number`` of study ``study_name`` in ``storage``; prune when told to."""

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str = "val/loss"):
        self.storage, self.study_name, self.trial_number, self.monitor = storage, study_name, trial_number, monitor
        self._trial = None

    def _get_trial(self):
        if self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == self.trial_number)
            self._trial = optuna.trial.Trial(study, frozen._trial_id)  # Optuna's own ask() builds it the same way
        return self._trial

    def _prune(self, trainer, why: str) -> None:
        trial = self._get_trial()
        trial.set_user_attr(PRUNED_ATTR, int(trainer.global_step))
        trial.set_user_attr("pruned_because", why)
        trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """A non-finite training loss: the run diverged, prune now."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and not math.isfinite(float(loss)):
            self._prune(trainer, "diverged")

    def on_validation_end(self, trainer, pl_module) -> None:
        """Report the monitored metric at this step; stop if the pruner prunes the trial."""
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            self._prune(trainer, "diverged")
            return
        trial = self._get_trial()
        trial.report(value, int(trainer.global_step))
        if trial.should_prune():
            self._prune(trainer, "pruner")
