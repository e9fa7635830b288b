"""Offline mode for the Hugging Face libraries: hade never downloads anything at run time."""
from __future__ import annotations

import os
import sys

_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
# (module, attribute) pairs that cache the environment at import time, in the versions hade supports
# (huggingface_hub.constants is what transformers 5 consults through `is_offline_mode()`).
_CACHED_FLAGS = (
    ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ("huggingface_hub.constants", "HF_HUB_DISABLE_TELEMETRY"),
    ("transformers.utils.hub", "_is_offline_mode"),
    ("transformers.utils.import_utils", "_is_offline_mode"),
)


def force_offline() -> None:
    """Put `transformers` and `huggingface_hub` in offline mode, for good.

    Why: given a path that does not exist (e.g. a checkpoint whose `tokenizer/` folder is missing),
    `AutoTokenizer.from_pretrained` takes it for a Hub repo id and contacts huggingface.co, even with
    `local_files_only=True` on some code paths. Both libraries read these variables once, when they are
    imported, into module constants: so the variables are set for imports still to come, and the
    constants of modules already imported (by the user's code, before hade) are set too. Called at
    `import hade` and again right before every transformers call, so that nothing can turn it back off.
    """
    for name in _ENV:
        os.environ[name] = "1"
    for module_name, attribute in _CACHED_FLAGS:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            setattr(module, attribute, True)
