"""Swagger UI in a real browser: authorise with a caller token, "Try it out" on POST /send with the
example the page shows, and expect 200 with a sandbox id; then on POST /messages, and expect 202
with a relay id. Saves a screenshot of the first result.

Usage: python swagger_ui.py <relay base URL> <caller token> <screenshot path>
"""

import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait


def main(base_url: str, token: str, screenshot: str) -> None:
    # The browser's profile lives in a directory of its own, removed at the end: the shared /tmp
    # keeps nothing of the run.
    with tempfile.TemporaryDirectory(prefix="qikchat-swagger-ui-") as profile:
        drive(base_url, token, screenshot, profile)


def drive(base_url: str, token: str, screenshot: str, profile: str) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--window-size=1400,2200"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(browser, 30)
    try:
        browser.get(f"{base_url}/docs/")
        # The page renders after load: wait for the UI itself.
        wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "button.authorize"))).click()
        # The modal lists every scheme (the operator's "admin" too): fill in the callers' "bearer".
        scheme = wait.until(ready.visibility_of_element_located(
            (By.XPATH, "//div[contains(@class, 'auth-container')][.//h4[starts-with(normalize-space(.), 'bearer')]]")))
        scheme.find_element(By.CSS_SELECTOR, "input").send_keys(token)
        scheme.find_element(By.CSS_SELECTOR, "button.authorize").click()
        browser.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()

        sent = try_out(browser, wait, "sendMessage", '"type": "text"', "200")
        browser.save_screenshot(screenshot)
        assert '"id": "sandbox-' in sent and '"status": "queued"' in sent, sent
        print(f"swagger-ui: POST /send from the browser answered 200 {sent.split()[2]}; screenshot {screenshot}")
        queued = try_out(browser, wait, "queueMessage", '"reference": "order-1234-shipped"', "202")
        assert '"id": "msg_' in queued and '"status": "accepted"' in queued, queued
        print(f"swagger-ui: POST /messages from the browser answered 202 {queued.split()[2]}")
    except Exception:
        browser.save_screenshot(screenshot)
        raise
    finally:
        browser.quit()


def try_out(browser, wait, operation_id: str, first_example: str, expected: str) -> str:
    """Opens an operation, checks its preselected example, executes it and returns the answer."""
    block = f"#operations-messages-{operation_id}"
    operation = wait.until(ready.element_to_be_clickable((By.ID, f"operations-messages-{operation_id}")))
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, f"{block} button.try-out__btn"))).click()
    body = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, f"{block} textarea.body-param__text")))
    shown = body.get_attribute("value")
    assert first_example in shown, f"{operation_id}: the first example is not the expected one: {shown}"
    browser.find_element(By.CSS_SELECTOR, f"{block} button.execute").click()
    status = wait.until(ready.visibility_of_element_located(
        (By.CSS_SELECTOR, f"{block} .live-responses-table .response .response-col_status")))
    answer = browser.find_element(By.CSS_SELECTOR, f"{block} .live-responses-table .response-col_description pre").text
    browser.execute_script("arguments[0].scrollIntoView()", status)
    assert status.text.strip().startswith(expected), f"{operation_id} answered {status.text}: {answer}"
    return answer


if __name__ == "__main__":
    main(*sys.argv[1:4])
