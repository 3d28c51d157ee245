"""Serve the FiftyOne App on a dataset for the browser test: ``python panel_app_server.py NAME PORT``.

Run as a subprocess with the test's environment (same database dir and plugins dir); prints
``READY`` once the server answers, then serves until killed.
"""
import sys
import time
import urllib.request

import fiftyone as fo


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    ds = fo.load_dataset(name)
    session = fo.launch_app(ds, remote=True, port=port, address="127.0.0.1")
    url = f"http://127.0.0.1:{port}/"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except Exception:
            time.sleep(0.5)
    print("READY", flush=True)
    session.wait(-1)


if __name__ == "__main__":
    main()
