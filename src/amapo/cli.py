"""The amapo command line.

    amapo train    [--config RECIPE] [--option value ...]   align a model on preference pairs
    amapo eval     --model_name_or_path M [--datasets NAME=SOURCE[@SPLIT] ...]   ranking accuracy, generations
    amapo analyze  --model_name_or_path M --dataset SOURCE   gradient dynamics of several methods
    amapo compare  [--methods ...] [--seeds ...] [--beta_sweep ...]   the paper's comparison as a report
    amapo generate --model_name_or_path M --questions FILE   answers for AlpacaEval 2, Arena-Hard or MT-Bench
    amapo make-pairs --model_name_or_path POLICY --prompts SOURCE --reward REWARD --output pairs.jsonl
                                                            on-policy pairs: K answers per prompt, best vs worst

Each command prints every option with its default under --help. A mistake of yours (an option, a file, a row) is
one line, `amapo <command>: error: ...`, with exit status 2; AMAPO_DEBUG=1 shows its traceback too.
"""

from __future__ import annotations

import os
import sys
import traceback

from amapo.errors import UserError

COMMANDS = ("train", "eval", "analyze", "compare", "generate", "make-pairs")


def parse_dataclass(cls, argv: list[str], prog: str, description: str):
    from transformers import HfArgumentParser

    from amapo.train.parsing import parse_all

    parser = HfArgumentParser(cls, prog=prog, description=description, allow_abbrev=False)
    return parse_all(parser, argv, f"{prog} --help")


def close_process_group(wait: bool) -> None:
    """Tear down torch.distributed before exit: a gloo group left open sometimes aborted the process at exit
    ("terminate called without an active exception") after a successful run.

    ``wait``: first wait until every rank is done with the group (rank 0 may still be writing outputs).
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run_command(argv)
    except UserError as err:  # the user's to fix: one line, no traceback (a bug keeps its traceback)
        if os.environ.get("AMAPO_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        command = argv[0] if argv else ""
        print(f"amapo {command}: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        close_process_group(wait=False)
        return 2


def run_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"amapo: unknown command {command!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # Heavy imports only once a command runs.
    if command == "train":
        from amapo.train.parsing import parse_train_args
        from amapo.train.preflight import check_before_loading

        config = parse_train_args(rest, preflight=check_before_loading)
        from amapo.train.run import TrainingInterrupted, run_training

        try:
            run_training(config)
        except TrainingInterrupted as stop:
            print(f"amapo: {stop}", file=sys.stderr)
            close_process_group(wait=False)
            return 128 + stop.signum
        close_process_group(wait=True)
    elif command == "eval":
        from amapo.evaluation.run import EvalConfig, run_eval

        run_eval(parse_dataclass(EvalConfig, rest, "amapo eval", "Ranking accuracy of a model on preference sets."))
    elif command == "analyze":
        from amapo.evaluation.analysis import AnalyzeConfig, run_analysis

        run_analysis(parse_dataclass(AnalyzeConfig, rest, "amapo analyze", "Where each method's gradient goes."))
    elif command == "generate":
        from amapo.generation.run import GenerateConfig, run_generate

        description = (
            "Answers to AlpacaEval 2, Arena-Hard or MT-Bench questions, in the file each benchmark's judge reads."
        )
        run_generate(parse_dataclass(GenerateConfig, rest, "amapo generate", description))
    elif command == "make-pairs":
        from amapo.onpolicy.run import MakePairsConfig, run_make_pairs

        description = "On-policy preference pairs: answers sampled from a policy, scored by a reward, best vs worst."
        run_make_pairs(parse_dataclass(MakePairsConfig, rest, "amapo make-pairs", description))
        close_process_group(wait=True)
    else:
        from amapo.compare.run import CompareConfig, run_compare

        run_compare(parse_dataclass(CompareConfig, rest, "amapo compare", "Train, evaluate and compare methods."))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
