"""`scripts/screenshot`: sign in to a running dashboard and save a PNG of it (docs/dashboard.png).

scripts/screenshot --key KEY [--url http://127.0.0.1:8000] [--lab oceanhamnen] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from playwright.sync_api import Error, sync_playwright

from tests.dashboard.browser import find_chromium, launch, sign_in, wait_for_chart

# The page's range buttons and their spans (ms), as in api/static/dashboard.js.
RANGES = {"6 h": 6 * 3600e3, "24 h": 86400e3, "7 d": 7 * 86400e3, "30 d": 30 * 86400e3}
RANGES["1 y"] = 365 * 86400e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshot", description=__doc__)
    port = os.environ.get("LIVELAB_API_PORT", "8000")
    parser.add_argument("--url", default=f"http://127.0.0.1:{port}", help="the API's base URL")
    parser.add_argument("--key", default=os.environ.get("LIVELAB_API_KEY"), help="an API key")
    parser.add_argument("--lab", help="the lab to show (default: the key's first)")
    parser.add_argument("--tz", default="Europe/Stockholm", help="IANA zone of the times shown")
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))
    parser.add_argument("--range", default="6 h", choices=RANGES, help="the chart's range")
    parser.add_argument("--width", type=int, default=1100)
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("give --key (or LIVELAB_API_KEY); scripts/demo prints one")
    executable = find_chromium()
    if executable is None:
        print("scripts/screenshot: chromium is not installed; run scripts/setup", file=sys.stderr)
        return 1
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        page = browser.new_page(viewport={"width": args.width, "height": 800}, timezone_id=args.tz)
        page.set_default_timeout(30_000)
        try:
            sign_in(page, args.url.rstrip("/"), args.key)
            if args.lab:
                page.get_by_label("Lab").select_option(args.lab)
                page.wait_for_function("lab => window.livelab.state.lab === lab", arg=args.lab)
            page.get_by_label(args.range, exact=True).check()
            page.wait_for_function(
                "span => window.livelab.state.chart && Date.parse(window.livelab.state.chart.end)"
                " - Date.parse(window.livelab.state.chart.start) === span",
                arg=RANGES[args.range],
            )
            plotted = page.evaluate("window.livelab.state.chosen.size")
            wait_for_chart(page, 3 * plotted)
            page.wait_for_load_state("networkidle")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
        except Error as exc:
            print(f"scripts/screenshot: {exc.message.splitlines()[0]}", file=sys.stderr)
            return 1
        finally:
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
