"""What ``amapo train`` checks before anything heavy loads: the paths it was given and the rows of local datasets.

Runs on ``TrainOptions`` alone (no torch model, no ``TrainingArguments``), so a missing file or a bad row is one line
within seconds of the command, not after the model and the first evaluation.
"""

from __future__ import annotations

from pathlib import Path

from amapo.builtin import is_builtin
from amapo.errors import UserError
from amapo.train.options import TrainOptions

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")


def looks_local(value: str, data: bool = False) -> bool:
    """Clearly a local path (not a Hub id): "./x", "/x", "~/x", "../x", or, for data, a file name like "x.jsonl"."""
    if value.startswith(("/", "./", "../", "~", ".\\")):
        return True
    name = value.split("@")[0].lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".xz")
    return data and name.endswith(DATA_SUFFIXES)


def check_local_path(option: str, value: str | None, data: bool = False) -> None:
    """A value that is clearly a local path must exist: a one-line error, not a Hub lookup that fails later."""
    if value and not is_builtin(value) and looks_local(value, data) and not Path(value).expanduser().exists():
        raise UserError(f"--{option}: no such file or folder {value} (looked in {Path(value).expanduser().absolute()})")


def dataset_sources(options: TrainOptions) -> list[tuple[str, str]]:
    """(option, source) of every dataset the run reads: the training dataset and each named eval set."""
    sources = [("dataset", options.dataset)]
    for entry in options.eval_datasets:
        source = entry.partition("=")[2].partition("@")[0]
        sources.append(("eval_datasets", source))
    return sources


def check_before_loading(options: TrainOptions) -> None:
    """The output folder can take this run, paths exist, and local JSON/JSONL datasets parse and pass the row
    checks (first error first)."""
    from amapo.data.precheck import check_local_dataset
    from amapo.train.run_folder import check_output_dir

    check_output_dir(Path(options.output_dir), options.overwrite_output_dir, options.resume_from_checkpoint)

    for option in ("model_name_or_path", "ref_model_name_or_path"):
        check_local_path(option, getattr(options, option))
    template = options.chat_template
    if template and template.endswith(".jinja") and not Path(template).expanduser().exists():
        raise UserError(f"--chat_template: no such file {template}")
    sources = dataset_sources(options)
    for option, source in sources:
        check_local_path(option, source, data=True)
    for source in dict.fromkeys(source for _, source in sources):
        if not is_builtin(source):
            check_local_dataset(
                source,
                column_mapping=options.column_mapping_dict(),
                role_mapping=options.role_mapping_dict(),
                drop_invalid=options.drop_invalid_rows,
            )
