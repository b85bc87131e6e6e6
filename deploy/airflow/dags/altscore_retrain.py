"""altscore retraining for teams that already run Apache Airflow: publish -> retrain -> evaluate.

- **publish**: the entity features of ``publish_spec`` from ``data`` into the online store
  (``python -m training publish``); skipped when ``publish_spec`` is empty (a model without
  entity inputs has nothing to publish).
- **retrain**: a challenger trained on ``data`` (default: the data the default model trains on)
  with the champion's spec and hyper-parameters, registered, given the ``challenger`` alias and
  scored in shadow only when its holdout gates pass (``python -m training retrain``). Exit 1
  (trained, gates failed: no challenger, routing unchanged) marks the task *skipped*, not failed,
  and nothing is evaluated.
- **evaluate**: champion vs challenger on the outcomes matched so far (``python -m training
  compare --json``), in the task log. Promotion stays a decision under the evidence rule:
  ``python -m training promote`` (by hand or from a DAG of your own).

The tasks run altscore's own CLI, so the worker needs altscore: run them on workers built from
the ``trainer`` target of ``deploy/Dockerfile`` (sources in ``/app``, ``python`` on PATH), or set
the Airflow Variables ``altscore_home`` (folder holding altscore's sources) and
``altscore_python`` (its interpreter). Settings come from the worker's ``ALTSCORE_*``
environment (``ALTSCORE_MLFLOW_TRACKING_URI``, ``ALTSCORE_REDIS_URL``, ``ALTSCORE_MIN_AUC``...).
Checked by ``tests/test_airflow.py``: Airflow's DagBag loads this file in a venv of its own
(``deploy/airflow/requirements.txt``), and the DAG runs end to end with ``dag.test()``.
"""

from __future__ import annotations

import datetime as dt
import shlex

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

SKIPPED = 99
"""Exit status that marks a task skipped (BashOperator's default)."""
GATES_FAILED = 1
"""``training retrain``: trained and registered, but the holdout gates failed."""

CLI = (
    "cd {{ var.value.get('altscore_home', '/app') | sh }} && "
    "{{ var.value.get('altscore_python', 'python') | sh }} -m training"
)
MODEL = "{% if params.model_name %} --model-name {{ params.model_name | sh }}{% endif %}"
DATA = "{% if params.data %} --data {{ params.data | sh }}{% endif %}"

with DAG(
    dag_id="altscore_retrain",
    description="altscore: publish entity features, retrain a challenger, evaluate it",
    schedule="@weekly",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=10)},
    params={
        "data": Param(
            "", type="string", description="application file (CSV/Parquet); empty: the default"
        ),
        "publish_spec": Param(
            "", type="string", description="feature spec with entity inputs; empty: no publish"
        ),
        "model_name": Param(
            "", type="string", description="registered model; empty: ALTSCORE_MODEL_NAME"
        ),
    },
    user_defined_filters={"sh": shlex.quote},
    tags=["altscore", "credit-risk"],
    doc_md=__doc__,
) as dag:
    publish = BashOperator(
        task_id="publish",
        bash_command=(
            "{% if params.publish_spec %}"
            f"{CLI} publish --spec {{{{ params.publish_spec | sh }}}}"
            " --data {{ params.data | sh }}"
            "{% else %}"
            f"echo 'no publish_spec: no entity features to publish'; exit {SKIPPED}"
            "{% endif %}"
        ),
        skip_on_exit_code=SKIPPED,
    )
    retrain = BashOperator(
        task_id="retrain",
        bash_command=f"{CLI} retrain{MODEL}{DATA}",
        skip_on_exit_code=GATES_FAILED,
        trigger_rule="none_failed",  # a skipped publish does not stop the retrain
        retries=0,  # the same data trains the same model: a retry repeats a failure
    )
    evaluate = BashOperator(
        task_id="evaluate",
        bash_command=f"{CLI} compare --json{MODEL}",
    )
    publish >> retrain >> evaluate
