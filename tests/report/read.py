"""Reads kpilot's reports the way their consumers do, and prints what it saw
as JSON for the Rust test to judge (tests/report/mod.rs): the asserting is
there, this only looks.

    read.py html FILE SCREENSHOT   a headless Chromium through chromedriver
    read.py junit FILE             junitparser
    read.py prometheus FILE        prometheus_client's text-format parser

Run with the venv scripts/test-tools makes (~/.cache/kpilot/pyenv).
"""

import json
import os
import sys


def html(path, screenshot):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("KPILOT_CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver Debian ships, never one Selenium would download.
    service = Service(executable_path=os.environ.get("KPILOT_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get("file://" + os.path.abspath(path))
        seen = {"title": driver.title}

        def visible_checks():
            return [e.get_attribute("data-check")
                    for e in driver.find_elements(By.CSS_SELECTOR, ".check")
                    if e.is_displayed()]

        def text(css):
            return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]

        seen["cards"] = {
            kind: driver.find_element(By.CSS_SELECTOR, ".card.%s .n" % kind).text
            for kind in ("total", "normal", "warning", "abnormal")
        }
        seen["sections"] = text("section.kind > h2")
        seen["categories"] = {}
        for c in driver.find_elements(By.CSS_SELECTOR, ".category"):
            count = {kind: c.find_element(By.CSS_SELECTOR, ".pill.%s .n" % kind).text
                     for kind in ("normal", "warning", "abnormal")}
            seen["categories"][c.get_attribute("data-category")] = {
                **count,
                "checks": [e.get_attribute("data-check")
                           for e in c.find_elements(By.CSS_SELECTOR, ".check")],
            }
        # Each count is legible: its colour is not its pill's.
        seen["unreadable_counts"] = driver.execute_script("""
            return Array.from(document.querySelectorAll('.pill .n')).filter(function (n) {
                return getComputedStyle(n).color === getComputedStyle(n.parentElement).backgroundColor;
            }).length;""")
        seen["outcomes"] = {
            e.get_attribute("data-check"): e.get_attribute("data-outcome")
            for e in driver.find_elements(By.CSS_SELECTOR, ".check")
        }
        seen["visible_all"] = visible_checks()
        driver.find_element(By.CSS_SELECTOR, "button[data-filter=attention]").click()
        seen["visible_attention"] = visible_checks()
        driver.find_element(By.CSS_SELECTOR, "button[data-filter=all]").click()
        seen["visible_all_again"] = visible_checks()

        # Expand the first failing check: its message, remediation and items show.
        failing = driver.find_element(By.CSS_SELECTOR, ".check.failed")
        detail = failing.find_element(By.CSS_SELECTOR, ".detail")
        seen["expanded_check"] = failing.get_attribute("data-check")
        seen["detail_shown_before"] = detail.is_displayed()
        failing.find_element(By.CSS_SELECTOR, "summary").click()
        seen["detail_shown_after"] = detail.is_displayed()
        seen["detail_text"] = detail.text
        seen["page_text"] = driver.find_element(By.TAG_NAME, "body").text
        # An injected script would have set this.
        seen["xss"] = driver.execute_script("return window.__xss === undefined ? null : window.__xss")
        driver.save_screenshot(screenshot)
        seen["log"] = [
            {"level": e.get("level"), "message": e.get("message")}
            for e in driver.get_log("browser")
        ]
    finally:
        driver.quit()
    return seen


def junit(path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    xml = JUnitXml.fromfile(path)
    suites = []
    for suite in xml:
        cases = []
        for case in suite:
            results = []
            for r in case.result:
                kind = ("failure" if isinstance(r, Failure) else
                        "error" if isinstance(r, Error) else
                        "skipped" if isinstance(r, Skipped) else type(r).__name__)
                results.append({"kind": kind, "type": r.type, "message": r.message, "text": r.text})
            cases.append({"name": case.name, "classname": case.classname,
                          "results": results, "system_out": case.system_out})
        suites.append({"name": suite.name, "tests": suite.tests, "failures": suite.failures,
                       "errors": suite.errors, "cases": cases})
    return {"name": xml.name, "tests": xml.tests, "failures": xml.failures,
            "errors": xml.errors, "suites": suites}


def prometheus(path):
    from prometheus_client.parser import text_string_to_metric_families

    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [
        {"name": fam.name, "type": fam.type, "help": fam.documentation,
         "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in fam.samples]}
        for fam in text_string_to_metric_families(text)
    ]


def main():
    kind = sys.argv[1]
    if kind == "html":
        seen = html(sys.argv[2], sys.argv[3])
    elif kind == "junit":
        seen = junit(sys.argv[2])
    elif kind == "prometheus":
        seen = prometheus(sys.argv[2])
    else:
        sys.exit("read.py: html|junit|prometheus FILE")
    json.dump(seen, sys.stdout)


if __name__ == "__main__":
    main()
