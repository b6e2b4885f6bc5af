"""The search-index interface and its registry by name.

An index holds documents under string ids, each one vector (dense) or a matrix of token vectors (late
interaction, `multi_vector`), and answers `search(queries, k)` with one result shape, `SearchResult`:
row numbers into `index.ids` and scores, [queries, k] each, best first. Indexes register themselves by
name (`@register_index("scann")`), and the pipeline picks one by that name (gin:
`SearchConfig.index = 'scann'`, see retrieval/pipeline.py), so adding an index is one class and its
registration; nothing else branches on the kind of index. A module that defines an index outside polyret
is loaded by a gin file's `import` line.

Saved indexes carry their name in `polyret_index.json`, so `load_index(folder)` reopens any of them.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Sequence, TypeVar

import numpy as np

from polyret.io.runs import Run, run_from_topk

INDEX_FILE = "polyret_index.json"  # {"index": registered name, ...the index's own settings}


class SearchResult(NamedTuple):
    """Top-k of every query: `rows` int64 [Q, k] into the index's ids and `scores` float32 [Q, k], best
    first. A query with fewer than k hits is padded with row -1 (score -inf, or NaN from ScaNN)."""
    rows: np.ndarray
    scores: np.ndarray

    def hits(self, doc_ids: Sequence[str]) -> list[list[tuple[str, float]]]:
        """[(doc id, score)] best first for every query, padding dropped."""
        return [[(doc_ids[int(r)], float(s)) for r, s in zip(rows, scores) if r >= 0 and np.isfinite(s)]
                for rows, scores in zip(self.rows, self.scores)]

    def to_run(self, query_ids: Sequence[str], doc_ids: Sequence[str]) -> Run:
        return run_from_topk(list(query_ids), list(doc_ids), self.rows, self.scores)


def pad_hits(hits: Sequence[Sequence[tuple[int, float]]], k: int) -> SearchResult:
    """Per-query [(row, score)] lists (best first, at most k each) -> a SearchResult padded to k."""
    rows = np.full((len(hits), k), -1, np.int64)
    scores = np.full((len(hits), k), -np.inf, np.float32)
    for i, query_hits in enumerate(hits):
        for j, (row, score) in enumerate(query_hits[:k]):
            rows[i, j], scores[i, j] = row, score
    return SearchResult(rows, scores)


class Index(abc.ABC):
    """A searchable set of documents. Subclasses implement `build`, `search`, `write` and `read`, and are
    registered with `@register_index(name)`."""

    name: ClassVar[str] = ""  # set by register_index
    multi_vector: ClassVar[bool] = False  # True: documents and queries are [tokens, dim] matrices
    # True: `build` reads the vectors from a folder (a VectorFile, or TokenShards for token vectors) and
    # writes the index into `folder`; the pipeline then writes the vectors to disk first instead of
    # holding them in memory.
    on_disk: ClassVar[bool] = False
    ids: list[str]

    @classmethod
    @abc.abstractmethod
    def build(cls, ids: Sequence[str], vectors: Any, k: int, folder: str | os.PathLike | None = None,
              queries: Any = None) -> "Index":
        """Index `vectors` (dense: [N, dim] array or VectorFile; multi-vector: N [len_i, dim] arrays or a
        TokenShards folder), one per id. `k`: the depth searches will ask for; `folder`: where an on-disk
        index writes itself; `queries`: sample queries an index may tune itself on (or None)."""

    @abc.abstractmethod
    def search(self, queries: Any, k: int) -> SearchResult:
        """Queries (dense: [Q, dim]; multi-vector: Q [len_q, dim] arrays) -> top-k rows and scores."""

    @property
    def exact(self) -> bool:
        """True when results are exact (the pipeline then skips its recall check against brute force)."""
        return False

    def info(self) -> dict:
        """Settings and measurements worth recording with the results (metrics.json)."""
        return {}

    def __len__(self) -> int:
        return len(self.ids)

    # Saving: `write` puts the index's files into a folder and returns its settings (JSON), `read` reopens
    # them; `save` / `load` add the name file that `load_index` dispatches on.
    @abc.abstractmethod
    def write(self, folder: Path) -> dict:
        """Write the index's files into `folder` (exists) -> settings saved beside them."""

    @classmethod
    @abc.abstractmethod
    def read(cls, folder: Path, settings: dict, **options) -> "Index":
        """Reopen what `write` put into `folder`."""

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = self.write(folder)
        tmp = folder / (INDEX_FILE + ".tmp")
        tmp.write_text(json.dumps({"index": self.name, **settings}, indent=1))
        os.replace(tmp, folder / INDEX_FILE)  # last: the folder holds a complete index
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **options) -> "Index":
        folder = Path(folder)
        settings = _read_settings(folder)
        name = settings.pop("index", cls.name)  # indexes saved before names were recorded were ScaNN
        if name != cls.name:
            raise ValueError(f"{folder / INDEX_FILE}: holds a {name!r} index, not {cls.name!r}")
        return cls.read(folder, settings, **options)


def _read_settings(folder: Path) -> dict:
    path = folder / INDEX_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; not a saved polyret index")
    return json.loads(path.read_text())


_REGISTRY: dict[str, type[Index]] = {}
IndexClass = TypeVar("IndexClass", bound=type[Index])


def register_index(name: str) -> Callable[[IndexClass], IndexClass]:
    """Class decorator: make an Index subclass available by `name` (`SearchConfig.index = name`)."""

    def register(cls: IndexClass) -> IndexClass:
        if not (isinstance(cls, type) and issubclass(cls, Index)):
            raise TypeError(f"@register_index({name!r}) needs a subclass of Index, got {cls!r}")
        known = _REGISTRY.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"index name {name!r} is taken by {known.__module__}.{known.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def index_names() -> list[str]:
    return sorted(_REGISTRY)


def get_index(name: str) -> type[Index]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown index {name!r} (registered: {', '.join(index_names())}); an index defined "
                         "outside polyret is registered when its module is imported, e.g. by a gin file's "
                         "`import` line")
    return _REGISTRY[name]


def load_index(folder: str | os.PathLike, **options) -> Index:
    """Reopen an index saved by `Index.save`, whatever its kind."""
    folder = Path(folder)
    name = _read_settings(folder).get("index")
    if name is None:
        raise ValueError(f"{folder / INDEX_FILE}: names no index; open it with its class's load")
    return get_index(name).load(folder, **options)
