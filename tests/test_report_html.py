"""report.html: self-contained (images embedded, no network), escaped, and rendered for real in
headless Chromium (system package; skipped with the reason when the machine has none)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from ml_exp.storage.layout import model_dir
from ml_exp.steps import inference
from ml_exp.steps.report import write_report
from tests.test_infer import artefacts, make_ctx, make_udfs, publish  # noqa: F401 - artefacts is a fixture

ROOT = Path(__file__).resolve().parents[1]
# Where the screenshot is kept (CI can collect it); README's picture is a copy of it.
ARTIFACTS = Path(os.environ.get("ML_EXP_TEST_ARTIFACTS", ROOT / ".test-artifacts"))
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,2400")
NAMES = ("tiny-bert", "org/tiny<b>-bert")
HISTORY = [{"loss": 1.2 - 0.2 * e, "epoch": float(e), "step": 10 * e} for e in (1, 2, 3)] + \
          [{"eval_loss": 1.1 - 0.15 * e, "eval_f1_macro": 0.3 + 0.2 * e, "epoch": float(e), "step": 10 * e} for e in (1, 2, 3)]


@pytest.fixture
def report(tmp_path, artefacts):  # noqa: F811 - the fixture imported above
    context = make_ctx(tmp_path, models=NAMES)
    results = {}
    for seed, name in enumerate(NAMES):
        publish(context, artefacts, name, seed=seed)
        context.run.write_json(f"{model_dir(name)}/training_metrics.json", {"log_history": HISTORY}, overwrite=True)
        results[name] = inference.infer_model(context, make_udfs(), name)
    counts = {"train": {"negative": 6, "positive": 6}, "validation": {"negative": 3, "positive": 3}, "test": {"negative": 5, "positive": 5}}
    context.run.update_manifest(lambda m: m.update(settings={"EXPERIMENT_NAME": "EXP-1-t", "TUNING_SPACE": "<script>alert(1)</script>"},
                                                   steps={"preparation": {"label_counts": counts}}))
    write_report(context, results)
    return context.run, Path(context.run.local_path_or_url("report.html"))


def test_the_report_is_one_self_contained_escaped_page(report):
    run, path = report
    page = path.read_text()
    images = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(images) == 5 and all(src.startswith("data:image/png;base64,") for src in images)  # comparison, 2 matrices, 2 curves
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)  # nothing fetched from a network
    assert "<script>" not in page and "&lt;script&gt;" in page and "org/tiny&lt;b&gt;-bert" in page
    for text in ("Models compared", "training curves of tiny-bert", "negative", "TUNING_SPACE", "manifest.json", "precision"):
        assert text in page


def _browser():
    browser = browser_or_none()
    if browser is None:
        pytest.skip("no Chromium and chromedriver on this machine (Debian: apt-get install chromium chromium-driver; .ci/run installs them)")
    return browser


def browser_or_none():
    """Headless Chromium driven by selenium, from the system's packages (None when absent)."""
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_the_report_renders_in_chromium(report, tmp_path):
    _, path = report
    browser = _browser()
    try:
        browser.get(path.as_uri())
        rendered = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0 && i.naturalHeight > 0])")
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert browser.title.startswith("EXP-1-t run")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        browser.quit()
    assert len(rendered) == 5 and all(ok for _, ok in rendered), rendered
    assert not errors, errors
    assert (ARTIFACTS / "report.png").read_bytes()[:4] == b"\x89PNG"
