"""`hade payoff`: when does HADE pay off? THA and THA+DCR against DP by training-set size and start.

The paper's claim (THA+DCR beats DP) comes from encoders that start pretrained and tens of thousands of
clips; hade's other tables train from scratch on 336 clips. This study varies both:

* **cells**: a start (``scratch``, or ``pretrained``: the audio encoder from `hade pretrain`, tagging the
  events of a disjoint SynthCaps corpus, seed 21) and a training set (``336`` = the demo set, Table 1's;
  ``1000`` / ``3000`` = those 336 clips plus clips of a disjoint pool, seed 31; ``clotho`` = Table 2's
  10 s Clotho-like set);
* **rows** per cell: ``dp``, ``tha``, ``tha+dcr`` with the demo's budget (4 epochs, so larger sets train
  proportionally more steps), over seeds 0..S-1; the cells larger than the demo set run ``dp`` and
  ``tha+dcr`` only (`SIZE_HEADS`: the issue's DP against THA+DCR as the set grows).

Every cell reports its metrics on a held-out set of 420 clips (2,100 captions, never trained on) and keeps
its own 72-clip evaluation split's as ``in_domain_metrics``: a size-cell on the development split of
`hade synth --clips 600 --seed 11`, a ``clotho`` cell on that of a 10 s Clotho-like set (``--clips 600
--seed 12 --duration 10``). The Clotho-like held-out set came after the first Clotho-like runs, whose
evaluation split (360 captions) could only detect differences of 4-5 points: a run finished without it is
evaluated on it from its best checkpoint (`ablate.add_heldout`; evaluation only, the run is not trained
again), also by ``--report-only``.

Statistics as in `hade ablate` (:mod:`hade.experiments.ablate`): per-query results, seeds pooled per query,
paired bootstrap 95 % intervals over clips, sign-flip p-values, Holm over the rows of a cell; the headline
(THA+DCR − DP, T2A R@1 and mAP@10) is also Holm-adjusted over all cells. Each difference states the smallest
true difference it would detect with 80 % power at the two-sided 5 % level, ``(1.96 + 0.84) × SE`` with
the bootstrap SE read off the interval (its width / 3.92): "no difference" then has a size.

Runs live in ROOT/runs/<cell>/rows/<head>/seed<k>/ (resumable and lock-protected exactly as ablate's).
With an archive folder, each finished run's ``eval.json`` and ``per_query.npz`` are copied there (and the
pretrained encoder too), and runs found there are not trained again: the study resumes on a new machine
from what the repository holds.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hade.config import PretrainConfig, TrainConfig
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.data.types import SplitData
from hade.errors import InputError
from hade.eval import stats
from hade.experiments import ablate
# the study's plot (and the sizes and headline metrics it draws) and its markdown; importable from here as before
from hade.experiments.payoff_plot import HEADLINE, SIZES, plot  # noqa: F401
from hade.experiments.payoff_report import markdown
from hade.experiments.records import STUDY_ROW, CellReport, PayoffReport, RunResult
from hade.utils.atomic import write_json_atomic, write_text_atomic

HEADS = ("dp", "tha", "tha+dcr")
SIZE_HEADS = ("dp", "tha+dcr")  # the larger size cells compare these only: THA alone is measured at 336 clips
BASE_CLIPS = 336  # the demo set's training split
DEFAULT_CELLS = "scratch:336,scratch:1000,scratch:3000,pretrained:336,scratch:clotho,pretrained:clotho"


@dataclass(frozen=True)
class SetSpec:
    """A SynthCaps set the study generates (`hade synth` options)."""

    folder: str
    clips: int
    seed: int
    duration: float = 4.0
    sample_rate: int = 16000


DEMO = SetSpec("synthcaps", 480, 0)  # Table 1's set
CLOTHO = SetSpec("clotholike", 480, 5, 10.0)  # Table 2's set
HELDOUT = SetSpec("heldout600", 600, 11)  # its development split (420 clips) is the held-out test set
CLOTHO_HELDOUT = SetSpec("clotho_heldout600", 600, 12, 10.0)  # the same for the Clotho-like cells
PRETRAIN_CORPUS = SetSpec("pretrain_corpus", 4300, 21)  # 3,010 training clips, disjoint (another seed)


def pool_spec(max_size: int) -> SetSpec:
    """Extra training clips for the larger sizes (all three of its splits are used as training clips)."""
    return SetSpec("pool", max(1, max_size - BASE_CLIPS), 31)


@dataclass(frozen=True)
class Cell:
    """One comparison: a start and a training set; its rows are the heads."""

    start: str  # "scratch" | "pretrained"
    train_set: str  # "336", "1000", "3000" (clips), or "clotho"

    @property
    def name(self) -> str:
        return f"{self.start}-{self.train_set}"

    @property
    def size(self) -> int:
        return BASE_CLIPS if self.train_set == "clotho" else int(self.train_set)


def parse_cells(text: str) -> list[Cell]:
    """"scratch:336,pretrained:clotho" -> cells; InputError naming a bad one."""
    cells = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        start, _, train_set = item.partition(":")
        if start not in ("scratch", "pretrained") or not (train_set == "clotho" or train_set.isdigit()):
            raise InputError(f"--cells: {item!r} is not START:SET with START scratch|pretrained and SET a number of "
                             f"training clips (>= {BASE_CLIPS}) or 'clotho'")
        if train_set.isdigit() and int(train_set) < BASE_CLIPS:
            raise InputError(f"--cells: {item!r}: at least {BASE_CLIPS} training clips (the demo set's)")
        cells.append(Cell(start, train_set))
    if not cells:
        raise InputError("--cells: no cell given")
    return cells


# ------------------------------------------------------------------------------------------------ data
def _generate(root: Path, spec: SetSpec, progress: bool) -> Path:
    out = root / "data" / spec.folder
    generate(out, clips=spec.clips, seed=spec.seed, sample_rate=spec.sample_rate, duration=spec.duration, layout="clotho",
             progress=progress)
    return out


def _manifest(path: Path, splits: list[Any], prefixes: list[str] | None = None) -> None:
    """A JSON Lines split of the clips of `splits`; each split's ids get its prefix (ids stay unique when two
    generated sets, whose file names repeat, are joined)."""
    prefixes = prefixes or [""] * len(splits)
    lines = [json.dumps({"audio": str(c.audio_path.resolve()), "captions": list(c.captions), "id": prefix + c.clip_id})
             for split, prefix in zip(splits, prefixes) for c in split.clips]
    write_text_atomic(path, "\n".join(lines) + "\n")


def data_dirs(root: Path, cells: list[Cell]) -> dict[str, Path]:
    """Where each training set and the held-out set of `cells` live (made by `prepare_data`)."""
    dirs: dict[str, Path] = {}
    for cell in cells:
        if cell.train_set == "clotho":
            dirs["clotho"] = root / "data" / CLOTHO.folder
            dirs["clotho_heldout"] = root / "data" / "clotho_heldout420"
        else:
            dirs["heldout"] = root / "data" / "heldout420"
            dirs[cell.train_set] = root / "data" / (DEMO.folder if cell.size == BASE_CLIPS else f"n{cell.size}")
    return dirs


def prepare_data(root: Path, cells: list[Cell], progress: bool = True) -> dict[str, Path]:
    """Generate the sets the cells need (resumably: `hade synth` keeps complete files) and write the manifest
    folders of the larger training sets and of the held-out set; returns `data_dirs`."""
    dirs = data_dirs(root, cells)
    demo = _generate(root, DEMO, progress)
    if "clotho" in dirs:
        _generate(root, CLOTHO, progress)
        held = _generate(root, CLOTHO_HELDOUT, progress)
        _manifest(dirs["clotho_heldout"] / "test.jsonl", [read_split(held, "development")])
    if "heldout" in dirs:
        held = _generate(root, HELDOUT, progress)
        _manifest(dirs["heldout"] / "test.jsonl", [read_split(held, "development")])
    larger = sorted({c.size for c in cells if c.train_set != "clotho" and c.size > BASE_CLIPS})
    if larger:
        pool_dir = _generate(root, pool_spec(max(larger)), progress)
        pool = [c for s in ("development", "validation", "evaluation") for c in read_split(pool_dir, s).clips]
        base = read_split(demo, "development")
        for size in larger:
            extra = SplitData(name="train", clips=pool[:size - BASE_CLIPS])
            _manifest(dirs[str(size)] / "train.jsonl", [base, extra], ["", "pool/"])
            _manifest(dirs[str(size)] / "val.jsonl", [read_split(demo, "validation")])
            _manifest(dirs[str(size)] / "test.jsonl", [read_split(demo, "evaluation")])
    return dirs


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Study:
    """What to run and where; see the module docstring."""

    root: Path
    cells: list[Cell]
    seeds: int = 3
    epochs: int = 4
    heads: tuple[str, ...] = HEADS
    pretrain: PretrainConfig | None = None
    archive: Path | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    base_config: TrainConfig | None = None  # default: the demo's (htsat-cpu + MiniLM, batch 32) with `epochs`

    def base(self, cell: Cell) -> TrainConfig:
        from hade.demo import demo_config

        cfg = copy.deepcopy(self.base_config) if self.base_config else demo_config("dp", epochs=self.epochs)
        if cell.start == "pretrained":
            cfg.init_from = str(self.root / "pretrain")
        return cfg

    def heads_of(self, cell: Cell) -> tuple[str, ...]:
        """The cell's rows: every head of the study, but only SIZE_HEADS of them in a cell larger than the
        demo set (the issue's design: DP against THA+DCR as the set grows)."""
        larger = cell.train_set != "clotho" and cell.size > BASE_CLIPS
        return tuple(h for h in self.heads if h in SIZE_HEADS) if larger else self.heads

    def runs(self) -> list[tuple[Cell, str, int]]:
        """Every (cell, head, seed) of the study, cell by cell."""
        return [(cell, head, seed) for cell in self.cells for head in self.heads_of(cell) for seed in range(self.seeds)]

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / "runs" / cell.name

    def archived_run(self, cell: Cell, head: str, seed: int) -> Path | None:
        """Where the archive keeps the run's eval.json and per_query.npz (None without an archive)."""
        return self.archive / cell.name / ablate.row_slug(head) / f"seed{seed}" if self.archive else None


def pretrain_config(epochs: int = 6) -> PretrainConfig:
    """The study's pretraining: the demo's audio encoder (htsat-cpu), 4 s crops, batch 32."""
    return PretrainConfig(audio_encoder="htsat-cpu", epochs=epochs, batch_size=32, lr=1e-3, clip_seconds=4.0, seed=0)


def _archive_files(src: Path, dst: Path, names: tuple[str, ...]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / f".{name}.tmp")
            (dst / f".{name}.tmp").replace(dst / name)


RUN_FILES = ("eval.json", ablate.PER_QUERY)
PRETRAIN_FILES = ("audio_encoder.safetensors", "pretrain.json")


def heldout_dir(dirs: dict[str, Path], cell: Cell) -> Path:
    """The held-out set `cell` reports on (`data_dirs`)."""
    return dirs["clotho_heldout" if cell.train_set == "clotho" else "heldout"]


def ensure_pretrained(study: Study) -> Path:
    """The pretraining run (ROOT/pretrain), trained unless finished here or in the archive."""
    from hade.train.pretrain import INFO_FILE, STATE_FILE, PretrainSummary, pretrain

    out = study.root / "pretrain"
    cfg = study.pretrain or pretrain_config()
    archived = study.archive / "pretrain" if study.archive else None
    if archived is not None and not (out / INFO_FILE).is_file() and (archived / INFO_FILE).is_file():
        _archive_files(archived, out, PRETRAIN_FILES)
        study.log(f"pretrained encoder taken from the archive {archived}")
        return out
    if (out / INFO_FILE).is_file() and (not (out / STATE_FILE).is_file()  # an archived copy
                                        or PretrainSummary.read(out).finished):  # or a finished run
        return out
    corpus = _generate(study.root, PRETRAIN_CORPUS, study.progress)
    summary = pretrain(corpus, out, cfg, progress=study.progress, log=study.log)
    if summary.finished and archived is not None:
        _archive_files(out, archived, PRETRAIN_FILES)
    return out


def run_one(study: Study, dirs: dict[str, Path], cell: Cell, head: str, seed: int,
            block: bool = False) -> RunResult:
    """Train and evaluate one (cell, head, seed), or take it from the run folder or the archive.
    ablate.RunBusy when another worker is training it, unless `block` (then wait for it)."""
    row = ablate.head_row(head)
    run_dir = _restore(study, cell, head, seed)
    archived = study.archived_run(cell, head, seed)
    _with_heldout(study, dirs, cell, head, seed)
    if cell.start == "pretrained":
        with ablate.run_lock(study.root / "pretrain", block=True):  # one worker pretrains, the others wait
            ensure_pretrained(study)
    result = ablate.run_row_seed(row, seed, study.base(cell), dirs[cell.train_set], study.cell_dir(cell),
                                 study.progress, study.log, heldout_dir(dirs, cell), block=block)
    if archived is not None and not (archived / "eval.json").is_file():
        _archive_files(run_dir, archived, RUN_FILES)
    return result


def _restore(study: Study, cell: Cell, head: str, seed: int) -> Path:
    """The run's folder, given the archive's copy of the run when it holds none."""
    run_dir = ablate.row_dir(study.cell_dir(cell), head, seed)
    archived = study.archived_run(cell, head, seed)
    if archived is not None and not (run_dir / "eval.json").is_file() and (archived / "eval.json").is_file():
        _archive_files(archived, run_dir, RUN_FILES)
    return run_dir


def _with_heldout(study: Study, dirs: dict[str, Path], cell: Cell, head: str, seed: int) -> None:
    """A finished run of `cell` without its held-out results gets them (`ablate.add_heldout`), archived."""
    run_dir = ablate.row_dir(study.cell_dir(cell), ablate.head_row(head), seed)
    archived = study.archived_run(cell, head, seed)
    if ablate.add_heldout(run_dir, heldout_dir(dirs, cell), study.log) and archived is not None:
        _archive_files(run_dir, archived, RUN_FILES)


def add_heldout_results(study: Study, dirs: dict[str, Path]) -> None:
    """Every finished run of the study gets its held-out results (what `--report-only` does before
    reporting; evaluation only)."""
    for cell, head, seed in study.runs():
        _with_heldout(study, dirs, cell, head, seed)


def _to_evaluate(run_dir: Path) -> bool:
    """A finished run still to be evaluated: on its held-out set, or for its per-query results."""
    done = run_dir / "eval.json"
    return done.is_file() and (RunResult.read(done).in_domain_metrics is None
                               or not (run_dir / ablate.PER_QUERY).is_file())


def report_only(study: Study) -> PayoffReport:
    """The report from the finished runs, here or in the archive (copied in, as a run of the study would);
    trains nothing. The data sets are generated only when a finished run must still be evaluated."""
    run_dirs = [_restore(study, cell, head, seed) for cell, head, seed in study.runs()]
    if any(_to_evaluate(d) for d in run_dirs):
        dirs = prepare_data(study.root, study.cells, study.progress)
        add_heldout_results(study, dirs)
    else:
        dirs = data_dirs(study.root, study.cells)
    return write_report(study, dirs)


def run_study(study: Study) -> PayoffReport:
    """Every run of the study, seed by seed (so every cell gets its first seed early), then the report.
    Several workers may share a root (e.g. with different --cells): a run another worker is training is
    left for later, then waited for (the locks of `hade ablate`)."""
    dirs = prepare_data(study.root, study.cells, study.progress)
    busy = []
    for seed in range(study.seeds):
        for cell in study.cells:
            for head in study.heads_of(cell):
                try:
                    run_one(study, dirs, cell, head, seed)
                except ablate.RunBusy as exc:
                    study.log(f"{exc}: doing the other runs first")
                    busy.append((cell, head, seed))
                write_report(study, dirs)
    for cell, head, seed in busy:
        run_one(study, dirs, cell, head, seed, block=True)
    return write_report(study, dirs)


# ------------------------------------------------------------------------------------------------ status
def status(study: Study) -> list[tuple[Cell, str, int, ablate.RunState]]:
    """Every (cell, head, seed) of the study with its RunState; a run the archive holds counts as finished."""
    out = []
    for cell, head, seed in study.runs():
        state = ablate.run_state(ablate.row_dir(study.cell_dir(cell), head, seed))
        archived = study.archived_run(cell, head, seed)
        if state.state != "finished" and archived is not None and (archived / "eval.json").is_file():
            state = ablate.RunState("finished")
        out.append((cell, head, seed, state))
    return out


def format_status(rows: list[tuple[Cell, str, int, ablate.RunState]], epochs: int) -> str:
    """One line per cell and head: each seed's state (training and interrupted runs with their epochs)."""
    width = max((len(cell.name) for cell, *_ in rows), default=4) + 2
    groups: dict[str, list[tuple[int, ablate.RunState]]] = {}
    for cell, head, seed, state in rows:
        groups.setdefault(f"{cell.name:<{width}}{head}", []).append((seed, state))
    return ablate.format_run_states(groups, epochs)


# ------------------------------------------------------------------------------------------------ report
def _finished_all(study: Study, cell: Cell) -> dict[str, list[RunResult]]:
    """{head: results of its seeds 0.. that are finished with their held-out results, in seed order}."""
    found = {}
    for head in study.heads_of(cell):
        results = []
        for seed in range(study.seeds):
            f = ablate.row_dir(study.cell_dir(cell), head, seed) / "eval.json"
            result = RunResult.read(f) if f.is_file() else None
            if result is None or result.in_domain_metrics is None:  # not finished, or no held-out results yet
                break
            results.append(result)
        if results:
            found[head] = results
    return found


def _common_seeds(found: dict[str, list[RunResult]]) -> dict[str, list[RunResult]]:
    """{head: results of seeds 0..k-1} of `_finished_all`'s heads, k the largest count all of them share (so
    rows of a cell pool the same seeds on the same set); {} without dp."""
    if "dp" not in found:
        return {}
    k = min(len(r) for r in found.values())
    return {head: results[:k] for head, results in found.items()}


def _finished(study: Study, cell: Cell) -> dict[str, list[RunResult]]:
    """The cell's finished results that its rows pool (`_common_seeds` of `_finished_all`)."""
    return _common_seeds(_finished_all(study, cell))


def cell_report(study: Study, dirs: dict[str, Path], cell: Cell) -> CellReport | None:
    found = _finished_all(study, cell)  # every eval.json of the cell, read once
    done = _common_seeds(found)
    if not done:
        return None
    # each difference carries `detectable` (hade.eval.stats.detectable): "no difference" has a size
    diffs = ablate.differences("payoff", done, study.cell_dir(cell), dirs[cell.train_set], heldout_dir(dirs, cell),
                               study.log)
    return CellReport(cell.name, cell.start, cell.train_set, cell.size, seeds=len(done["dp"]),
                      finished_seeds={h: len(r) for h, r in found.items()},
                      summary={h: ablate.summarise(r) for h, r in done.items()}, differences=diffs,
                      evaluated_on="held-out 420 clips, 10 s" if cell.train_set == "clotho" else "held-out 420 clips")


def _study_holm(cells: list[CellReport]) -> list[CellReport]:
    """The cells with THA+DCR − DP's headline p-values Holm-adjusted over all of them (`CellReport.study_p`)."""
    study_p: list[dict[tuple[str, str], float]] = [{} for _ in cells]
    for d, m in HEADLINE:
        having = [k for k, c in enumerate(cells) if c.differences.rows.get(STUDY_ROW)]
        for k, p in zip(having, stats.holm([cells[k].differences.rows[STUDY_ROW][d][m].p for k in having])):
            study_p[k][d, m] = p
    return [dataclasses.replace(c, study_p=p) for c, p in zip(cells, study_p)]


def write_report(study: Study, dirs: dict[str, Path]) -> PayoffReport:
    cells = [r for r in (cell_report(study, dirs, c) for c in study.cells) if r is not None]
    report = PayoffReport(_study_holm(cells), list(study.heads), study.epochs)
    write_json_atomic(study.root / "payoff.json", report.to_dict())
    write_text_atomic(study.root / "payoff.md", markdown(report))
    return report
