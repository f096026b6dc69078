"""Keep litellm and tiktoken off the network, and import litellm only when a price or tokeniser is needed.

No machine running TokenSite reaches the internet (DESIGN.md section 8). Unprepared,
`import litellm` fetches its price map (and a retry thread may later swap `litellm.model_cost`
at run time), tiktoken downloads encodings with no timeout, and `litellm.token_counter` retries
Hugging Face downloads for llama / command-r names. `ensure_offline()` closes all three doors by
environment before either library loads; `get_litellm()` is the one place that imports litellm
(about 3 s and 150 MB, so never at settings or app import time).

Nothing here imports Django, litellm or tiktoken at module import.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from types import ModuleType

_import_lock = threading.Lock()
_litellm: ModuleType | None = None


def bundled_tokenizers_dir() -> Path:
    """litellm's bundled tiktoken encodings (cl100k_base, o200k_base, p50k_base) and Claude tokenizer.

    Found through the import system's spec, which reads the package location without running
    `litellm/__init__.py`.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        raise RuntimeError("litellm is not installed: TokenSite prices and counts tokens with it")
    return Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"


def ensure_offline() -> None:
    """Point litellm and tiktoken at the files installed with litellm. Call before either is imported.

    `CUSTOM_TIKTOKEN_CACHE_DIR` is set as well as `TIKTOKEN_CACHE_DIR` because litellm
    overwrites the latter with the former (or its own default) on first load.
    Idempotent; cheap enough to call at the top of every entry point.
    """
    tokenizers_dir = str(bundled_tokenizers_dir())
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["TIKTOKEN_CACHE_DIR"] = tokenizers_dir
    os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"] = tokenizers_dir


def get_litellm() -> ModuleType:
    """The litellm module, imported once per process with the offline settings applied.

    Sets `disable_hf_tokenizer_download` (else llama-3 / command-r names cost ~23 s of download
    retries per count). It registers no logging callbacks: TokenSite only reads prices and
    tokenisers, it never makes calls through litellm, and callbacks are for calls. litellm 1.106.2
    has no telemetry switch left to turn off; the price-map fetch was its only unprompted network use.
    """
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is None:
            ensure_offline()
            import litellm

            litellm.disable_hf_tokenizer_download = True
            _litellm = litellm
    return _litellm
