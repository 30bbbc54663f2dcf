"""The API's web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
upload a recording and read the matches, record from a (fake) microphone, and see refusals explained."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_stack import ApiServer
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from test_api_search import ENCODERS, TRACK, phone_recording

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver_path = shutil.which("chromedriver")
    if driver_path is None or not Path(CHROMIUM).exists():
        pytest.fail("chromium and chromium-driver are not installed: `make setup` installs setup/apt-packages.txt")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,900",
                     # A fake microphone (a beep) that needs no permission prompt.
                     "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: WebDriver, api: ApiServer, key: str | None = "tester", top_k: int = 5) -> None:
    browser.get(api.url)
    assert browser.title == "CloudTune audio search"
    browser.execute_script("sessionStorage.clear()")
    key_input = browser.find_element(By.ID, "api-key")
    key_input.clear()
    if key:
        key_input.send_keys(api.keys[key])
    top_k_input = browser.find_element(By.ID, "top-k")
    top_k_input.clear()
    top_k_input.send_keys(str(top_k))


def status_text(browser: WebDriver) -> str:
    return browser.find_element(By.ID, "status").text


def wait_for_answer(browser: WebDriver, seconds: float = 60) -> str:
    WebDriverWait(browser, seconds).until(lambda b: status_text(b) and status_text(b) != "searching ..." and not status_text(b).startswith("recording"))
    return status_text(browser)


def result_rows(browser: WebDriver) -> list[tuple[str, str, float]]:
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    return [(row.find_element(By.CSS_SELECTOR, "td:nth-child(1)").text, row.find_element(By.CSS_SELECTOR, "td.track").text,
             float(row.find_element(By.CSS_SELECTOR, "td.score").text)) for row in rows]


def test_upload_a_file_and_read_the_matches(browser: WebDriver, api_server: ApiServer, serving_artifacts: Any, tmp_path: Path) -> None:
    clip = tmp_path / "clip.ogg"
    clip.write_bytes(ENCODERS["clip.ogg"](phone_recording(serving_artifacts)))
    open_page(browser, api_server, top_k=5)
    browser.find_element(By.ID, "file").send_keys(str(clip))
    browser.find_element(By.ID, "search").click()
    status = wait_for_answer(browser)
    assert status.startswith("5 matches for 8.0 s of audio in"), status
    rows = result_rows(browser)
    assert [rank for rank, _, _ in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0][1] == TRACK
    scores = [score for _, _, score in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    browser.save_screenshot(str(tmp_path / "page.png"))


def test_record_from_the_microphone_and_search(browser: WebDriver, api_server: ApiServer) -> None:
    open_page(browser, api_server, top_k=3)
    browser.find_element(By.ID, "record").click()
    stop = browser.find_element(By.ID, "stop")
    assert not stop.is_enabled(), "at least 5 s are recorded"
    WebDriverWait(browser, 15).until(lambda _: stop.is_enabled())
    stop.click()
    status = wait_for_answer(browser)
    assert status.startswith("3 matches for "), status
    recorded_s = float(status.split(" for ")[1].split(" s ")[0])
    assert 5.0 <= recorded_s <= 10.5
    assert len(result_rows(browser)) == 3


@pytest.mark.parametrize("case", ["not audio", "no key"])
def test_refusals_are_shown_to_the_person(browser: WebDriver, api_server: ApiServer, tmp_path: Path, case: str) -> None:
    upload = tmp_path / "notes.wav"
    upload.write_bytes(b"meeting notes, not a recording\n" * 50 if case == "not audio" else ENCODERS["clip.wav"](np.zeros((48_000 * 2, 2), np.float32)))
    open_page(browser, api_server, key=None if case == "no key" else "tester")
    browser.find_element(By.ID, "file").send_keys(str(upload))
    browser.find_element(By.ID, "search").click()
    status = wait_for_answer(browser)
    expected = "415: not a recognised audio file" if case == "not audio" else "401: an API key is required"
    assert status.startswith(expected), status
    assert "error" in browser.find_element(By.ID, "status").get_attribute("class")
    assert not browser.find_element(By.ID, "results").is_displayed()
