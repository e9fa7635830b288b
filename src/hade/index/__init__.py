"""Search engine: index a folder of audio with a retrieval model, then search it by text or by example.

    from hade.index import build_index, Index
    build_index("sounds/", "sounds.idx", ckpt="runs/x/checkpoints/best")  # or settings=IndexSettings(window=5.0)
    index = Index.open("sounds.idx")
    for hit in index.search("a dog barks while rain falls", k=10):
        print(hit.path, hit.start, hit.end, hit.score)

See docs/index-map.md for a map of the package: `hade.index.settings` (what a build is asked for),
`hade.index.report` (what a build did: `BuildReport`), `hade.index.meta` (what an index is),
`hade.index.store` for the on-disk layout, `hade.index.ann` for the ANN parameters, `hade.index.search`
for how a search runs (its parts: `query`, `query_encoder`, `scoring`, `indexed_audio`),
`hade.index.integrity` for checksums, `--check` and repair by a re-run, `hade.index.merge` for joining shards.
"""
from hade.index.build import build_index
from hade.index.export import ExportReport, IndexVectors, export_index
from hade.index.merge import MergeReport, merge_indexes
from hade.index.report import BuildReport, FileProblem
from hade.index.info import IndexInfo
from hade.index.integrity import CheckResult, Health, Problem, check_index
from hade.index.search import Hit, Index, Like, QueryVector, Window, search

__all__ = ["BuildReport", "CheckResult", "ExportReport", "FileProblem", "Health", "Hit", "Index", "IndexInfo",
           "IndexVectors", "Like", "MergeReport", "Problem", "QueryVector", "Window", "build_index",
           "check_index", "export_index", "merge_indexes", "search"]
