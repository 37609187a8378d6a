"""Which env names are secret, and how their values are shown: never, anywhere we write."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping

import yaml

from safeagents_batch.jobs.model import DEFAULT_SECRET_PATTERNS

REDACTED = "<redacted>"
_ANCHOR_OR_TAG = re.compile(r"(?:[&!]\S*\s+)*")


def is_secret_name(name: str, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> bool:
    """Case-insensitive glob match: OPENAI_API_KEY matches *KEY*."""
    return any(fnmatch.fnmatchcase(name.upper(), p.upper()) for p in patterns)


def redact_env(
    literal: Mapping[str, str],
    hidden_names: Iterable[str],
    patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS,
) -> dict[str, str]:
    """Env for reports: literal values unless secret-looking; `hidden_names` always redacted."""
    patterns = tuple(patterns)
    shown = {k: (REDACTED if is_secret_name(k, patterns) else v) for k, v in literal.items()}
    shown.update(dict.fromkeys(hidden_names, REDACTED))
    return dict(sorted(shown.items()))


def redact_yaml_text(text: str, patterns: Iterable[str] = DEFAULT_SECRET_PATTERNS) -> str:
    """A jobs file's text with every literal `env` value under a secret-looking name replaced by
    "<redacted>"; comments and layout stay as written. For the copies kept in a batch dir,
    which travel further than the jobs file (shared, uploaded) and must not carry its secrets."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    found = _secret_env_values(root, tuple(patterns), set()) if root is not None else iter(())
    # From the end, so that earlier offsets stay valid while later spans change length.
    for start, end in sorted({(n.start_mark.index, n.end_mark.index) for n in found}, reverse=True):
        span = text[start:end]
        # Kept: an anchor or tag before the value (an alias elsewhere may name it), and the
        # line break(s) a block scalar's span ends with (the next key needs them).
        head = _ANCHOR_OR_TAG.match(span).group()  # type: ignore[union-attr]
        text = f'{text[:start]}{head}"{REDACTED}"{span[len(span.rstrip()) :]}{text[end:]}'
    return text


def _secret_env_values(
    node: yaml.Node, patterns: tuple[str, ...], seen: set[int]
) -> Iterator[yaml.ScalarNode]:
    """Secret values of every `env` mapping at or below `node` (anchors, aliases included)."""
    if id(node) in seen:  # an alias shares its node: visit it once
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _secret_env_values(item, patterns, seen)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "env" and isinstance(value, yaml.MappingNode):
                yield from _secret_pairs(value, patterns)
            yield from _secret_env_values(value, patterns, seen)


def _secret_pairs(env: yaml.MappingNode, patterns: tuple[str, ...]) -> Iterator[yaml.ScalarNode]:
    for key, value in env.value:
        if key.tag == "tag:yaml.org,2002:merge":  # `<<: *other_env` brings that map's pairs
            merged = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for mapping in merged:
                if isinstance(mapping, yaml.MappingNode):
                    yield from _secret_pairs(mapping, patterns)
        elif (
            isinstance(value, yaml.ScalarNode)
            and value.value
            and isinstance(key.value, str)
            and is_secret_name(key.value, patterns)
        ):
            yield value
