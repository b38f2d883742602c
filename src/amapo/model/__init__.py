"""The model layer that training and evaluation both stand on.

``lm_head``   token log-probs from hidden states through the LM head in chunks (no full logits), sharding-aware
``logps``     the patched forward: summed response log-probs of a collated batch; the plain reference computation
``layouts``   which batch layout a model computes exactly, and each layout's model inputs
``loading``   one way to load a model (safetensors only) and its tokenizer
``wrappers``  the transformers model inside DDP / FSDP / DeepSpeed / PEFT wrappers
``generate``  batched answers with one random stream per prompt (``amapo eval``, ``compare``, ``generate``)
``decodings`` the names of ``generate``'s decoding modes, torch-free (for the commands' option checks)
"""
