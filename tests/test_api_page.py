"""The search page in a real headless Chromium (Debian `chromium` + `chromedriver`, driven by Selenium).

Screenshots of each step go to build/test-artifacts/ (kept by CI as artifacts).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as shown
from selenium.webdriver.support.ui import WebDriverWait

from shopvision.api.settings import ApiSettings
from shopvision.samples import product_jpeg
from tests.support.search_service import ServiceThread
from tests.support.servers import ARTIFACTS
from tests.support.stub_triton import StubTriton
from tests.test_api import altered

pytestmark = [pytest.mark.integration, pytest.mark.system]


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


def test_a_product_of_several_photos_shows_the_one_that_matched(browser: WebDriver, stub_triton: StubTriton,
                                                                tmp_path: Path) -> None:
    """Several photos per product on the page: the photo that matched is the large one and is marked among the
    product's thumbnails (the stub embeds, so a photo finds itself at similarity 1)."""
    photos = [product_jpeg(seed, size=(96, 96)) for seed in (31, 32, 33)]
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "catalog"), api_key="writer")
    with ServiceThread(settings) as service, service.client(headers={"X-API-Key": "writer"}) as http:
        line = {"op": "put", "product_id": "tote", "image": base64.b64encode(photos[0]).decode(),
                "additional_images": [base64.b64encode(photo).decode() for photo in photos[1:]]}
        other = {"op": "put", "product_id": "lone", "image": base64.b64encode(product_jpeg(34, size=(96, 96))).decode()}
        answer = http.post("/v1/products:bulk", content=(json.dumps(line) + "\n" + json.dumps(other)).encode(),
                           headers={"Content-Type": "application/x-ndjson"})
        assert [result["status"] for result in answer.json()["results"]] == [201, 201]
        query = tmp_path / "third.jpg"
        query.write_bytes(photos[2])
        browser.get(service.url + "/")
        browser.find_element(By.ID, "file-input").send_keys(str(query))
        assert wait_for_results(browser) == ["tote", "lone"]
        first = browser.find_element(By.CSS_SELECTOR, "#grid li")
        assert first.get_attribute("data-matched-photo") == "2" and "photo 3 of 3 matched" in first.text
        large = first.find_element(By.CSS_SELECTOR, ":scope > img")
        assert large.get_attribute("src").endswith("/v1/products/tote/image?photo=2&size=256")
        thumbnails = first.find_elements(By.CSS_SELECTOR, ".photos img")
        assert [thumbnail.get_attribute("class") for thumbnail in thumbnails] == ["", "", "matched"]
        for image in [large, *thumbnails]:
            assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
        assert not browser.find_elements(By.CSS_SELECTOR, "#grid li:nth-child(2) .photos")  # one photo: no strip
        browser.save_screenshot(str(ARTIFACTS / "several-photos.png"))
