"""HTML building blocks of the report: escaped text, tables, thumbnails, inline SVG charts.

Everything is inline (CSS, SVG, images as data URIs): the page opens from
disk with no server and makes no network request. Every piece of text that
comes from the run (keys, URLs, errors, captions) goes through :func:`esc`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

# The page may load nothing: no script, no style sheet, no image other than inline ones.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# Status families in a fixed order and colour, so that every chart agrees.
PALETTE = [
    "#2e7d32",
    "#c62828",
    "#ef6c00",
    "#6a1b9a",
    "#1565c0",
    "#00838f",
    "#ad1457",
    "#5d4037",
    "#9e9d24",
    "#37474f",
    "#f9a825",
    "#4527a0",
]
SUCCESS_COLOUR = PALETTE[0]

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:16px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#cfd8dc}nav{padding:6px 24px;background:#eceff1;position:sticky;top:0;z-index:1}
nav a{margin-right:14px;color:#37474f}section{padding:8px 24px 20px;border-bottom:1px solid #ddd}
h2{font-size:18px;margin:16px 0 8px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f1f1f1}
.row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start;margin:4px 0 10px}
figure{margin:0;width:116px;font-size:11px;word-break:break-all}figure img{display:block;max-width:112px;
max-height:112px;border:2px solid #bbb}figure.kept img{border-color:#2e7d32}figure.dropped img{border-color:#c62828}
figure.query img{border-color:#1565c0}.noimg{width:108px;height:60px;border:2px dashed #bbb;color:#888;padding:2px}
.group{display:inline-block;vertical-align:top;background:#fff;border:1px solid #e0e0e0;padding:6px;
margin:4px 6px 4px 0}.arrow{align-self:center;color:#888}
.muted{color:#777}.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px}svg text{font:11px system-ui,sans-serif}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless wrapped in :class:`Raw`."""
    head = "".join(f"<th{' class=n' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = "".join(f"<td{' class=n' if i in numeric else ''}>{_cell(v)}</td>" for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


class Raw(str):
    """Markup already built here, not to be escaped again."""


def _cell(value: object) -> str:
    return value if isinstance(value, Raw) else esc(num(value) if isinstance(value, (int, float)) else value)


def figure(uri: str | None, caption: str, kind: str = "") -> str:
    """A thumbnail with a caption; a dashed box (no image element) when there is no image."""
    img = f'<img src="{uri}" alt="{esc(caption)}">' if uri else '<div class="noimg">no image</div>'
    return f'<figure class="{kind}">{img}<figcaption>{esc(caption)}</figcaption></figure>'


def row(items: Iterable[str]) -> str:
    return f'<div class="row">{"".join(items)}</div>'


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per status family; success is always green."""
    out, i = {}, 1
    for name in names:
        if name == "success":
            out[name] = SUCCESS_COLOUR
        else:
            out[name] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def legend(colour: dict[str, str]) -> str:
    return (
        '<p class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{esc(n)}</span>' for n, c in colour.items())
        + "</p>"
    )


def stacked_bars(bars: Sequence[tuple[str, dict[str, int]]], colour: dict[str, str], width: int = 760) -> str:
    """Horizontal stacked bars: one per label, one segment per key of its dict (same scale for all)."""
    label_w, bar_h, gap = 110, 20, 8
    total = max((sum(parts.values()) for _, parts in bars), default=0) or 1
    scale = (width - label_w - 60) / total
    out = []
    for i, (label, parts) in enumerate(bars):
        y = i * (bar_h + gap)
        out.append(f'<text x="0" y="{y + 14}">{esc(label)}</text>')
        x = float(label_w)
        for name, n in parts.items():
            w = n * scale
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour[name]}">'
                f"<title>{esc(label)}: {esc(name)} {n:,}</title></rect>"
            )
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + 14}">{sum(parts.values()):,}</text>')
    height = len(bars) * (bar_h + gap)
    return f'<svg width="{width}" height="{height}" role="img">{"".join(out)}</svg>'


def bar_chart(bars: Sequence[tuple[str, float]], width: int = 760, unit: str = "") -> str:
    """Vertical bars with labels under them (a histogram)."""
    if not bars:
        return '<p class="muted">nothing to chart</p>'
    h, label_h = 140, 30
    step = min(90, (width - 10) / len(bars))
    top = max(v for _, v in bars) or 1
    out = []
    for i, (label, value) in enumerate(bars):
        bh = value / top * h
        x = 5 + i * step
        out.append(
            f'<rect x="{x:.1f}" y="{h - bh:.1f}" width="{step * 0.8:.1f}" height="{bh:.1f}" fill="#1565c0">'
            f"<title>{esc(label)}: {value:,}{esc(unit)}</title></rect>"
        )
        out.append(f'<text x="{x:.1f}" y="{h + 14}">{esc(label)}</text>')
        out.append(f'<text x="{x:.1f}" y="{max(h - bh - 3, 10):.1f}">{value:,}</text>')
    return f'<svg width="{width}" height="{h + label_h}" role="img">{"".join(out)}</svg>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document; ``sections`` are ``(id, heading, body)``."""
    nav = "".join(f'<a href="#{sid}">{esc(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{esc(heading)}</h2>{content}</section>' for sid, heading, content in sections
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
        f"<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{nav}</nav>{body}"
        f"</body></html>\n"
    )
