"""`hade ablate --table N`: the rows of HADE's tables, trained and evaluated on one data set with one
budget over several seeds, resumable row by row (each finished seed leaves an `eval.json`; a killed
training run resumes from its own checkpoint).

Rows live in OUT/rows/<row>/seed<k>/ and are keyed by row name only, so tables that share a row (the
`dp` of Tables 1-3 and `compare`) share its runs when given the same OUT and base config. `rows=` runs
a subset (e.g. one worker per row group, in parallel); the other rows enter the written table when all
their seeds are already finished. A run directory is locked (flock) while it trains, so two workers on
one OUT never train the same run: a worker that finds a run locked goes on with its other runs, then
waits for the locked ones and takes their results (or trains one itself if the other worker died).

Output in OUT/: `table{N}.md` (ours as mean ± std over seeds beside the paper's numbers, then every row's
difference to the table's baseline; written by hade.experiments.ablate_report) and `table{N}.json`
(every seed's metrics, the differences).

Differences to the baseline (`dp`; Table 4: `K=8`, Table 5: `alpha=0.01`, the paper's chosen settings):
each run saves its per-query results (`per_query.npz`, see `hade.eval.per_query`) beside `eval.json`.
Seeds are pooled by averaging each query's value over the seeds (a caption's R@1 over 3 seeds is 0, 1/3,
2/3 or 1), so the comparison is of the seed-averaged systems on the same queries; the difference gets a
paired-bootstrap 95 % interval over clips and a paired sign-flip p-value (`hade.eval.stats`, seed 0),
Holm-adjusted over the table's rows.  A finished run without `per_query.npz` (from before it existed) is
re-evaluated from its `checkpoints/best` (deterministic, so its metrics are unchanged) and the file saved;
a run without a checkpoint makes its row's difference "n/a".
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from hade.checkpoint import load
from hade.config import TrainConfig, to_dict
from hade.data.readers import read_split
from hade.errors import InputError
from hade.data.captioner import build_captioner
from hade.eval import stats
from hade.eval.evaluate import evaluate_run
from hade.models.heads import canonical_head
from hade.eval.per_query import PerQuery, QueryValues, load_per_query, save_per_query
# the tables' text (and summarise, DIFF_METRICS, ...) are in ablate_report; importable from here as before
from hade.experiments.ablate_report import (DIFF_METRICS, METRIC_KEYS, markdown_differences,  # noqa: F401
                                            markdown_other, markdown_table, summarise)
from hade.experiments.paper_tables import PAPER
from hade.experiments.records import HeldoutAdded, RowDifferences, RowSummary, RunResult, SetMetrics
from hade.experiments.runs import (RunBusy, RunState, format_run_states, run_lock,  # noqa: F401
                                    run_state)
from hade.train.trainer import train
from hade.utils.atomic import write_json_atomic, write_text_atomic

BASELINE = {"4": "K=8", "5": "alpha=0.01"}  # other tables: "dp"
PER_QUERY = "per_query.npz"


@dataclass
class Row:
    name: str  # as in the paper's table
    apply: Callable[[TrainConfig], None]  # edits a copy of the base config


def _head(name: str) -> Callable[[TrainConfig], None]:
    def apply(cfg: TrainConfig) -> None:
        cfg.model.head = name

    return apply


def head_row(name: str) -> Row:
    """The row that trains head `name` (a head combination, as `hade train --head` takes it)."""
    return Row(name, _head(name))


def _factors(k: int) -> Callable[[TrainConfig], None]:
    def apply(cfg: TrainConfig) -> None:
        cfg.model.head = "dcr"
        cfg.model.embed_dim = k * (cfg.model.embed_dim // k)  # D/K must be whole
        cfg.model.head_options = {**cfg.model.head_options, "factors": k}

    return apply


def _weight(name: str, value: float) -> Callable[[TrainConfig], None]:
    def apply(cfg: TrainConfig) -> None:
        cfg.model.head = "dcr"
        cfg.model.head_options = {**cfg.model.head_options, name: value}

    return apply


def _aux_head(name: str) -> Callable[[TrainConfig], None]:
    def apply(cfg: TrainConfig) -> None:
        cfg.model.head = name
        cfg.aux_captions = cfg.aux_captions or "synthcaps"

    return apply


COMPARE_HEADS = ("dp", "tha+dcr", "coatt-single", "coatt-stacked", "coatt-iterated", "hci", "hci+ac", "diffatr")
OOD_HEADS = ("dp", "tha+dcr", "diffatr")


def table_rows(table: str) -> list[Row]:
    if table == "compare":
        return [Row(h, _aux_head(h) if h.endswith("+ac") else _head(h)) for h in COMPARE_HEADS]
    if table == "ood":
        return [Row(h, _head(h)) for h in OOD_HEADS]
    if table in ("1", "2"):
        return [Row(h, _head(h)) for h in ("dp", "tha", "tha+dp", "dcr", "tha+dcr")]
    if table == "3":
        return [Row(h, _head(h)) for h in ("dp", "dp+ld", "dp+ld+la", "dp+ld+la+ca")]
    if table == "4":
        return [Row(f"K={k}", _factors(k)) for k in (6, 8, 10)]
    if table == "5":
        return ([Row(f"alpha={a}", _weight("alpha", a)) for a in (0.005, 0.01, 0.02)]
                + [Row(f"beta={b}", _weight("beta", b)) for b in (0.001, 0.005, 0.01)])
    raise InputError(f"--table: expected 1, 2, 3, 4, 5, compare or ood, got {table!r}")


def row_slug(name: str) -> str:
    return name.replace("+", "_").replace("=", "_")


def row_dir(out: Path, row: Row | str, seed: int) -> Path:
    return out / "rows" / row_slug(row if isinstance(row, str) else row.name) / f"seed{seed}"


def _timed_metrics(model, split, cfg: TrainConfig, aux: dict[str, str] | None) -> tuple[SetMetrics, PerQuery]:
    """The split's metrics (with the all-pairs scoring time, in seconds per 1k × 1k pairs) and per-query results."""
    run = evaluate_run(model, split, cfg.clip_seconds, cfg.eval_batch_size, progress=False, aux_captions=aux)
    seconds = run.score_seconds * 1e6 / run.scores.numel()
    return SetMetrics(run.metrics.retrieval(), run.metrics.chance, seconds), run.per_query


@dataclass(frozen=True)
class Evaluated:
    """A checkpoint evaluated for its table: the reported set's `metrics` and `per_query` results, and, when
    that is a held-out set, the run's own evaluation split's metrics (`in_domain`)."""

    metrics: SetMetrics
    per_query: PerQuery
    in_domain: SetMetrics | None = None


def _evaluate_sets(model, cfg: TrainConfig, data_dir: Path, ood_data: Path | None) -> Evaluated:
    """Metrics on the data set's evaluation split, and on ood_data's (then the reported one)."""
    found = []
    for root in (data_dir, ood_data):
        if root is None:
            continue
        split = read_split(root, "evaluation")
        aux = (build_captioner(cfg.aux_captions, root, "evaluation", cfg.aux_error_rate, cfg.seed).caption(split.clips)
               if cfg.aux_captions else None)
        found.append(_timed_metrics(model, split, cfg, aux))
    (metrics, per_query), in_domain = found[-1], (found[0][0] if len(found) == 2 else None)
    return Evaluated(metrics, per_query, in_domain)


def table_status(table: str, out: Path, seeds: int,
                 rows: list[str] | None = None) -> dict[str, list[tuple[int, RunState]]]:
    """{row: [(seed, RunState)]} of the table's rows (or those named in `rows`) in OUT."""
    return {row.name: [(seed, run_state(row_dir(out, row, seed))) for seed in range(seeds)]
            for row in table_rows(str(table)) if rows is None or row.name in rows}


def _cached(row: Row, seeds: int, out: Path) -> list[RunResult] | None:
    """The finished results of every seed of `row` in `out`, or None when one is missing."""
    files = [row_dir(out, row, seed) / "eval.json" for seed in range(seeds)]
    return [RunResult.read(f) for f in files] if all(f.is_file() for f in files) else None


def run_row_seed(row: Row, seed: int, base: TrainConfig, data_dir: Path, out: Path, progress: bool,
                 log: Callable[[str], None], ood_data: Path | None = None, block: bool = False) -> RunResult:
    """Train (or resume) one row with one seed and evaluate its best checkpoint; cached in eval.json.
    With `ood_data`, the reported metrics are on that set's evaluation split (in-domain ones kept too).
    RunBusy when another worker is training the run, unless `block` (then wait for it first)."""
    run_dir = row_dir(out, row, seed)
    done = run_dir / "eval.json"
    if done.is_file():
        return RunResult.read(done)
    with run_lock(run_dir, block):
        if done.is_file():  # finished by another worker between the check above and the lock
            return RunResult.read(done)
        return _train_and_evaluate(row, seed, base, data_dir, run_dir, progress, log, ood_data)


# how the input is loaded, not what is trained: the batches are the same whatever their values (tests/data)
LOADER_FIELDS = ("num_workers", "prefetch_factor", "audio_cache_mb")


def _same_run(config: TrainConfig) -> dict[str, Any]:
    """`config` without the loader fields and with its head under its one name, so that two runs that train
    the same model compare equal."""
    out = to_dict(config)
    out["model"]["head"] = canonical_head(out["model"]["head"])
    for name in LOADER_FIELDS:
        out.pop(name, None)
    return out


def _reuse_twin(cfg: TrainConfig, row: Row, seed: int, run_dir: Path, ood_data: Path | None,
                log: Callable[[str], None]) -> RunResult | None:
    """The finished result of another row of OUT that trained this very configuration (e.g. Table 3's
    `dp+ld+la+ca` and Table 1's `dcr`, Table 5's `alpha=0.01`), copied into `run_dir`: training is deterministic
    (tests/experiments), so a second training would repeat it to the last digit.  None when there is none."""
    want = _same_run(cfg)
    for other in sorted(run_dir.parent.parent.glob(f"*/seed{seed}/eval.json")):
        if other.parent == run_dir:
            continue
        try:
            result = RunResult.read(other)
        except InputError as e:  # another row's damaged result: not this run's concern
            log(f"{e}; not compared as a twin of row {row.name!r}")
            continue
        if (not (other.parent / PER_QUERY).is_file() or _same_run(result.config) != want
                or (result.in_domain_metrics is not None) != (ood_data is not None)):
            continue
        log(f"row {row.name!r}, seed {seed}: same configuration as {other.parent}; reusing its run")
        shutil.copyfile(other.parent / PER_QUERY, run_dir / PER_QUERY)
        result = dataclasses.replace(result, row=row.name, config=cfg, reused_from=str(other.parent))
        result.write(run_dir / "eval.json")
        return result
    return None


def _train_and_evaluate(row: Row, seed: int, base: TrainConfig, data_dir: Path, run_dir: Path, progress: bool,
                        log: Callable[[str], None], ood_data: Path | None) -> RunResult:
    done = run_dir / "eval.json"
    cfg = copy.deepcopy(base)
    cfg.seed = seed
    row.apply(cfg)
    twin = _reuse_twin(cfg, row, seed, run_dir, ood_data, log)
    if twin is not None:
        return twin
    log(f"row {row.name!r}, seed {seed}: head {cfg.model.head} {cfg.model.head_options or ''}")
    summary = train(data_dir, run_dir, cfg, progress=progress)
    model = load(run_dir / "checkpoints" / "best")
    evaluated = _evaluate_sets(model, cfg, data_dir, ood_data)
    result = RunResult(row.name, seed, cfg, summary, evaluated.metrics, evaluated.in_domain)
    save_per_query(run_dir / PER_QUERY, evaluated.per_query)  # before eval.json: a finished run always has both
    result.write(done)
    return result


def run_per_query(run_dir: Path, result: RunResult, data_dir: Path, ood_data: Path | None,
                  log: Callable[[str], None]) -> PerQuery | None:
    """The per-query results of a finished run: its per_query.npz, or (an older run) re-evaluated from its
    checkpoint and saved; None when the run has neither (its differences are then "n/a")."""
    path = run_dir / PER_QUERY
    if path.is_file():
        return load_per_query(path)
    ckpt = run_dir / "checkpoints" / "best"
    if not ckpt.is_dir():
        return None
    log(f"{run_dir}: no {PER_QUERY}; re-evaluating {ckpt} for the per-query results")
    per_query = _evaluate_sets(load(ckpt), result.config, data_dir, ood_data).per_query
    save_per_query(path, per_query)
    return per_query


PENDING_PER_QUERY = "per_query.heldout.npz"  # add_heldout's new per-query results until eval.json says so


def add_heldout(run_dir: Path, heldout_data: Path, log: Callable[[str], None]) -> bool:
    """Give a run that finished without a held-out set (no ``in_domain_metrics`` in its eval.json) the
    results a run given `heldout_data` as run_row_seed's `ood_data` has: its best checkpoint evaluated on that
    set's evaluation split become ``metrics`` and per_query.npz, its own set's metrics are kept as
    ``in_domain_metrics``, and ``heldout_added`` says so. Evaluation only: the training is untouched. True
    when it evaluated; False when there was nothing to do (no finished run, or held-out results already).
    InputError when the checkpoint is gone. Interruptible: the per-query results are written beside, then eval.json, then
    moved over per_query.npz (an interrupted move is finished by the next call)."""
    done, pending = run_dir / "eval.json", run_dir / PENDING_PER_QUERY
    if not done.is_file() or (RunResult.read(done).in_domain_metrics is not None and not pending.is_file()):
        return False
    with run_lock(run_dir, block=True):
        result = RunResult.read(done)
        if result.in_domain_metrics is not None:
            if pending.is_file():
                pending.replace(run_dir / PER_QUERY)
            return False
        ckpt = run_dir / "checkpoints" / "best"
        if not ckpt.is_dir():
            raise InputError(f"{run_dir}: finished without the held-out set {heldout_data}, and it cannot be evaluated "
                             f"on it now (no checkpoints/best); delete the folder to train it again")
        log(f"{run_dir}: evaluating {ckpt} on the held-out set {heldout_data} (the run's own set's metrics are kept "
            f"as in_domain_metrics)")
        evaluated = _evaluate_sets(load(ckpt), result.config, heldout_data, None)
        save_per_query(pending, evaluated.per_query)
        dataclasses.replace(result, metrics=evaluated.metrics, in_domain_metrics=result.metrics,
                            heldout_added=HeldoutAdded(str(heldout_data))).write(done)
        pending.replace(run_dir / PER_QUERY)
    return True


def _pooled(per_seed: list[PerQuery], where: str) -> dict[str, QueryValues]:
    """Both directions' per-query values averaged over seeds (all seeds on the same split)."""
    return stats.pooled_directions(per_seed, [f"{where} seed {k}" for k in range(len(per_seed))], DIFF_METRICS)


def differences(table: str, done: dict[str, list[RunResult]], out: Path, data_dir: Path,
                ood_data: Path | None, log: Callable[[str], None]) -> RowDifferences:
    """Every finished row against the table's baseline (see the module docstring); rows without per-query
    results (or all rows, when the baseline has none) get None."""
    baseline = BASELINE.get(str(table), "dp")
    systems, first = [], {}
    for name, results in done.items():
        runs = [run_per_query(row_dir(out, name, r.seed), r, data_dir, ood_data, log) for r in results]
        if all(pq is not None for pq in runs):
            systems.append(stats.Named(name, _pooled(runs, f"row {name}")))
            first[name] = runs[0]
    settings = stats.StatSettings(stats.DEFAULT_RESAMPLES, stats.DEFAULT_SEED, stats.DEFAULT_PERMUTATIONS)
    if baseline not in {s.name for s in systems}:
        return RowDifferences(baseline, settings, {name: None for name in done if name != baseline})
    for name in first:
        stats.check_same_split(first[baseline], first[name], f"row {baseline}", f"row {name}")
    found = stats.compare_many(systems, baseline, metrics=DIFF_METRICS)
    # the table's order; a row without per-query results is None
    rows = {name: found.by_system.get(name) for name in done if name != baseline}
    return RowDifferences(baseline, found.settings, rows)


def ablate(table: str, data_dir: str | Path, out: str | Path, seeds: int = 3, base: TrainConfig | None = None,
           progress: bool = True, log: Callable[[str], None] = print,
           ood_data: str | Path | None = None, rows: list[str] | None = None) -> dict[str, RowSummary]:
    """Run the table's rows (or only those named in `rows`) over `seeds` seeds and write OUT/table{N}.md/.json;
    returns the summary of every row in the written table."""
    all_rows = table_rows(str(table))
    if rows is not None:
        unknown = sorted(set(rows) - {r.name for r in all_rows})
        if unknown:
            raise InputError(f"--rows: {unknown} not in table {table}; its rows are {[r.name for r in all_rows]}")
    if (table == "ood") != (ood_data is not None):
        raise InputError("--ood-data (a SynthCaps set made only of held-out event types) goes with --table ood")
    if seeds < 1:
        raise InputError(f"--seeds: expected at least 1, got {seeds}")
    data_dir, out = Path(data_dir), Path(out)
    from hade.demo import demo_config

    base = base or demo_config("dp", epochs=6)
    ood = Path(ood_data) if ood_data is not None else None
    all_results: dict[str, list[RunResult | None]] = {}
    busy: list[tuple[Row, int]] = []  # runs another worker is training: waited for after ours

    def write() -> dict[str, RowSummary]:
        done = {name: res for name, res in all_results.items() if None not in res}
        summary = {name: summarise(res) for name, res in done.items()}
        diffs = differences(str(table), done, out, data_dir, ood, log)
        write_json_atomic(out / f"table{table}.json",
                          {"table": table, "seeds": seeds, "summary": {n: s.to_dict() for n, s in summary.items()},
                           "differences": diffs.to_dict(), "paper": PAPER.get(str(table)),
                           "runs": {n: [r.to_dict() for r in res] for n, res in done.items()}})
        write_text_atomic(out / f"table{table}.md", markdown_table(str(table), summary, seeds, data_dir, diffs))
        return summary

    for row in all_rows:
        if rows is None or row.name in rows:
            results: list[RunResult | None] = []
            for seed in range(seeds):
                try:
                    results.append(run_row_seed(row, seed, base, data_dir, out, progress, log, ood))
                except RunBusy as e:
                    log(f"{e}: doing the other runs first")
                    busy.append((row, seed))
                    results.append(None)
        else:
            results = _cached(row, seeds, out)
            if results is None:
                continue
        all_results[row.name] = results
        write()  # partial tables after every row, so an interrupted ablation still shows what is done
    for row, seed in busy:
        log(f"{row_dir(out, row, seed)}: waiting for the other worker to finish it")
        all_results[row.name][seed] = run_row_seed(row, seed, base, data_dir, out, progress, log, ood, block=True)
        write()
    return write()
