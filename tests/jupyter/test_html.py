"""The run's static view (flowbook.jupyter.html), from snapshots built by hand.

The inputs follow docs/widget-protocol.md. The HTML is checked for structure (it parses with
balanced tags), for escaping of every string that comes from a run, and for the parts it
promises; the text form for stability.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest

from flowbook.jupyter.html import LOG_LINES, SVG_NODE_LIMIT, render_html, render_text

T0 = 1_700_000_000.0
EVIL = '<script>alert("x")</script>'


def make_run(name: str, state: str = "Completed", **extra: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "id": f"id-{name}",
        "name": name,
        "task": name.split("-")[0],
        "state": state,
        "state_type": state.upper(),
        "message": None,
        "states": [["Pending", T0, None], ["Running", T0 + 0.1, None], [state, T0 + 1.6, None]],
        "start": T0 + 0.1,
        "end": T0 + 1.6,
        "duration": 1.5,
        "run_count": 1,
        "retries": 0,
        "cache_key": None,
        "cache": "off",
        "inputs": "{}",
        "result": "1",
        "traceback": None,
    }
    run.update(extra)
    return run


def make_node(key: str, label: str, kind: str = "task", **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {
        "key": key,
        "label": label,
        "kind": kind,
        "x": 12.0,
        "y": 12.0,
        "w": 168.0,
        "h": 40.0,
        "parent": None,
        "state": "Completed",
        "state_type": "COMPLETED",
        "counts": {"Completed": 1},
        "total": 1,
        "done": 1,
        "detail": {"runs": [make_run(f"{label}-0")], "runs_total": 1},
    }
    node.update(extra)
    return node


def make_header(**extra: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "flow": "etl",
        "run_name": "red-orca",
        "run_id": "0b7c1d2e-run-id",
        "state": "Completed",
        "state_type": "COMPLETED",
        "message": "All states completed.",
        "start": T0,
        "end": T0 + 65.4,
        "now": T0 + 70.0,
        "counts": {"Failed": 1, "Completed": 3},
        "total": 4,
        "done": 4,
        "background": False,
        "cancellable": False,
        "cancel_requested": False,
        "source": "live",
    }
    header.update(extra)
    return header


def make_graph() -> dict[str, Any]:
    """extract -> square (a map of 3) -> a subflow box holding one task; plus a wait_for edge."""
    nodes = [
        make_node("t:extract", "extract"),
        make_node(
            "m:square",
            "square",
            kind="map",
            x=236.0,
            state="Failed",
            state_type="FAILED",
            counts={"Completed": 2, "Failed": 1},
            total=3,
            done=3,
            detail={
                "runs": [
                    make_run("square-2", "Failed", traceback="ValueError: bad"),
                    make_run("square-0"),
                ],
                "runs_total": 3,
            },
        ),
        make_node("f:report", "report", kind="flow", x=460.0, w=192.0, h=86.0),
        make_node("t:publish", "publish", x=472.0, y=46.0, parent="f:report"),
    ]
    edges = [
        {"from": "t:extract", "to": "m:square", "kind": "data"},
        {"from": "m:square", "to": "f:report", "kind": "wait_for"},
    ]
    return {"width": 664.0, "height": 110.0, "nodes": nodes, "edges": edges}


def make_logs(n: int) -> list[list[Any]]:
    return [
        [T0 + i, "INFO" if i % 3 else "ERROR", f"extract-{i}", f"line {i}", "extract"]
        for i in range(n)
    ]


def make_timeline() -> dict[str, Any]:
    bars = [
        [0, T0 + 0.1, T0 + 1.6, "Completed", "COMPLETED", "t:extract", "extract-0"],
        [1, T0 + 2.0, T0 + 3.0, "Failed", "FAILED", "m:square", "square-2"],
    ]
    return {"start": T0, "end": T0 + 65.4, "lanes": 2, "total": 4, "bars": bars}


def html_for(
    header: dict[str, Any] | None = None,
    graph: dict[str, Any] | None = None,
    logs: list[list[Any]] | None = None,
    logs_total: int | None = None,
) -> str:
    logs = make_logs(5) if logs is None else logs
    return render_html(
        make_header() if header is None else header,
        make_graph() if graph is None else graph,
        logs,
        len(logs) if logs_total is None else logs_total,
        make_timeline(),
    )


class TagChecker(HTMLParser):
    """Parses HTML, checking that every element is closed in order; collects start tags."""

    VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack.pop() == tag, f"</{tag}> closes the wrong element"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(markup: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == [], f"unclosed elements: {checker.stack}"
    return checker


# --- render_html ---------------------------------------------------------------------------


def test_html_is_balanced_with_the_root_carrying_the_state() -> None:
    markup = html_for()
    page = parse(markup)
    tag, attrs = page.starts[0]
    assert tag == "div"
    assert attrs["class"] == "fb-static"
    assert attrs["data-state"] == "Completed"
    assert markup.endswith("</div>")


def test_html_header_shows_flow_run_state_duration_and_counts() -> None:
    text = " ".join(parse(html_for()).text)
    assert "etl" in text
    assert "red-orca" in text
    assert "Completed" in text
    assert "1 min 05 s" in text  # end - start = 65.4 s
    assert "Completed 3" in text
    assert "Failed 1" in text
    assert text.index("Completed 3") < text.index("Failed 1")  # display order, not dict order
    assert "4/4 done" in text
    assert "All states completed." in text


def test_html_running_run_measures_elapsed_up_to_now() -> None:
    header = make_header(state="Running", state_type="RUNNING", end=None, now=T0 + 1.25)
    assert "1.2 s" in " ".join(parse(html_for(header=header)).text)


def test_html_header_links_the_dask_dashboard_when_there_is_one() -> None:
    link = "http://127.0.0.1:8787/status"
    page = parse(html_for(header=make_header(dashboard_link=link)))
    anchors = [attrs for tag, attrs in page.starts if tag == "a"]
    assert anchors == [
        {
            "class": "fb-static-dashboard",
            "href": link,
            "target": "_blank",
            "rel": "noopener",
            "title": link,
        }
    ]
    assert "Dask dashboard" in page.text


def test_html_header_has_no_dashboard_link_without_a_web_address() -> None:
    for link in (None, "", "javascript:alert(1)", EVIL):
        markup = html_for(header=make_header(dashboard_link=link))
        assert "<a " not in markup, link
        assert "Dask dashboard" not in markup, link
        assert "<script" not in markup
    odd = 'http://host/"><script>alert(1)</script>'
    markup = html_for(header=make_header(dashboard_link=odd))
    assert "<script" not in markup
    anchors = [attrs for tag, attrs in parse(markup).starts if tag == "a"]
    assert [a["href"] for a in anchors] == [odd]


def test_html_has_a_row_per_node_with_kind_state_and_progress() -> None:
    page = parse(html_for())
    rows = [attrs for tag, attrs in page.starts if attrs.get("class") == "fb-static-node"]
    assert [row["data-key"] for row in rows] == ["t:extract", "m:square", "f:report", "t:publish"]
    text = " ".join(page.text)
    assert "Completed 2, Failed 1" in text  # the map's state mix
    assert "3/3" in text
    assert "1.5 s" in text  # a task node's duration
    assert "map" in text
    assert "flow" in text


def test_html_escapes_every_string_from_the_run() -> None:
    graph = make_graph()
    graph["nodes"][0]["label"] = EVIL
    graph["nodes"][0]["key"] = '"><b>key'
    header = make_header(flow="a&b <i>", run_name='"quoted"', state='Odd"<state>', message=EVIL)
    logs = [[T0, "INFO", "<who>", "<img src=x onerror=alert(1)>", "<task>"]]
    markup = html_for(header=header, graph=graph, logs=logs)

    assert "<script" not in markup
    assert "<img" not in markup
    assert "<who>" not in markup
    assert "<i>" not in markup
    assert "<b>key" not in markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in markup
    assert "a&amp;b &lt;i&gt;" in markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in markup
    assert 'data-state="Odd&quot;&lt;state&gt;"' in markup
    page = parse(markup)
    assert page.starts[0][1]["data-state"] == 'Odd"<state>'
    text = "".join(page.text)
    assert EVIL in text  # escaped, the text reads as the user wrote it
    assert "<img src=x onerror=alert(1)>" in text


def test_html_numbers_that_are_not_numbers_never_reach_the_markup() -> None:
    graph = make_graph()
    graph["nodes"][0]["x"] = '"/><script>alert(1)</script>'
    graph["width"] = "wide"
    markup = html_for(graph=graph)
    assert "<script" not in markup
    parse(markup)


def test_html_uses_inline_styles_only() -> None:
    markup = html_for()
    assert "<style" not in markup
    assert "<script" not in markup
    assert 'style="' in markup


def test_html_draws_the_graph_as_svg_with_nodes_and_edges() -> None:
    page = parse(html_for())
    tags = [tag for tag, _ in page.starts]
    assert tags.count("svg") == 1
    svg = next(attrs for tag, attrs in page.starts if tag == "svg")
    assert (svg["width"], svg["height"], svg["viewbox"]) == ("664", "110", "0 0 664 110")
    paths = [attrs for tag, attrs in page.starts if tag == "path"]
    assert len(paths) == 2
    assert [p.get("stroke-dasharray") for p in paths] == [None, "4 3"]  # wait_for is dashed
    # same coordinates as the model: the map node's box sits at its x
    assert any(
        tag == "rect" and attrs.get("x") == "236" and attrs.get("width") == "168"
        for tag, attrs in page.starts
    )
    text = " ".join(page.text)
    assert "3/3" in text  # the map node's progress in the SVG


def big_graph(n: int) -> dict[str, Any]:
    nodes = [make_node(f"t:{i}", f"task{i}", y=12.0 + 54 * i) for i in range(n)]
    return {"width": 200.0, "height": 54.0 * n + 24, "nodes": nodes, "edges": []}


def test_html_has_svg_up_to_the_node_limit() -> None:
    markup = html_for(graph=big_graph(SVG_NODE_LIMIT))
    assert markup.count("<svg") == 1
    assert markup.count('class="fb-static-node"') == SVG_NODE_LIMIT


def test_html_has_no_svg_above_the_node_limit_but_keeps_the_table() -> None:
    markup = html_for(graph=big_graph(SVG_NODE_LIMIT + 1))
    assert "<svg" not in markup
    assert markup.count('class="fb-static-node"') == SVG_NODE_LIMIT + 1
    parse(markup)


def test_html_without_nodes_says_so() -> None:
    markup = html_for(graph={"width": 0, "height": 0, "nodes": [], "edges": []})
    assert "<svg" not in markup
    assert "No task runs." in markup
    assert 'class="fb-static-node"' not in markup


def test_html_shows_the_last_log_lines_and_how_many_there_are() -> None:
    logs = make_logs(120)
    text = " ".join(parse(html_for(logs=logs, logs_total=3000)).text)
    shown = [int(n) for n in re.findall(r"line (\d+)", text)]
    assert shown == list(range(120 - LOG_LINES, 120))
    assert f"last {LOG_LINES} of 3000 log lines" in text
    assert "extract-119 - line 119" in text


def test_html_without_logs_says_so() -> None:
    assert "No log lines." in html_for(logs=[])


# --- render_text ---------------------------------------------------------------------------


def test_text_is_a_short_summary_with_counts_sorted_by_state_name() -> None:
    text = render_text(make_header(), make_graph())
    assert text == "FlowRun(flow='etl', state='Completed', task_runs=4, Completed=3, Failed=1)"


def test_text_is_stable_and_has_no_names_times_or_ids() -> None:
    header, graph = make_header(), make_graph()
    first = render_text(header, graph)
    rerun = make_header(run_name="blue-heron", run_id="ffff-other", start=T0 + 999, now=T0 + 5000)
    assert render_text(header, graph) == first
    assert render_text(rerun, make_graph()) == first
    for varying in ("red-orca", "0b7c1d2e", str(int(T0)), "65.4", "1 min"):
        assert varying not in first
    assert "\n" not in first


def test_text_counts_from_the_graph_when_the_header_has_none() -> None:
    text = render_text(make_header(counts={}, total=None), make_graph())
    # extract 1 + square 2/1 + publish 1; the subflow box is not a task run
    assert text == "FlowRun(flow='etl', state='Completed', task_runs=5, Completed=4, Failed=1)"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"Running": 2, "Cached": 1, "Pending": 0}, "Cached=1, Running=2"),
        ({"Not ready": 1}, "'Not ready'=1"),
    ],
)
def test_text_skips_zero_counts_and_quotes_odd_state_names(
    counts: dict[str, int], expected: str
) -> None:
    text = render_text(make_header(counts=counts, total=3), make_graph())
    assert text.endswith(f"task_runs=3, {expected})")
