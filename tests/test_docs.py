"""Every command the README and docs/ give works as written, so that a renamed key or option
breaks the build and not the reader: each `python -m pipeline …` (and `make run ARGS="…"`) line
is composed as the command would compose it, every value of a sweep included, and checked as
its jobs check their config before reading any data; every `make` target named exists, and
every `python -m pipeline.<module>` is a module there is. (The Python snippets run from another
folder in tests/serving/test_predict.py, against a trained champion.)"""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
from pathlib import Path

import pytest

from tests.helpers.paths import CONF_DIR, PROJECT_ROOT

DOCS = [
    PROJECT_ROOT / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
    PROJECT_ROOT / "benchmarks" / "README.md",
]
# A sweep's values beyond these many combinations are not composed (each takes ~20 ms).
MAX_COMBINATIONS = 16
# Flags of the entry point that are not overrides; `--cfg` takes a word.
FLAGS = {"-m", "--multirun", "--help", "--hydra-help", "--info"}


def _lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines, a line ending in a backslash joined with the next, with their numbers."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _command_text(line: str, start: int) -> str:
    """What follows position `start` on the line: up to a closing backtick when the command is
    quoted in prose, else up to a shell comment."""
    if start > 0 and line[start - 1] == "`":
        return line[start : line.index("`", start)]
    return re.split(r"\s#\s|\s#$", line[start:], maxsplit=1)[0]


def pipeline_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `python -m pipeline` and `make run ARGS="…"` in the docs."""
    found: list[tuple[str, list[str]]] = []
    for path in DOCS:
        for number, line in _lines(path):
            where = f"{path.relative_to(PROJECT_ROOT)}:{number}"
            for match in re.finditer(r"python -m pipeline(?![.\w])", line):
                text = _command_text(line, match.start())
                found.append((where, shlex.split(text)[3:]))
            for match in re.finditer(r'make run ARGS="([^"]*)"', line):
                found.append((where, shlex.split(match.group(1))))
    # Placeholders (`make run ARGS="…"`) stand for no command in particular.
    return [(where, args) for where, args in found if not any("…" in a for a in args)]


COMMANDS = pipeline_commands()


def test_the_docs_give_commands_to_check():
    # The README alone gives a dozen; a change in how they are written must not hide them.
    readme = [args for where, args in COMMANDS if where.startswith("README.md")]
    assert len(readme) >= 12
    assert [] in readme  # the plain default job
    assert any("-m" in args for args in readme)
    assert len(COMMANDS) >= 30


def _jobs(args: list[str]) -> list[list[str]]:
    """The overrides of each job the command would run (a sweep's values expanded)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--cfg":
            skip = True
        elif arg not in FLAGS:
            overrides.append(arg)
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        for o in parsed
        if o.is_sweep_override() and not o.is_interval_sweep()
    ]
    combos = itertools.islice(itertools.product(*sweeps), MAX_COMBINATIONS)
    return [fixed + list(combo) for combo in combos]


def _docs_own_modules(folder: Path) -> None:
    """Write the Python modules the docs give as files (a block opening with `# name.py`)
    into `folder`, as a reader would before running the commands that use them."""
    for path in DOCS:
        for block in re.findall(r"```python\n# (\w+\.py)\n(.*?)```", path.read_text(), re.S):
            (folder / block[0]).write_text(block[1])


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_composes_and_passes_the_checks(where, args, monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from pipeline.config.schema import register
    from pipeline.tracking.sweep import check_job_config

    # What a reader's shell would have: `tracking=server` reads the server's address from it;
    # the modules the docs ask them to write, in the folder they run in.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    _docs_own_modules(tmp_path)
    monkeypatch.chdir(tmp_path)
    register()
    for overrides in _jobs(args):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # for `${hydra:…}` in run names
        check_job_config(cfg)


def test_a_renamed_key_in_a_command_would_fail():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from pipeline.config.schema import register

    register()
    with (
        initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
        pytest.raises(ConfigCompositionException),
    ):
        compose("config", overrides=_jobs(["-m", "trainer.epoch=1,2"])[0])


def test_every_make_target_named_exists():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"(?m)^([\w-]+):", makefile))
    named = {
        (path.name, target)
        for path in DOCS
        for target in re.findall(r"\bmake ([a-z][\w-]*)", path.read_text())
    }
    assert named, "the docs name no make target"
    assert {(where, t) for where, t in named if t not in targets} == set()


def test_every_pipeline_module_named_exists():
    modules = {
        module
        for path in DOCS
        for module in re.findall(r"python -m (pipeline\.[\w.]+)", path.read_text())
    }
    assert "pipeline.predict" in modules and "pipeline.compare" in modules
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []


def test_every_doc_link_points_at_a_file():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", path.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"
