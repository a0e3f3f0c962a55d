"""The interactive map in a real headless browser (Chromium through Selenium).

Skipped cleanly where Selenium, Chromium or chromedriver is absent (``pip install
'recsys[browser]'`` and Debian's ``chromium chromium-driver`` packages enable it).
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="no Chromium/chromedriver here")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from recsys.data.synthetic import generate
    from recsys.diagnostics import align_items, embedding_map
    from recsys.models import ALS

    data = generate(n_users=200, n_items=80, n_clusters=4, mean_items_per_user=15, cold_item_fraction=0.0, seed=1)
    model = ALS(factors=8, epochs=5, random_state=0).fit(data.to_interactions())
    features = align_items(data.items, model.item_ids(np.arange(len(model.items))))
    html = embedding_map(model, color="genres", features=features).save(tmp_path_factory.mktemp("map") / "map.html")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    except Exception as exc:  # a browser that cannot start here (no display libraries, ...)
        pytest.skip(f"Chromium does not start: {exc}")
    try:
        driver.get(html.as_uri())
        WebDriverWait(driver, 60).until(lambda d: d.find_elements("css selector", "g.trace path.point"))
        yield driver
    finally:
        driver.quit()


def test_points_are_drawn(page):
    import matplotlib.image

    assert len(page.find_elements("css selector", "g.trace path.point")) == 80
    shot = matplotlib.image.imread(io.BytesIO(page.get_screenshot_as_png()), format="png")[..., :3]
    coloured = (shot.max(axis=2) - shot.min(axis=2)) > 0.2  # saturated pixels: markers, not white/grey
    assert coloured.mean() > 0.002, coloured.mean()


def test_hover_shows_the_title(page):
    from selenium.webdriver.common.action_chains import ActionChains

    point = page.find_elements("css selector", "g.trace path.point")[0]
    ActionChains(page).move_to_element(point).perform()
    texts = lambda: " ".join(e.text for e in page.find_elements("css selector", ".hoverlayer .hovertext"))  # noqa: E731
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(page, 20).until(lambda d: "Title" in texts())
    assert "item m" in texts()


def test_box_selection_lists_the_items(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    page.execute_script("Plotly.relayout(document.getElementById('recsys-map'), {dragmode: 'select'});")
    area = page.find_element("css selector", "rect.nsewdrag")
    w, h = area.size["width"], area.size["height"]
    # Drag a box over the whole plotting area.
    (ActionChains(page).move_to_element_with_offset(area, -w // 2 + 2, -h // 2 + 2).click_and_hold()
     .move_by_offset(w // 2, h // 2).move_by_offset(w // 2 - 4, h // 2 - 4).release().perform())
    listing = page.find_element("id", "recsys-selection")
    WebDriverWait(page, 20).until(lambda d: "selected" in listing.text and "Title" in listing.text)
    assert listing.text.startswith("80 selected")
