"""``evoprune demo`` as a library call: the whole story on embedded data in minutes.

    from evoprune.demo import DemoConfig, run_demo
    result = run_demo("runs/demo", config=DemoConfig(), progress=True, log=print)
    result.rows, result.formula["infix"], result.report

Modules: ``config`` (how much work each step does), ``steps`` (train, prune, search, evolve: thin calls into the
library that write into subfolders of the run directory), ``plots`` (the demo's own figures), ``report`` (summary
table and ``report.md``), ``pipeline`` (``run_demo``).
"""

from evoprune.demo.config import DemoConfig
from evoprune.demo.pipeline import DemoResult, run_demo
from evoprune.demo.report import SummaryRow, summary_table

__all__ = ["DemoConfig", "DemoResult", "SummaryRow", "run_demo", "summary_table"]
