"""The status page's flow graph: systems, pipes and datasets, laid out and drawn by Graphviz.

The graph (left to right) has a node per system (``system:...`` objects a pipe's source, transform
or sink names with ``system``), per pipe (filled with its state's colour, labelled with its state
and the start of its last run) and per dataset (the config's plus any other in the store), and
an edge for each "reads" and "writes": system -> pipe for a source, pipe -> system for a sink, a
dashed two-way edge for a transform that calls a system, dataset -> pipe for a dataset source
(dashed for a dataset a transform reads, e.g. through ``hops``), pipe -> dataset for what it
writes. A source or sink that is neither a dataset nor a system (a file, embedded entities, an
HTTP endpoint) is a small grey node of its own. Pipes, datasets and systems are Sesam's concepts;
the picture is the dependency graph the pump already follows (``PipeSpec.reads``/``writes``).

Layout and drawing are Graphviz's ``dot`` (the Sugiyama-style layered layout, with edge routing
and text placement) through the ``graphviz`` package, rendering SVG on the server: no JavaScript,
nothing loaded from the network. ``dot`` is a system program (Debian: ``apt-get install
graphviz``); without it :func:`render_svg` returns None and the page says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import graphviz
from markupsafe import Markup

from runtime.config.models import ComponentSpec, PipeSpec
from runtime.store import DatasetInfo

# Fill colour per pipe state (the pipe views' ``state``); the page's legend and CSS use the same.
STATE_COLOURS = {
    "ok": "#c8ecc8", "running": "#c8dcf8", "failed": "#f4b4b4", "tripped": "#fbd38d",
    "interrupted": "#f7c6e0", "disabled": "#dddddd", "off": "#dddddd", "never-run": "#ffffff",
}
FONT = {"fontname": "DejaVu Sans,Helvetica,Arial,sans-serif", "fontsize": "11"}


@dataclass
class _Builder:
    """Collects nodes (numbered ``n0``, ``n1``... so that no ``_id`` is read as DOT syntax)."""

    graph: graphviz.Digraph
    names: dict[str, str] = field(default_factory=dict)

    def node(self, key: str, lines: Iterable[str], **attrs: str) -> str:
        """Add the node once (``key`` = kind/name); text is taken literally (no DOT escapes)."""
        if key not in self.names:
            self.names[key] = name = f"n{len(self.names)}"
            label = graphviz.nohtml("\\n".join(graphviz.escape(line) for line in lines))
            literal = {k: graphviz.escape(v) if k in ("id", "tooltip") else v for k, v in attrs.items()}
            self.graph.node(name, label, **literal)
        return self.names[key]


def flow_graph(
    specs: list[PipeSpec], views: dict[str, dict[str, Any]], datasets: dict[str, DatasetInfo | None],
    link: Callable[[str], str],
) -> graphviz.Digraph:
    """The flow as a Graphviz digraph.

    Args:
        specs: the running config's pipes.
        views: each pipe's JSON state by ``_id`` (``state`` and ``last_run`` are used).
        datasets: every dataset to draw by name, with its store metadata (None: not written yet).
        link: the page path (``/status/...``) to the URL a node links to (adds the token).
    """
    graph = graphviz.Digraph("flow", graph_attr={"rankdir": "LR", "bgcolor": "transparent", **FONT},
                             node_attr=FONT, edge_attr={"color": "#666666", "arrowsize": "0.7"})
    b = _Builder(graph)
    for name, info in sorted(datasets.items()):
        _dataset_node(b, name, info, link)
    for spec in specs:
        _pipe(b, spec, views[spec.id], datasets, link)
    return graph


def _dataset_node(b: _Builder, name: str, info: DatasetInfo | None, link: Callable[[str], str]) -> str:
    size = "not written yet" if info is None else f"{info.ids} ids"
    tripped = info is not None and info.trip is not None
    return b.node(f"dataset/{name}", [name, size + (", tripped" if tripped else "")], shape="cylinder",
                  id=f"graph-dataset-{name}", URL=link(f"/status/datasets/{_path(name)}"),
                  tooltip=f"dataset {name}", style="filled",
                  fillcolor=STATE_COLOURS["tripped"] if tripped else "#f4f1e8", **{"class": "dataset"})


def _pipe(b: _Builder, spec: PipeSpec, view: dict[str, Any], datasets: dict[str, DatasetInfo | None],
          link: Callable[[str], str]) -> None:
    state = view["state"]
    started = (view["last_run"] or {}).get("started_us")
    when = "last run " + utc(started) if started else "no run yet"
    pipe = b.node(f"pipe/{spec.id}", [spec.id, f"{state} · {when}"], shape="box",
                  style="rounded,filled" + (",dashed" if state == "never-run" else ""),
                  fillcolor=STATE_COLOURS.get(state, "#ffffff"), id=f"graph-pipe-{spec.id}",
                  URL=link(f"/status/pipes/{_path(spec.id)}/log"), tooltip=f"pipe {spec.id}: {state}",
                  **{"class": f"pipe {state}"})
    source_dataset = getattr(spec.source.config, "dataset", None) if spec.source.config.type == "dataset" else None
    for name in spec.reads:
        b.graph.edge(b.names[f"dataset/{name}"], pipe, style="solid" if name == source_dataset else "dashed")
    if source_dataset is None:
        b.graph.edge(_outside(b, spec, spec.source), pipe)
    for transform in spec.transforms:
        system = getattr(transform.config, "system", None)
        if system:
            b.graph.edge(pipe, _system(b, system), style="dashed", dir="both")
    if not spec.writes:
        b.graph.edge(pipe, _outside(b, spec, spec.sink))
    for name in spec.writes:
        b.graph.edge(pipe, b.names[f"dataset/{name}"])


def _outside(b: _Builder, spec: PipeSpec, component: ComponentSpec) -> str:
    """The system a source or sink uses, or a node of its own naming its type (and path)."""
    system = getattr(component.config, "system", None)
    if system:
        return _system(b, system)
    path = getattr(component.config, "path", None)
    lines = [component.config.type] + ([str(path)] if isinstance(path, str) else [])
    return b.node(f"outside/{spec.id}/{component.key}", lines, shape="note", style="filled",
                  fillcolor="#f3f3f3", color="#999999", fontcolor="#555555")


def _system(b: _Builder, system: str) -> str:
    return b.node(f"system/{system}", [system, "system"], shape="component", style="filled",
                  fillcolor="#e6e0f4", id=f"graph-system-{system}", **{"class": "system"})


def _path(name: str) -> str:
    return quote(name, safe="")


def utc(ts_us: int) -> str:
    """``2026-12-02 00:40:01 UTC`` from microseconds since the epoch."""
    return datetime.fromtimestamp(ts_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def render_svg(graph: graphviz.Digraph) -> Markup | None:
    """The graph as inline SVG markup (``dot`` in a worker thread; the same graph is laid out
    once), or None when Graphviz's ``dot`` program is not installed.

    Raises:
        graphviz.CalledProcessError: ``dot`` failed on the graph.
    """
    try:
        return await anyio.to_thread.run_sync(_svg, graph.source)
    except graphviz.ExecutableNotFound:
        return None


@lru_cache(maxsize=16)
def _svg(source: str) -> Markup:
    svg = graphviz.Source(source).pipe(format="svg", encoding="utf-8")
    return Markup(svg[svg.index("<svg"):])  # dot escapes every label; the XML prolog is dropped
