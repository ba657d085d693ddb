"""What `eval` and `predict` print on a terminal, by the kind of task (`Task.kind`); `--json` prints the data."""


def score_table(heading: str, rows: dict[str, tuple[float, float, float, int]]) -> list[str]:
    """Aligned lines of precision / recall / F1 / support, one per class or entity type."""
    lines = [f"{heading:<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for name, (precision, recall, f1, support) in rows.items():
        lines.append(f"{name:<20}{precision:>10.4f}{recall:>10.4f}{f1:>10.4f}{int(support):>10}")
    return lines


def _classification_report(metrics: dict) -> str:
    lines = [f"accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
             f"loss {metrics['loss']:.4f}   ({metrics['examples']} examples)", ""]
    rows = {name: (r["precision"], r["recall"], r["f1-score"], r["support"]) for name, r in metrics["per_class"].items()}
    return "\n".join(lines + score_table("label", rows))


def _multi_label_report(metrics: dict) -> str:
    lines = [f"micro-F1 {metrics['micro_f1']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
             f"subset accuracy {metrics['subset_accuracy']:.4f}   loss {metrics['loss']:.4f}   "
             f"threshold {metrics['threshold']:.2f}   ({metrics['examples']} examples)", ""]
    rows = {name: (r["precision"], r["recall"], r["f1-score"], r["support"]) for name, r in metrics["per_label"].items()}
    return "\n".join(lines + score_table("label", rows))


def _tagging_report(metrics: dict) -> str:
    lines = [f"entity F1 {metrics['f1']:.4f}   precision {metrics['precision']:.4f}   "
             f"recall {metrics['recall']:.4f}   token accuracy {metrics['token_accuracy']:.4f}   "
             f"loss {metrics['loss']:.4f}   ({metrics['sentences']} sentences, {metrics['words']} words)", ""]
    rows = {name: (r["precision"], r["recall"], r["f1"], r["support"]) for name, r in metrics["per_type"].items()}
    return "\n".join(lines + score_table("type", rows))


def _generation_report(metrics: dict) -> str:
    line = (f"loss {metrics['loss']:.4f}   perplexity {metrics['perplexity']:.3f}   "
            f"token accuracy {metrics['token_accuracy']:.4f}")
    if "exact_match" in metrics:
        line += f"   exact match {metrics['exact_match']:.4f}"
    return line + f"   ({metrics['examples']} examples, {metrics['response_tokens']} response tokens)"


def _classification_prediction(text: str, prediction: dict) -> str:
    return f"{prediction['label']}\t{prediction['probability']:.4f}\t{text}"


def _multi_label_prediction(text: str, prediction: dict) -> str:
    chosen = ",".join(f"{name}:{prediction['scores'][name]:.4f}" for name in prediction["labels"])
    return f"{chosen or '(none)'}\t{text}"


def _tagging_prediction(text: str, prediction: dict) -> str:
    lines = [text] + [f"  {e['type']:<8}{str(e['start']) + ':' + str(e['end']):<12}{e['score']:.4f}  {e['text']}"
                      for e in prediction["entities"]]
    return "\n".join(lines if prediction["entities"] else lines + ["  (no entities)"])


def _generation_prediction(text: str, prediction: dict) -> str:
    return f"{text}\n→ {prediction['response']}"


def _by_kind(task, for_classification, for_tagging, for_generation, for_multi_label):
    """The function for the task's kind (imported here: `slimtune --help` builds the CLI without torch)."""
    from slimtune.tasks.base import CLASSIFICATION, GENERATION, MULTI_LABEL, TAGGING

    return {CLASSIFICATION: for_classification, TAGGING: for_tagging, GENERATION: for_generation,
            MULTI_LABEL: for_multi_label}[task.kind]


def format_report(task, metrics: dict) -> str:
    return _by_kind(task, _classification_report, _tagging_report, _generation_report, _multi_label_report)(metrics)


def format_prediction(task, text: str, prediction: dict) -> str:
    return _by_kind(task, _classification_prediction, _tagging_prediction, _generation_prediction,
                    _multi_label_prediction)(text, prediction)
