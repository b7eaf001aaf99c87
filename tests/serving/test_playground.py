"""The playground page in a real headless Chromium (Debian's, driven by Playwright): upload an image, ask, see
the model's answer on the page; caption it (streamed); draw from a prompt. `.ci/run` installs Chromium;
`POLYMODAL_SCREENSHOT=PATH` saves the page after the answer (the picture in docs/tutorials/serving.md)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from serving.conftest import first_record, make_app, running

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(served):
    from playwright.sync_api import sync_playwright

    with running(make_app(served, ("vqa", "caption", "draw"))) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)  # a fresh profile
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('#model option').length === 3")
        yield page
        browser.close()


def test_upload_an_image_ask_and_see_the_answer(page, served, shapes_data):
    record = first_record(shapes_data)
    question = "what color is the circle?"
    expected = served["vqa"].model.answer(record["image"], question)
    page.select_option("#model", "vqa")
    assert page.is_disabled("#draw") and not page.is_disabled("#ask")  # buttons follow the model's endpoints
    page.set_input_files("#file", record["image"])
    page.wait_for_selector("#preview img")
    page.fill("#text", question)
    page.click("#ask")
    page.wait_for_function("document.querySelector('#status').textContent === 'Answered.'", timeout=60_000)
    assert page.text_content("#answer") == expected
    if os.environ.get("POLYMODAL_SCREENSHOT"):
        page.screenshot(path=os.environ["POLYMODAL_SCREENSHOT"], full_page=True)


def test_caption_streams_onto_the_page_and_errors_are_shown(page, served, shapes_data):
    record = first_record(shapes_data)
    page.select_option("#model", "caption")
    page.set_input_files("#file", record["image"])
    page.wait_for_selector("#preview img")
    page.click("#caption")
    page.wait_for_function("document.querySelector('#status').textContent === 'Answered.'", timeout=60_000)
    assert page.text_content("#answer") == served["caption"].model.caption(record["image"])
    page.select_option("#model", "vqa")
    page.fill("#text", "")
    page.click("#ask")  # no question: the server's message, not a blank page
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=60_000)
    assert "question" in page.text_content("#status")


def test_draw_from_a_prompt(page):
    page.select_option("#model", "draw")
    page.fill("#text", "a red circle")
    page.click("#draw")
    page.wait_for_function("document.querySelector('#status').textContent === 'Drawn.'", timeout=120_000)
    assert page.locator("#gallery img").count() == 4
    assert page.evaluate("document.querySelector('#gallery img').naturalWidth") > 0
