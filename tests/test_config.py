"""The typed configuration: type and range checks on load, the generated docs/config.md, and the
experiment configs and saved checkpoints that must keep loading."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from hmtc.cli import main
from hmtc.config import DEFAULTS, REGENERATE, SECTIONS, check_config, config_docs, load_config
from hmtc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def config(tmp_path) -> Path:
    """A small config file (nothing in it is read beyond the config itself)."""
    path = tmp_path / "x.toml"
    path.write_text('[train]\nepochs = 2\nlr = 1e-3\n', encoding="utf-8")
    return path


def _error(config: Path, override: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(config, [override])
    return str(e.value)


@pytest.mark.parametrize("override, message", [
    ("train.lr=fast", "train.lr: expected float, got 'fast'"),
    ("train.lr=true", "train.lr: expected float, got True"),                 # a bool is no number
    ("train.epochs=2.0", "train.epochs: expected int, got 2.0"),
    ("train.seed=false", "train.seed: expected int, got False"),
    ("data.dataset=3", "data.dataset: expected str, got 3"),
    ("decode.per_label=1", "decode.per_label: expected bool, got 1"),
    ("model.layers=[-1, 'a']", "model.layers: expected list of int, got [-1, 'a']"),
    ("model.layers=-1", "model.layers: expected list of int, got -1"),
    ("model.options=3", "model.options: expected table, got 3"),
    ("train.seeds='1,2'", "train.seeds: expected list of int, got '1,2'"),
    ("train.seeds=[1, true]", "train.seeds: expected list of int, got [1, True]"),
])
def test_a_wrong_type_names_the_key_the_type_and_the_value(config, override, message):
    assert _error(config, override) == message


def test_ints_pass_as_floats_unchanged_and_free_tables_stay_free(config):
    cfg = load_config(config, ["train.lr=1", "decode.threshold=-1", "model.options={ any = [1, 'x'] }"])
    assert cfg.train.lr == 1 and type(cfg.train.lr) is int                 # stored as given
    assert cfg.decode.threshold == -1 and cfg.model.options == {"any": [1, "x"]}


def test_a_bad_value_in_a_file_names_that_file(tmp_path):
    (tmp_path / "base.toml").write_text('[train]\nschedule = "step"\n', encoding="utf-8")
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[train]\nepochs = 2\n', encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "child.toml")
    assert e.value.path == str(tmp_path / "base.toml")
    assert e.value.message == 'train.schedule: expected "linear" | "cosine" | "constant", got \'step\''
    for text, message in (('[data]\nmax_length = "long"\n', "data.max_length: expected int, got 'long'"),
                          ('[data]\nmax_len = 64\n', "unknown key data.max_len (did you mean data.max_length?); known: data_dir, dataset, "
                                                     "dev_fraction, dev_shots, max_length, options, shots, taxonomy, "
                                                     "train_fraction, train_limit"),
                          ('train = 3\n', "train: expected table, got 3"),
                          ('name = 3\n', "name: expected str, got 3")):
        (tmp_path / "own.toml").write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as e:
            load_config(tmp_path / "own.toml")
        assert (e.value.path, e.value.message) == (str(tmp_path / "own.toml"), message)
    (tmp_path / "base.toml").write_text('[train]\nschedule = "cosine"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as e:                    # an override names no file
        load_config(tmp_path / "child.toml", ["train.warmup=1"])
    assert (e.value.path, e.value.message) == (None, "train.warmup: expected float in [0, 1), got 1")


ACCEPTED = ["train.epochs=1", "train.batch_size=1", "train.eval_batch_size=1", "train.lr=1e-5", "train.lr=0.0",
            "train.head_lr=5e-3", "train.head_lr=0", "data.dev_fraction=0", "data.dev_fraction=0.99",
            "train.warmup=0", "train.warmup=0.5", "data.max_length=1", "model.freeze_layers=0",
            "data.train_limit=0", "train.patience=0", "train.ema=0", "train.ema=0.999", "train.distill_alpha=0",
            "train.distill_alpha=1", "train.distill_temperature=0.1", "decode.threshold='tune'",
            "decode.threshold=0.5", "decode.threshold=-2", "train.device=auto", "train.device=cpu",
            "train.device=cuda", "train.device='cuda:1'", "train.schedule=linear", "train.schedule=cosine",
            "train.schedule=constant", "decode.method=best", "decode.method='top-down'", "decode.method=closure",
            "decode.single_path=auto", "decode.single_path=true", "decode.at_least_one=false",
            "decode.complete=true", "train.seeds=[]", "train.seeds=[1, 2, 3]"]


@pytest.mark.parametrize("override", ACCEPTED)
def test_values_in_range_pass(config, override):
    key, _, _ = override.partition("=")
    section, name = key.split(".")
    assert getattr(getattr(load_config(config, [override]), section), name) is not None


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", "train.epochs: expected int >= 1, got 0"),
    ("train.batch_size=0", "train.batch_size: expected int >= 1, got 0"),
    ("train.eval_batch_size=-8", "train.eval_batch_size: expected int >= 1, got -8"),
    ("train.lr=-1e-4", "train.lr: expected float >= 0 and finite, got -0.0001"),
    ("train.lr=inf", "train.lr: expected float >= 0 and finite, got inf"),
    ("train.head_lr=nan", "train.head_lr: expected float >= 0 and finite, got nan"),
    ("data.dev_fraction=1", "data.dev_fraction: expected float in [0, 1), got 1"),
    ("data.dev_fraction=-0.1", "data.dev_fraction: expected float in [0, 1), got -0.1"),
    ("train.warmup=1.0", "train.warmup: expected float in [0, 1), got 1.0"),
    ("data.max_length=0", "data.max_length: expected int >= 1, got 0"),
    ("model.freeze_layers=-1", "model.freeze_layers: expected int >= 0, got -1"),
    ("data.train_limit=-1", "data.train_limit: expected int >= 0, got -1"),
    ("train.patience=-1", "train.patience: expected int >= 0, got -1"),
    ("train.ema=1", "train.ema: expected float in [0, 1), got 1"),
    ("train.distill_alpha=1.5", "train.distill_alpha: expected float in [0, 1], got 1.5"),
    ("train.distill_alpha=-0.1", "train.distill_alpha: expected float in [0, 1], got -0.1"),
    ("train.distill_temperature=0", "train.distill_temperature: expected float > 0 and finite, got 0"),
    ("train.distill_temperature=inf", "train.distill_temperature: expected float > 0 and finite, got inf"),
    ("decode.threshold=auto", "decode.threshold: expected \"tune\" | float, got 'auto'"),
    ("decode.threshold=true", "decode.threshold: expected \"tune\" | float, got True"),
    ("train.device=gpu", "train.device: expected str (auto, cpu, cuda or cuda:<n>), got 'gpu'"),
    ("train.device=cuda1", "train.device: expected str (auto, cpu, cuda or cuda:<n>), got 'cuda1'"),
    ("train.schedule=step", "train.schedule: expected \"linear\" | \"cosine\" | \"constant\", got 'step'"),
    ("decode.method=greedy", "decode.method: expected \"best\" | \"top-down\" | \"closure\", got 'greedy'"),
    ("decode.single_path=yes", "decode.single_path: expected \"auto\" | bool, got 'yes'"),
    ("decode.at_least_one=1", "decode.at_least_one: expected \"auto\" | bool, got 1"),
    ("decode.complete='Auto'", "decode.complete: expected \"auto\" | bool, got 'Auto'"),
    ("train.seeds=[1, 1]", "train.seeds: expected list of int without repeats, got [1, 1]"),
])
def test_values_out_of_range_are_refused(config, override, message):
    assert _error(config, override) == message


def test_cli_set_of_a_wrong_type_is_one_line_and_exit_2(config, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hmtc", "train", str(config), "--set", "train.lr=fast"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    out = capsys.readouterr()
    lines = (out.out + out.err).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert "train.lr" in lines[0] and "float" in lines[0] and "'fast'" in lines[0], lines


def test_docs_config_md_is_fresh():
    docs = ROOT / "docs" / "config.md"
    assert docs.is_file() and docs.read_text(encoding="utf-8") == config_docs(), (
        f"docs/config.md is stale; regenerate it with: python -c \"{REGENERATE}\"")
    for name, cls in SECTIONS.items():              # every key documented, one line each
        for f in fields(cls):
            assert f.metadata["doc"] and "\n" not in f.metadata["doc"], f"{name}.{f.name}"
            assert f"| `{f.name}` |" in docs.read_text(encoding="utf-8"), f"{name}.{f.name}"


def test_defaults_come_from_the_schema_and_pass_it():
    assert list(DEFAULTS) == list(SECTIONS)
    for name, cls in SECTIONS.items():
        assert list(DEFAULTS[name]) == [f.name for f in fields(cls)]
    check_config(DEFAULTS)
    assert load_config(None).to_dict() == {**DEFAULTS, "name": "run"}


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "experiments").glob("*.toml") if p.name != "goals.toml"),
                         ids=lambda p: p.name)
def test_experiment_configs_load_and_validate(path):
    cfg = load_config(path).to_dict()
    check_config(cfg)
    assert list(cfg) == [*SECTIONS, "name"]
    assert all(list(cfg[name]) == list(DEFAULTS[name]) for name in SECTIONS)      # nothing added or lost


@pytest.mark.parametrize("ckpt", sorted((ROOT / "tests" / "fixtures").glob("ckpt-*/checkpoint.json")),
                         ids=lambda p: p.parent.name)
def test_configs_saved_in_checkpoints_pass_the_schema(ckpt):
    check_config(json.loads(ckpt.read_text(encoding="utf-8"))["config"])


def test_config_show_names_where_each_value_comes_from(tmp_path):
    """hmtc config show: the resolved config, each key with the file of the base chain that set it
    last or --set; defaults only with --all."""
    import json

    from typer.testing import CliRunner

    from hmtc.cli import app
    (tmp_path / "base.toml").write_text('[train]\nepochs = 3\nlr = 1e-4\n[model]\noptions = { filters = 8 }\n',
                                        encoding="utf-8")
    (tmp_path / "run.toml").write_text('base = "base.toml"\nname = "r"\n[train]\nlr = 2e-4\n', encoding="utf-8")
    r = CliRunner().invoke(app, ["config", "show", str(tmp_path / "run.toml"), "--set", "train.epochs=5", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["train.epochs"] == {"value": 5, "from": "--set"}
    assert got["train.lr"] == {"value": 2e-4, "from": str(tmp_path / "run.toml")}
    assert got["model.options.filters"] == {"value": 8, "from": str(tmp_path / "base.toml")}
    assert got["name"]["value"] == "r" and "train.batch_size" not in got
    r = CliRunner().invoke(app, ["config", "show", str(tmp_path / "run.toml"), "--all", "--json"])
    assert json.loads(r.stdout)["train.batch_size"]["from"] == "default"
    r = CliRunner().invoke(app, ["config", "show", str(tmp_path / "run.toml"), "--set", "train.epoch=5"])
    assert isinstance(r.exception, ConfigError) and "did you mean train.epochs" in str(r.exception)


def _config_reads(tree):
    """``(line, section, key)`` of every ``<cfg>.<section>.<key>`` read in a module, ``<cfg>`` a
    name or attribute ending in ``cfg`` or ``config``, and of ``<alias>.<key>`` where a function
    set ``alias = <cfg>.<section>``; and ``(line, None, text)`` of every ``<cfg>["<section>"]``."""
    import ast

    def is_cfg(node) -> bool:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return name.endswith(("cfg", "config"))

    def section_of(node) -> str | None:
        if isinstance(node, ast.Attribute) and node.attr in SECTIONS and is_cfg(node.value):
            return node.attr
        return None

    out = []
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]:
        aliases = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
                pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                         else [(target, value)])
                for t, v in pairs:
                    if isinstance(t, ast.Name) and section_of(v):
                        aliases[t.id] = section_of(v)
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute):
                section = section_of(node.value) or (aliases.get(node.value.id) if isinstance(node.value, ast.Name)
                                                     else None)
                if section:
                    out.append((node.lineno, section, node.attr))
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                    node.slice.value in SECTIONS and is_cfg(node.value):
                out.append((node.lineno, None, ast.unparse(node)))
    return out


def test_every_config_key_is_read_through_the_dataclasses():
    """hmtc reads a run's settings as attributes of the frozen tables (``cfg.train.lr``), never
    by string from a dict: every such read names a field of its table (a typo fails here, not as
    a silently missing key at run time), and no module indexes a config by a table's name (the
    stored tables are read back by RunConfig.from_dict only)."""
    import ast

    from hmtc.config import RunConfig
    methods = {name for name in dir(object)}
    bad, reads = [], 0
    for path in sorted((ROOT / "hmtc").rglob("*.py")):
        for line, section, key in _config_reads(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{line}"
            if section is None:
                if path.name != "config.py":
                    bad.append(f"{where}: {key} (read it as an attribute)")
                continue
            reads += 1
            if key not in {f.name for f in fields(SECTIONS[section])} | methods:
                bad.append(f"{where}: {section}.{key} is no key of [{section}]")
    assert not bad, "\n".join(bad)
    assert reads > 150          # the walk sees the reads (a broken walk would pass with none)
    cfg = RunConfig()
    with pytest.raises(AttributeError):
        cfg.train.epoch                                       # noqa: B018  (a typo is an error at once)
    with pytest.raises(Exception, match="cannot assign"):
        cfg.train.lr = 1.0                                    # frozen: a change is a new config


def test_every_way_of_building_a_config_checks_it(config):
    """A file, --set, merged (the estimator's and eval's overrides), dataclasses.replace and a
    stored config all go through the same checks, each naming the key."""
    import dataclasses

    from hmtc.config import RunConfig
    cfg = load_config(config)
    for build in (lambda: load_config(config, ["decode.threshold=abc"]),
                  lambda: cfg.with_overrides(["decode.threshold=abc"]),
                  lambda: cfg.merged({"decode": {"threshold": "abc"}}),
                  lambda: dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, threshold="abc")),
                  lambda: RunConfig.from_dict(cfg.to_dict() | {"decode": {"threshold": "abc"}})):
        with pytest.raises(ConfigError, match=r"decode.threshold: expected \"tune\" \| float, got 'abc'"):
            build()
    with pytest.raises(ConfigError, match="did you mean train.epochs"):
        cfg.merged({"train": {"epoch": 3}})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg and cfg.merged({}) == cfg


def test_names_are_checked_once_final_and_stored_names_load(tmp_path):
    """A run's name is checked when it is final (a bad name in the file that --set renames is
    fine), a stored config loads whatever name it holds, and option tables merge key by key down
    a base chain as everywhere else."""
    from hmtc.config import RunConfig
    (tmp_path / "base.toml").write_text('[model]\noptions = { loss_options = { gamma = 2.0, alpha = 0.25 } }\n',
                                        encoding="utf-8")
    (tmp_path / "c.toml").write_text('base = "base.toml"\nname = "../x"\n[model]\noptions = { loss_options = '
                                     '{ gamma = 1.0 } }\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="run name '../x'"):
        load_config(tmp_path / "c.toml")
    cfg = load_config(tmp_path / "c.toml", ["name=ok"])
    assert cfg.name == "ok" and cfg.model.options == {"loss_options": {"gamma": 1.0, "alpha": 0.25}}
    assert RunConfig.from_dict(cfg.to_dict() | {"name": ""}).name == ""          # as an old ensemble stored it
    with pytest.raises(ConfigError, match="run name"):
        cfg.merged({"name": ".."})
    with pytest.raises(ConfigError, match="not RunConfig"):
        cfg.merged(cfg)
