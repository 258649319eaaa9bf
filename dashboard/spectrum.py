"""The eigenvalue spectrum as a static SVG picture: drawn without plotly, so the class page's first paint needs none.

Streamlit's ``st.html`` keeps HTML only (no inline SVG), so the SVG travels as an ``<img>`` data URI.
"""

from __future__ import annotations

import base64

import numpy as np
import safetext

WIDTH, HEIGHT = 900, 240
PAD_L, PAD_R, PAD_T, PAD_B = 48, 12, 12, 30


def svg(eigenvalues: np.ndarray, marks: dict[int, list[str]]) -> str:
    """The spectrum ``(m,)`` as a line with markers, one labelled line per marked k (between k and k+1).

    Labels are stacked at different heights so neighbouring ks never print on each other; the k shown
    is red, the chosen k dashed.
    """
    ev = np.asarray(eigenvalues, dtype=float)
    m = max(len(ev), 1)
    lo, hi = (float(np.min(ev)), float(np.max(ev))) if len(ev) else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    w, h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B

    def x(i: float) -> float:  # i: 1-based index
        return PAD_L + (i - 0.5) / (m + 0.5) * w

    def y(v: float) -> float:
        return PAD_T + (1 - (v - lo) / (hi - lo)) * h

    pts = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(ev))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        'style="font:11px sans-serif">',
        f'<line x1="{PAD_L}" y1="{PAD_T + h}" x2="{PAD_L + w}" y2="{PAD_T + h}" stroke="#999"/>',
        f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{PAD_T + h}" stroke="#999"/>',
        f'<text x="{PAD_L + w / 2}" y="{HEIGHT - 4}" text-anchor="middle">index</text>',
        f'<text x="10" y="{PAD_T + h / 2}" transform="rotate(-90 10 {PAD_T + h / 2})" '
        'text-anchor="middle">eigenvalue</text>',
    ]
    for v in (lo, hi):
        parts.append(f'<text x="{PAD_L - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    for i in range(1, m + 1, max(1, m // 12)):
        parts.append(f'<text x="{x(i):.1f}" y="{PAD_T + h + 14}" text-anchor="middle">{i}</text>')
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    parts += [f'<circle cx="{x(i + 1):.1f}" cy="{y(v):.1f}" r="3" fill="#1f77b4"/>' for i, v in enumerate(ev)]
    for j, (k, tags) in enumerate(sorted(marks.items())):
        colour = "#d62728" if "shown" in tags else "#7f7f7f"
        dash = "6,4" if "chosen" in tags else "2,3"
        label = safetext.html_text(f"k={k}: {', '.join(tags)}")
        xx = x(k + 0.5)
        parts.append(
            f'<line x1="{xx:.1f}" y1="{PAD_T}" x2="{xx:.1f}" y2="{PAD_T + h}" stroke="{colour}" '
            f'stroke-dasharray="{dash}"/>'
        )
        parts.append(
            f'<text data-k="{k}" x="{xx + 4:.1f}" y="{PAD_T + 12 + 16 * j}" fill="{colour}" '
            f'paint-order="stroke" stroke="white" stroke-width="3">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def html(eigenvalues: np.ndarray, marks: dict[int, list[str]]) -> str:
    """The spectrum as an ``<img>`` (the SVG as a data URI), the page's width up to 900 px."""
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg(eigenvalues, marks).encode()).decode()
    return (
        f'<img data-chart="spectrum" src="{uri}" alt="eigenvalue spectrum" '
        'style="width:100%;max-width:900px">'
    )
