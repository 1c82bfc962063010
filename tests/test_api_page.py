"""The search page in a real headless Chromium (Debian `chromium` + `chromedriver`, driven by Selenium).

Screenshots of each step go to build/test-artifacts/ (kept by CI as artifacts).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import ARTIFACTS
from tests.search_service import ServiceThread
from tests.test_api import altered

pytestmark = pytest.mark.integration


def wait_for_results(browser: WebDriver, previous_first: str | None = None) -> list[str]:
    def results(driver: WebDriver) -> list[str] | bool:
        items = driver.find_elements(By.CSS_SELECTOR, "#grid li")
        ids = [item.get_attribute("data-product-id") or "" for item in items]
        return ids if ids and ids[0] != previous_first and driver.find_element(By.ID, "progress").get_attribute(
            "hidden") is not None else False

    # The page replaces the grid as results arrive: an element read mid-replacement is stale, so poll again.
    found: list[str] = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,)).until(results)
    return found


def test_a_dropped_photo_finds_its_product_first(browser: WebDriver, search_service: ServiceThread,
                                                  catalog_photos: list[Path], tmp_path: Path) -> None:
    query = tmp_path / "query.jpg"
    query.write_bytes(altered(catalog_photos[5]))
    browser.get(search_service.url + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(query))
    ids = wait_for_results(browser)
    assert ids[0] == catalog_photos[5].stem and len(ids) == 12
    assert len(browser.find_elements(By.CSS_SELECTOR, "#classes li")) == 5
    banner = browser.find_element(By.ID, "synthetic-banner")
    assert banner.is_displayed() and "Synthetic weights" in banner.text
    first = browser.find_element(By.CSS_SELECTOR, "#grid li")
    assert catalog_photos[5].stem in first.text and "similarity" in first.text and "colour:" in first.text
    image = first.find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
    browser.save_screenshot(str(ARTIFACTS / "search-page.png"))

    # "More like this" on the second result: its neighbours, without itself.
    second = browser.find_elements(By.CSS_SELECTOR, "#grid li")[1]
    chosen = second.get_attribute("data-product-id")
    second.find_element(By.TAG_NAME, "button").click()
    ids = wait_for_results(browser, previous_first=ids[0])
    assert chosen not in ids and f"More like {chosen}" in browser.find_element(By.ID, "results-note").text
    browser.save_screenshot(str(ARTIFACTS / "more-like-this.png"))


def test_a_broken_file_shows_a_readable_error(browser: WebDriver, search_service: ServiceThread,
                                              tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a photo" * 10)
    browser.get(search_service.url + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(broken))
    error = WebDriverWait(browser, 60).until(shown.visibility_of_element_located((By.ID, "error")))
    assert "Invalid image" in error.text and "cannot" in error.text, error.text
    assert browser.find_elements(By.CSS_SELECTOR, "#grid li") == []
    browser.save_screenshot(str(ARTIFACTS / "broken-file.png"))


def test_a_product_id_and_a_label_filter_work_from_the_keyboard_at_phone_width(
        browser: WebDriver, search_service: ServiceThread, catalog_photos: list[Path]) -> None:
    browser.set_window_size(390, 844)
    try:
        browser.get(search_service.url + "/")
        field = browser.find_element(By.ID, "product-input")
        field.send_keys(catalog_photos[3].stem + "\n")
        ids = wait_for_results(browser)
        assert catalog_photos[3].stem not in ids and len(ids) == 12
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
        browser.save_screenshot(str(ARTIFACTS / "phone-width.png"))
    finally:
        browser.set_window_size(1280, 1000)
