"""The Apache Airflow DAG (deploy/airflow/dags) in Airflow itself, in a venv of its own
(``var/airflow-venv`` from the hash-locked ``deploy/airflow/requirements.txt``; never the
project's lock): Airflow's DagBag loads it without import errors, its commands render to
altscore's CLI, and ``dag.test()`` runs publish -> retrain -> evaluate for real against a copy of
a trained registry (publish skipped without an entity spec, a challenger registered and shadowed,
the comparison printed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from credit_core.registry import MlflowRegistry, local_tracking_uri
from scripts.side_venv import ensure_venv, venv_python
from tests.conftest import GMSC_DATA, MODEL_NAME, ROOT, TrainedModel
from training.__main__ import main as training_main

DAGS = ROOT / "deploy" / "airflow" / "dags"
LOCK = ROOT / "deploy" / "airflow" / "requirements.txt"

_SCRIPT = r"""
import json, sys, types
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags)}
dag = bag.dags["altscore_retrain"]
out["tasks"] = {
    t.task_id: {
        "downstream": sorted(t.downstream_task_ids),
        "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
        "skip_on_exit_code": sorted(t.skip_on_exit_code),
        "retries": t.retries,
    }
    for t in dag.tasks
}
env = dag.get_template_env()
var = types.SimpleNamespace(value=types.SimpleNamespace(get=lambda key, default: default))
def render(params):
    return {t.task_id: env.from_string(t.bash_command).render(params=params, var=var)
            for t in dag.tasks}
params = json.loads(sys.argv[2])
out["rendered"] = render(params)
# more parameter sets rendered by the same DagBag (one Airflow start-up, not one each)
out["rendered_also"] = [render(p) for p in json.loads(sys.argv[4])]
if sys.argv[3] == "run":
    run = dag.test(run_conf=params)
    out["run"] = {"state": getattr(run.state, "value", run.state),
                  "tasks": {ti.task_id: getattr(ti.state, "value", ti.state)
                            for ti in run.get_task_instances()}}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The venv's interpreter and an Airflow home with a migrated sqlite database."""
    venv = ensure_venv(LOCK, ROOT / "var" / "airflow-venv")
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ALTSCORE_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    done = subprocess.run(
        [str(venv / "bin" / "airflow"), "db", "migrate"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {**env, "PYTHON": str(venv_python(venv))}


def _dag(
    airflow: dict[str, str],
    params: dict[str, str],
    mode: str,
    also: list[dict[str, str]] | None = None,
    **env: str,
) -> Any:
    python = airflow["PYTHON"]
    done = subprocess.run(
        [python, "-c", _SCRIPT, str(DAGS), json.dumps(params), mode, json.dumps(also or [])],
        env={**airflow, **env}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    tail = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 0, tail
    assert lines, tail
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_dagbag_loads_the_dag_and_its_commands_call_the_cli(
    airflow: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    params = {"data": "/data/app file.csv", "publish_spec": "specs/sl.yaml", "model_name": "m"}
    got = _dag(airflow, params, "load", also=[{"data": "", "publish_spec": "", "model_name": ""}])
    assert got["errors"] == {}
    assert got["dags"] == ["altscore_retrain"]
    tasks = got["tasks"]
    assert tasks["publish"]["downstream"] == ["retrain"]
    assert tasks["retrain"]["downstream"] == ["evaluate"]
    assert tasks["retrain"]["trigger_rule"] == "none_failed"  # runs after a skipped publish
    assert tasks["retrain"]["skip_on_exit_code"] == [1]  # gates failed: skipped, not failed
    assert tasks["retrain"]["retries"] == 0
    cli = "cd /app && python -m training"
    assert got["rendered"] == {
        "publish": f"{cli} publish --spec specs/sl.yaml --data '/data/app file.csv'",
        "retrain": f"{cli} retrain --model-name m --data '/data/app file.csv'",
        "evaluate": f"{cli} compare --json --model-name m",
    }
    # what each command names exists in the CLI (its parser, in this process: `python -m
    # training` is `sys.exit(main())`, a subprocess would add only the interpreter's start-up)
    for command in got["rendered"].values():
        sub = command.split(" -m training ")[1].split()[0]
        with pytest.raises(SystemExit) as done:
            training_main([sub, "--help"])
        assert done.value.code == 0
        help_text = capsys.readouterr().out
        for flag in (w for w in command.split() if w.startswith("--")):
            assert flag in help_text, (sub, flag)
    (empty,) = got["rendered_also"]  # no parameters
    assert empty["publish"].endswith("exit 99")  # skipped
    assert empty["retrain"] == f"{cli} retrain"


def test_the_dag_runs_publish_retrain_evaluate(
    airflow: dict[str, str], trained: TrainedModel, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(trained.state_dir / "mlflow", state / "mlflow")
    sample = tmp_path / "gmsc.csv"
    with GMSC_DATA.open() as src:  # the header and 10,000 applicants: a quick retrain
        sample.write_text("".join(line for _, line in zip(range(10_001), src, strict=False)))
    got = _dag(
        airflow,
        {"data": str(sample), "publish_spec": "", "model_name": ""},
        "run",
        AIRFLOW_VAR_ALTSCORE_HOME=str(ROOT),
        AIRFLOW_VAR_ALTSCORE_PYTHON=sys.executable,
        ALTSCORE_STATE_DIR=str(state),
    )
    assert got["run"] == {
        "state": "success",
        "tasks": {"publish": "skipped", "retrain": "success", "evaluate": "success"},
    }
    registry = MlflowRegistry(local_tracking_uri(state / "mlflow"))
    challenger = registry.get_alias(MODEL_NAME, "challenger")
    assert challenger is not None
    assert int(challenger.version) > int(trained.version)
    assert registry.routing(MODEL_NAME).mode == "shadow"
