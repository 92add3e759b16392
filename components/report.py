"""Evaluation report: one self-contained HTML page with inline SVG charts (no plotting dependency).

ROC and precision-recall curves of the candidate and the champion on the same test set,
score histograms of frauds vs legitimate transactions, and the metrics beside the handbook's.
"""

from __future__ import annotations

import html

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from components.metrics import HANDBOOK_TABLE, METRICS

W, H, PAD = 360, 280, 40
COLORS = {"candidate": "#d62728", "champion": "#1f77b4", "fraud": "#d62728", "legit": "#1f77b4"}


def _thin(x: np.ndarray, y: np.ndarray, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most ``n`` points so the page stays small for large test sets."""
    if len(x) <= n:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, n).astype(int))
    return x[idx], y[idx]


def _frame(title: str, xlabel: str, ylabel: str, body: str, legend: dict[str, str]) -> str:
    ticks = "".join(
        f'<line x1="{PAD + t * (W - 2 * PAD)}" y1="{H - PAD}" x2="{PAD + t * (W - 2 * PAD)}" y2="{H - PAD + 4}" stroke="#333"/>'
        f'<text x="{PAD + t * (W - 2 * PAD)}" y="{H - PAD + 16}" font-size="10" text-anchor="middle">{t:.1f}</text>'
        f'<text x="{PAD - 6}" y="{H - PAD - t * (H - 2 * PAD) + 3}" font-size="10" text-anchor="end">{t:.1f}</text>'
        for t in (0, 0.25, 0.5, 0.75, 1.0))
    keys = "".join(f'<rect x="{W - PAD - 90}" y="{PAD + 4 + 16 * i}" width="10" height="10" fill="{c}"/>'
                   f'<text x="{W - PAD - 75}" y="{PAD + 13 + 16 * i}" font-size="11">{html.escape(n)}</text>'
                   for i, (n, c) in enumerate(legend.items()))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="{html.escape(title)}">'
            f'<rect width="{W}" height="{H}" fill="white"/>'
            f'<text x="{W / 2}" y="18" font-size="13" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>'
            f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#333"/>'
            f'{ticks}{body}{keys}'
            f'<text x="{W / 2}" y="{H - 6}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>'
            f'<text x="12" y="{H / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {H / 2})">{html.escape(ylabel)}</text>'
            '</svg>')


def _polyline(x: np.ndarray, y: np.ndarray, color: str, dash: str = "") -> str:
    x, y = _thin(np.asarray(x, float), np.asarray(y, float))
    pts = " ".join(f"{PAD + a * (W - 2 * PAD):.1f},{H - PAD - b * (H - 2 * PAD):.1f}" for a, b in zip(x, y))
    return f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>'


def roc_svg(y: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    body = _polyline(np.array([0, 1]), np.array([0, 1]), "#999", "4 4")
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        body += _polyline(fpr, tpr, COLORS.get(name, "#2ca02c"))
    return _frame("ROC curve", "false positive rate", "true positive rate", body, {n: COLORS.get(n, "#2ca02c") for n in scores})


def pr_svg(y: np.ndarray, scores: dict[str, np.ndarray]) -> str:
    base = float(np.mean(y))
    body = _polyline(np.array([0, 1]), np.array([base, base]), "#999", "4 4")
    for name, s in scores.items():
        p, r, _ = precision_recall_curve(y, s)
        body += _polyline(r[::-1], p[::-1], COLORS.get(name, "#2ca02c"))
    return _frame("Precision-recall curve", "recall", "precision", body, {n: COLORS.get(n, "#2ca02c") for n in scores})


def histogram_svg(y: np.ndarray, s: np.ndarray, title: str, bins: int = 20) -> str:
    """Share of frauds and of legitimate transactions per score bin (each class sums to 1)."""
    edges = np.linspace(0, 1, bins + 1)
    body = ""
    bw = (W - 2 * PAD) / bins
    for k, (label, mask) in enumerate((("legit", y == 0), ("fraud", y == 1))):
        counts, _ = np.histogram(np.clip(s[mask], 0, 1), edges)
        share = counts / max(1, counts.sum())
        for i, v in enumerate(share):
            h = v * (H - 2 * PAD)
            body += (f'<rect x="{PAD + i * bw + k * bw / 2:.1f}" y="{H - PAD - h:.1f}" width="{bw / 2:.1f}" height="{h:.1f}" '
                     f'fill="{COLORS[label]}" opacity="0.8"/>')
    return _frame(title, "score", "share of class", body, {"legit": COLORS["legit"], "fraud": COLORS["fraud"]})


def metrics_table(rows: dict[str, dict | None]) -> str:
    head = "<tr><th>model</th>" + "".join(f"<th>{m}</th>" for m in ("AUC ROC", "AP", "CP@100")) + "</tr>"
    body = ""
    for name, m in list(rows.items()) + list(HANDBOOK_TABLE.items()):
        if m is None:
            continue
        cls = ' class="ref"' if name in HANDBOOK_TABLE else ""
        body += f"<tr{cls}><td>{html.escape(name)}</td>" + "".join(f"<td>{m[k]:.3f}</td>" for k in METRICS) + "</tr>"
    return f"<table>{head}{body}</table>"


def render_report(y: np.ndarray, scores: dict[str, np.ndarray], metrics: dict[str, dict | None], context: dict) -> str:
    """The HTML page: metric table (ours beside the handbook's), ROC, PR and per-model score histograms."""
    charts = roc_svg(y, scores) + pr_svg(y, scores) + "".join(histogram_svg(y, s, f"Scores: {n}") for n in scores for s in [scores[n]])
    facts = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in context.items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>rtml model evaluation</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;"
            "text-align:right}td:first-child{text-align:left}tr.ref{color:#777}svg{margin:6px}</style></head><body>"
            f"<h1>Model evaluation</h1><ul>{facts}</ul>{metrics_table(metrics)}"
            "<p>Grey rows: the Fraud-Detection Handbook's published test-set numbers on its own split.</p>"
            f"<div>{charts}</div></body></html>")
