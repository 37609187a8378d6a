"""Property: however broken a jobs file is, `validate` answers with located lines, never a crash.

Starts from a valid document and mutates it (as data and as text), or feeds random text/bytes.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safeagents_batch.cli.main import main
from safeagents_batch.core.errors import JobsFileError
from safeagents_batch.jobs.load import load_jobs_file
from safeagents_batch.jobs.plan import expand

LOCATED = re.compile(r"^[^:]+:\d+:\d+: \S.*: .+")

VALID: dict[str, Any] = {
    "version": 1,
    "name": "fuzz",
    "workers": 2,
    "secret_patterns": ["*KEY*", "*TOKEN*"],
    "frameworks": {
        "custom": {
            "packages": ["somepkg==1.0"],
            "requirements": "requirements.txt",
            "source_dirs": ["lib"],
            "python_version": "3.12",
        },
        "langgraph": {"additional_packages": ["numpy"]},
    },
    "defaults": {
        "framework": "langgraph",
        "timeout": 60,
        "env": {"A": "1"},
        "resources": {"memory": "2g", "cpus": 1.5, "pids": 64},
    },
    "jobs": [
        {
            "name": "one",
            "scripts": "scripts/*.py",
            "matrix": {"M": ["x", 2, True]},
            "repeat": 2,
            "env": {"B": "2"},
            "env_passthrough": ["HOME"],
            "retry_on": ["failed", "error"],
            "retries": 1,
        },
        {
            "name": "two",
            "framework": "custom",
            "scripts": ["scripts/a.py", "../outside.py"],
            "env_file": "vars.env",
            "hardening": {"non_root": False},
            "network": "none",
            "bind_azure_folder": True,
            "azure_mount": "ro",
            "read_only_rootfs": True,
        },
    ],
}

KNOWN_KEYS = [
    "version",
    "name",
    "jobs",
    "defaults",
    "frameworks",
    "scripts",
    "framework",
    "env",
    "matrix",
    "repeat",
    "timeout",
    "packages",
    "memory",
    "timout",
    "on",
    "<<",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "*",
            "**.py",
            "../*.py",
            "/etc/*",
            "scripts/*.py",
            "scripts/a.py",
            "langgraph",
            "custom",
            "1.5g",
            "1k",
            "2g\n",
            "on",
            "~",
            "..",
            "a" * 300,
        ]
    ),
)
KEYS = st.one_of(st.text(max_size=10), st.sampled_from(KNOWN_KEYS), st.integers(), st.booleans())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)
SNIPPETS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        [
            ":",
            ": ",
            "- ",
            "[",
            "]",
            "{",
            "}",
            ",",
            "&a ",
            "*a",
            "*nowhere",
            "!",
            "|",
            ">",
            "\t",
            "#",
            "'",
            '"',
            "%",
            "@",
            "`",
            "\x00",
            "\ufeff",
            "\n",
            "\n  ",
            "---\n",
            "...\n",
            "? ",
            "<<: *a\n",
            "!!python/object:os.system ",
            "!!python/object/apply:os.system ",
            "!!binary ",
            "!!set ",
            "!!omap ",
            "!!timestamp ",
            "!custom ",
            "!!str ",
            "!!int ",
            "&a ",
            "\\",
            "\r",
        ]
    ),
)
TAGS = st.sampled_from(
    [
        "!!python/object:os.system",
        "!!python/object/apply:os.system",
        "!!python/name:os.system",
        "!!binary",
        "!!set",
        "!!omap",
        "!!str",
        "!!int",
        "!!float",
        "!!null",
        "!!map",
        "!!seq",
        "!custom",
        "!!timestamp",
    ]
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files VALID names, so that an unmutated document is valid."""
    root = tmp_path_factory.mktemp("fuzz")
    project = root / "proj"
    for relative in ["scripts/a.py", "scripts/b.py", "lib/mod.py"]:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text("print('hi')\n")
    (project / "requirements.txt").write_text("requests\n")
    (project / "vars.env").write_text("C=3\n")
    (root / "outside.py").write_text("print('outside')\n")
    return project


def containers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[Any]:
    """Every dict and list in a document, the document itself first."""
    if isinstance(node, (dict, list)):
        yield node
        for child in node.values() if isinstance(node, dict) else node:
            yield from containers(child, path)


def mutate_data(data: st.DataObject, doc: Any) -> Any:
    """Delete keys or items, insert unknown keys, replace values by values of any type."""
    for _ in range(data.draw(st.integers(1, 4), label="data mutations")):
        targets = list(containers(doc))
        if not targets or data.draw(st.integers(0, 30)) == 0:
            return data.draw(VALUES, label="whole document")
        node = data.draw(st.sampled_from(targets))
        operation = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        if isinstance(node, dict):
            keys = list(node)
            if operation == "insert" or not keys:
                node[data.draw(KEYS)] = data.draw(VALUES)
            elif operation == "delete":
                del node[data.draw(st.sampled_from(keys))]
            else:
                node[data.draw(st.sampled_from(keys))] = data.draw(VALUES)
        else:
            if operation == "insert" or not node:
                node.insert(data.draw(st.integers(0, len(node))), data.draw(VALUES))
            elif operation == "delete":
                del node[data.draw(st.integers(0, len(node) - 1))]
            else:
                node[data.draw(st.integers(0, len(node) - 1))] = data.draw(VALUES)
    return doc


def mutate_text(data: st.DataObject, text: str) -> str:
    """Truncate, insert characters, break indentation, add tags, anchors and aliases."""
    for _ in range(data.draw(st.integers(1, 3), label="text mutations")):
        lines = text.split("\n")
        line = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        operation = data.draw(
            st.sampled_from(
                ["truncate", "insert", "indent", "dedent", "tag", "anchor", "duplicate", "delete"]
            )
        )
        if operation == "truncate":
            text = text[: data.draw(st.integers(0, len(text)))]
            continue
        if operation == "insert":
            at = data.draw(st.integers(0, len(text)))
            text = text[:at] + data.draw(SNIPPETS) + text[at:]
            continue
        if operation == "indent":
            lines[line] = " " * data.draw(st.integers(1, 4)) + lines[line]
        elif operation == "dedent":
            lines[line] = lines[line][data.draw(st.integers(1, 4)) :]
        elif operation == "tag":
            lines[line] = lines[line].replace(": ", f": {data.draw(TAGS)} ", 1)
        elif operation == "anchor":
            other = data.draw(st.integers(0, max(len(lines) - 1, 0)))
            lines[line] = lines[line].replace(": ", ": &a ", 1)
            lines[other] = re.sub(r": .*", ": *a", lines[other], count=1)
        elif operation == "duplicate":
            lines.insert(line, lines[line] if lines else "")
        else:
            del lines[line]
        text = "\n".join(lines)
    return text


def broken_file(data: st.DataObject) -> str | bytes:
    kind = data.draw(
        st.sampled_from(["data", "text", "both", "random text", "random bytes"]), label="kind"
    )
    if kind == "random text":
        return data.draw(st.text(max_size=200))
    if kind == "random bytes":
        return data.draw(st.binary(max_size=200))
    doc = copy.deepcopy(VALID)
    if kind in ("data", "both"):
        doc = mutate_data(data, doc)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=data.draw(st.booleans()))
    if kind in ("text", "both"):
        text = mutate_text(data, text)
    if data.draw(st.integers(0, 20)) == 0:
        return text.encode("utf-8") + b"\xff\xfe"
    return text


def write(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def validate(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue()


def test_the_valid_document_is_valid(workdir: Path) -> None:
    path = workdir / "jobs.yaml"
    write(path, yaml.safe_dump(VALID, sort_keys=False))
    assert validate(path) == (0, "OK: 14 runs, 2 images\n", "")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_validate_never_crashes(workdir: Path, data: st.DataObject) -> None:
    path = workdir / "jobs.yaml"
    write(path, broken_file(data))

    # The library boundary: JobsFileError or a result, nothing else.
    try:
        expand(load_jobs_file(path))
    except JobsFileError as exc:
        assert exc.problems

    code, out, err = validate(path)
    if code == 0:
        assert out.startswith("OK: ")
        assert all(
            line.startswith("warning: ") and LOCATED.match(line.removeprefix("warning: "))
            for line in err.splitlines()
        ), err
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            assert main(["plan", "--json", str(path)]) == 0
    else:
        assert code == 2 and out == ""
        lines = err.splitlines()
        assert lines, "exit 2 without a message"
        assert all(LOCATED.match(line) for line in lines), err
        assert "Traceback" not in err
