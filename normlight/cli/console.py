"""A quiet console for the commands that train: what Lightning and MLflow print that is noise here.

Silenced by default (``--verbose`` on any training command keeps everything):

- Lightning's advertisement tips ("Tip: For seamless cloud logging ... litlogger / litmodels");
- the ``isinstance(treespec, LeafSpec)`` deprecation line Lightning's pytree helper triggers in torch;
- the model summary's FLOPs column and "Total FLOPs: 0" (Lightning counts FLOPs only with an
  ``example_input_array``; the summary here shows the FLOPs only when they were counted);
- MLflow's "Creating initial MLflow database tables" / "Updating database tables" on a new store.

Nothing that reports a problem is filtered: warnings other than the LeafSpec one pass, and so does
Lightning's "dataloader is not resumable" warning.
"""

from __future__ import annotations

import logging
import warnings

from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

VERBOSE_FLAG = "--verbose"


# the tips, and Lightning's note that our compact summary replaced its default one
_DROP = ("💡 Tip:", "Trainer already configured with model summary callbacks")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(_DROP)


_TIPS = _DropTips()


def take_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--verbose``, and whether it was there."""
    return [a for a in argv if a != VERBOSE_FLAG], VERBOSE_FLAG in argv


def quiet() -> None:
    """Install the filters above (idempotent)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if _TIPS not in logger.filters:
            logger.addFilter(_TIPS)
        for handler in logger.handlers:
            if _TIPS not in handler.filters:
                handler.addFilter(_TIPS)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


class CompactModelSummary(ModelSummary):
    """Lightning's model summary as a rich table, without the FLOPs column when no FLOPs were counted."""

    @staticmethod
    def summarize(
        summary_data,
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        """Print the table and the totals (called by ``ModelSummary.on_fit_start`` on rank 0)."""
        from rich.console import Console
        from rich.table import Table

        data = [(name, col) for name, col in summary_data if name != "FLOPs" or total_flops]
        table = Table(header_style="bold magenta")
        for name, _ in data:
            table.add_column(name, justify="right" if name in ("Params", "FLOPs") else "left")
        for row in zip(*(col for _, col in data)):
            table.add_row(*row)
        console = Console()
        console.print(table)
        totals = [
            f"Trainable params: {get_human_readable_count(int(trainable_parameters))}",
            f"Non-trainable params: {get_human_readable_count(int(total_parameters - trainable_parameters))}",
            f"Model size: {get_formatted_model_size(model_size)} MB",
            f"Modules in train / eval mode: {total_training_modes['train']} / {total_training_modes['eval']}",
        ]
        if total_flops:
            totals.append(f"Total FLOPs: {get_human_readable_count(total_flops)}")
        console.print("  ".join(totals))
