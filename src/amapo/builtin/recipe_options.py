"""What the built-in model brings from recipe ``builtin`` to the commands that read a trained model (``amapo eval``,
``analyze`` and ``generate``), as it brings its options to ``amapo train``: the recipe's method (whose reward ranks
pairs), beta, token limits and held-out sets. Its training data stays out.

Beside the built-in assets, in the library layer, so each of those commands reads the same options without
importing another command's package.
"""

from __future__ import annotations

import yaml

from amapo.recipes import recipe_path

BUILTIN_MODEL = "builtin:tiny-llama"
BUILTIN_MODEL_OPTIONS = ("model_name_or_path", "method", "beta", "max_length", "max_prompt_length", "eval_datasets")


def builtin_model_options() -> dict:
    """The options recipe ``builtin`` gives the built-in model (``BUILTIN_MODEL_OPTIONS``)."""
    recipe = yaml.safe_load(recipe_path("builtin").read_text())
    return {key: recipe[key] for key in BUILTIN_MODEL_OPTIONS if key in recipe}
