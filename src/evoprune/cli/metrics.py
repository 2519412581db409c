"""``evoprune metrics list`` / ``evoprune metrics show NAME_OR_FORMULA``: the metric library as formulas."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from evoprune.expr import Node, analyse, height, size, to_infix, to_latex, to_prefix
from evoprune.metrics import get_metric, list_metrics


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("metrics", help="list and show channel-importance metrics (human and evolved)",
                              description="The metric library: named metrics and any formula of the design space.")
    sub = p.add_subparsers(title="actions", metavar="ACTION")
    ls = sub.add_parser("list", help="table of all named metrics")
    ls.add_argument("--kind", default=None, help="only this kind (seed, evolved, inspired, human, baseline)")
    ls.set_defaults(func=run, action="list")
    show = sub.add_parser("show", help="prefix, infix and LaTeX forms and the description of a metric or formula")
    show.add_argument("metric", help="a metric name (e.g. eq3) or a formula in prefix form, quoted")
    show.set_defaults(func=run, action="show")
    p.set_defaults(func=run, action="list", kind=None)


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.action == "show":
        return _show(console, args.metric)
    return _list(console, args.kind)


def _list(console: Console, kind: str | None) -> int:
    table = Table(title="evoprune metrics (higher score = keep the channel)")
    for col in ("name", "kind", "labels?", "source", "formula (infix)"):
        table.add_column(col, overflow="fold")
    for m in list_metrics():
        if kind and m.kind != kind:
            continue
        name = m.name + (f" ({', '.join(m.aliases)})" if m.aliases else "")
        table.add_row(name, m.kind, "yes" if m.label_aware else "no", m.source, m.infix or "—")
    console.print(table)
    return 0


def _show(console: Console, text: str) -> int:
    m = get_metric(text)
    console.print(f"[bold]{m.name}[/bold]  ({m.kind}; needs: {m.needs.describe()})")
    if m.aliases:
        console.print(f"aliases: {', '.join(m.aliases)}")
    console.print(f"source:  {m.source}")
    if m.tree is not None:
        simplified = m.simplified
        if simplified == m.tree:
            _forms(console, m.tree, "evaluated from")
        else:  # dead weight: show what was written (or evolved) and what scoring evaluates
            console.print("as evolved:" if m.kind == "evolved" else "as written:")
            _forms(console, m.tree, "as written it would be evaluated from")
            console.print("simplified (what scoring evaluates, with the same scores):")
            _forms(console, simplified, "evaluated from")
    else:
        console.print("formula: not expressible in the design space (custom implementation)")
    if m.doc:
        console.print()
        console.print(m.doc, markup=False, highlight=False)
    return 0


def _forms(console: Console, tree: Node, evaluated: str) -> None:
    """Prefix, infix and LaTeX forms of a tree, its shape and size, and which data evaluating it reads."""
    info = analyse(tree)
    path = "raw feature maps" if info.needs_features else "streaming moments" if info.uses_maps else "weights only"
    console.print(f"prefix:  {to_prefix(tree)}", markup=False, highlight=False)
    console.print(f"infix:   {to_infix(tree)}", markup=False, highlight=False)
    console.print(f"LaTeX:   {to_latex(tree)}", markup=False, highlight=False)
    console.print(f"shape:   {info.shape} (summed to one score per channel"
                  f"{', then over classes' if info.label_aware else ''}); height {height(tree)}, "
                  f"{size(tree)} nodes; {evaluated} {path}", markup=False, highlight=False)
