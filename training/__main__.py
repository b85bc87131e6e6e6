"""``python -m training``: train | ensure-champion | publish | outcomes | compare | promote.

python -m training train --spec specs/gmsc.yaml \
    --data ../shared/data/give_me_some_credit/cs-training.csv
python -m training train --alias challenger --champion always   # register a challenger
python -m training ensure-champion      # train the default model when no champion exists
python -m training outcomes --file labels.csv   # record observed defaults (CSV or Parquet)
python -m training compare [--json]     # champion vs challenger on the matched outcomes
python -m training promote [--force]    # challenger -> champion when the evidence allows

Exit codes: 0 done, 1 promotion refused by the evidence rule, 2 failed (bad input, no
challenger, registry or log errors).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from credit_core.domain import ROUTING_MODES
from credit_core.registry import CHALLENGER, CHAMPION
from training.settings import TrainingSettings
from training.train import TrainParams
from training.tune import TuneSettings

if TYPE_CHECKING:
    from credit_core.evaluation import EvaluationLog
    from training.compare import Comparison

DEFAULT_SPEC = Path("specs/gmsc.yaml")
GMSC_FILE = Path("give_me_some_credit/cs-training.csv")


class _Help(argparse.HelpFormatter):
    """Shows each option's default (where it has one and its help does not say it already)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """``--<name>`` for every XGBoost parameter of the spec's ``model`` section."""
    group = parser.add_argument_group(
        "XGBoost parameters (default: the spec's `model` section, else the value shown)"
    )
    for name, info in TrainParams.model_fields.items():
        kind = int if info.annotation in (int, "int") or isinstance(info.default, int) else float
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            metavar=kind.__name__.upper(),
            help=f"{info.description or name} (default: {info.default})",
        )


def _params(ns: argparse.Namespace) -> TrainParams:
    """The spec's ``model`` section with the flags given on the command line over it."""
    from feature_kernels import load_spec

    overrides = {n: getattr(ns, n) for n in TrainParams.model_fields if getattr(ns, n) is not None}
    return TrainParams.model_validate({**load_spec(ns.spec).model.model_dump(), **overrides})


def _tune(ns: argparse.Namespace) -> TuneSettings | None:
    if not getattr(ns, "tune", False):
        return None
    if ns.trials < 1 or ns.folds < 2 or (ns.timeout is not None and ns.timeout <= 0):
        raise ValueError("--trials must be >= 1, --folds >= 2 and --timeout > 0")
    return TuneSettings(trials=ns.trials, timeout=ns.timeout, folds=ns.folds)


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
    from credit_core.feature_store import RedisFeatureStore
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
        store = RedisFeatureStore(settings.redis_url, cluster=settings.redis_cluster)
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


def _retrain(ns: argparse.Namespace, settings: TrainingSettings, console: Console) -> int:
    """Exit 0: a challenger registered and shadowed; 1: trained, but its gates failed (no alias,
    routing unchanged); 2: nothing to retrain or a failure."""
    from credit_core import CreditError
    from feature_kernels import FeatureError, SpecError
    from training.retrain import retrain

    try:
        done = retrain(
            settings, data_path=ns.data or _default_data(settings, console), console=console
        )
    except (CreditError, FeatureError, SpecError, OSError, ValueError) as e:
        console.print(f"[red]retrain failed:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    v = done.trained.version.version
    if not done.challenger_set:
        print(f"{settings.model_name} v{v}: registered, gates failed: no challenger (routing "
              f"{done.routing.mode} unchanged)")  # fmt: skip
        return 1
    auc = done.trained.evaluation.auc
    print(
        f"{settings.model_name} v{v}: challenger to v{done.champion_version}, routing shadow "
        f"(AUC {auc:.4f}); promote with `python -m training promote`"
    )
    return 0


def _replay(
    ns: argparse.Namespace, settings: TrainingSettings, log: EvaluationLog, console: Console
) -> int:
    """Exit 0: every decision reproduced; 1: some differ; 2: nothing to replay."""
    from training.replay import as_served, replay, select_records

    records = select_records(log.read_predictions(), ns.request_id, ns.last)
    if records.height == 0:
        console.print(f"no logged prediction of {ns.request_id or 'the log'} to replay")
        return 2
    load, policy = as_served(settings.state_dir, settings.tracking_uri())
    results = replay(records, load, policy)
    for r in results:
        if ns.json:
            print(json.dumps(r.as_dict()))
        elif r.reproduced:
            print(
                f"{r.request_id} {r.variant} {r.model}: reproduced (pd {r.replayed['pd']!r}, "
                f"score {r.replayed['score']}, {r.replayed['decision']}"
                + (
                    f", reasons {','.join(r.replayed['reasons'])})"
                    if r.replayed["reasons"]
                    else ")"
                )
            )
        else:
            print(f"{r.request_id} {r.variant} {r.model}: DIFFERS")
            for d in r.differences:
                print(f"  {d}")
    differ = sum(not r.reproduced for r in results)
    console.log(f"{len(results) - differ} of {len(results)} decisions reproduced")
    return 1 if differ else 0


def _evaluation_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from training.compare import EvidenceRules

    rules = EvidenceRules()
    out = sub.add_parser("outcomes", help="record observed defaults from a CSV/Parquet file")
    out.add_argument(
        "--file",
        type=Path,
        required=True,
        help="columns request_id and/or applicant_id, defaulted (0/1, true/false), "
        "optionally observed_at (unix seconds or ISO-8601)",
    )
    cmp = sub.add_parser("compare", help="champion vs challenger on the matched outcomes")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    pro = sub.add_parser(
        "promote", help="challenger -> champion (champion -> archived) when the evidence allows"
    )
    pro.add_argument("--force", action="store_true", help="promote whatever the evidence says")
    pro.add_argument("--min-outcomes", type=int, default=rules.min_outcomes)
    pro.add_argument("--min-positives", type=int, default=rules.min_positives)
    pro.add_argument("--alpha", type=float, default=rules.alpha)
    pro.add_argument(
        "--max-auc-drop",
        type=float,
        default=rules.max_auc_drop,
        help="how far the challenger's AUC may sit below the champion's",
    )
    rep = sub.add_parser(
        "replay",
        help="reproduce logged decisions from the log and the registered model version",
    )
    which = rep.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--request-id", action="append", default=[], help="a logged request (repeatable)"
    )
    which.add_argument("--last", type=int, default=None, help="the last N predictions logged")
    rep.add_argument("--json", action="store_true", help="print one JSON object per prediction")
    for p in (rep,):
        p.add_argument("--state-dir", type=Path, default=None, help="default: ALTSCORE_STATE_DIR")
        p.add_argument(
            "--evaluation-dir", type=Path, default=None, help="default: <state-dir>/evaluation"
        )
    for p in (out, cmp, pro):
        p.add_argument("--model-name", default=None)
        p.add_argument("--state-dir", type=Path, default=None, help="default: ALTSCORE_STATE_DIR")
        p.add_argument(
            "--evaluation-dir", type=Path, default=None, help="default: <state-dir>/evaluation"
        )
    for p in (cmp, pro):
        p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
        p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _evaluation_command(
    ns: argparse.Namespace, settings: TrainingSettings, console: Console
) -> int:
    from credit_core import CreditError
    from credit_core.evaluation import OutcomeFileError, import_outcomes

    log = settings.evaluation_log()
    try:
        if ns.command == "outcomes":
            n = import_outcomes(log, ns.file)
            where = log.directory if log.stream is None else log.stream.key("outcomes")
            print(f"recorded {n} outcomes from {ns.file} in {where}")
            return 0
        if ns.command == "compare":
            return _compare(ns, settings, log, console)
        if ns.command == "replay":
            return _replay(ns, settings, log, console)
        return _promote(ns, settings, log, console)
    except OutcomeFileError as e:
        console.print(f"[red]outcomes refused, nothing recorded:[/] {e}")
        return 2
    except CreditError as e:
        console.print(f"[red]{ns.command} failed:[/] {e}")
        return 2


def _aliases(settings: TrainingSettings) -> tuple[str | None, str | None]:
    """Versions of the champion and the challenger (None where the alias is not set)."""
    registry = settings.registry()
    refs = [registry.get_alias(settings.model_name, a) for a in (CHAMPION, CHALLENGER)]
    return refs[0].version if refs[0] else None, refs[1].version if refs[1] else None


def _comparison(
    ns: argparse.Namespace,
    settings: TrainingSettings,
    log: EvaluationLog,
    console: Console,
    versions: tuple[str | None, str | None],
) -> Comparison:
    from credit_core.evaluation import matched
    from training.compare import compare

    rows = matched(log, settings.model_name)
    where = log.archive.url if log.archive is not None else log.directory
    console.log(f"{rows.height:,} matched predictions of {settings.model_name} in {where}")
    return compare(
        rows,
        model_name=settings.model_name,
        champion_version=versions[0],
        challenger_version=versions[1],
        n_boot=ns.n_boot,
        seed=ns.seed,
    )


def _compare(
    ns: argparse.Namespace, settings: TrainingSettings, log: EvaluationLog, console: Console
) -> int:
    from training.compare import render

    versions = _aliases(settings)
    for alias, version in zip((CHAMPION, CHALLENGER), versions, strict=True):
        if version is None:
            console.print(f"[yellow]no {alias!r} alias: every {alias} prediction is counted[/]")
    comparison = _comparison(ns, settings, log, console, versions)
    if ns.json:
        print(json.dumps(comparison.to_dict(), indent=2))
    else:
        render(comparison, Console(width=None if sys.stdout.isatty() else 160))
    return 0


def _promote(
    ns: argparse.Namespace, settings: TrainingSettings, log: EvaluationLog, console: Console
) -> int:
    from training.compare import EvidenceRules, Refusal, evidence_failures, render

    name = settings.model_name
    champion, challenger = _aliases(settings)
    if challenger is None:
        console.print(f"[red]promote refused:[/] {name} has no {CHALLENGER!r} alias")
        return 2
    comparison = _comparison(ns, settings, log, console, (champion, challenger))
    render(comparison, console)
    rules = EvidenceRules(
        min_outcomes=ns.min_outcomes,
        min_positives=ns.min_positives,
        alpha=ns.alpha,
        max_auc_drop=ns.max_auc_drop,
    )
    if champion is None:
        refusals = [Refusal("no-champion", f"{name} has no {CHAMPION!r} to compare against")]
    else:
        refusals = evidence_failures(comparison, rules)
    for r in refusals:
        console.print(f"[red]{r.rule}:[/] {r.message}")
    fired = ",".join(r.rule for r in refusals)
    if refusals and not ns.force:
        print(f"{name}: promotion of v{challenger} refused ({fired}); --force overrides")
        return 1
    if refusals:
        logging.getLogger("training.promote").warning(
            "FORCED promotion of %s v%s over the evidence rule: %s",
            name,
            challenger,
            "; ".join(f"{r.rule}: {r.message}" for r in refusals),
        )
        console.print(f"[bold red]FORCED: promoting {name} v{challenger} despite {fired}[/]")
    tags = {
        "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "promotion_forced": "true" if refusals else "false",
    }
    if refusals:
        tags["promotion_overrode"] = fired
    done = settings.registry().promote(name, expected_version=challenger, tags=tags)
    archived = f"v{done.archived.version} archived" if done.archived else "no former champion"
    print(
        f"{name}: champion -> v{done.champion.version} ({archived}); challenger alias removed"
        + (" [forced]" if refusals else "")
    )
    return 0


def _route(ns: argparse.Namespace, settings: TrainingSettings, console: Console) -> int:
    """Show or set the routing tags of the registered model. Who may change them is who may
    write to the registry (the same control as moving aliases)."""
    from credit_core import CreditError, Routing

    registry = settings.registry()
    name = settings.model_name
    try:
        if ns.mode is None and ns.share is not None:
            console.print("[red]route refused:[/] --share needs --mode")
            return 2
        if ns.mode == "split" and ns.share is None:
            console.print("[red]route refused:[/] --mode split needs --share")
            return 2
        if ns.mode is not None:
            share = ns.share if ns.share is not None else registry.routing(name).challenger_share
            registry.set_routing(name, Routing(ns.mode, share))
        routing = registry.routing(name)
    except (ValueError, CreditError) as e:
        console.print(f"[red]route failed:[/] {e}")
        return 2
    print(f"{name}: routing {routing.mode}, challenger share {routing.challenger_share:g}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("train", "train on a dataset and register the model in MLflow"),
        ("ensure-champion", "train and register the default model if no champion exists"),
    ):
        p = sub.add_parser(name, help=help_text, formatter_class=_Help)
        p.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="feature spec")
        p.add_argument(
            "--data", type=Path, default=None, help="CSV/TSV/Parquet (default: Give Me Some Credit)"
        )
        p.add_argument(
            "--model-name", default=None, help="registered model (default: ALTSCORE_MODEL_NAME)"
        )
        _model_flags(p)
        if name == "train":
            tuning = p.add_argument_group("tuning (training/tune.py: the search space)")
            tuning.add_argument(
                "--tune",
                action="store_true",
                help="search the XGBoost parameters (Optuna TPE, seeded) by stratified k-fold CV "
                "on the training part, then refit the best on all of it",
            )
            tuning.add_argument("--trials", type=int, default=50, help="most trials")
            tuning.add_argument(
                "--timeout", type=float, default=None, help="seconds the search may take"
            )
            tuning.add_argument("--folds", type=int, default=3, help="cross-validation folds")
            p.add_argument(
                "--dask-scheduler",
                default=None,
                metavar="ADDRESS",
                help="build the features and boost on a Dask cluster (tcp://host:8786; "
                "`local`: a LocalCluster on this machine); see training/distributed.py",
            )
            p.add_argument(
                "--champion",
                choices=["if-missing", "always", "never"],
                default="if-missing",
                help="when to set the alias (--alias): if none exists, always, never",
            )
            p.add_argument(
                "--alias", choices=[CHAMPION, CHALLENGER], default=CHAMPION, help="the alias set"
            )
    ret = sub.add_parser(
        "retrain",
        help="train a challenger on the latest data as the champion was trained; shadow it",
    )
    ret.add_argument("--data", type=Path, default=None, help="CSV/TSV/Parquet (default: GMSC)")
    ret.add_argument("--model-name", default=None)
    ret.add_argument("--state-dir", type=Path, default=None, help="default: ALTSCORE_STATE_DIR")
    pub = sub.add_parser("publish", help="publish entity features to the online store (Redis)")
    pub.add_argument("--spec", type=Path, required=True)
    pub.add_argument("--data", type=Path, required=True, help="application file; tables beside it")
    pub.add_argument("--as-of", type=dt.datetime.fromisoformat, default=None, help="default: now")
    pub.add_argument("--ttl-seconds", type=int, default=None)
    _evaluation_parsers(sub)
    route = sub.add_parser(
        "route",
        help="how traffic meets the challenger (servers watch it): show, or set with --mode",
    )
    route.add_argument("--mode", choices=ROUTING_MODES, default=None)
    route.add_argument(
        "--share", type=float, default=None, help="split mode: share of applicants (0..1)"
    )
    route.add_argument("--model-name", default=None)
    route.add_argument("--state-dir", type=Path, default=None, help="default: ALTSCORE_STATE_DIR")
    for command in sub.choices.values():  # every subcommand's --help shows the defaults
        command.formatter_class = _Help
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    console = Console(stderr=True)
    settings = TrainingSettings()
    if getattr(ns, "model_name", None):
        settings = settings.model_copy(update={"model_name": ns.model_name})
    for option in ("state_dir", "evaluation_dir"):
        if getattr(ns, option, None) is not None:
            settings = settings.model_copy(update={option: getattr(ns, option)})

    from credit_core import CreditError
    from feature_kernels import FeatureError, SpecError
    from training.run import train_and_register

    if ns.command == "publish":
        return _publish(ns, settings, console)
    if ns.command in ("outcomes", "compare", "promote", "replay"):
        return _evaluation_command(ns, settings, console)
    if ns.command == "route":
        return _route(ns, settings, console)
    if ns.command == "retrain":
        return _retrain(ns, settings, console)
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
            tune=_tune(ns),
            dask_scheduler=getattr(ns, "dask_scheduler", None),
            champion=getattr(ns, "champion", "if-missing"),
            alias=getattr(ns, "alias", CHAMPION),
            console=console,
        )
    except (SpecError, FeatureError, FileNotFoundError, ValueError, CreditError) as e:
        console.print(f"[red]training failed:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    print(
        f"{outcome.version.name} v{outcome.version.version} auc={outcome.evaluation.auc:.4f} "
        f"{getattr(ns, 'alias', CHAMPION)}={'yes' if outcome.champion_set else 'unchanged'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
