"""What ``amapo train`` checks before anything heavy loads: the paths it was given and the rows of local datasets.

Runs on ``TrainOptions`` alone (no torch model, no ``TrainingArguments``), so a missing file or a bad row is one line
within seconds of the command, not after the model and the first evaluation.
"""

from __future__ import annotations

from pathlib import Path

from amapo.builtin import is_builtin
from amapo.data.sources import check_local_path, parse_named_set
from amapo.errors import UserError
from amapo.train.options import TrainOptions


def dataset_sources(options: TrainOptions) -> list[tuple[str, str]]:
    """(option, source) of every dataset the run reads: the training dataset and each named eval set."""
    sources = [("dataset", options.dataset)]
    for entry in options.eval_datasets:
        sources.append(("eval_datasets", parse_named_set(entry)[1]))
    return sources


def check_before_loading(options: TrainOptions) -> None:
    """The output folder can take this run, paths exist, local models' weights are whole, and local JSON/JSONL
    datasets parse and pass the row checks (first error first)."""
    from amapo.data.chat import is_jinja_text
    from amapo.data.formats import NUMERIC_FIELDS
    from amapo.data.precheck import check_local_dataset
    from amapo.model.loading import check_weights
    from amapo.train.run_folder import check_output_dir

    check_output_dir(Path(options.output_dir), options.overwrite_output_dir, options.resume_from_checkpoint)

    for option in ("model_name_or_path", "ref_model_name_or_path"):
        check_local_path(option, getattr(options, option))
        if getattr(options, option) and not is_builtin(getattr(options, option)):  # headers only: cheap
            check_weights(getattr(options, option), named=f"--{option} {getattr(options, option)}")
    template = options.chat_template
    if template and not is_jinja_text(template) and not Path(template).expanduser().is_file():
        raise UserError(f"--chat_template: {template} is neither Jinja text nor an existing file")
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
                numeric_fields=(*NUMERIC_FIELDS, options.offset_column),
            )
