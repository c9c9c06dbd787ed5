"""A PNG of a page as Debian's headless chromium renders it: the screenshots in docs/.

    python docs/results/screenshot.py runs/demo-quick/report/index.html docs/report.png

Drives /usr/bin/chromium through /usr/bin/chromedriver with selenium, as tests/test_view.py
does (``apt-get install chromium chromium-driver``; nothing downloads a browser). The window
is as wide as ``--width`` and as tall as the page (up to ``--max-height``), so the PNG holds
the whole page, not just its first screen; it is saved with 256 colours.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def screenshot(page: str, out: str, width: int = 1400, max_height: int = 4000) -> tuple:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    url = page if "://" in page else Path(page).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="vtk-shot-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--hide-scrollbars", f"--window-size={width},1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(30)
        driver.get(url)
        # images (the plot) decoded before the height is measured
        for _ in range(100):
            if driver.execute_script("return [...document.images].every(i => i.complete)"):
                break
            time.sleep(0.1)
        height = min(max_height, driver.execute_script(
            "return document.documentElement.scrollHeight"))
        # the viewport itself, not the window (whose frame takes some of its height)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.3)
        driver.save_screenshot(out)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    from PIL import Image  # matplotlib's dependency: 256 colours take a third of the bytes

    Image.open(out).convert("RGB").quantize(256).save(out, optimize=True)
    return width, height


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", help="an HTML file or a URL")
    ap.add_argument("out", help="the PNG to write")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--max-height", type=int, default=4000)
    a = ap.parse_args()
    print(screenshot(a.page, a.out, a.width, a.max_height))
