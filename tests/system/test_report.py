"""System test of `recsys report` (run by the demo as the pipeline's last stage): the page the
demo wrote, rendered by headless Chromium, has every section, runs its script without an
error, and draws a real page; the same page is logged to the MLflow run of the scored model.

Needs Debian's Chromium at /usr/bin/chromium: `make browser` installs it (`make test-system`
does it first)."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from recsys.htmlreport.build import FILENAME, SECTIONS

pytestmark = pytest.mark.system

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (it installs Debian's chromium)", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="recsys-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def page(demo_run) -> Path:
    cfg, _, _ = demo_run
    path = cfg.lakehouse.reports_path / FILENAME
    assert path.is_file(), f"the demo's report stage wrote no {path}"
    return path


def test_the_page_runs_its_script_and_has_every_section(page):
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:2000]
    assert 'data-ready="1"' in body.group(0), body.group(0)
    assert "data-errors" not in body.group(0), body.group(0)
    for s in SECTIONS:
        assert f'<section id="{s}">' in dom, s
    # sections the demo builds have content, not "not built yet"
    for s in ("tables", "funnel", "long-tail", "training", "evaluation", "gallery", "audiences", "search"):
        part = dom.split(f'<section id="{s}">', 1)[1].split("</section>", 1)[0]
        assert "Not built yet" not in part, (s, part[:500])
        if s not in ("gallery", "audiences", "search"):
            assert "<svg" in part, s
    # the gallery shows one user card at a time
    cards = re.findall(r"<div class=\"card\" data-card=\"\d+\"[^>]*>", dom)
    assert len(cards) == 12 and sum("hidden" in c for c in cards) == 11, cards


def test_the_page_draws_a_real_picture(page, tmp_path):
    from PIL import Image

    png = tmp_path / "report.png"
    chromium("--virtual-time-budget=5000", "--hide-scrollbars", f"--screenshot={png}", "--window-size=1280,3000",
             page.as_uri())
    assert png.stat().st_size > 50_000, png.stat().st_size
    with Image.open(png) as im:
        assert im.size == (1280, 3000)
        small = im.convert("RGB").resize((128, 300))
        colours = small.getcolors(maxcolors=128 * 300)
        assert len(colours) > 50  # text, charts and tables, not a blank or one-colour page
        top = max(c for c, _ in colours)
        assert top < 0.9 * 128 * 300  # no single colour fills the page


def test_the_page_is_self_contained_and_logged_to_the_models_run(demo_run, page, tmp_path):
    import mlflow

    cfg, summary, _ = demo_run
    html = page.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import""", html)
    assert summary["mlflow"]["model_name"] in html and cfg.lakehouse.root_uri in html
    mlflow.set_tracking_uri(cfg.tracking_uri)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias(cfg.tracking.model_name, cfg.tracking.alias)
    logged = client.download_artifacts(version.run_id, f"report/{FILENAME}", str(tmp_path))
    assert Path(logged).read_text() == html
