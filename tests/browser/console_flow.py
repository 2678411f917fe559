"""The console in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium against a running local server.

    console_flow.py BASE_URL ROOT_TOKEN ARCHIVE [SCREENSHOT_DIR]

It signs in (a wrong token first), imports ARCHIVE from the page and waits
for every relation's bar to reach its total, schedules an export and
downloads it from the page (the file must equal the API's download), runs a
relations export, starts a migration from the server to itself and waits
for it to finish, checks every control has a label and that nothing
overflows at 320 px, deletes the project by typing its path, and signs out.
No page may log an error (a Content-Security-Policy violation included).
With SCREENSHOT_DIR it saves a PNG of each view there.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

BASE, TOKEN, ARCHIVE = sys.argv[1], sys.argv[2], sys.argv[3]
SHOTS = sys.argv[4] if len(sys.argv) > 4 else None
WAIT_S = 90


def binary(*names):
    for name in names:
        path = shutil.which(name) or (os.path.exists("/usr/bin/" + name) and "/usr/bin/" + name)
        if path:
            return path
    sys.exit("%s not found: run `bash infra/test.sh` (it installs Debian's chromium and chromium-driver) "
             "or `apt-get install chromium chromium-driver`" % " or ".join(names))


def api(path, method="GET"):
    request = urllib.request.Request(BASE + "/api/v4" + path, method=method, headers={"PRIVATE-TOKEN": TOKEN})
    with urllib.request.urlopen(request) as response:
        return response.read()


def start_browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = binary("chromium", "chromium-browser")
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--lang=en-US"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.add_experimental_option("prefs", {
        "download.default_directory": downloads,
        "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    driver = webdriver.Chrome(service=Service(binary("chromedriver")), options=options)
    # Headless Chromium saves downloads only when told where.
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
    return driver


class Console:
    def __init__(self, driver):
        self.driver = driver
        self.wait = WebDriverWait(driver, WAIT_S, poll_frequency=0.2)

    def until(self, condition, what):
        try:
            return self.wait.until(lambda _: condition())
        except TimeoutException:
            body = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError("timed out waiting for %s; the page shows:\n%s" % (what, body)) from None

    def heading(self):
        # Read in the page: a view replaced meanwhile leaves no stale element.
        return self.driver.execute_script("const h = document.querySelector('main h1'); return h ? h.textContent : ''")

    def text(self, selector):
        """The text of every element `selector` finds, read in the page (a
        view redrawn meanwhile leaves no stale element)."""
        return self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", selector)

    def at(self, heading):
        self.until(lambda: self.heading() == heading, "the view %r" % heading)

    def fresh(self, find):
        """`find()`, again if a view redrawn meanwhile left its elements stale."""
        for _ in range(20):
            try:
                return find()
            except StaleElementReferenceException:
                time.sleep(0.1)
        return find()

    def control(self, label):
        """The control a label with this exact text names."""
        def find():
            labels = [l for l in self.driver.find_elements(By.TAG_NAME, "label") if l.text.strip() == label]
            assert labels, "no control labelled %r" % label
            return self.driver.find_element(By.ID, labels[0].get_attribute("for"))
        return self.fresh(find)

    def button(self, text):
        def find():
            found = [b for b in self.driver.find_elements(By.TAG_NAME, "button")
                     if b.text.strip() == text and b.is_displayed()]
            assert found, "no button %r" % text
            return found[0]
        return self.fresh(find)

    def link(self, text):
        return self.driver.find_element(By.LINK_TEXT, text)

    def shot(self, name):
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            width = self.driver.get_window_size()["width"]
            self.driver.set_window_size(width, max(700, min(height + 140, 4000)))
            self.driver.execute_script("window.scrollTo(0, 0)")
            self.driver.save_screenshot(os.path.join(SHOTS, name + ".png"))
            self.driver.set_window_size(width, 1000)

    def errors_logged(self):
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]

    def unlabelled_controls(self):
        return self.driver.execute_script("""
            return [...document.querySelectorAll('main input, main select, main textarea, main button, header button')]
              .filter(c => c.type !== 'hidden')
              .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
              .map(c => c.outerHTML);""")

    def check_view(self):
        assert TOKEN not in self.driver.current_url, "the token is in the URL"
        assert self.unlabelled_controls() == [], self.unlabelled_controls()


def wait_for_download(directory, before):
    deadline = time.time() + WAIT_S
    while time.time() < deadline:
        done = [n for n in os.listdir(directory) if n not in before and not n.endswith(".crdownload")]
        if done:
            return os.path.join(directory, done[0])
        time.sleep(0.2)
    raise AssertionError("no download in %s" % directory)


def main():
    downloads = tempfile.mkdtemp(prefix="console-downloads-")
    driver = start_browser(downloads)
    console = Console(driver)
    try:
        run(console, downloads)
    finally:
        driver.quit()
        shutil.rmtree(downloads, ignore_errors=True)
    print("console flow passed")


def run(console, downloads):
    driver = console.driver
    driver.get(BASE + "/")
    console.at("Sign in")
    console.check_view()
    console.shot("sign-in")

    # A wrong token is refused where it was typed; the right one signs in.
    console.control("Personal access token").send_keys("glpat-not-a-token" + Keys.ENTER)
    console.until(lambda: driver.find_elements(By.CSS_SELECTOR, "[role=alert]"), "the refusal")
    assert "401" in driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
    console.control("Personal access token").send_keys(TOKEN + Keys.ENTER)
    console.at("Projects")
    assert driver.execute_script("return sessionStorage.length") == 1
    assert driver.execute_script("return localStorage.length") == 0
    console.check_view()

    # A new import from this computer, through the presigned upload.
    console.link("New import").click()
    console.at("New import")
    console.check_view()
    console.control("Project path").send_keys("console-import")
    console.control("Description").send_keys("Imported from the console")
    console.control("Export archive (.tar.gz)").send_keys(os.path.abspath(ARCHIVE))
    console.shot("new-import")
    console.button("Start import").click()
    console.at("root/console-import")
    project_id = int(driver.current_url.rsplit("/", 1)[1])
    console.until(lambda: any("Status: finished" in t for t in console.text("#import-heading + .panel")),
                  "the import to finish")
    bars = driver.find_elements(By.CSS_SELECTOR, "#import-heading ~ .panel .bars progress")
    assert len(bars) >= 5, "relation bars: %d" % len(bars)
    for bar in bars:
        value, maximum = float(bar.get_attribute("value")), float(bar.get_attribute("max"))
        assert maximum > 0 and value == maximum, "%s: %s of %s" % (bar.get_attribute("aria-label"), value, maximum)
    imported = json.loads(api("/projects/%d/import" % project_id))
    assert imported["import_status"] == "finished", imported
    assert json.loads(api("/projects/%d" % project_id))["description"] == "Imported from the console"
    console.check_view()
    console.shot("project-import")

    # An export, scheduled and downloaded from the page: the file the API serves.
    console.control("Description in the archive (optional)").send_keys("Exported from the console")
    console.button("Schedule export").click()
    console.until(lambda: "Download export" in console.text("button"), "the export to finish")
    before = set(os.listdir(downloads))
    console.button("Download export").click()
    downloaded = wait_for_download(downloads, before)
    with open(downloaded, "rb") as f:
        from_page = f.read()
    assert from_page == api("/projects/%d/export/download" % project_id), "the page's download differs from the API's"
    assert downloaded.endswith("_export.tar.gz"), downloaded

    # A relations export: every relation finishes, each downloadable.
    console.button("Start relations export").click()
    console.until(lambda: (lambda rows: rows and all("finished" in r for r in rows))(
        console.text("#relations-heading ~ .panel tbody tr")), "the relations export")
    console.check_view()
    console.shot("project-exports")

    # The projects list: filtered by path, with the import and export states.
    console.link("Projects").click()
    console.at("Projects")
    console.control("Filter by path").send_keys("console" + Keys.ENTER)
    console.until(lambda: any("root/console-import" in t for t in console.text("table")), "the filtered list")
    rows = [r for r in console.text("tbody tr") if "root/console-import" in r]
    assert len(rows) == 1 and "finished" in rows[0], rows
    console.shot("projects")

    # Readable at 320 px: nothing wider than the screen.
    driver.set_window_size(320, 800)
    time.sleep(0.3)
    width = driver.execute_script("return document.documentElement.scrollWidth")
    inner = driver.execute_script("return window.innerWidth")
    assert width <= inner, "at 320 px the page is %d px wide" % width
    console.shot("projects-320px")
    driver.set_window_size(1280, 1000)

    # A migration from this server to itself.
    console.link("Migrations").click()
    console.at("Migrations")
    console.check_view()
    console.control("Source URL").send_keys(BASE)
    console.control("Source access token").send_keys(TOKEN)
    console.control("Source project path").send_keys("root/console-import")
    console.control("Destination slug").send_keys("console-migrated")
    console.shot("migrations")
    console.button("Start migration").click()
    console.until(lambda: console.heading().startswith("Migration "), "the migration's view")
    console.until(lambda: any("Status: finished" in t for t in console.text("main")), "the migration to finish")
    entity = console.text("article.entity")
    assert len(entity) == 1 and "root/console-migrated" in entity[0] and "finished" in entity[0], entity
    console.check_view()
    console.shot("migration")

    # Delete, confirmed by typing the path: the button waits for it.
    driver.get(BASE + "/#/projects/%d" % project_id)
    console.at("root/console-import")
    delete = console.button("Delete project")
    assert not delete.is_enabled()
    console.control("Type root/console-import to confirm").send_keys("root/console-import")
    assert delete.is_enabled()
    console.shot("project-delete")
    delete.click()
    console.at("Projects")
    try:
        api("/projects/%d" % project_id)
        raise AssertionError("the project is still there")
    except urllib.error.HTTPError as err:
        assert err.code == 404, err.code

    # From the keyboard: a new view puts the focus on its heading, the next
    # Tab on its first control, and the skip link leads past the header.
    assert driver.switch_to.active_element.tag_name == "h1"
    ActionChains(driver).send_keys(Keys.TAB).perform()
    assert driver.switch_to.active_element.get_attribute("id") == console.control("Filter by path").get_attribute("id")
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert driver.switch_to.active_element.text == "Sign out", driver.switch_to.active_element.text
    driver.execute_script("document.querySelector('.skip').focus()")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    assert driver.switch_to.active_element.get_attribute("id") == "main"

    # Signing out forgets the token.
    console.button("Sign out").click()
    console.at("Sign in")
    assert driver.execute_script("return sessionStorage.length") == 0

    # The browser logs each 4xx it was answered (the wrong token's 401, the
    # 404 of a schedule or relations export not made yet); anything else (a
    # script error, a Content-Security-Policy violation, a 5xx) fails.
    errors = [e for e in console.errors_logged()
              if not (e["source"] == "network" and ("status of 401" in e["message"] or "status of 404" in e["message"]))]
    assert errors == [], errors


if __name__ == "__main__":
    main()
