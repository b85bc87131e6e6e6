"""``python -m training``: train | ensure-champion.

python -m training train --spec specs/gmsc.yaml \
    --data ../shared/data/give_me_some_credit/cs-training.csv
python -m training ensure-champion      # train the default model when no champion exists
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from rich.console import Console

from training.settings import TrainingSettings
from training.train import TrainParams

DEFAULT_SPEC = Path("specs/gmsc.yaml")
GMSC_FILE = Path("give_me_some_credit/cs-training.csv")


def _params(ns: argparse.Namespace) -> TrainParams:
    defaults = TrainParams()
    return TrainParams(
        eta=ns.eta if ns.eta is not None else defaults.eta,
        max_depth=ns.max_depth if ns.max_depth is not None else defaults.max_depth,
        max_rounds=ns.max_rounds if ns.max_rounds is not None else defaults.max_rounds,
    )


def _default_data(settings: TrainingSettings, console: Console) -> Path:
    path = settings.data_dir / GMSC_FILE
    if path.is_file():
        return path
    from training.synthetic import write_synthetic_gmsc

    synthetic = settings.state_dir / "synthetic" / "gmsc-synthetic.csv"
    console.log(
        f"[yellow]Give Me Some Credit not found at {path}: training on SYNTHETIC data "
        f"({synthetic}); its metrics say nothing about real credit risk[/]"
    )
    return write_synthetic_gmsc(synthetic)


def _publish(ns: argparse.Namespace, settings: TrainingSettings, console: Console) -> int:
    from credit_core import CreditError
    from credit_core.feature_store import store_from_url
    from feature_kernels import SpecError, load_spec
    from training.publish import publish_entities

    if not settings.redis_url:
        console.print(
            "[red]publish needs REDIS_URL[/] (the embedded store lives inside the server; it is "
            "filled from the model bundle's entity snapshot)"
        )
        return 2
    try:
        spec = load_spec(ns.spec)
        store = store_from_url(settings.redis_url)
        version, rows = publish_entities(
            spec,
            ns.data.parent,
            store,
            as_of=ns.as_of or dt.datetime.now(dt.UTC),
            ttl_seconds=ns.ttl_seconds,
            console=console,
        )
    except (SpecError, FileNotFoundError, ValueError, CreditError) as e:
        console.print(f"[red]publish failed:[/] {e}")
        return 2
    print(f"{spec.store_namespace()} version={version} rows={rows}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("train", "train on a dataset and register the model in MLflow"),
        ("ensure-champion", "train and register the default model if no champion exists"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
        p.add_argument("--data", type=Path, default=None, help="CSV/TSV/Parquet (default: GMSC)")
        p.add_argument("--model-name", default=None)
        p.add_argument("--eta", type=float, default=None)
        p.add_argument("--max-depth", type=int, default=None)
        p.add_argument("--max-rounds", type=int, default=None)
        if name == "train":
            p.add_argument(
                "--champion", choices=["if-missing", "always", "never"], default="if-missing"
            )
    pub = sub.add_parser("publish", help="publish entity features to the online store (Redis)")
    pub.add_argument("--spec", type=Path, required=True)
    pub.add_argument("--data", type=Path, required=True, help="application file; tables beside it")
    pub.add_argument("--as-of", type=dt.datetime.fromisoformat, default=None, help="default: now")
    pub.add_argument("--ttl-seconds", type=int, default=None)
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    console = Console(stderr=True)
    settings = TrainingSettings()
    if getattr(ns, "model_name", None):
        settings = settings.model_copy(update={"model_name": ns.model_name})

    from credit_core import CreditError
    from feature_kernels import FeatureError, SpecError
    from training.run import CHAMPION, train_and_register

    if ns.command == "publish":
        return _publish(ns, settings, console)
    try:
        if ns.command == "ensure-champion":
            registry = settings.registry()
            current = registry.get_alias(settings.model_name, CHAMPION)
            if current is not None:
                console.log(f"{settings.model_name}@{CHAMPION} is version {current.version}")
                return 0
            console.log(f"no {CHAMPION!r} for {settings.model_name}: training the default model")
        data = ns.data or _default_data(settings, console)
        outcome = train_and_register(
            settings,
            spec_path=ns.spec,
            data_path=data,
            params=_params(ns),
            champion=getattr(ns, "champion", "if-missing"),
            console=console,
        )
    except (SpecError, FeatureError, FileNotFoundError, ValueError, CreditError) as e:
        console.print(f"[red]training failed:[/] {e}")
        return 2
    print(
        f"{outcome.version.name} v{outcome.version.version} auc={outcome.evaluation.auc:.4f} "
        f"champion={'yes' if outcome.champion_set else 'unchanged'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
