"""DESIGN.md section 8: litellm and tiktoken used with the network absent.

Each check runs a fresh Python in a subprocess, because litellm and tiktoken read their
environment once, at import. The subprocess runs without a network: in its own empty network
namespace (`unshare -n`) where the host allows it, and always under an audit hook that records and
refuses every connection or name lookup to anything but loopback. A recorded attempt fails the
test even when the library would have shrugged the refusal off, so the tests prove "does not try",
not just "survives". `HOME` and `TMPDIR` point at empty directories, so nothing can come from a
tiktoken cache left behind in `~/.cache` or `/tmp` by an earlier run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest

from apps.pricing.offline import bundled_tokenizers_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

_GUARD = textwrap.dedent(
    """
    import json, socket, sys
    NETWORK_ATTEMPTS = []
    _LOOPBACK = {"127.0.0.1", "::1", "localhost", b"localhost", b"127.0.0.1"}

    def _refuse_network(event, args):
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, (str, bytes)) or address[0] in _LOOPBACK:
                return  # unix socket or loopback
            target = address
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
            target = args[0]
            if target is None or target in _LOOPBACK:
                return
        else:
            return
        NETWORK_ATTEMPTS.append(f"{event} {target!r}")
        raise ConnectionRefusedError(f"network disabled by test: {event} {target!r}")

    sys.addaudithook(_refuse_network)
    sys.path.insert(0, REPO_ROOT)

    def report(**values):
        print("RESULT " + json.dumps({"network_attempts": NETWORK_ATTEMPTS, **values}))
    """
)


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    unshare = shutil.which("unshare")
    return bool(unshare) and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0


def run_without_network(body: str, tmp_path: Path, *, timeout_s: float = 120) -> dict:
    """Run `body` in a fresh interpreter with no network and empty caches; return what it `report(...)`s."""
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TIKTOKEN_", "CUSTOM_TIKTOKEN_", "LITELLM_", "HF_", "XDG_"))
    }
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    script = f"REPO_ROOT = {str(REPO_ROOT)!r}\n" + _GUARD + textwrap.dedent(body)
    command = [sys.executable, "-c", script]
    if network_namespace_available():
        command = ["unshare", "-n", *command]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result_line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(result_line.removeprefix("RESULT "))
    result["files_in_fresh_caches"] = sorted(str(p) for p in (*home.rglob("*"), *tmp.rglob("*")) if p.is_file())
    return result


@pytest.mark.slow  # a fresh Python in a subprocess: seconds
def test_import_litellm_with_offline_setup_does_not_try_the_network(tmp_path):
    result = run_without_network(
        """
        import os, time
        from apps.pricing.offline import get_litellm
        litellm = get_litellm()
        time.sleep(1)  # give a background price-map refresh, if one were started, time to try
        report(
            models=len(litellm.model_cost),
            tiktoken_cache_dir=os.environ["TIKTOKEN_CACHE_DIR"],
            hf_download_disabled=litellm.disable_hf_tokenizer_download,
        )
        """,
        tmp_path,
    )
    assert result["network_attempts"] == []
    assert result["models"] > 2_000
    assert result["tiktoken_cache_dir"] == str(bundled_tokenizers_dir())
    assert result["hf_download_disabled"] is True


@pytest.mark.slow  # a fresh Python in a subprocess: seconds
def test_without_the_offline_setup_import_litellm_does_try_the_network(tmp_path):
    """The guard's negative control: the check above would catch a missing `LITELLM_LOCAL_MODEL_COST_MAP`."""
    result = run_without_network("import litellm\nreport()", tmp_path)
    assert result["network_attempts"], "the harness failed to see litellm fetch its price map"


def test_pricing_modules_import_neither_litellm_tiktoken_nor_django(tmp_path):
    result = run_without_network(
        """
        import apps.pricing.catalog, apps.pricing.cost, apps.pricing.counting, apps.pricing.offline
        report(loaded=sorted(m for m in ("litellm", "tiktoken", "django") if m in sys.modules))
        """,
        tmp_path,
    )
    assert result["loaded"] == []


def test_get_litellm_imports_litellm_once_per_process():
    from apps.pricing.offline import get_litellm

    assert get_litellm() is get_litellm() is sys.modules["litellm"]


def test_bundled_tokenizers_dir_holds_the_offline_encodings():
    names = {path.name for path in bundled_tokenizers_dir().iterdir()}
    assert "anthropic_tokenizer.json" in names
    # tiktoken caches an encoding under the sha1 of its download URL; these are cl100k_base and o200k_base.
    assert {"9b5ad71b2ce5302211f9c61530b329a4922fc6a4", "fb374d419588a4632f3f557e76b4b70aebbca790"} <= names


@pytest.mark.skipif(not network_namespace_available(), reason="needs `unshare -n` (root or user namespaces)")
def test_subprocesses_really_run_without_a_network(tmp_path):
    result = run_without_network(
        """
        import socket
        probe = socket.socket()
        try:
            probe.bind(("0.0.0.0", 0)); interfaces = socket.if_nameindex()
        finally:
            probe.close()
        report(interfaces=[name for _, name in interfaces])
        """,
        tmp_path,
    )
    assert result["interfaces"] == ["lo"]
