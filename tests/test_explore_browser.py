"""convprop explore end to end in a real headless Chromium (Debian's ``chromium``, driven by
Playwright's Python package; Playwright's own browser download is not needed).

Skipped, with the reason, where Playwright or Chromium is missing, unless
CONVPROP_REQUIRE_BROWSER=1 (set by .ci/run), which turns the skip into a failure.
"""

import os
import shutil
import time

import numpy as np
import pytest

import convprop
from convprop.explore import Explorer
from convprop.maths.optim import get_optimizer
from test_explore_api import running_server

CHROMIUM = os.environ.get("CONVPROP_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
            CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CONVPROP_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser():
    why = _missing()
    if why:
        if os.environ.get("CONVPROP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CONVPROP_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def explorer():
    data = convprop.load_data("sample")
    net = convprop.Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", seed=0,
                                     dtype="float32")
    opt = get_optimizer("sgd", 1.0)
    for i in range(60):
        x = data.train_x[i * 50 : (i + 1) * 50].astype(np.float32) / 255
        opt.step(net.params, net.loss_and_grads(x, data.train_y[i * 50 : (i + 1) * 50])[1])
    return Explorer(net, data=data)


NON_BLANK = """sel => Array.from(document.querySelectorAll(sel)).filter(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 4; i < d.length; i += 4)
    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
  return false;
}).length"""


def draw_stroke(page):
    box = page.locator("#draw").bounding_box()
    points = [(90, 70), (190, 70), (150, 150), (120, 230)]
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
    page.mouse.up()


def test_upload_and_random_image(browser, explorer, tmp_path):
    """An uploaded picture (dark ink on white, any size) is prepared on the server; a
    random test image sets its true label."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(picture).line([(150, 30), (150, 170)], fill="black", width=16)
    picture.save(tmp_path / "one.png")
    with running_server(explorer) as url:
        page = browser.new_page()
        page.goto(url)
        page.set_input_files("#upload", str(tmp_path / "one.png"))
        page.wait_for_function(
            "() => /^[0-9]$/.test(document.getElementById('prediction').textContent)")
        assert page.evaluate(NON_BLANK, "#input-view") == 1
        page.click("#random")
        page.wait_for_function("() => document.getElementById('label').value !== ''")
        page.wait_for_selector("#delta-maps canvas")
        page.close()


def test_draw_see_maps_and_deltas_train_and_stop(browser, explorer):
    errors = []
    with running_server(explorer) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)

        draw_stroke(page)
        page.wait_for_function(
            "() => /^[0-9]$/.test(document.getElementById('prediction').textContent)")
        assert page.locator("#scores .bar").count() == 10
        page.wait_for_selector("#feature-maps canvas")
        # every conv/pool layer's maps, the output scores and the kernels are drawn
        n_maps = page.locator("#feature-maps canvas").count()
        assert n_maps >= 6 + 6 + 12 + 12 + 1
        assert page.evaluate(NON_BLANK, "#feature-maps canvas") >= 20

        page.select_option("#label", "7")
        page.wait_for_selector("#delta-maps canvas")
        heads = page.text_content("#delta-maps")
        for eq in ("eq. (4)", "eq. (8)", "eq. (11)", "eq. (12)", "eq. (13)"):
            assert eq in heads, eq
        assert page.evaluate(NON_BLANK, "#delta-maps canvas") >= 20
        # hovering a δ pixel says its value and where it came from
        page.locator('#delta-maps [data-layer="conv1"] canvas').first.hover()
        assert page.is_visible("#tip")
        assert "eq. (11)" in page.text_content("#tip")

        page.select_option("#activation", "tanh-linear")
        page.fill("#lr", "0.1")
        page.fill("#iterations", "20000")
        page.click("#train-start")
        page.wait_for_function(
            "() => Number(document.getElementById('loss-chart').dataset.points) >= 3",
            timeout=60_000)
        first = int(page.get_attribute("#loss-chart", "data-points"))
        page.wait_for_function(
            f"() => Number(document.getElementById('loss-chart').dataset.points) > {first}",
            timeout=60_000)
        assert page.evaluate(NON_BLANK, "#loss-chart") == 1
        assert page.locator("#diagnostics td").count() >= 5 * 4
        job = explorer.job
        assert job is not None and not job.done
        assert job.settings["activation"] == "tanh-linear:0.13"

        page.click("#train-stop")
        page.wait_for_function(
            "() => document.getElementById('train-status').textContent.includes('stopped')",
            timeout=60_000)
        job.thread.join(30)
        assert job.done and job.events[-1]["status"] == "stopped"
        assert job.events[-1]["iteration"] < 20000

        # the page going away stops its job
        page.click("#train-start")
        page.wait_for_function(
            "() => Number(document.getElementById('loss-chart').dataset.points) >= 2",
            timeout=60_000)
        second = explorer.job
        assert second is not job and not second.done
        page.close()
        deadline = time.monotonic() + 30
        while not second.done and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second.done and second.events[-1]["status"] == "stopped"
    assert not errors, errors
