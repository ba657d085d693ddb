"""What `slimtune tune` searches: the training settings and the method options it knows how to vary.

Options are found by asking the method's Options dataclass which of the common knobs it has (rank `r`, `alpha`,
`dropout`, `targets`), so every LoRA-family method is searched without naming it here; other options keep
their defaults. The learning rate is searched log-uniformly around the method's measured default.

    >>> import optuna
    >>> trial = optuna.trial.FixedTrial({"lr": 1e-3, "batch_size": 16, "epochs": 1, "r": 8, "alpha_per_r": 2,
    ...                                  "dropout": 0.0, "targets": "default"})
    >>> suggest(trial, "lora", max_epochs=3)[0]
    {'r': '8', 'alpha': '16', 'dropout': '0.0'}
"""

from dataclasses import fields

from slimtune.methods.lora import ALL_BLOCK_LINEARS
from slimtune.methods.registry import get_method_class

RANKS = (4, 8, 16, 32)
ALPHA_PER_R = (1, 2, 4)  # alpha = this × r
BATCH_SIZES = (8, 16, 32)
LR_SPAN = 10.0  # lr from default / span to default × span, log-uniform


def suggest(trial, method_name: str, max_epochs: int) -> tuple[dict[str, str], dict]:
    """(method options as `--set` strings, training settings {lr, batch_size, epochs}) for one trial."""
    cls = get_method_class(method_name)
    names = {f.name for f in fields(cls.Options)}
    options: dict[str, str] = {}
    if "r" in names:
        options["r"] = str(trial.suggest_categorical("r", RANKS))
        if "alpha" in names:
            options["alpha"] = str(int(options["r"]) * trial.suggest_categorical("alpha_per_r", ALPHA_PER_R))
    if "dropout" in names:
        options["dropout"] = str(trial.suggest_float("dropout", 0.0, 0.3, step=0.05))
    if "targets" in names and trial.suggest_categorical("targets", ("default", "all-linear")) == "all-linear":
        options["targets"] = ALL_BLOCK_LINEARS
    settings = {
        "lr": trial.suggest_float("lr", cls.default_lr / LR_SPAN, cls.default_lr * LR_SPAN, log=True),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "epochs": trial.suggest_int("epochs", 1, max_epochs),
    }
    return options, settings
