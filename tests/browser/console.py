"""The ops console in headless Chromium (Debian's, never a downloaded one), driven by
Playwright. Run by tests/it/console_browser.rs, which sets up the service and the data and
passes what it made through the environment; exits non-zero on the first failed check."""

import os
import re
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["CONSOLE_BASE"]
KEY_ID = os.environ["OPERATOR_KEY_ID"]
SECRET = os.environ["OPERATOR_SECRET"]
FIND_LAST4 = os.environ["FIND_LAST4"]
REPLAY_LAST4 = os.environ["REPLAY_LAST4"]
BULK = int(os.environ["BULK_COUNT"])
DEAD_LETTER_NUMBER = os.environ["DEAD_LETTER_NUMBER"]
SHOTS = Path(os.environ["SCREENSHOTS"])
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def shot(page, name):
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def until(page, what, check, seconds=30):
    """Reloads the page until `check()` holds, or fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for: {what}\n{page.content()[:3000]}")
        page.wait_for_timeout(250)
        page.reload()


def main():
    expect.set_options(timeout=15_000)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path="/usr/bin/chromium", headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        page = browser.new_page()
        blocked = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)

        # Sign in with the operator key: the overview.
        page.goto(f"{BASE}/console")
        expect(page).to_have_url(re.compile(r"/console/sign-in$"))
        page.get_by_label("Operator key id").fill(KEY_ID)
        page.get_by_label("Secret").fill(SECRET)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/console/overview$"))
        expect(page.locator(".tile").first).to_be_visible()
        expect(page.locator("svg.chart").first).to_be_visible()
        shot(page, "overview")

        # Find an OTP by its last four digits, then open its timeline.
        page.get_by_role("link", name="OTPs", exact=True).click()
        page.get_by_placeholder("last digits").fill(FIND_LAST4)
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text(f"•••• {FIND_LAST4}")
        shot(page, "otps")
        rows.first.get_by_role("link").click()
        expect(page.locator("h1")).to_contain_text("OTP otp_")
        timeline = page.locator("table.timeline")
        expect(timeline).to_contain_text("provider request: accepted")
        expect(timeline).to_contain_text("verification: verified")
        expect(timeline).to_contain_text("event otp.sent")
        expect(timeline).to_contain_text("attempt 1: HTTP 200")
        shot(page, "timeline")

        # The same OTP's events in the activity log, filtered to its verification.
        page.get_by_role("link", name="Activity", exact=True).click()
        page.get_by_placeholder("last digits").fill(FIND_LAST4)
        page.locator("select[name=type]").select_option("verifications")
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("otp.verified")
        expect(rows.first).to_contain_text(f"•••• {FIND_LAST4}")
        shot(page, "activity")

        # Replay one failed delivery from its timeline: it turns `sent`.
        page.goto(f"{BASE}/console/otps?phone={REPLAY_LAST4}")
        page.locator("tbody tr").first.get_by_role("link").click()
        expect(page.locator("table").first).to_contain_text("failed")
        page.get_by_role("button", name="Replay delivery").click()
        until(page, "the replayed OTP to be sent",
              lambda: "status-sent" in page.inner_html("table"))

        # Bulk-replay the other failed OTPs: a dry run counts them, a confirmation runs it.
        page.get_by_role("link", name="Failures").click()
        group = page.locator("tbody tr", has_text="provider_rejected")
        expect(group).to_contain_text(str(BULK))
        # A fraud block in force is listed with its counts, and lifted with one click.
        block = page.locator("tbody tr", has_text="+2376500")
        expect(block).to_contain_text("31")
        shot(page, "failures")
        block.get_by_role("button", name="Lift").click()
        expect(page).to_have_url(re.compile(r"/console/failures$"))
        expect(page.get_by_text("No block in force.")).to_be_visible()
        group.get_by_role("button", name="Replay…").click()
        expect(page.locator(".count")).to_have_text(f"{BULK} OTPs match this filter.")
        shot(page, "replay-dry-run")
        page.get_by_role("button", name=f"Replay {BULK} OTPs").click()
        expect(page).to_have_url(re.compile(r"/console/audit$"))
        first = page.locator("tbody tr").first
        until(page, "the bulk replay to finish",
              lambda: "done" in first.inner_text() and first.locator("td").nth(5).inner_text() == str(BULK))
        expect(first).to_contain_text("replay-deliveries")
        shot(page, "audit")
        page.goto(f"{BASE}/console/otps?status=pending")
        until(page, "the replayed OTPs to be sent",
              lambda: page.locator("td.status-sent").count() >= BULK)

        # Requeue the dead letter of the app created since it was refused.
        page.get_by_role("link", name="Dead letters").click()
        page.get_by_placeholder("app", exact=True).fill("late")
        page.get_by_role("button", name="Filter").click()
        letter = page.locator("tbody tr", has_text="unknown_app")
        expect(letter).to_have_count(1)
        expect(letter).to_contain_text("••••" + DEAD_LETTER_NUMBER[-4:])
        if DEAD_LETTER_NUMBER[1:] in page.content():
            sys.exit("the dead letter's whole number is on the page")
        shot(page, "dlq")
        letter.get_by_role("checkbox").check()
        page.get_by_role("button", name="Count (dry run)").click()
        expect(page.locator(".count")).to_have_text("1 dead letters match.")
        page.get_by_role("button", name="Requeue 1 messages").click()
        expect(page).to_have_url(re.compile(r"/console/audit$"))
        until(page, "the requeue to finish",
              lambda: "dlq-requeue" in page.locator("tbody tr").first.inner_text()
              and "done" in page.locator("tbody tr").first.inner_text())
        page.goto(f"{BASE}/console/otps?app=late")
        until(page, "the requeued job to become an OTP", lambda: page.locator("tbody tr").count() == 1)

        page.get_by_role("link", name="Apps").click()
        expect(page.locator("section.card")).to_have_count(2)
        shot(page, "apps")

        # Sign out: the pages lead back to the sign-in form.
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/console/sign-in$"))
        page.goto(f"{BASE}/console/otps")
        expect(page).to_have_url(re.compile(r"/console/sign-in$"))
        shot(page, "sign-in")
        if blocked:
            sys.exit(f"the Content-Security-Policy blocked something: {blocked}")
        browser.close()
    print("console browser run: every check passed")


if __name__ == "__main__":
    main()
