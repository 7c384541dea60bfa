"""The chat page in a real browser: headless Chromium (Debian's chromium and chromium-driver,
driven by selenium) loads /, sends a message, and sees the streamed reply appear."""

import shutil
import tempfile
import time

import pytest

webdriver = pytest.importorskip("selenium.webdriver")


def _chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("the browser test needs chromium and chromedriver "
                    "(apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    profile = tempfile.mkdtemp(prefix="minillm-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=390,844"):  # a phone-sized screen
        opts.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield b
    finally:
        b.quit()
        shutil.rmtree(profile, ignore_errors=True)


def send_from_the_page(browser, server, model, max_tokens, text):
    """Open the chat page, give it the API key, choose ``model`` with ``max_tokens`` and
    temperature 0, and send ``text``; returns a 60-second WebDriverWait on the browser."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url + "/")
    # the server wants a key: the page keeps it in localStorage; give it and list the models
    browser.find_element(By.TAG_NAME, "summary").click()
    key = browser.find_element(By.ID, "key")
    key.send_keys(server.api_key)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    wait.until(lambda b: len(Select(b.find_element(By.ID, "model")).options) == 4)
    Select(browser.find_element(By.ID, "model")).select_by_value(model)
    for field, value in (("max_tokens", str(max_tokens)), ("temperature", "0")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "input").send_keys(text)
    browser.find_element(By.ID, "send").click()
    return wait


def test_the_page_streams_a_reply(server, client, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    wait = send_from_the_page(browser, server, "tiny-chat", 20, "hello there")
    wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, ".msg.user"), "hello there"))
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".msg.assistant").text.strip())
    wait.until(lambda b: b.find_element(By.ID, "stop").get_attribute("class") == "hidden")
    reply = browser.find_element(By.CSS_SELECTOR, ".msg.assistant")
    assert "error" not in reply.get_attribute("class"), reply.text
    # greedy (temperature 0): the page shows what the API gives for the same conversation
    want = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "hello there"}], max_tokens=20,
        temperature=0).choices[0].message.content
    assert want.strip() and reply.text == want.strip()  # .text drops outer whitespace
    browser.find_element(By.ID, "new").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []


def test_the_stop_button_ends_the_generation(server, client, browser):
    from selenium.webdriver.common.by import By

    wait = send_from_the_page(browser, server, "slow", 100, "hi")  # "slow": 20 ms a token
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, ".msg.assistant").text.strip())
    browser.find_element(By.ID, "stop").click()
    wait.until(lambda b: b.find_element(By.ID, "stop").get_attribute("class") == "hidden")
    time.sleep(1.0)  # the server notices the closed connection within a quarter second
    calls = server.slow.calls
    time.sleep(1.0)
    assert server.slow.calls == calls  # generation has stopped
    assert not browser.find_element(By.ID, "input").get_attribute("disabled")
    # ... well before the end: the whole greedy reply (same weights, fast) is far longer
    full = client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=100,
        temperature=0)
    shown = browser.find_element(By.CSS_SELECTOR, ".msg.assistant").text
    assert full.usage.completion_tokens == 100 and calls < 80  # prefill + steps so far
    assert full.choices[0].message.content.strip().startswith(shown)
