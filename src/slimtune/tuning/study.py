"""`slimtune tune`: an Optuna study over a method's options and the training settings, maximising the dev metric.

Every trial is an ordinary `train()` run in OUT/trials/trial-N. Dev scores reach Optuna as training goes
(`evals_per_epoch` per epoch), and the median pruner stops trials that trail the others at the same step. The
study lives in Optuna storage: SQLite in OUT by default, so rerunning the same command continues an interrupted
search; any storage URL (`postgresql://...`) lets several `slimtune tune` processes on several machines share one
study — Optuna's own distributed mode. Heartbeats mark trials of a killed process as failed so they are retried.

At the end OUT holds best.yaml (a run config: `slimtune train --config OUT/best.yaml --out RUN` trains the best
trial again), best/ (the best trial's run directory) and report.json / report.html.
"""

import math
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from slimtune.errors import SlimtuneError
from slimtune.runs.train import TrainRequest, train
from slimtune.tasks import get_task
from slimtune.training.config import TrainConfig
from slimtune.tuning.space import suggest

STUDY_FILE = "study.db"
SETTINGS_FILE = "tune.json"


@dataclass
class TuneRequest:
    task: str
    methods: list[str]
    train_path: str
    out_dir: str
    dev_path: str | None = None
    model: str | None = None
    trials: int = 20
    timeout: float | None = None
    storage: str | None = None
    study_name: str = "slimtune"
    seed: int = 42
    max_epochs: int = 3
    evals_per_epoch: int = 2
    read_options: dict = field(default_factory=dict)

    def identity(self) -> dict:
        """What a resumed study must share with the one it continues."""
        return {"task": self.task, "methods": self.methods, "train": str(self.train_path),
                "dev": self.dev_path, "model": self.model, "max_epochs": self.max_epochs}


class ReportDevScores:
    """A trainer step callback: each new dev score goes to Optuna, which may prune the trial."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric, self.reported = trial, metric, 0

    def __call__(self, progress) -> None:
        import optuna

        if len(progress.history) == self.reported:
            return
        self.reported = len(progress.history)
        self.trial.report(progress.history[-1][f"dev_{self.metric}"], progress.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"dev {self.metric} trails the median at step {progress.step}")


def storage_for(request: TuneRequest):
    import optuna

    url = request.storage or f"sqlite:///{Path(request.out_dir).resolve() / STUDY_FILE}"
    if url.startswith(("sqlite:", "postgresql", "mysql")):
        # heartbeats are "experimental" in Optuna's words since 2.9; their warning would reach every user
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=30, grace_period=120,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
    return url  # journal or other storage URLs Optuna understands


def run_flags(request: TuneRequest, method: str, options: dict, settings: dict, eval_every: int) -> dict:
    """The trial as `slimtune train` flags: what best.yaml holds. `--few-shot off`: the suggested epochs, batch size
    and lr take effect as given on any data size (a small-data recipe would resize them)."""
    flags = {"task": request.task, "method": method, "train": str(request.train_path)}
    flags.update({k: v for k, v in (("dev", request.dev_path), ("model", request.model)) if v is not None})
    flags.update({k.replace("_", "-"): v for k, v in request.read_options.items() if v is not None})
    flags.update({"set": [f"{k}={v}" for k, v in options.items()], "epochs": settings["epochs"],
                  "batch-size": settings["batch_size"], "lr": settings["lr"], "seed": request.seed, "patience": 0,
                  "eval-every": eval_every, "few-shot": "off"})
    return flags


def train_trial(request: TuneRequest, trial, n_train: int, run_dir: Path, callbacks=()) -> dict:
    """Train the settings `trial` suggests (a live trial, or a FixedTrial of a finished one's params)."""
    method = (trial.suggest_categorical("method", request.methods) if len(request.methods) > 1
              else request.methods[0])
    options, settings = suggest(trial, method, request.max_epochs)
    steps_per_epoch = math.ceil(n_train / settings["batch_size"])
    eval_every = max(1, steps_per_epoch // request.evals_per_epoch)
    config = TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
                         seed=request.seed, patience=0, eval_every=eval_every)
    flags = run_flags(request, method, options, settings, eval_every)
    summary = train(TrainRequest(
        task=request.task, method=method, train_path=request.train_path, dev_path=request.dev_path,
        out_dir=str(run_dir), model=request.model, options=options, read_options=request.read_options,
        overwrite=True, config=config, flags=flags, few_shot="off"), step_callbacks=callbacks)
    return {"flags": flags, **summary}


def make_objective(request: TuneRequest, metric: str, n_train: int):
    def objective(trial) -> float:
        run_dir = trial_dir(request, trial.number)
        summary = train_trial(request, trial, n_train, run_dir, [ReportDevScores(trial, metric)])
        trial.set_user_attr("flags", summary["flags"])
        trial.set_user_attr("train_seconds", summary["train_seconds"])
        return summary[f"best_dev_{metric}"]

    return objective


def trial_dir(request: TuneRequest, number: int) -> Path:
    return Path(request.out_dir) / "trials" / f"trial-{number}"


def check_out_dir(request: TuneRequest) -> None:
    """OUT is new, empty, or a previous `slimtune tune` of the same study (which this run continues)."""
    import json

    from slimtune.atomic import write_json

    out = Path(request.out_dir)
    if out.exists() and not out.is_dir():
        raise SlimtuneError(f"--out {out} is a file")
    settings = out / SETTINGS_FILE
    if settings.is_file():
        try:
            previous = json.loads(settings.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SlimtuneError(f"{settings}: not a slimtune tune settings file") from None
        differing = sorted(k for k, v in request.identity().items() if not isinstance(previous, dict)
                           or previous.get(k) != v)
        if differing:
            raise SlimtuneError(f"{out} holds a study of other settings ({', '.join(differing)} differ); "
                                "give another --out")
        return
    if out.is_dir() and any(out.iterdir()):
        raise SlimtuneError(f"--out {out} is not empty and holds no slimtune study; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    write_json(settings, request.identity())


def tune(request: TuneRequest) -> dict:
    """Run (or continue) the study; returns the report (see tuning/report.py)."""
    import optuna

    from slimtune.tuning.report import write_report

    if request.trials < 1 or (request.timeout is not None and not request.timeout > 0):
        raise SlimtuneError("--trials must be at least 1 and --timeout positive")
    if request.max_epochs < 1 or request.evals_per_epoch < 1:
        raise SlimtuneError("--max-epochs and --evals-per-epoch must be at least 1")
    task = get_task(request.task)
    for method in request.methods:
        from slimtune.methods.registry import create_method

        task.check_method(create_method(method, {}))
    rows = task.read(request.train_path, **request.read_options)  # refuses a bad file before any trial
    n_train = len(rows) if request.dev_path else len(rows) - max(1, min(int(len(rows) * 0.1), 2000))
    check_out_dir(request)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=request.study_name, storage=storage_for(request), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=request.seed, n_startup_trials=min(5, request.trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    clean_stale_trials(study, request)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = request.trials - sum(t.state in done for t in study.trials)
    if remaining > 0:
        study.optimize(make_objective(request, task.primary_metric, n_train), n_trials=remaining,
                       timeout=request.timeout, catch=(SlimtuneError,), gc_after_trial=True,
                       callbacks=[optuna.study.MaxTrialsCallback(request.trials, states=done), KeepBest(request),
                                  TrialLine(request.trials, task.primary_metric)])
    if best_trial(study) is None:
        raise SlimtuneError("no trial finished; see the errors above")
    ensure_best_run(study, request, n_train)
    return write_report(study, request, task.primary_metric)


class TrialLine:
    """After each trial, one line on stderr: its outcome and settings, and the best so far.

        trial 4 (4 of 20 done): dev accuracy 0.8520 (best 0.8610, trial 2); lr=0.0021 batch_size=16 epochs=2 r=8
    """

    def __init__(self, trials: int, metric: str):
        self.trials, self.metric = trials, metric

    def __call__(self, study, trial) -> None:
        import optuna

        if trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"dev {self.metric} {trial.value:.4f}"
        elif trial.state == optuna.trial.TrialState.PRUNED:
            outcome = f"pruned at step {trial.last_step} (dev {self.metric} behind the median)"
        else:
            outcome = "failed"
        best = best_trial(study)
        best_text = f" (best {best.value:.4f}, trial {best.number + 1})" if best is not None else ""
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        done = sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                   for t in study.get_trials(deepcopy=False))
        print(f"trial {trial.number + 1} ({done} of {self.trials} done): {outcome}{best_text}; {params}",
              file=sys.stderr, flush=True)


class KeepBest:
    """After each trial: the best trial's run directory becomes OUT/best, the others' are removed."""

    def __init__(self, request: TuneRequest):
        self.request, self.out = request, Path(request.out_dir)

    def __call__(self, study, trial) -> None:
        run_dir = trial_dir(self.request, trial.number)
        best = best_trial(study)
        if best is not None and best.number == trial.number and run_dir.is_dir():
            install_best(self.out, run_dir, trial.number)
        else:
            remove_trial(run_dir)


def install_best(out: Path, run_dir: Path, number: int) -> None:
    """Swap `run_dir` in as OUT/best; best.json (written last) names the trial it came from."""
    from slimtune.atomic import write_json

    old = out / "best.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / "best").is_dir():
        (out / "best").rename(old)
    run_dir.rename(out / "best")
    write_json(out / "best.json", {"trial": number})
    shutil.rmtree(old, ignore_errors=True)


def local_best(out: Path) -> int | None:
    """The trial whose run directory OUT/best holds, if any."""
    import json

    try:
        return int(json.loads((out / "best.json").read_text())["trial"]) if (out / "best").is_dir() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_best_run(study, request: TuneRequest, n_train: int) -> None:
    """OUT/best holds the best trial's run: trained again here when it ran elsewhere (shared storage)."""
    import optuna

    best = best_trial(study)
    out = Path(request.out_dir)
    if best is None or local_best(out) == best.number:
        return
    run_dir = out / "best.new"
    shutil.rmtree(run_dir, ignore_errors=True)
    train_trial(request, optuna.trial.FixedTrial(best.params), n_train, run_dir)
    install_best(out, run_dir, best.number)


def clean_stale_trials(study, request: TuneRequest) -> None:
    """Remove run directories of trials that are no longer running (left by a killed process)."""
    import optuna

    running = {t.number for t in study.trials if t.state == optuna.trial.TrialState.RUNNING}
    trials = Path(request.out_dir) / "trials"
    for path in [p.parent / p.name.split(".")[1] for p in trials.glob(".trial-*")] + sorted(trials.glob("trial-*")) \
            if trials.is_dir() else ():
        number = path.name.removeprefix("trial-")
        if number.isdigit() and int(number) not in running:
            remove_trial(path)
    for leftover in ("best.new", "best.old"):
        shutil.rmtree(Path(request.out_dir) / leftover, ignore_errors=True)


def remove_trial(run_dir: Path) -> None:
    """A trial's run directory, and the work directory an interrupted or pruned run leaves beside it."""
    from slimtune.ownership import remove_owned, work_dir_for

    for path in (run_dir, work_dir_for(run_dir)):
        if path.is_dir():
            remove_owned(path)


def best_trial(study):
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None
