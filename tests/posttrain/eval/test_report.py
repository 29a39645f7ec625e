"""Report: table values per model, delta column, HTML escaping, a real PNG chart."""

from __future__ import annotations

from PIL import Image

from posttrain.eval.report import build_table, to_html, to_markdown, write_report

RESULTS = {
    "base": [{"task": "slake", "metrics": {"open_recall": 0.25, "closed_accuracy": 0.5}}],
    "adapted": [{"task": "slake", "metrics": {"open_recall": 0.375, "closed_accuracy": 0.75}},
                {"task": "pmc_vqa", "metrics": {"accuracy": 0.3, "unparsed": 4}}],
}


def test_table_and_markdown():
    models, table = build_table(RESULTS)
    assert models == ["base", "adapted"]
    assert table == [("slake", "open_recall", [0.25, 0.375]), ("slake", "closed_accuracy", [0.5, 0.75]),
                     ("pmc_vqa", "accuracy", [None, 0.3]), ("pmc_vqa", "unparsed", [None, 4.0])]
    md = to_markdown(models, table).splitlines()
    assert md[0] == "| task | metric | base | adapted | delta |"
    assert "| slake | open_recall | 25.0 | 37.5 | +12.5 |" in md
    assert "| pmc_vqa | unparsed | - | 4 | - |" in md


def test_html_escapes_names():
    models, table = build_table({"<b>x</b>": [{"task": "t&t", "metrics": {"f1": 0.5}}]})
    page = to_html(models, table, "c.png")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "t&amp;t" in page and "<td>50.0</td>" in page
    assert "delta" not in page  # one model: no delta column


def test_write_report_files(tmp_path):
    paths = write_report(RESULTS, tmp_path / "rep")
    assert set(paths) == {"png", "md", "html", "json"}
    with Image.open(paths["png"]) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert 'src="report.png"' in paths["html"].read_text()
