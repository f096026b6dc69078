"""Run one real coding agent against the fake providers, exporting to a real TokenSite server.

Meant to run inside a fresh network namespace (`unshare -n`), where only loopback exists, so
everything the agent may reach runs here: the fake providers, and a TokenSite server (gunicorn,
one sync worker, SQLite copied from a migrated template) with a project, an ingest key and a read
key. Prints one JSON document on stdout: what the fake returned and imposed, the stored events,
and the session metadata of the read API.

    python -m tests.otlp.agents.harness claude-code --protocol http/json --template DB --workdir DIR
"""
from __future__ import annotations

import argparse
import html
import http.cookiejar
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import urllib.parse
from pathlib import Path

from tests.otlp.agents.fake_providers import FakeProviders

ROOT = Path(__file__).resolve().parents[3]
AGENT_BIN = ROOT / "agents" / "node_modules" / ".bin"
PYTHON = sys.executable
TEAM, PROJECT = "acme", "agents"
DEVELOPER = "dev@example.com"
VIEWER, VIEWER_PASSWORD = "lead", "lead-password-123"
RESOURCE_ATTRIBUTES = "team=platform,department=eng,cost_center=cc-42"
PROMPT = "Say OK"
WARM_UP_SESSION = "harness-warm-up"
ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(db_path: Path) -> dict:
    env = {key: os.environ[key] for key in ENV_KEEP if key in os.environ}
    env.update(DJANGO_SETTINGS_MODULE="tokensite.settings.local", DATABASE_URL=f"sqlite:///{db_path}",
               PYTHONPATH=f"{ROOT / 'sdk'}:{ROOT}", DEBUG="False", LITELLM_LOCAL_MODEL_COST_MAP="True")
    if "NUMBA_CACHE_DIR" in os.environ:
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    return env


def migrate_template(path: Path) -> None:
    """A migrated SQLite database, made once and copied for every run."""
    subprocess.run([PYTHON, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   env=server_env(path), check=True)


def create_key(db_path: Path, scope: str) -> str:
    done = subprocess.run([PYTHON, str(ROOT / "manage.py"), "create_api_key", "--team", TEAM, "--project", PROJECT,
                           "--scope", scope, "--name", scope], cwd=ROOT, env=server_env(db_path), check=True,
                          capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1].strip()


class TokenSiteServer:
    def __init__(self, workdir: Path, template: Path):
        self.db_path = workdir / "tokensite.sqlite3"
        shutil.copyfile(template, self.db_path)
        self.ingest_key = create_key(self.db_path, "ingest")
        self.read_key = create_key(self.db_path, "read")
        self.port = free_port()
        self.log = open(workdir / "server.log", "w")
        # One worker: the agent sources pair a refused attempt with the next one through the cache,
        # which is per process without Redis (as under `make run`).
        self.process = subprocess.Popen(
            [str(Path(PYTHON).parent / "gunicorn"), "tokensite.wsgi", "--workers", "1", "--worker-class", "sync",
             "--bind", f"127.0.0.1:{self.port}", "--timeout", "60"],
            cwd=ROOT, env=server_env(self.db_path), stdout=self.log, stderr=subprocess.STDOUT)
        # Warming up (litellm's price map, a tokeniser) takes a minute and more on a loaded host.
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/schema/", timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        self.stop()  # a server still warming up must not outlive the failed run
        raise RuntimeError(f"TokenSite server did not start: {(workdir / 'server.log').read_text()[-2000:]}")

    def warm_up(self) -> None:
        """One priced event first, so the worker has loaded litellm's price map (seconds) before an
        agent's short exit-time flush arrives, as any worker that has served before has."""
        event = {"event_id": "00000000-0000-4000-8000-000000000001", "type": "usage", "session_id": WARM_UP_SESSION,
                 "provider": "openai", "model": "gpt-4o", "timestamp": "2026-01-01T00:00:00Z", "duration_ms": 1,
                 "input_tokens": 1, "output_tokens": 1}
        request = urllib.request.Request(f"{self.url}/api/v1/events", data=json.dumps({"events": [event]}).encode(),
                                         headers={"Authorization": f"Bearer {self.ingest_key}",
                                                  "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=60).read()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()

    def events(self) -> list[dict]:
        with sqlite3.connect(self.db_path, timeout=30) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT event_id, type, session_id, step, provider, model, call_id, timestamp, duration_ms,"
                " time_to_first_token_ms, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
                " tool_tokens, thought_tokens, wait_ms, status_code, attempt, attributes, cost_nanousd"
                " FROM ingestion_rawevent WHERE session_id != ? ORDER BY timestamp", (WARM_UP_SESSION,)).fetchall()
        return [dict(row, attributes=json.loads(row["attributes"] or "{}")) for row in rows]

    def session_page(self, session_id: str) -> dict:
        """The session page as a team member sees it: its data-metric values, source and developer."""
        subprocess.run([PYTHON, str(ROOT / "manage.py"), "add_member", "--team", TEAM, "--username", VIEWER,
                        "--password", VIEWER_PASSWORD], cwd=ROOT, env=server_env(self.db_path), check=True,
                       capture_output=True)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        login = opener.open(f"{self.url}/login/", timeout=30).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
        form = urllib.parse.urlencode({"username": VIEWER, "password": VIEWER_PASSWORD,
                                       "csrfmiddlewaretoken": token}).encode()
        opener.open(urllib.request.Request(f"{self.url}/login/", data=form,
                                           headers={"Referer": f"{self.url}/login/"}), timeout=30).read()
        page_url = f"{self.url}/{TEAM}/{PROJECT}/sessions/{urllib.parse.quote(session_id)}/"
        page = opener.open(page_url, timeout=30).read().decode()
        values = dict(re.findall(r'data-metric="([^"]+)" data-value="([^"]*)"', page))
        origin = re.search(r'<p class="origin">(.*?)</p>', page, re.S)
        origin_text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", origin.group(1))).split()) if origin else ""
        return {"values": values, "origin": origin_text}

    def metadata(self, session_id: str) -> dict:
        request = urllib.request.Request(f"{self.url}/api/v1/sessions/{session_id}/metadata",
                                         headers={"Authorization": f"Bearer {self.read_key}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def agent_env(home: Path) -> dict:
    env = {key: os.environ[key] for key in ENV_KEEP if key in os.environ}
    env.update(HOME=str(home), NO_COLOR="1", CI="1")
    return env


def run_claude_code(*, home: Path, fake: FakeProviders, server: TokenSiteServer, protocol: str) -> dict:
    """The README's Claude Code lines, with the fake provider as Anthropic's API."""
    env = agent_env(home)
    env.update({
        "ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": "sk-ant-fake",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
        # --- README: Claude Code ---
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"{server.url}/otlp",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{server.ingest_key}",
        "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_RESOURCE_ATTRIBUTES": f"{RESOURCE_ATTRIBUTES},user.email={DEVELOPER}",
        # --- short export intervals so the test need not wait ---
        "OTEL_LOGS_EXPORT_INTERVAL": "500", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_TRACES_EXPORT_INTERVAL": "500",
    })
    return _run([str(AGENT_BIN / "claude"), "-p", PROMPT, "--model", "claude-sonnet-4-5-20250929", "--tools", "",
                 "--output-format", "json"], env, home)


def run_gemini(*, home: Path, fake: FakeProviders, server: TokenSiteServer, agent: str) -> dict:
    """The README's Gemini CLI / Qwen Code settings, with the fake provider as the Gemini API."""
    settings_dir = home / (".gemini" if agent == "gemini" else ".qwen")
    settings_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "telemetry": {"enabled": True, "target": "local", "otlpEndpoint": f"{server.url}/otlp",
                      "otlpProtocol": "http", "logPrompts": False},
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False},
    }
    (settings_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    env = agent_env(home)
    env.update({
        "GEMINI_API_KEY": "fake-key", "GOOGLE_GEMINI_BASE_URL": fake.base_url,
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        # Gemini CLI has no headers setting: the standard OTel variable carries the key.
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{server.ingest_key}",
        "OTEL_RESOURCE_ATTRIBUTES": RESOURCE_ATTRIBUTES,
    })
    return _run([str(AGENT_BIN / agent), "-p", PROMPT, "-m", "gemini-2.5-flash"], env, home)


def run_qwen(*, home: Path, fake: FakeProviders, server: TokenSiteServer) -> dict:
    """The README's Qwen Code settings, in its Anthropic mode with the fake provider as the API."""
    settings_dir = home / ".qwen"
    settings_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "telemetry": {"enabled": True, "target": "local", "otlpEndpoint": f"{server.url}/otlp",
                      "otlpProtocol": "http", "logPrompts": False},
        "security": {"auth": {"selectedType": "anthropic"}},
        "privacy": {"usageStatisticsEnabled": False},
    }
    (settings_dir / "settings.json").write_text(json.dumps(settings, indent=2))
    env = agent_env(home)
    env.update({
        "ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": "sk-ant-fake",
        "ANTHROPIC_MODEL": "claude-sonnet-4-5-20250929",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{server.ingest_key}",
    })
    return _run([str(AGENT_BIN / "qwen"), "-p", PROMPT], env, home)


def run_codex(*, home: Path, fake: FakeProviders, server: TokenSiteServer, protocol: str) -> dict:
    """The README's Codex CLI `[otel]` table, with the fake provider as the Responses API."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    headers = f'{{ "Authorization" = "Bearer {server.ingest_key}" }}'
    otlp = f"{server.url}/otlp/v1"
    (codex_home / "config.toml").write_text(f"""
model = "gpt-5-codex"
model_provider = "fake"
model_reasoning_effort = "low"
check_for_update_on_startup = false

[model_providers.fake]
name = "Fake"
base_url = "{fake.base_url}/v1"
env_key = "FAKE_OPENAI_API_KEY"
wire_api = "responses"
request_max_retries = 4
stream_max_retries = 4

[otel]
log_user_prompt = false
exporter = {{ otlp-http = {{ endpoint = "{otlp}/logs", protocol = "{protocol}", headers = {headers} }} }}
trace_exporter = {{ otlp-http = {{ endpoint = "{otlp}/traces", protocol = "{protocol}", headers = {headers} }} }}
metrics_exporter = {{ otlp-http = {{ endpoint = "{otlp}/metrics", protocol = "{protocol}", headers = {headers} }} }}
""")
    env = agent_env(home)
    env.update({"CODEX_HOME": str(codex_home), "FAKE_OPENAI_API_KEY": "sk-fake",
                "OTEL_RESOURCE_ATTRIBUTES": f"{RESOURCE_ATTRIBUTES},user.email={DEVELOPER}"})
    return _run([str(AGENT_BIN / "codex"), "exec", "--skip-git-repo-check", PROMPT], env, home)


def _run(command: list[str], env: dict, home: Path) -> dict:
    started = time.time()
    done = subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL)
    return {"returncode": done.returncode, "seconds": round(time.time() - started, 2),
            "stdout": done.stdout[-4000:], "stderr": done.stderr[-4000:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("agent", choices=("claude-code", "gemini", "qwen", "codex"))
    parser.add_argument("--protocol", default="http/json")
    parser.add_argument("--template", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--expect-usage-events", type=int, default=1)
    args = parser.parse_args()

    home = args.workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    server = TokenSiteServer(args.workdir, args.template)
    try:
        server.warm_up()
        with FakeProviders() as fake:
            if args.agent == "claude-code":
                run = run_claude_code(home=home, fake=fake, server=server, protocol=args.protocol)
            elif args.agent == "codex":
                run = run_codex(home=home, fake=fake, server=server,
                                protocol="binary" if "protobuf" in args.protocol else "json")
            elif args.agent == "qwen":
                run = run_qwen(home=home, fake=fake, server=server)
            else:
                run = run_gemini(home=home, fake=fake, server=server, agent=args.agent)
            report = fake.report()
        # The agents flush on exit; allow a late batch, and stop once every expected event is in.
        deadline = time.time() + 20
        expected_usage = report["successes"]
        while time.time() < deadline:
            events = server.events()
            usage = [event for event in events if event["type"] == "usage"]
            throttles = [event for event in events if event["type"] == "throttle"]
            if len(usage) >= expected_usage and len(throttles) >= report["throttled"]:
                break
            time.sleep(0.5)
        time.sleep(1)
        events = server.events()
        sessions = sorted({event["session_id"] for event in events})
        metadata = {session: server.metadata(session) for session in sessions}
        pages = {session: server.session_page(session) for session in sessions}
    finally:
        server.stop()
    print(json.dumps({"run": run, "fake": report, "events": events, "metadata": metadata, "pages": pages,
                      "server_log": (args.workdir / "server.log").read_text()[-3000:]}, default=str))


if __name__ == "__main__":
    main()
