"""The baseline guard against a deliberately broken Tent (not a test; the test is
tests/test_baseline_guard.py). Re-runs the Tent row of tests/baselines/embedded.csv through
``cema check`` twice: with the real Tent (passes), then with a Tent whose update has the wrong sign
of the entropy gradient (fails, exit 1):

    python benchmarks/broken_tent_guard.py /tmp/guard
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from cema_cli.cli import app
from cema_cli.results.report import write_csv
from cema_cli.results.schema import read_results
from cema_cli.strategies import tent
from cema_cli.strategies.common import entropy

BASELINE = Path(__file__).resolve().parents[1] / "tests" / "baselines" / "embedded.csv"


def entropy_ascent_step(model, optimizer, images):
    """Tent's step climbing the entropy instead of descending it."""
    logits = model(images)
    loss = -entropy(logits).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits.detach()


def check(baseline: Path, out: Path) -> None:
    result = CliRunner().invoke(app, ["check", "--baseline", str(baseline), "--tolerance", "0.5", "--device", "cpu", "--out", str(out)])
    print(f"--- {out.name}: exit {result.exit_code}\n{result.output}")


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rows = read_results(BASELINE)
    write_csv(rows[rows["method"] == "tent"], out / "tent.csv")
    check(out / "tent.csv", out / "real")
    tent.entropy_step = entropy_ascent_step
    check(out / "tent.csv", out / "broken")


if __name__ == "__main__":
    main()
