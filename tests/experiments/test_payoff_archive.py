"""The study's committed report (docs/payoff/payoff.json and .md) is what `hade payoff --report-only` makes of
the runs archived beside it: every figure of docs/results.md's payoff tables comes from a command, and a
change to the statistics or the report that would alter them fails here."""
import json
from pathlib import Path

from hade.experiments import payoff

ARCHIVE = Path(__file__).resolve().parents[2] / "docs" / "payoff"


def test_the_committed_report_is_what_the_archived_runs_give(tmp_path):
    committed = json.loads((ARCHIVE / "payoff.json").read_text())
    cells = payoff.parse_cells(",".join(f"{c['start']}:{c['train_set']}" for c in committed["cells"]))
    study = payoff.Study(tmp_path / "root", cells, seeds=max(c["seeds"] for c in committed["cells"]),
                         epochs=committed["epochs"], heads=tuple(committed["heads"]), archive=ARCHIVE,
                         progress=False, log=lambda _: None)
    report = payoff.report_only(study)
    assert json.loads(json.dumps(report.to_dict())) == committed
    assert (tmp_path / "root" / "payoff.md").read_text() == (ARCHIVE / "payoff.md").read_text()
    assert not (tmp_path / "root" / "data").exists()  # nothing generated: the archive has every result
