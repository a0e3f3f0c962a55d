"""Screenshot of the interactive ml-100k map in headless Chromium, after a box selection and a hover.

    python experiments/diagnostics/screenshot.py /tmp/ml100k_items.html experiments/diagnostics/ml100k_items_html.png
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains


def main(html: Path, out: Path) -> None:
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1150"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options)
    try:
        driver.get(html.resolve().as_uri())
        time.sleep(3)
        driver.execute_script("Plotly.relayout(document.getElementById('recsys-map'), {dragmode: 'select'});")
        area = driver.find_element("css selector", "rect.nsewdrag")
        w, h = area.size["width"], area.size["height"]
        # A box over the upper-left part of the map, then hover one point.
        (ActionChains(driver).move_to_element_with_offset(area, -w // 2 + 40, -h // 2 + 40).click_and_hold()
         .move_by_offset(w // 6, h // 6).move_by_offset(w // 6, h // 6).release().perform())
        time.sleep(1)
        point = driver.find_elements("css selector", "g.trace path.point")[0]
        ActionChains(driver).move_to_element(point).perform()
        time.sleep(1)
        print(driver.find_element("id", "recsys-selection").text[:400])
        out.write_bytes(driver.get_screenshot_as_png())
    finally:
        driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
