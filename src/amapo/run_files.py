"""The files an ``amapo train`` run folder holds, by name (read by evaluation and comparison too)."""

from pathlib import Path

from amapo.hf_internals import CHECKPOINT_PREFIX

CONFIG_FILE = "amapo_config.yaml"  # every option as the run used it
METRICS_FILE = "metrics.jsonl"  # every log of the run, one JSON line each (``callbacks.JsonlMetricsCallback``)
RESULTS_FILE = "results.json"  # training metrics and evaluation before and after

COMPLETE_MARKER = "amapo_checkpoint_complete"  # written last into a checkpoint: it is whole (train.reliability)
ACCURACY = "rewards/accuracies"  # a step's ranking accuracy; an eval set's is "eval_{set}_rewards/accuracies"


def accuracy_by_set(metrics: dict[str, float]) -> dict[str, float]:
    """{eval set: ranking accuracy} from one log of the Trainer's evaluation metrics."""
    suffix = "_" + ACCURACY
    return {
        key.removeprefix("eval_").removesuffix(suffix): value
        for key, value in metrics.items()
        if key.startswith("eval_") and key.endswith(suffix)
    }


def checkpoint_folders(output_dir: Path) -> list[tuple[int, Path, bool]]:
    """(step, folder, complete) of every ``checkpoint-N`` in ``output_dir``, by step."""
    found = []
    for folder in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}-*"):
        number = folder.name.removeprefix(f"{CHECKPOINT_PREFIX}-")
        if folder.is_dir() and number.isdigit():
            found.append((int(number), folder, (folder / COMPLETE_MARKER).exists()))
    return sorted(found)
