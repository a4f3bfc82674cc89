"""Check that `hmtc serve`'s /docs (Swagger UI) and /redoc render with no network, as a person's
browser shows them: a tiny run is trained (hmtc.testing), served on 127.0.0.1, and headless
Chromium, its resolver mapping every host but 127.0.0.1 to nothing, loads each page, runs its
scripts and dumps the rendered DOM; a page counts as rendered when the elements its JavaScript
builds are there (Swagger UI's operation blocks, ReDoc's request samples and responses), and a screenshot of each
is written beside the JSON summary.

    python scripts/docs_offline.py --out experiments/docs-offline      # needs chromium (apt)

Exits 1 when a page did not render.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hmtc.config import load_config
from hmtc.record import git_commit, machine_info
from hmtc.testing import tiny_config_text, tiny_dataset, tiny_encoder
from hmtc.train import Trainer

# what each page's JavaScript adds to the DOM once it has rendered the OpenAPI schema
RENDERED = {"docs": ['class="opblock-summary-path"', "/predict"], "redoc": ["Request samples", "Successful Response", "/predict"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium(args: list[str]) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1280,1600"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for docs.png, redoc.png and docs-offline.json")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg_path = tmp / "tiny.toml"
        cfg_path.write_text(tiny_config_text(tiny_dataset(tmp / "data"), tiny_encoder(tmp / "enc"), tmp), encoding="utf-8")
        cfg = load_config(cfg_path, ["train.epochs=1", "train.record_dir=''"])
        Trainer(cfg, tmp / "run", quiet=True).fit()
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "hmtc", "serve", str(tmp / "run"), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 120
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
                    break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        raise SystemExit(f"hmtc serve did not become ready:\n{server.stderr.read().decode()[-2000:]}")
                    time.sleep(0.5)
            pages = {}
            for page, marks in RENDERED.items():
                url = f"http://127.0.0.1:{port}/{page}"
                dom = chromium(["--dump-dom", url]).stdout
                shot = chromium([f"--screenshot={(args.out / f'{page}.png').resolve()}", url])
                pages[page] = {"url": f"/{page}", "rendered": all(m in dom for m in marks), "marks": marks,
                               "dom_chars": len(dom), "screenshot": f"{page}.png",
                               "screenshot_ok": shot.returncode == 0 and (args.out / f"{page}.png").is_file()}
        finally:
            server.terminate()
            server.wait(timeout=30)
    summary = {"command": "python scripts/docs_offline.py --out " + str(args.out), "pages": pages,
               "chromium": chromium(["--version"]).stdout.strip() or "unknown",
               "git_commit": git_commit(), "machine": machine_info()}
    (args.out / "docs-offline.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary["pages"], indent=2))
    if not all(p["rendered"] and p["screenshot_ok"] for p in pages.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
