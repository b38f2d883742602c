"""Several ``amapo train`` runs, one after another, in each launched process: the launch and the imports (most of a
short run's time on CPU) are paid once. ``... tests/train_runs.py RUNS.json --output_dir OUT`` runs every
``name: [arguments]`` entry of RUNS.json into OUT/name; each run loads its model afresh and sets its seed. The
process group lives until the last run is done (``amapo.cli`` closes it after its one run)."""

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    from amapo.cli import close_process_group
    from amapo.train.parsing import parse_train_args
    from amapo.train.preflight import check_before_loading
    from amapo.train.run import run_training

    spec, flag, out = sys.argv[1:]
    assert flag == "--output_dir", sys.argv
    for name, args in json.loads(Path(spec).read_text()).items():
        run_training(parse_train_args([*args[1:], "--output_dir", str(Path(out) / name)], check_before_loading))
    close_process_group(wait=True)
