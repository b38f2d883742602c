"""What to run next: each benchmark's own judge on the answers written (it calls a paid API; amapo does not).

* AlpacaEval 2: ``alpaca_eval --model_outputs FILE --annotators_config weighted_alpaca_eval_gpt4_turbo``
  (tatsu-lab/alpaca_eval README: the recommended AlpacaEval 2.0 annotator; the AMaPO release's eval/README.md).
* MT-Bench: FastChat's fastchat/llm_judge gen_judgment.py and show_result.py, which read
  data/mt_bench/model_answer/<model id>.jsonl (the file name is the model's name). The AMaPO release judged with
  GPT-4 Turbo (gpt-4-1106-preview) against its own GPT-4 Turbo reference answers, which FastChat finds as
  data/mt_bench/reference_answer/<judge model>.jsonl (eval/mt-bench/gpt-4-1106-preview.jsonl of the release).
* Arena-Hard: arena-hard-auto's gen_judgment.py (models listed in its config file) and show_result.py, which read
  data/<bench>/model_answer/<model id>.jsonl. The v0.1 format (``question_id``/``choices``) is read by the
  repository before April 2025 (config/judge_config.yaml); the current one (``uid``/``messages``) by today's, with
  config/arena-hard-v2.0.yaml, or config/arena-hard-v0.1.yaml for the reformatted v0.1 questions.
"""

from __future__ import annotations

from pathlib import Path

from amapo.generation.questions import QuestionSet


def judge_steps(questions: QuestionSet, output: Path, model_id: str) -> list[str]:
    """The commands to judge ``output``, one step a line."""
    schema = questions.schema.name
    if schema == "alpaca-eval":
        return [f"alpaca_eval --model_outputs {output} --annotators_config weighted_alpaca_eval_gpt4_turbo"]
    if schema == "mt-bench":
        judge = "gpt-4-1106-preview"
        return [
            f"cp {output} FastChat/fastchat/llm_judge/data/mt_bench/model_answer/{model_id}.jsonl",
            f"cd FastChat/fastchat/llm_judge && python gen_judgment.py --model-list {model_id} --judge-model {judge} "
            f"--parallel 2 && python show_result.py --model-list {model_id} --judge-model {judge}",
            f"(GPT-4 Turbo as in the AMaPO release needs its reference answers as data/mt_bench/reference_answer/"
            f"{judge}.jsonl; FastChat's default judge is gpt-4)",
        ]
    if schema == "arena-hard-v0.1":
        return [
            f"cp {output} arena-hard-auto/data/arena-hard-v0.1/model_answer/{model_id}.jsonl  (arena-hard-auto "
            "before April 2025, e.g. commit 8f2f44d, reads this format)",
            f"add {model_id} to model_list in config/judge_config.yaml, then: cd arena-hard-auto && python "
            "gen_judgment.py && python show_result.py",
        ]
    v01 = {q.category for q in questions.questions} == {"arena-hard-v0.1"}
    bench = "arena-hard-v0.1" if v01 else "arena-hard-v2.0"
    show = (
        "python show_result.py --benchmark arena-hard-v0.1 --judge-names gpt-4-1106-preview --category arena-hard-v0.1"
        if v01
        else "python show_result.py --judge-names gpt-4.1 --control-features markdown length"
    )
    return [
        f"cp {output} arena-hard-auto/data/{bench}/model_answer/{model_id}.jsonl",
        f"add {model_id} to model_list in config/{bench}.yaml, then: cd arena-hard-auto && python gen_judgment.py "
        f"--setting-file config/{bench}.yaml && {show}",
    ]
