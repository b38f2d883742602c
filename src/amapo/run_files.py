"""The files an ``amapo train`` run folder holds, by name (read by evaluation and comparison too)."""

CONFIG_FILE = "amapo_config.yaml"  # every option as the run used it
METRICS_FILE = "metrics.jsonl"  # every log of the run, one JSON line each (``callbacks.JsonlMetricsCallback``)
RESULTS_FILE = "results.json"  # training metrics and evaluation before and after

ACCURACY = "rewards/accuracies"  # a step's ranking accuracy; an eval set's is "eval_{set}_rewards/accuracies"


def accuracy_by_set(metrics: dict[str, float]) -> dict[str, float]:
    """{eval set: ranking accuracy} from one log of the Trainer's evaluation metrics."""
    suffix = "_" + ACCURACY
    return {
        key.removeprefix("eval_").removesuffix(suffix): value
        for key, value in metrics.items()
        if key.startswith("eval_") and key.endswith(suffix)
    }
