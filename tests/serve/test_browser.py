"""End to end: the search page in real headless Chromium (selenium) against uvicorn on 127.0.0.1.

Skips only when Chromium or chromedriver is not installed (`.ci/run` installs the Debian packages
`chromium` and `chromium-driver`). selenium-manager is never used: the driver path is explicit and
SE_OFFLINE=1.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver (CI installs them)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--window-size=1280,1000",
         "--autoplay-policy=no-user-gesture-required"]
QUERY = "a dog barks while rain falls"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    os.environ["SE_OFFLINE"] = "1"  # selenium-manager must not download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def media_state(driver: Any, audio: Any) -> dict[str, Any]:
    return driver.execute_script(
        "const a = arguments[0];"
        "return {error: a.error ? a.error.code : null, ready: a.readyState, time: a.currentTime,"
        "        src: a.currentSrc, paused: a.paused, duration: a.duration};", audio)


def test_search_play_and_explain(browser: Any, live_server: Any, client: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(live_server.url + "/")
    assert d.find_element(By.CSS_SELECTOR, "label[for='q']").text  # labelled search box
    wait(d, lambda d: "windows" in d.find_element(By.ID, "health").text)  # /health answered

    box = d.find_element(By.ID, "q")
    box.send_keys(QUERY + Keys.ENTER)  # keyboard submit
    results = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)
    assert 1 <= len(results) <= 10
    assert "result" in d.find_element(By.ID, "status").text
    for r in results:
        assert r.find_element(By.CSS_SELECTOR, ".result-path").text
        assert "–" in r.find_element(By.CSS_SELECTOR, ".result-time").text
        assert r.find_element(By.CSS_SELECTOR, ".result-score").text.startswith("score")
    starts = [float(r.get_attribute("data-start")) for r in results]
    chosen = next((r for r, s in zip(results, starts) if s > 0), results[0])  # a window inside its file
    start = float(chosen.get_attribute("data-start"))
    end = float(chosen.get_attribute("data-end"))

    # the player is positioned at the window once its metadata is in, before any play
    audio = chosen.find_element(By.CSS_SELECTOR, "audio")
    wait(d, lambda d: media_state(d, audio)["ready"] > 0 and abs(media_state(d, audio)["time"] - start) < 1e-3)

    chosen.find_element(By.CSS_SELECTOR, ".play-btn").click()
    wait(d, lambda d: media_state(d, audio)["time"] > start or media_state(d, audio)["error"] is not None)
    state = media_state(d, audio)
    assert state["error"] is None, state
    assert state["ready"] > 0, state
    assert state["time"] >= start, state
    assert state["src"].endswith(f"/audio/{chosen.get_attribute('data-id')}")
    # "play match" stops at the end of the window (the file goes on for another 0.5 s or less)
    wait(d, lambda d: media_state(d, audio)["paused"])
    assert media_state(d, audio)["time"] <= end + 0.35

    # why? -> one heat map per THA level, actually drawn, in a panel inside the chosen result
    chosen.find_element(By.CSS_SELECTOR, ".explain-btn").click()
    canvases = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmaps canvas.heatmap[data-drawn='1']") or False)
    assert d.find_element(By.ID, "explain").is_displayed()
    assert chosen.find_elements(By.ID, "explain")  # next to its result, not below all results
    assert QUERY in d.find_element(By.ID, "explain-summary").text
    assert d.find_element(By.CSS_SELECTOR, "#curve[data-drawn='1']").is_displayed()  # score over the file
    titles = [h.text for h in d.find_elements(By.CSS_SELECTOR, "#heatmaps h3")]
    assert titles and all("HTSAT stage" in t and "BERT block" in t for t in titles)
    levels = len(client.get(f"/explain/{chosen.get_attribute('data-id')}", params={"q": QUERY}).json()["levels"])
    assert len(canvases) == levels >= 1
    for canvas in canvases:
        colours = d.execute_script(
            "const c = arguments[0]; const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "const seen = new Set(); for (let i = 0; i < px.length; i += 16) seen.add(px[i] << 16 | px[i+1] << 8 | px[i+2]);"
            "return seen.size;", canvas)
        assert colours > 20, "the heat map canvas looks blank"
        assert canvas.size["width"] > 300 and canvas.size["height"] > 60
        label = canvas.get_attribute("aria-label")
        assert "words" in label and "Strongest" in label
    assert "selected" in chosen.get_attribute("class")
    assert d.find_elements(By.CSS_SELECTOR, "#factors table.factor-table tbody tr")  # DCR factor weights

    # the other direction redraws the maps
    d.find_element(By.CSS_SELECTOR, "label[for='dir-a2t']").click()
    wait(d, lambda d: len(d.find_elements(
        By.CSS_SELECTOR, "#heatmaps canvas.heatmap[data-direction='audio_to_text'][data-drawn='1']")) == levels)
    if os.environ.get("HADE_SCREENSHOT_DIR"):  # look at the page: HADE_SCREENSHOT_DIR=/tmp/shots pytest ...
        save_full_page(d, Path(os.environ["HADE_SCREENSHOT_DIR"]) / "page-desktop.png")

    # "Similar sounds" replaces the results with the windows that sound like the chosen one (other files)
    chosen_id, chosen_path = chosen.get_attribute("data-id"), chosen.find_element(By.CSS_SELECTOR, ".result-path")
    chosen_title = chosen_path.get_attribute("title")
    chosen.find_element(By.CSS_SELECTOR, ".similar-btn").click()
    wait(d, lambda d: "sounds like" in d.find_element(By.ID, "status").text and "result" in
         d.find_element(By.ID, "status").text)
    similar = d.find_elements(By.CSS_SELECTOR, "#results .result")
    expected = client.get(f"/similar/{chosen_id}", params={"k": 10}).json()["results"]
    assert [r.get_attribute("data-id") for r in similar] == [str(h["id"]) for h in expected] and expected
    assert chosen_title not in {r.find_element(By.CSS_SELECTOR, ".result-path").get_attribute("title")
                                for r in similar}
    assert not d.find_element(By.ID, "explain").is_displayed()  # the new search closed the old panel
    # why? now explains "sounds like" the chosen window, not the text query
    similar[0].find_element(By.CSS_SELECTOR, ".explain-btn").click()
    wait(d, lambda d: "sounds like" in d.find_element(By.ID, "explain-summary").text)
    assert QUERY not in d.find_element(By.ID, "explain-summary").text
    assert "audio vector" in d.find_element(By.ID, "explain-note").text
    assert not d.find_elements(By.CSS_SELECTOR, "#heatmaps canvas")
    assert f"like={chosen_id}" in d.current_url


def test_query_in_url_and_error_message(browser: Any, live_server: Any) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.get(live_server.url + "/?q=" + "rain%20on%20a%20roof")
    wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)
    assert d.find_element(By.ID, "q").get_attribute("value") == "rain on a roof"
    # an error from the API is shown, not swallowed (k outside 1..100 forced into the form)
    d.execute_script("const o = document.createElement('option'); o.value = '1000'; o.selected = true;"
                     "document.getElementById('k').append(o);")
    d.find_element(By.ID, "search-btn").click()
    wait(d, lambda d: "Search failed" in d.find_element(By.ID, "status").text)
    assert "k" in d.find_element(By.ID, "status").text


def save_full_page(driver: Any, path: Path) -> None:
    """A PNG of the whole page, beyond the viewport (Chrome DevTools' captureScreenshot)."""
    import base64

    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def marker_pixels(driver: Any, canvas: Any) -> dict[str, Any]:
    """Colours inside the marked window and left of it, sampled across the waveform canvas."""
    return driver.execute_script(
        "const c = arguments[0]; const ctx = c.getContext('2d'); const s = c.width / c.getBoundingClientRect().width;"
        "const a = Number(c.dataset.markerStart) * s, b = Number(c.dataset.markerEnd) * s;"
        "const px = (x) => Array.from(ctx.getImageData(Math.floor(x), Math.floor(c.height / 2), 1, 1).data);"
        "return {inside: px((a + b) / 2), start: a, end: b, width: c.width, height: c.height,"
        "        outside: a > 8 * s ? px(a / 2) : px((b + c.width) / 2)};", canvas)


def test_waveforms_and_url_state_survive_a_reload(browser: Any, live_server: Any, client: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(live_server.url + "/")
    Select(d.find_element(By.ID, "k")).select_by_value("5")
    d.find_element(By.CSS_SELECTOR, "label[for='per-file']").click()  # the label toggles its own checkbox
    d.find_element(By.ID, "q").send_keys("rain on a roof\n")
    results = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)
    expected = client.get("/search", params={"q": "rain on a roof", "k": 5, "per_file": "true"}).json()["results"]
    assert [r.get_attribute("data-id") for r in results] == [str(h["id"]) for h in expected]
    # one waveform per result, drawn from GET /peaks, with the matched window marked where it lies in the file
    waves = wait(d, lambda d: (len(d.find_elements(By.CSS_SELECTOR, "#results canvas.wave[data-drawn='1']")) ==
                              len(results)) and d.find_elements(By.CSS_SELECTOR, "#results canvas.wave"))
    for r, hit in zip(results, expected):
        canvas = r.find_element(By.CSS_SELECTOR, "canvas.wave")
        px = marker_pixels(d, canvas)
        duration = client.get(f"/peaks/{hit['id']}").json()["duration"]
        css_w = canvas.size["width"]
        assert float(canvas.get_attribute("data-marker-start")) == pytest.approx(hit["start"] / duration * css_w, abs=1)
        assert float(canvas.get_attribute("data-marker-end")) == pytest.approx(hit["end"] / duration * css_w, abs=2.5)
        assert px["inside"][:3] != px["outside"][:3], px  # the marker is drawn, not just recorded
    assert len(waves) == len(results)
    # the query, k and per_file are in the address and come back on reload
    assert "q=rain+on+a+roof" in d.current_url and "k=5" in d.current_url and "per_file=true" in d.current_url
    d.refresh()
    again = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)
    assert d.find_element(By.ID, "q").get_attribute("value") == "rain on a roof"
    assert d.find_element(By.ID, "k").get_attribute("value") == "5"
    assert d.find_element(By.ID, "per-file").is_selected()
    assert [r.get_attribute("data-id") for r in again] == [str(h["id"]) for h in expected]


def test_why_after_an_audio_search_explains_the_clip(browser: Any, live_server: Any, audio_folder: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d = browser
    d.get(live_server.url + "/")
    d.find_element(By.ID, "q").send_keys(QUERY + Keys.ENTER)
    first = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)[0]
    first.find_element(By.CSS_SELECTOR, ".explain-btn").click()
    wait(d, lambda d: d.find_element(By.ID, "explain").is_displayed())
    d.find_element(By.CSS_SELECTOR, "#audio-query summary").click()
    clip = sorted(audio_folder.rglob("*.wav"))[3]
    d.find_element(By.ID, "audio-file").send_keys(str(clip))
    d.find_element(By.ID, "audio-btn").click()
    wait(d, lambda d: "the clip" in d.find_element(By.ID, "status").text and "result" in
         d.find_element(By.ID, "status").text)
    assert not d.find_element(By.ID, "explain").is_displayed()  # the old panel went with the old results
    result = d.find_elements(By.CSS_SELECTOR, "#results .result")[0]
    result.find_element(By.CSS_SELECTOR, ".explain-btn").click()
    wait(d, lambda d: d.find_element(By.ID, "explain").is_displayed() and
         d.find_elements(By.CSS_SELECTOR, "#curve[data-drawn='1']"))
    summary = d.find_element(By.ID, "explain-summary").text
    assert "uploaded clip" in summary and QUERY not in summary  # the audio query, not the old text
    note = d.find_element(By.ID, "explain-note")
    assert note.is_displayed() and "no word × time maps" in note.text
    assert result.find_elements(By.ID, "explain") and not d.find_elements(By.CSS_SELECTOR, "#heatmaps canvas")
    assert "Explanation failed" not in d.find_element(By.ID, "status").text
    widths = d.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1], widths  # nothing sticks out sideways at desktop width either
    if os.environ.get("HADE_SCREENSHOT_DIR"):
        save_full_page(d, Path(os.environ["HADE_SCREENSHOT_DIR"]) / "page-audio-query.png")


def test_no_horizontal_overflow_at_400_px(browser: Any, live_server: Any) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 400, "height": 900, "deviceScaleFactor": 1, "mobile": True})
    try:
        d.get(live_server.url + "/?" + "q=a+dog+barks+while+rain+falls&k=10&per_file=false")
        results = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)
        results[0].find_element(By.CSS_SELECTOR, ".explain-btn").click()
        wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#factors table.factor-table") and
             d.find_elements(By.CSS_SELECTOR, "#heatmaps canvas.heatmap[data-drawn='1']"))
        assert d.execute_script("return window.innerWidth") == 400
        assert d.execute_script("return document.documentElement.scrollWidth") <= 400
        box = d.find_element(By.ID, "per-file").rect  # the checkbox sits on its label's line
        label = d.find_element(By.CSS_SELECTOR, "label[for='per-file'] span").rect
        assert abs((box["y"] + box["height"] / 2) - (label["y"] + min(label["height"], 24) / 2)) < 12
        scroller = d.find_element(By.CSS_SELECTOR, "#factors .table-scroll").rect
        assert scroller["x"] + scroller["width"] <= 400
        if os.environ.get("HADE_SCREENSHOT_DIR"):  # look at the page: HADE_SCREENSHOT_DIR=/tmp/shots pytest ...
            save_full_page(d, Path(os.environ["HADE_SCREENSHOT_DIR"]) / "page-400.png")
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_why_with_a_dp_model_draws_the_score_over_the_file(browser: Any, dp_index: Any, bench: Any) -> None:
    """A dp head (every converted CLAP model) has no maps: "Why?" draws the curve, not a red error."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from hade.serve.app import create_app

    d = browser
    with bench.BackgroundServer(create_app(dp_index)) as server:
        d.get(server.url + "/")
        d.find_element(By.ID, "q").send_keys(QUERY + Keys.ENTER)
        result = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#results .result") or False)[0]
        result.find_element(By.CSS_SELECTOR, ".explain-btn").click()
        curve = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#curve[data-drawn='1']") or False)[0]
        assert curve.is_displayed() and result.find_elements(By.ID, "explain")
        assert "no word × time map" in d.find_element(By.ID, "explain-note").text
        status = d.find_element(By.ID, "status")
        assert "error" not in status.get_attribute("class") and "failed" not in status.text
        assert "windows; the matched one" in curve.get_attribute("aria-label")
        assert QUERY in d.find_element(By.ID, "explain-summary").text
