"""A non-editable install carries what the library needs (issue 33): hmtc built as a wheel and
installed into a folder of its own imports from there, not from this checkout; every built-in
dataset's taxonomy resolves inside the installed package; the README's quickstart config resolves
from the checkout to an installed taxonomy; and the installed CLI trains, evaluates and predicts
the tiny test dataset from a folder outside the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hmtc.testing import tiny_config_text, tiny_dataset, tiny_encoder

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import json, sys
from pathlib import Path
import hmtc
from hmtc.config import load_config
from hmtc.data.catalog import DATASETS, get_spec
site = Path(sys.argv[1]).resolve()
assert Path(hmtc.__file__).resolve().is_relative_to(site), hmtc.__file__
cfg = load_config(sys.argv[2])
out = {"quickstart": str(get_spec(cfg.data.dataset).taxonomy)}
for name in DATASETS.names():
    path = Path(get_spec(name).taxonomy).resolve()
    assert path.is_relative_to(site) and path.is_file(), (name, path)
    out[name] = path.name
print(json.dumps(out))
"""


def test_wheel_install_runs_from_its_own_files(tmp_path):
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True)
    wheel, = wheels.glob("hmtc-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HMTC_HOME": str(tmp_path / "home")}
    env.pop("HMTC_DATA", None)
    res = subprocess.run([sys.executable, "-c", CHECK, str(site), str(ROOT / "experiments" / "quickstart.toml")],
                         cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert found["duee"] == "duee.tax" and found["goemotions"] == "goemotions.tax"
    assert Path(found["quickstart"]).resolve().is_relative_to(site.resolve())

    data, enc = tiny_dataset(work / "data"), tiny_encoder(work / "enc")
    (work / "tiny.toml").write_text(tiny_config_text(data, enc, work), encoding="utf-8")
    hmtc = [sys.executable, "-c", "import sys; from hmtc.cli import main; sys.argv[0] = 'hmtc'; main()"]
    res = subprocess.run([*hmtc, "train", "tiny.toml", "--quiet"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*hmtc, "predict", "runs/tiny-msml"], cwd=work, env=env, input="a text\n",
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "labels" in json.loads(res.stdout.splitlines()[0])
