"""Importing litellm safely on a machine without internet (DESIGN.md section 8).

litellm is heavy (seconds, ~150 MB) and, left to itself, downloads its price map on
import, tiktoken encodings on first count, and Hugging Face tokenizers for some model
names. Everything in the SDK that needs litellm goes through `import_litellm()`, which sets
the offline switches first and imports once per process. Nothing on the `record_*` path
calls it.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType

_lock = threading.Lock()
_module: ModuleType | None = None


def bundled_tokenizers_dir() -> Path | None:
    """litellm's bundled tiktoken files (cl100k_base, o200k_base, p50k_base), found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


def import_litellm() -> ModuleType:
    """litellm, imported with its local price map, bundled tiktoken files and no Hugging
    Face downloads. Raises ImportError when the `[litellm]` extra is not installed."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            tokenizers = bundled_tokenizers_dir()
            if tokenizers is None:
                raise ImportError("litellm is not installed: pip install 'tokensite-client[litellm]'")
            # litellm overwrites TIKTOKEN_CACHE_DIR with CUSTOM_TIKTOKEN_CACHE_DIR on import.
            os.environ.setdefault("CUSTOM_TIKTOKEN_CACHE_DIR", str(tokenizers))
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"])
            import litellm

            litellm.disable_hf_tokenizer_download = True
            _module = litellm
    return _module
