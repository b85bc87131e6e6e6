"""Seldon MLServer, the Python peer of the side-by-side gRPC benchmark, set up as PEERS.md found
it runs best on two cores: inference in the main process (``parallel_workers: 0``), debug and
metrics off, ``OMP_NUM_THREADS=1``.

MLServer lives in its own venv (``var/bench/mlserver-venv``, installed from the hash-locked
``benchmarks/peers/mlserver/requirements.txt``), never in the project's lock. The pieces a
driver needs::

    venv = ensure_venv(root)                                   # idempotent (stamp of the lock)
    repo = write_model_repo(Path("var/bench/model/model.json"), Path("var/bench/mlserver"))
    proc = start(venv, repo, grpc_port, http_port)
    wait_ready(proc, repo, http_port)
    ...  ghz --protoset <oip_protoset(venv, dst)> --call inference.GRPCInferenceService/ModelInfer
    procs.tree_rss_bytes(proc.pid); stop(proc)

``python -m benchmarks.mlserver_peer`` does all of it once and checks that ModelInfer answers
XGBoost's own probabilities for the benchmark rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.procs import tree_rss_bytes
from scripts import side_venv
from scripts.side_venv import venv_python

__all__ = [
    "INFER_CALL",
    "LOCK_FILE",
    "MODEL_NAME",
    "MLServerStartError",
    "ensure_venv",
    "infer_requests",
    "log_path",
    "oip_protoset",
    "start",
    "stop",
    "wait_ready",
    "write_infer_bodies",
    "write_model_repo",
]

MODEL_NAME = "altscore-bench"
"""Name of the benchmark model in MLServer (the same as in our registry)."""
INFER_CALL = "inference.GRPCInferenceService/ModelInfer"
"""The Open Inference Protocol call, as ghz's ``--call`` wants it."""
INPUT_NAME = "input-0"
PROBA_OUTPUT = "predict_proba"
"""mlserver_xgboost's output carrying ``[rows, 2]`` class probabilities (column 1: default)."""
LOCK_FILE = Path(__file__).resolve().parent / "peers" / "mlserver" / "requirements.txt"
VENV_DIR = Path("var/bench/mlserver-venv")
_LOG = "mlserver.log"
_PYTHON = "3.11"


class MLServerStartError(RuntimeError):
    """MLServer did not become ready; the message carries the tail of its log."""


def _venv_python(venv: Path) -> Path:
    return venv_python(venv)


def ensure_venv(root: Path) -> Path:
    """``<root>/var/bench/mlserver-venv`` with the locked MLServer installed (idempotent)."""
    return side_venv.ensure_venv(LOCK_FILE, root / VENV_DIR, _PYTHON)


def write_model_repo(
    model_json: Path,
    dst: Path,
    *,
    grpc_port: int = 8081,
    http_port: int = 8080,
    model_name: str = MODEL_NAME,
    max_batch_size: int = 0,
    max_batch_time: float = 0.0,
) -> Path:
    """An MLServer model repository at ``dst``: ``settings.json`` (server) and
    ``<model_name>/model-settings.json`` + ``model.json`` (a copy of ``model_json``).

    Server settings are the best found here (PEERS.md): inference in the main process
    (``parallel_workers: 0``; workers are ~4x slower on two cores), no debug access log, no
    metrics (``metrics_endpoint: null`` also drops the Prometheus gRPC interceptor), loopback
    only. ``start`` rewrites the two ports. ``max_batch_size`` > 1 turns on MLServer's adaptive
    batching (requests wait up to ``max_batch_time`` seconds to be predicted together)."""
    model_dir = dst / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_json, model_dir / "model.json")
    settings: dict[str, Any] = {
        "debug": False,
        "parallel_workers": 0,
        "metrics_endpoint": None,
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": http_port,
        "load_models_at_startup": True,
    }
    model_settings: dict[str, Any] = {
        "name": model_name,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": "v1"},
    }
    if max_batch_size > 1:
        model_settings.update(max_batch_size=max_batch_size, max_batch_time=max_batch_time)
    (dst / "settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2) + "\n")
    return dst


def log_path(repo: Path) -> Path:
    """Where ``start`` sends MLServer's stdout and stderr."""
    return repo / _LOG


def start(venv: Path, repo: Path, grpc_port: int, http_port: int) -> subprocess.Popen[bytes]:
    """``mlserver start <repo>`` on the given ports, in its own process group, with one OpenMP
    thread (XGBoost's spinning threads otherwise take the load generator's core)."""
    settings_path = repo / "settings.json"
    settings = json.loads(settings_path.read_text())
    settings.update(grpc_port=grpc_port, http_port=http_port)
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for key in [k for k in env if k.startswith("MLSERVER_")]:
        del env[key]  # settings.json is the only configuration
    log = log_path(repo).open("wb")
    try:
        return subprocess.Popen(
            [str(venv / "bin" / "mlserver"), "start", str(repo.resolve())],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def _tail(repo: Path, lines: int = 30) -> str:
    try:
        text = log_path(repo).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_ready(
    proc: subprocess.Popen[bytes],
    repo: Path,
    http_port: int,
    *,
    model_name: str = MODEL_NAME,
    timeout: float = 120.0,
) -> float:
    """Poll ``GET /v2/models/<model_name>/ready`` until it answers 200; returns the seconds
    waited. Raises ``MLServerStartError`` with the log tail if MLServer exits or times out."""
    url = f"http://127.0.0.1:{http_port}/v2/models/{model_name}/ready"
    t0 = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            raise MLServerStartError(
                f"MLServer exited with code {code} before {model_name} was ready; "
                f"log {log_path(repo)}:\n{_tail(repo)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - t0 > timeout:
            raise MLServerStartError(
                f"MLServer: {model_name} not ready after {timeout:.0f} s ({url}); "
                f"log {log_path(repo)}:\n{_tail(repo)}"
            )
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM to MLServer's process group, SIGKILL after ``timeout``; returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return int(proc.returncode)


_PROTOSET_SCRIPT = """
import sys
from google.protobuf import descriptor_pb2
from mlserver.grpc import dataplane_pb2
fds = descriptor_pb2.FileDescriptorSet()
seen = set()
def add(fd):
    if fd.name in seen:
        return
    seen.add(fd.name)
    for dep in fd.dependencies:
        add(dep)
    fd.CopyToProto(fds.file.add())
add(dataplane_pb2.DESCRIPTOR)
open(sys.argv[1], "wb").write(fds.SerializeToString())
"""


def oip_protoset(venv: Path, dst: Path) -> Path:
    """MLServer's Open Inference Protocol (``dataplane.proto``, package ``inference``) as a
    protoset file for ``ghz --protoset`` / ``grpcurl -protoset``.

    The MLServer wheel ships only the generated ``mlserver/grpc/dataplane_pb2.py``, no
    ``.proto``; the protoset is that module's own descriptor, so it matches the server exactly."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(_venv_python(venv)), "-c", _PROTOSET_SCRIPT, str(dst.resolve())], check=True
    )
    return dst


def _fp32(v: np.float32) -> float | str:
    """A float32 as proto JSON: the shortest decimal that reads back as it; NaN as "NaN"."""
    return float(str(v)) if v == v else "NaN"


def infer_requests(
    rows: npt.NDArray[np.float32], batch: int, *, model_name: str = MODEL_NAME
) -> list[dict[str, Any]]:
    """``inference.ModelInferRequest`` messages (proto JSON), each one FP32 tensor
    ``[batch, n_features]`` of consecutive rows, asking for ``predict_proba``."""
    if batch < 1 or len(rows) % batch:
        raise ValueError(f"{len(rows)} rows do not split into batches of {batch}")
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        out.append(
            {
                "model_name": model_name,
                "id": f"bench-{i // batch}",
                "inputs": [
                    {
                        "name": INPUT_NAME,
                        "datatype": "FP32",
                        "shape": [int(chunk.shape[0]), int(chunk.shape[1])],
                        "contents": {"fp32_contents": [_fp32(v) for v in chunk.ravel()]},
                    }
                ],
                "outputs": [{"name": PROBA_OUTPUT}],
            }
        )
    return out


def write_infer_bodies(
    dst: Path, *, single_messages: int = 256, batch: int = 64, batch_messages: int = 16
) -> dict[str, Path]:
    """ghz ``--data-file`` bodies for ModelInfer on the same rows as
    ``synthetic_model.write_score_bodies``: ``infer-1.json`` (one row per call) and
    ``infer-<batch>.json``; each a JSON array that ghz sends in turn (round robin)."""
    from benchmarks.synthetic_model import request_rows

    dst.mkdir(parents=True, exist_ok=True)
    rows = request_rows(max(single_messages, batch * batch_messages))
    bodies = {
        "infer-1.json": infer_requests(rows[:single_messages], 1),
        f"infer-{batch}.json": infer_requests(rows[: batch * batch_messages], batch),
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = dst / name
        paths[name].write_text(json.dumps(body, separators=(",", ":"), allow_nan=False))
    return paths


_CHECK_SCRIPT = """
import json, sys
import grpc
from google.protobuf import json_format
from mlserver.grpc import dataplane_pb2 as pb, dataplane_pb2_grpc as pb_grpc
target, body_path = sys.argv[1], sys.argv[2]
out = []
with grpc.insecure_channel(target) as channel:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    for message in json.load(open(body_path)):
        request = json_format.ParseDict(message, pb.ModelInferRequest())
        response = stub.ModelInfer(request, timeout=10)
        (output,) = response.outputs
        values = list(output.contents.fp32_contents) or list(output.contents.fp64_contents)
        out.append({"shape": list(output.shape), "datatype": output.datatype, "values": values})
print(json.dumps(out))
"""


def _check(venv: Path, grpc_port: int, body: Path, model_json: Path) -> float:
    """ModelInfer over gRPC (a client in the MLServer venv) vs XGBoost's predict in this process
    on ``request_rows``; returns the largest |difference| of P(default)."""
    import xgboost as xgb

    from benchmarks.synthetic_model import request_rows

    answer = subprocess.run(
        [str(_venv_python(venv)), "-c", _CHECK_SCRIPT, f"127.0.0.1:{grpc_port}", str(body)],
        check=True,
        capture_output=True,
        text=True,
    )
    outputs = json.loads(answer.stdout)
    proba = np.concatenate(
        [np.asarray(o["values"], dtype=np.float64).reshape(o["shape"])[:, 1] for o in outputs]
    )
    booster = xgb.Booster(model_file=str(model_json))
    expected = booster.predict(xgb.DMatrix(request_rows(len(proba)), missing=np.nan))
    return float(np.max(np.abs(proba - expected)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mlserver_peer")
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--model-json", type=Path, default=Path("var/bench/model/model.json"))
    parser.add_argument("--repo", type=Path, default=Path("var/bench/mlserver"))
    parser.add_argument("--grpc-port", type=int, default=8081)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--keep", action="store_true", help="leave MLServer running")
    ns = parser.parse_args(argv)

    venv = ensure_venv(ns.root)
    repo = write_model_repo(ns.model_json, ns.repo)
    bodies = write_infer_bodies(ns.model_json.parent / "requests")  # beside score-*.json
    protoset = oip_protoset(venv, ns.repo / "oip.protoset")
    proc = start(venv, repo, ns.grpc_port, ns.http_port)
    try:
        waited = wait_ready(proc, repo, ns.http_port)
        time.sleep(2.0)
        rss = tree_rss_bytes(proc.pid)
        diffs = {
            name: _check(venv, ns.grpc_port, path, ns.model_json) for name, path in bodies.items()
        }
        print(f"MLServer ready in {waited:.1f} s (pid {proc.pid}); idle RSS {rss / 2**20:.0f} MiB")
        for name, diff in diffs.items():
            print(f"{name}: max |ModelInfer - XGBoost| = {diff:.3g}")
        print(f"ghz: --protoset {protoset} --call {INFER_CALL}")
        for path in bodies.values():
            print(f"ghz body: {path}")
        if ns.keep:
            print(f"left running: pid {proc.pid}, gRPC 127.0.0.1:{ns.grpc_port}")
            return 0
        return 0 if all(d <= 1e-6 for d in diffs.values()) else 1
    finally:
        if not ns.keep:
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
