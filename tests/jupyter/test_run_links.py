"""``%flowbook runs`` in HTML: each run's name is a link the labextension opens in the panel,
and a plain anchor anywhere else; the text form is unchanged."""

from __future__ import annotations

from types import SimpleNamespace

from flowbook.jupyter.tables import RUN_LINK_HASH, RunTable, run_link

RUN_ID = "5393d4ec-ca5a-4c54-901e-4270d9bd4f34"


def info(name: str, run_id: str = RUN_ID) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        flow_name="etl",
        state="Completed",
        start_time="2026-12-05T08:24:58.360000",
        duration_s=1.5,
        task_runs=3,
        id=run_id,
    )


def test_run_names_are_links_to_the_run() -> None:
    page = RunTable([info("nightly-1")])._repr_html_()
    assert (
        f"<a class='fb-run-link' href='{RUN_LINK_HASH}{RUN_ID}' data-flowbook-run='{RUN_ID}' "
        "title='Open this run in the Flow runs panel'>nightly-1</a>"
    ) in page
    # the other cells are as before, the short id included
    assert "<td>etl</td>" in page
    assert "<td>5393d4ec</td>" in page
    assert page.count("<a ") == 1


def test_names_and_ids_are_escaped() -> None:
    page = RunTable([info("<b>x</b> & 'y'", run_id="a'b")])._repr_html_()
    assert "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt; &amp; &#x27;y&#x27;" in page
    assert "data-flowbook-run='a&#x27;b'" in page
    assert run_link("r1", "<i>") == (
        "<a class='fb-run-link' href='#flowbook-run=r1' data-flowbook-run='r1' "
        "title='Open this run in the Flow runs panel'>&lt;i&gt;</a>"
    )


def test_the_text_form_has_no_links() -> None:
    table = RunTable([info("nightly-1")])
    text = repr(table)
    assert "nightly-1" in text
    assert "flowbook-run" not in text
    assert RunTable([])._repr_html_() == "<p>No flow runs in the store yet.</p>"
