"""The torch range pyproject.toml declares is true (issue 34): every torch API amapo's source uses is in FIRST, with the
first torch release that has it, and the lower bound of ``torch>=`` is the newest of those, or transformers' own floor
where that is higher. A new use of torch in src/amapo fails here until someone checks it and lists it.

How FIRST was filled (2026-12-07): every name below was looked up in the sources of torch 2.4.0, 2.5.0 and 2.6.0 (the
``.py`` / ``.pyi`` files of their wheels: where the module defines or re-exports it, for a keyword the signature);
"2.4" means "in 2.4.0", the oldest release checked, so possibly older. FlexAttention
(``torch.nn.attention.flex_attention``, its ``BlockMask``) came in 2.5.0; ``BlockMask.from_kv_blocks`` took
``seq_lengths`` from 2.6.0 (2.5.0's signature ends at ``mask_mod``). transformers 5.23 to 5.25 treat torch below 2.6 as
absent (``is_torch_available`` in transformers/utils/import_utils.py: "PyTorch >= 2.6 is required"), so the floor is 2.6
either way. The suite was also run against torch 2.11.0 (the GPU image's; the report of issue 34 says how).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "amapo"

# torch name (a module, an attribute chain, or "name(keyword=)" for a keyword amapo passes) -> first release having it
FIRST = {
    "torch": "2.4",
    "torch.FloatTensor": "2.4",
    "torch.Generator": "2.4",
    "torch.Generator(device=)": "2.4",
    "torch.LongTensor": "2.4",
    "torch.Tensor": "2.4",
    "torch.__version__": "2.4",
    "torch.arange": "2.4",
    "torch.argsort": "2.4",
    "torch.autograd": "2.4",
    "torch.autograd.Function": "2.4",
    "torch.autograd.grad": "2.4",
    "torch.autograd.graph": "2.4",
    "torch.autograd.graph.saved_tensors_hooks": "2.4",
    "torch.bfloat16": "2.4",
    "torch.bool": "2.4",
    "torch.Size": "2.4",
    "torch.bincount": "2.4",
    "torch.cat": "2.4",
    "torch.cumsum": "2.4",
    "torch.diff": "2.4",
    "torch.diff(append=)": "2.4",
    "torch.maximum": "2.4",
    "torch.compile": "2.4",
    "torch.cos": "2.4",
    "torch.compiler": "2.4",
    "torch.compiler.disable": "2.4",
    "torch.compiler.is_compiling": "2.4",
    "torch.cuda": "2.4",
    "torch.cuda.current_device": "2.4",
    "torch.cuda.empty_cache": "2.4",
    "torch.cuda.is_available": "2.4",
    "torch.device": "2.4",
    "torch.distributed": "2.4",
    "torch.distributed.ProcessGroup": "2.4",
    "torch.distributed.ReduceOp": "2.4",
    "torch.distributed.ReduceOp.MAX": "2.4",
    "torch.distributed.ReduceOp.MIN": "2.4",
    "torch.distributed.all_gather": "2.4",
    "torch.distributed.all_reduce": "2.4",
    "torch.distributed.fsdp": "2.4",
    "torch.distributed.get_backend": "2.4",
    "torch.distributed.get_rank": "2.4",
    "torch.distributed.get_world_size": "2.4",
    "torch.distributed.is_available": "2.4",
    "torch.distributed.is_initialized": "2.4",
    "torch.distributed.new_group": "2.4",
    "torch.distributed.nn.functional.all_reduce": "2.4",
    "torch.dtype": "2.4",
    "torch.empty_like": "2.4",
    "torch.enable_grad": "2.4",
    "torch.exp": "2.4",
    "torch.equal": "2.4",
    "torch.eye": "2.4",
    "torch.finfo": "2.4",
    "torch.float16": "2.4",
    "torch.float32": "2.4",
    "torch.float64": "2.4",
    "torch.full": "2.4",
    "torch.full_like": "2.4",
    "torch.int32": "2.4",
    "torch.int64": "2.4",
    "torch.is_grad_enabled": "2.4",
    "torch.isfinite": "2.4",
    "torch.linspace": "2.4",
    "torch.load": "2.4",
    "torch.log": "2.4",
    "torch.log_softmax": "2.4",
    "torch.logsumexp": "2.4",
    "torch.long": "2.4",
    "torch.manual_seed": "2.4",
    "torch.minimum": "2.4",
    "torch.nn": "2.4",
    "torch.nn.Dropout": "2.4",
    "torch.nn.Linear": "2.4",
    "torch.nn.Module": "2.4",
    "torch.nn.Parameter": "2.4",
    "torch.nn.attention.flex_attention.BlockMask": "2.5",
    "torch.nn.attention.flex_attention.BlockMask.from_kv_blocks": "2.5",
    "torch.nn.functional": "2.4",
    "torch.nn.functional.logsigmoid": "2.4",
    "torch.nn.functional.pad": "2.4",
    "torch.nn.functional.scaled_dot_product_attention": "2.4",
    "torch.nn.functional.scaled_dot_product_attention(dropout_p=)": "2.4",
    "torch.nn.functional.scaled_dot_product_attention(scale=)": "2.4",
    "torch.nn.functional.scaled_dot_product_attention(is_causal=)": "2.4",
    "torch.nn.functional.scaled_dot_product_attention(enable_gqa=)": "2.5",
    "torch.nn.functional.silu": "2.4",
    "torch.ops": "2.4",
    "torch.ops.aten": "2.4",
    "torch.ops.aten.silu_backward": "2.4",
    "torch.no_grad": "2.4",
    "torch.nonzero": "2.4",
    "torch.ones": "2.4",
    "torch.ones_like": "2.4",
    "torch.optim": "2.4",
    "torch.optim.AdamW": "2.4",
    "torch.optim.Optimizer": "2.4",
    "torch.pi": "2.4",
    "torch.promote_types": "2.4",
    "torch.randint": "2.4",
    "torch.randn": "2.4",
    "torch.rsqrt": "2.4",
    "torch.sigmoid": "2.4",
    "torch.save": "2.4",
    "torch.set_num_threads": "2.4",
    "torch.stack": "2.4",
    "torch.tanh": "2.4",
    "torch.tensor": "2.4",
    "torch.utils.checkpoint.checkpoint": "2.4",
    "torch.where": "2.4",
    "torch.zeros": "2.4",
    "torch.zeros_like": "2.4",
    "torch.arange(device=)": "2.4",
    "torch.argsort(descending=)": "2.4",
    "torch.argsort(dim=)": "2.4",
    "torch.argsort(stable=)": "2.4",
    "torch.compile(dynamic=)": "2.4",
    "torch.distributed.all_gather(group=)": "2.4",
    "torch.distributed.all_reduce(op=)": "2.4",
    "torch.distributed.all_reduce(group=)": "2.4",
    "torch.distributed.nn.functional.all_reduce(group=)": "2.4",
    "torch.cat(dim=)": "2.4",
    "torch.bincount(minlength=)": "2.4",
    "torch.eye(device=)": "2.4",
    "torch.eye(dtype=)": "2.4",
    "torch.full(dtype=)": "2.4",
    "torch.linspace(device=)": "2.4",
    "torch.load(weights_only=)": "2.4",
    "torch.log_softmax(dim=)": "2.4",
    "torch.logsumexp(dim=)": "2.4",
    "torch.nn.attention.flex_attention.BlockMask.from_kv_blocks(BLOCK_SIZE=)": "2.4",
    "torch.nn.attention.flex_attention.BlockMask.from_kv_blocks(mask_mod=)": "2.4",
    "torch.nn.attention.flex_attention.BlockMask.from_kv_blocks(seq_lengths=)": "2.6",
    "torch.nn.functional.pad(value=)": "2.4",
    "torch.randn(generator=)": "2.4",
    "torch.ones(device=)": "2.4",
    "torch.ones(dtype=)": "2.4",
    "torch.ones_like(dtype=)": "2.4",
    "torch.optim.AdamW(lr=)": "2.4",
    "torch.optim.AdamW(weight_decay=)": "2.4",
    "torch.tensor(device=)": "2.4",
    "torch.tensor(dtype=)": "2.4",
    "torch.utils.checkpoint.checkpoint(use_reentrant=)": "2.4",
    "torch.zeros(device=)": "2.4",
    "torch.zeros(dtype=)": "2.4",
    "torch.zeros_like(dtype=)": "2.4",
}


def _torch_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> the torch name it stands for, from a file's imports (``import torch.nn.functional as F``)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch":
                    aliases[alias.asname or "torch"] = alias.name if alias.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _chain(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``F.logsigmoid`` -> "torch.nn.functional.logsigmoid"; None for anything not rooted at a torch name."""
    attributes = []
    while isinstance(node, ast.Attribute):
        attributes.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in aliases:
        return ".".join([aliases[node.id], *reversed(attributes)])
    return None


def torch_uses(root: Path = SRC) -> dict[str, set[str]]:
    """Every torch name src/amapo imports or reaches by attributes, and every keyword it passes to a torch call, as
    FIRST spells them -> the files that use it."""
    uses = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        aliases = _torch_aliases(tree)
        where = str(path.relative_to(root))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "torch":
                        uses[alias.name].add(where)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
                for alias in node.names:
                    uses[f"{node.module}.{alias.name}"].add(where)
            elif isinstance(node, ast.Attribute) and (name := _chain(node, aliases)):
                uses[name].add(where)
            if isinstance(node, ast.Call) and (name := _chain(node.func, aliases)):
                for keyword in node.keywords:
                    if keyword.arg:
                        uses[f"{name}({keyword.arg}=)"].add(where)
    return dict(uses)


def resolve(name: str):
    """What a dotted torch name is in the installed torch: the longest importable module, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attribute in parts[i:]:
            obj = getattr(obj, attribute)
        return obj
    raise ImportError(name)


def transformers_floor() -> Version:
    """The torch below which the installed transformers disables torch (its is_torch_available)."""
    source = Path(importlib.import_module("transformers.utils.import_utils").__file__).read_text()
    return Version(re.search(r"PyTorch >= ([\d.]+) is required", source).group(1))


def pyproject_floor() -> Version:
    text = (REPO / "pyproject.toml").read_text()
    return Version(re.search(r'"torch>=([\d.]+)[,"]', text).group(1))


@pytest.mark.parametrize("entry", sorted(FIRST))
def test_every_listed_name_is_in_the_installed_torch(entry):
    name, _, keyword = entry.partition("(")
    obj = resolve(name)
    if keyword:
        keyword = keyword.removesuffix("=)")
        try:
            parameters = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            return  # a builtin (torch.zeros): its keywords are in torch/_C/_VariableFunctions.pyi, read by hand
        assert keyword in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()), entry


def test_every_torch_use_in_src_is_listed_with_its_first_version():
    uses = torch_uses()
    unlisted = {name: sorted(files) for name, files in uses.items() if name not in FIRST}
    stale = [name for name, first in FIRST.items() if name not in uses and Version(first) > Version("2.4")]
    assert not stale, f"no longer used in src/amapo (drop them: they may hold the torch floor up): {stale}"
    assert not unlisted, (
        f"torch names used in src/amapo but not in FIRST: {unlisted}. Find the first torch release having each (and "
        "each keyword), add it, and raise pyproject's torch floor if newer"
    )


def test_the_scan_sees_aliases_from_imports_and_keywords(tmp_path):
    (tmp_path / "m.py").write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch.nn import Linear as L\n"
        "def f(x):\n    return F.pad(x, (1, 0), value=0) + torch.cuda.is_available()\n"
    )
    assert set(torch_uses(tmp_path)) == {"torch", "torch.nn.functional", "torch.nn.Linear",
                                         "torch.nn.functional.pad", "torch.nn.functional.pad(value=)", "torch.cuda",
                                         "torch.cuda.is_available"}  # fmt: skip


def test_the_torch_floor_in_pyproject_is_the_newest_first_version_or_transformers_floor():
    floor = max(max(Version(v) for v in FIRST.values()), transformers_floor())
    assert pyproject_floor() == floor
    assert Version(torch.__version__).release >= floor.release
