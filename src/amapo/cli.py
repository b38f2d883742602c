"""The amapo command line.

    amapo train    [--config RECIPE] [--option value ...]   align a model on preference pairs
    amapo eval     --model_name_or_path M [--datasets NAME=SOURCE[@SPLIT] ...]   ranking accuracy, generations
    amapo analyze  --model_name_or_path M --dataset SOURCE   gradient dynamics of several methods
    amapo compare  [--methods ...] [--seeds ...] [--beta_sweep ...]   the paper's comparison as a report
    amapo generate --model_name_or_path M --questions FILE   answers for AlpacaEval 2, Arena-Hard or MT-Bench
    amapo make-pairs --model_name_or_path POLICY --prompts SOURCE --reward REWARD --output pairs.jsonl
                                                            on-policy pairs: K answers per prompt, best vs worst

Each command prints every option with its default under --help. A mistake of yours (an option, a file, a row) is
one line, `amapo <command>: error: ...`, with exit status 2; AMAPO_DEBUG=1 shows its traceback too. A full disk
is one line too, `amapo <command>: stopped: ...`, exit 1; Ctrl-C and SIGTERM before or after training are one line,
exit 130 and 143 (during training they save a checkpoint first).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

from amapo.errors import UserError

COMMANDS = ("train", "eval", "analyze", "compare", "generate", "make-pairs")
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
TERMINATED = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """SIGTERM outside training (while importing, loading, evaluating or saving), raised as Ctrl-C raises
    KeyboardInterrupt. A BaseException, so that no ``except Exception`` on the way swallows it."""


def stop_on_sigterm(handler_pid: int):
    """A SIGTERM handler that raises ``Terminated`` in the process ``handler_pid``; a forked child (a datasets or
    DataLoader worker, which a pool ends with SIGTERM) still ends at once, as SIGTERM's default would end it."""

    def handle(signum, frame):
        if os.getpid() != handler_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated

    return handle


def parse_dataclass(cls, argv: list[str], prog: str, description: str):
    from amapo.train.parsing import one_line_parser, parse_all

    parser = one_line_parser(cls, prog=prog, description=description)
    return parse_all(parser, argv, f"{prog} --help")


def close_process_group(wait: bool) -> None:
    """Tear down torch.distributed before exit: a gloo group left open sometimes aborted the process at exit
    ("terminate called without an active exception") after a successful run.

    ``wait``: first wait until every rank is done with the group (rank 0 may still be writing outputs). On gloo
    that wait is ``monitored_barrier``, not ``barrier``: a gloo barrier's work holds the collectives before it
    (with tensors Python made) and is freed by gloo's worker thread just after the wait returns; when this process
    exits at once, that free needs the GIL during interpreter shutdown and aborts the process (seen in CI; 3 of
    40 two-process runs on a loaded machine, ``benchmarks/distributed_exit.py``; core dump: ~AsyncBarrierWork ->
    decref_pyobject -> take_gil -> std::terminate). A monitored barrier's sends and receives hold only its own
    tensors and are waited and freed on this thread.

    Nothing to do if torch.distributed was never imported (importing it here, after a Ctrl-C cut torch's own
    import short, crashed the process).
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None:
        return

    if dist.is_available() and dist.is_initialized():
        if wait and dist.get_backend() == "gloo":
            dist.monitored_barrier()
        elif wait:
            dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    # SIGTERM as Ctrl-C: one line, not a silent death (training installs its own handlers, then restores this one);
    # an ignored SIGTERM, or one an embedding program handles, is left as it is
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main_thread else None
    if previous is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, stop_on_sigterm(os.getpid()))
    try:
        warn_if_untested_transformers()
        return run_command(argv)
    except UserError as err:  # the user's to fix: one line, no traceback (a bug keeps its traceback)
        if debugging():
            traceback.print_exc()
        print(f"amapo {command}: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        close_process_group(wait=False)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while importing, loading or reading data (training saves, then stops)
        if debugging():
            traceback.print_exc()
        print(f"amapo {command}: interrupted", file=sys.stderr)
        close_process_group(wait=False)
        return INTERRUPTED
    except Terminated:
        if debugging():
            traceback.print_exc()
        print(f"amapo {command}: terminated", file=sys.stderr)
        close_process_group(wait=False)
        return TERMINATED
    except Exception as err:
        from amapo.disk_space import described, free_bytes, in_words, out_of_space

        code = out_of_space(err)
        if code is None:  # a bug: its traceback
            raise
        if debugging():
            traceback.print_exc()
        where = getattr(err, "filename", None)
        free = f" ({in_words(free_bytes(where))} free there)" if where else ""
        print(f"amapo {command}: stopped: {described(code)}{f' writing {where}' if where else ''}{free}: free space "
              "or write to another folder, and run the command again", file=sys.stderr)  # fmt: skip
        close_process_group(wait=False)
        return 1
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def debugging() -> bool:
    return os.environ.get("AMAPO_DEBUG", "") not in ("", "0")


def warn_if_untested_transformers() -> None:
    """One line on stderr when the installed transformers is outside the range CI runs amapo on (read from its
    package metadata: no import)."""
    from importlib.metadata import PackageNotFoundError, version

    from amapo.hf_internals import TESTED_TRANSFORMERS, outside_tested_range

    try:
        installed = version("transformers")
    except PackageNotFoundError:
        return
    if outside_tested_range(installed):
        print(f"amapo: warning: transformers {installed} is outside the range amapo is tested on "
              f"({TESTED_TRANSFORMERS[0]} to {TESTED_TRANSFORMERS[-1]}); if something breaks, "
              f"pip install 'transformers=={TESTED_TRANSFORMERS[-1]}'", file=sys.stderr)  # fmt: skip


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
        from amapo.train.reliability import TrainingFailed
        from amapo.train.run import TrainingInterrupted, run_training

        try:
            run_training(config)
        except TrainingInterrupted as stop:
            print(f"amapo: {stop}", file=sys.stderr)
            close_process_group(wait=False)
            return 128 + stop.signum
        except TrainingFailed as failed:  # no trained model: one line, a non-zero exit
            print(f"amapo train: stopped: {failed}", file=sys.stderr)
            close_process_group(wait=False)
            return 1
        close_process_group(wait=True)
    elif command == "eval":
        from amapo.evaluation.options import EvalConfig

        config = parse_dataclass(EvalConfig, rest, "amapo eval", "Ranking accuracy of a model on preference sets.")
        from amapo.evaluation.run import run_eval

        run_eval(config)
    elif command == "analyze":
        from amapo.evaluation.options import AnalyzeConfig

        config = parse_dataclass(AnalyzeConfig, rest, "amapo analyze", "Where each method's gradient goes.")
        from amapo.evaluation.analysis import run_analysis

        run_analysis(config)
    elif command == "generate":
        from amapo.generation.options import GenerateConfig

        description = (
            "Answers to AlpacaEval 2, Arena-Hard or MT-Bench questions, in the file each benchmark's judge reads."
        )
        config = parse_dataclass(GenerateConfig, rest, "amapo generate", description)
        from amapo.generation.run import run_generate

        run_generate(config)
    elif command == "make-pairs":
        from amapo.onpolicy.options import MakePairsConfig

        description = "On-policy preference pairs: answers sampled from a policy, scored by a reward, best vs worst."
        config = parse_dataclass(MakePairsConfig, rest, "amapo make-pairs", description)
        from amapo.onpolicy.run import run_make_pairs

        run_make_pairs(config)
        close_process_group(wait=True)
    else:
        from amapo.compare.config import CompareConfig

        config = parse_dataclass(CompareConfig, rest, "amapo compare", "Train, evaluate and compare methods.")
        from amapo.compare.run import run_compare

        run_compare(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
