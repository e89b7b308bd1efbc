"""Render a small table as Markdown, HTML, LaTeX, aligned text or CSV.

A table is a header, rows of :class:`Cell` (text with an optional bold part) and notes. Text may
hold ``±``, ``†``, ``Δ`` and ``—`` (missing): each format spells them its own way (LaTeX:
``$\\pm$``, ``$^\\dagger$``, ``$\\Delta$``, ``--``). CSV gets its own plain rows (numbers in full
precision, missing values empty) from the caller, since a CSV cell holds one value.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field

FORMATS = ("markdown", "csv", "html", "latex", "text")
MISSING = "—"


@dataclass
class Cell:
    text: str = MISSING  # what is shown; the bold part is `text[:bold]` when `bold` is set
    bold: int = 0  # number of leading characters to emphasise (0: none)

    def plain(self) -> str:
        return self.text


@dataclass
class TextTable:
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    title: str | None = None
    csv_rows: list[list] | None = None  # header row first; None: the cells' text
    best_marker: str = "*"  # how `text` marks a bold part
    left: int = 1  # leading columns aligned left (labels); the others right (numbers)


def render(table: TextTable, fmt: str = "markdown") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    return {"markdown": _markdown, "csv": _csv, "html": _html, "latex": _latex, "text": _text}[fmt](table)


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else repr(value)  # shortest text that reads back as the same float
    return str(value)


def _csv(table: TextTable) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rows = table.csv_rows if table.csv_rows is not None else [table.header] + [[c.text for c in r] for r in table.rows]
    writer.writerows([[_number(v) if not isinstance(v, str) else v for v in row] for row in rows])
    return out.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(table: TextTable) -> str:
    def cell(c: Cell) -> str:
        text = _md_escape(c.text)
        if c.bold:
            cut = len(_md_escape(c.text[:c.bold]))
            text = f"**{text[:cut]}**{text[cut:]}"
        return text

    lines = [f"### {table.title}", ""] if table.title else []
    lines.append("| " + " | ".join(_md_escape(h) for h in table.header) + " |")
    lines.append("|" + "|".join(":---" if i < table.left else "---:" for i in range(len(table.header))) + "|")
    lines.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows)
    for note in table.notes:
        lines.extend(["", note])
    return "\n".join(lines) + "\n"


def _text(table: TextTable) -> str:
    def cell(c: Cell) -> str:
        return c.text[:c.bold] + table.best_marker + c.text[c.bold:] if c.bold else c.text

    cells = [table.header] + [[cell(c) for c in row] for row in table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.header))]
    lines = [table.title] if table.title else []
    for number, row in enumerate(cells):
        cells_text = (t.ljust(w) if i < table.left else t.rjust(w) for i, (t, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells_text).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    if table.notes:
        lines.append("")
        lines.extend(n.replace("**Bold**", table.best_marker).replace("**", "") for n in table.notes)
    return "\n".join(lines) + "\n"


def _html(table: TextTable) -> str:
    def cell(c: Cell, tag: str = "td") -> str:
        text = html.escape(c.text[:c.bold]) if c.bold else ""
        text = (f"<b>{text}</b>" if c.bold else "") + html.escape(c.text[c.bold:])
        return f"<{tag}>{text}</{tag}>"

    lines = ["<table>"]
    if table.title:
        lines.append(f"<caption>{html.escape(table.title)}</caption>")
    lines.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr></thead>")
    lines.append("<tbody>")
    lines.extend("<tr>" + cell(row[0], "th") + "".join(cell(c) for c in row[1:]) + "</tr>" for row in table.rows)
    lines.append("</tbody>")
    lines.append("</table>")
    lines.extend(f"<p>{html.escape(n.replace('**', ''))}</p>" for n in table.notes)
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "†": r"$^\dagger$", "Δ": r"$\Delta$", "—": "--", "α": r"$\alpha$",
                  "β": r"$\beta$", "·": r"$\cdot$", "−": "-", "≥": r"$\geq$", "≤": r"$\leq$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex(table: TextTable) -> str:
    def cell(c: Cell) -> str:
        if not c.bold:
            return latex_escape(c.text)
        return r"\textbf{" + latex_escape(c.text[:c.bold]) + "}" + latex_escape(c.text[c.bold:])

    lines = [r"\begin{table}[ht]", r"\centering"]
    if table.title:
        lines.append(r"\caption{" + latex_escape(table.title) + "}")
    lines.append(r"\begin{tabular}{" + "l" * table.left + "r" * (len(table.header) - table.left) + "}")
    lines.append(r"\toprule")
    lines.append(" & ".join(latex_escape(h) for h in table.header) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(cell(c) for c in row) + r" \\" for row in table.rows)
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize " + " ".join(latex_escape(n.replace("**", "")) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
