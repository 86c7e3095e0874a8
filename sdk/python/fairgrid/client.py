"""The node's HTTP API (docs/api.md), with the standard library only."""

import json
import os
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from .blake3 import blake3

TERMINAL = ("finished", "failed")
# Longest a long poll of the events waits (the node allows 30 s).
_POLL_SECS = 20


class ApiError(Exception):
    """An error answer of the node: `status`, `code` and `message`."""

    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def default_data_dir():
    return Path(os.environ.get("FAIRGRID_DATA_DIR") or Path.home() / ".fairgrid")


def connect(data_dir=None):
    """The running node of a data dir, found as the CLI finds it: its
    bound address in `run/api.addr`, its token in `api.token`."""
    d = Path(data_dir) if data_dir else default_data_dir()
    try:
        addr = (d / "run" / "api.addr").read_text().strip()
    except FileNotFoundError:
        raise ApiError(0, "not_running", f"is the node running? ({d}/run/api.addr is missing)") from None
    token = (d / "api.token").read_text().strip()
    return Client(f"http://{addr}", token)


def load_job_file(path):
    """A `job.toml` as the request the node takes; a relative data
    directory is taken relative to the file, as the CLI does."""
    path = Path(path)
    with open(path, "rb") as f:
        request = tomllib.load(f)
    source = request.get("data", {}).get("source")
    if isinstance(source, str) and source not in ("builtin", "system") and not os.path.isabs(source):
        request["data"]["source"] = str((path.parent / source).resolve())
    return request


class Client:
    def __init__(self, base_url, token, timeout=60):
        self.base = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method, path, body=None, raw=False, timeout=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as res:
                payload = res.read()
        except urllib.error.HTTPError as e:
            text = e.read()
            try:
                err = json.loads(text)["error"]
                raise ApiError(e.code, err["code"], err["message"]) from None
            except (ValueError, KeyError, TypeError):
                raise ApiError(e.code, "http", text[:200].decode(errors="replace")) from None
        except urllib.error.URLError as e:
            raise ApiError(0, "unreachable", f"{self.base}: {e.reason}") from None
        return payload if raw else json.loads(payload)

    def get(self, path, **kw):
        return self._call("GET", path, **kw)

    def post(self, path, body=None):
        return self._call("POST", path, body if body is not None else {})

    def status(self):
        return self.get("/v1/status")

    def adverts(self):
        return self.get("/v1/adverts")

    def fairness(self, job_id=None):
        return self.get("/v1/fairness" + (f"?job={job_id}" if job_id else ""))

    def submit(self, request):
        """Submits a job: a dict shaped like `job.toml` (the JSON body of
        `POST /v1/jobs`) or the path of a `job.toml`."""
        if not isinstance(request, dict):
            request = load_job_file(request)
        accepted = self.post("/v1/jobs", request)
        return Job(self, accepted["job_id"], accepted)

    def job(self, job_id):
        return Job(self, job_id)


class Job:
    """A job this client submitted or looked up."""

    def __init__(self, client, job_id, accepted=None):
        self.client, self.id, self.accepted = client, job_id, accepted

    def __repr__(self):
        return f"Job({self.id[:12]}…)"

    def status(self):
        return self.client.get(f"/v1/jobs/{self.id}")

    def report(self):
        return self.client.get(f"/v1/jobs/{self.id}/report")

    def events(self, after=0, wait_secs=0):
        return self.client.get(
            f"/v1/jobs/{self.id}/events?after={after}&wait_secs={wait_secs}",
            timeout=wait_secs + 30,
        )

    def follow(self, progress=True, on_event=None, timeout=None, out=sys.stderr):
        """Reads the job's events until it ends; prints a line per round
        (unless `progress` is False) and calls `on_event` with each.
        Returns the final status; raises `ApiError` if the job failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        after, state = 0, None
        while state not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {state} after {timeout} s")
            page = self.events(after, _POLL_SECS)
            after, state = page["next"], page["state"]
            for event in page["events"]:
                if on_event:
                    on_event(event)
                if progress:
                    line = _describe(event)
                    if line:
                        print(line, file=out, flush=True)
        final = self.status()
        if final["state"] == "failed":
            raise ApiError(0, "job_failed", f"job {self.id} failed: {final.get('error')}")
        return final

    def download(self, dest):
        """Writes the trained model (safetensors) to `dest` once its BLAKE3
        matches the report's `model_hash`; a mismatch leaves no file."""
        expected = self.report().get("model_hash")
        data = self.client.get(f"/v1/jobs/{self.id}/result", raw=True, timeout=600)
        actual = blake3(data)
        if expected and actual != expected.lower():
            raise ApiError(0, "model_hash_mismatch",
                           f"job {self.id}: the model's BLAKE3 is {actual}, the report says {expected}")
        dest = Path(dest)
        part = dest.with_name(f".{dest.name}.part")
        part.write_bytes(data)
        part.replace(dest)
        return dest


def _describe(e):
    kind = e.get("event")
    if kind == "cleared":
        return f"cleared: {e['assigned']} shards to {e['winners']} nodes, {e['shortfall']} short"
    if kind == "round_completed":
        acc = e.get("test_accuracy")
        acc = "-" if acc is None else f"{acc * 100:.1f}%"
        return f"round {e['round']:>3}  loss {e['train_loss']:.4f}  accuracy {acc}  {e['duration_ms'] / 1000:.2f} s"
    if kind == "reallocated":
        return f"re-cleared: {e['reason']}"
    if kind == "finished":
        return f"finished: test accuracy {e['test_accuracy'] * 100:.2f}% after {e['rounds']} rounds"
    if kind == "failed":
        return f"failed: {e['reason']}"
    return None
