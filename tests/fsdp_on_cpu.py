"""``accelerate launch --config_file fsdp.yaml tests/fsdp_on_cpu.py train ...``: ``amapo`` under accelerate's FSDP in
CPU processes, for the tests.

accelerate turns FSDP on only for accelerator devices (MULTI_GPU and kin); in CPU processes it silently runs DDP
instead. This shim makes the CPU (gloo) process group count as FSDP's, so that accelerate's FSDP2 path (wrapping,
FULL_STATE_DICT saving) and amapo's training step run exactly as on GPUs. Nothing else is changed.
"""

import sys

import accelerate.state as state
from accelerate.utils import DistributedType

original_init = state.AcceleratorState.__init__


def init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = fsdp_plugin
        self.distributed_type = DistributedType.FSDP
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # read through PartialState too


state.AcceleratorState.__init__ = init_with_fsdp_on_cpu

from amapo.cli import main  # noqa: E402

sys.exit(main())
