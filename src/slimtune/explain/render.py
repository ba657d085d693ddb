"""Attributions shown: coloured tokens on a terminal, bracketed markers elsewhere, an HTML page, or JSON."""

import html
import json

from slimtune.explain.attributions import Explanation

STRONG = 0.5  # share of the largest |attribution| from which a token counts as strongly for or against
GREENS, REDS = (22, 28, 34, 40, 46), (52, 88, 124, 160, 196)  # ANSI 256-colour backgrounds, weak to strong


def display_tokens(tokens: list[str]) -> list[tuple[str, bool]]:
    """(text shown, opens a word) per token: WordPiece "##ing" continues a word; where the tokenizer marks word
    starts (SentencePiece "▁", byte-level BPE "Ġ"), unmarked tokens continue one."""
    marked = any(token[:1] in ("▁", "Ġ") for token in tokens)
    out = []
    for token in tokens:
        if token.startswith("##"):
            out.append((token[2:], False))
        elif token[:1] in ("▁", "Ġ"):
            out.append((token[1:], True))
        else:
            out.append((token, not marked))
    return out


def _scaled(values: list[float]) -> list[float]:
    """Attributions divided by the largest magnitude: each in [-1, 1]."""
    peak = max((abs(v) for v in values), default=0.0) or 1.0
    return [v / peak for v in values]


def _joined(pieces: list[str], tokens: list[str]) -> str:
    out = ""
    for piece, (_, opens) in zip(pieces, display_tokens(tokens)):
        out += (" " if out and opens else "") + piece
    return out


def terminal_line(explanation: Explanation, colour: bool) -> str:
    """The text's tokens, coloured green (for the target) or red (against) by strength; without colour, strong
    tokens are marked [+token] or [-token]."""
    pieces = []
    for (text, _), share in zip(display_tokens(explanation.tokens), _scaled(explanation.attributions)):
        if colour:
            palette = GREENS if share >= 0 else REDS
            level = min(int(abs(share) * len(palette)), len(palette) - 1)
            pieces.append(f"\x1b[48;5;{palette[level]}m{text}\x1b[0m" if abs(share) >= 0.1 else text)
        else:
            pieces.append(f"[{'+' if share > 0 else '-'}{text}]" if abs(share) >= STRONG else text)
    return _joined(pieces, explanation.tokens)


def report(result: dict, colour: bool) -> str:
    """One text's explanations for a terminal: per target, its score change and the tokens."""
    lines = [result["text"]]
    for e in result["explanations"]:
        top = sorted(zip(display_tokens(e.tokens), e.attributions), key=lambda pair: -abs(pair[1]))[:5]
        lines.append(f"  {e.target}: score {e.score:.4f} (baseline {e.baseline_score:.4f}, "
                     f"IG delta {e.delta:+.1e})")
        lines.append("    " + terminal_line(e, colour))
        lines.append("    top: " + ", ".join(f"{text} {value:+.3f}" for (text, _), value in top))
    if not result["explanations"]:
        lines.append("  (nothing predicted to explain)")
    return "\n".join(lines)


def as_json(result: dict) -> str:
    return json.dumps({"text": result["text"], "prediction": result["prediction"],
                       "explanations": [e.as_dict() for e in result["explanations"]]})


def _html_tokens(explanation: Explanation) -> str:
    pieces = []
    for (text, _), share, value in zip(display_tokens(explanation.tokens), _scaled(explanation.attributions),
                                      explanation.attributions):
        rgb = "0,160,60" if share >= 0 else "220,40,40"
        pieces.append(f'<span style="background: rgba({rgb},{abs(share):.3f})" title="{value:+.4f}">'
                      f"{html.escape(text)}</span>")
    return _joined(pieces, explanation.tokens)


def html_page(results: list[dict]) -> str:
    """A standalone page: each text, and per target its tokens highlighted (green for, red against)."""
    body = []
    for result in results:
        body.append(f"<h2>{html.escape(result['text'])}</h2>")
        for e in result["explanations"]:
            body.append(f"<p><b>{html.escape(e.target)}</b> score {e.score:.4f} (baseline {e.baseline_score:.4f}, "
                        f"IG delta {e.delta:+.1e})</p><p class=tokens>{_html_tokens(e)}</p>")
    return ("<!doctype html>\n<html><head><meta charset=utf-8><title>slimtune explain</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto} .tokens{font-family:monospace;"
            "line-height:2} span{padding:0 1px;border-radius:3px}</style></head><body>\n"
            "<p>Integrated Gradients per token: green pushes the score up, red down; hover for the value.</p>\n"
            + "\n".join(body) + "\n</body></html>\n")
