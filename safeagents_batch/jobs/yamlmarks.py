"""Safe YAML reading that remembers where every key and value stands, for located errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

# Alias expansion can blow a tiny file up exponentially ("billion laughs"); a jobs file never
# legitimately holds this many values.
MAX_NODES = 100_000
MAX_DEPTH = 64  # nested collections; a jobs file needs five
MAX_NUMBER_DIGITS = 40  # any count, size or limit of a jobs file fits in far fewer
MAX_STRING = 65_536  # characters of one value or key
SHOWN = 60  # characters of a value a message shows


@dataclass(frozen=True)
class Position:
    """0-based line and column, as PyYAML marks count them."""

    line: int
    column: int


@dataclass
class MarkedDocument:
    """Plain Python data plus the position of every value and every mapping key, by key path."""

    data: Any
    values: dict[KeyPath, Position] = field(default_factory=dict)
    keys: dict[KeyPath, Position] = field(default_factory=dict)
    problems: list[tuple[Position, KeyPath, str]] = field(default_factory=list)

    def position(self, path: KeyPath, *, of_key: bool = False) -> Position:
        """Where `path` stands; falls back to the nearest ancestor that has a position."""
        table = self.keys if of_key else self.values
        for end in range(len(path), -1, -1):
            found = table.get(path[:end]) or self.values.get(path[:end])
            if found is not None:
                return found
        return Position(0, 0)


class YamlSyntaxError(Exception):
    """The text is not YAML (or uses a tag the safe loader refuses)."""

    def __init__(self, position: Position, message: str) -> None:
        self.position = position
        super().__init__(message)


def load_marked(text: str) -> MarkedDocument:
    """Parse one YAML document safely; problems the schema cannot see are collected, not raised."""
    try:
        loader = yaml.SafeLoader(text)  # checks every character at once: may raise ReaderError
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, exc) from None
    try:
        node = loader.get_single_node()
        doc = MarkedDocument(data=None)
        if node is not None:
            doc.data = _Walker(loader, doc).convert(node, ())
        return doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line, mark.column) if mark else Position(0, 0)
        # The context is half the sentence: "expected a single document in the stream",
        # "but found another document".
        message = ", ".join(part for part in (exc.context, exc.problem) if part) or "bad YAML"
        raise YamlSyntaxError(where, _one_line(message)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Position(0, 0), _one_line(str(exc))) from None
    except RecursionError:
        # Parser and walker recurse once per nesting level; `[[[[...` must not be a traceback.
        mark = loader.get_mark()
        raise YamlSyntaxError(Position(mark.line, mark.column), "nesting too deep") from None
    except Exception as exc:
        # PyYAML's scanner and constructors fail on some input with bare errors: an escape
        # past the last code point (OverflowError), a number past Python's digit limit.
        mark = loader.get_mark()
        reason = (
            "an escape sequence past the last character (\\U00110000 and up)"
            if isinstance(exc, OverflowError)
            else f"cannot read: {type(exc).__name__}: {_one_line(str(exc))}"
        )
        raise YamlSyntaxError(Position(mark.line, mark.column), reason) from None
    finally:
        loader.dispose()


def _reader_error(text: str, exc: yaml.reader.ReaderError) -> YamlSyntaxError:
    """ReaderError has a character offset, not a mark; turn it into a line and column."""
    before = text[: exc.position]
    line = before.count("\n")
    column = exc.position - (before.rfind("\n") + 1)
    character = exc.character if isinstance(exc.character, int) else ord(exc.character)
    return YamlSyntaxError(
        Position(line, column), f"unacceptable character #x{character:04x}: {exc.reason}"
    )


def _one_line(text: str, limit: int = 300) -> str:
    """One line, bounded: a message quotes a value of the file, which may be huge."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: str) -> str:
    """A value of the file as a message quotes it: its start only when it is long."""
    return (
        repr(value)
        if len(value) <= SHOWN
        else repr(value[:SHOWN]) + f"... ({len(value)} characters)"
    )


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!", 1)


def _check_bounds(node: yaml.ScalarNode) -> None:
    """What no jobs file needs and every later step would choke on: a huge value, a number
    of thousands of digits (past Python's limit for text conversion), a NUL."""
    value: str = node.value
    problem = None
    if len(value) > MAX_STRING:
        problem = f"a value of {len(value)} characters (at most {MAX_STRING})"
    elif node.tag == "tag:yaml.org,2002:int" and len(value) > MAX_NUMBER_DIGITS:
        problem = f"a number of {len(value)} digits (at most {MAX_NUMBER_DIGITS})"
    elif "\0" in value:
        problem = "a NUL character in a value"
    if problem is not None:
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


class _Walker:
    """Turns a node tree into data, recording positions; refuses cycles and alias bombs."""

    def __init__(self, loader: yaml.SafeLoader, doc: MarkedDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.visited = 0
        self.on_stack: set[int] = set()
        self.explicit_keys: dict[int, set[int]] = {}

    def convert(self, node: yaml.Node, path: KeyPath) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise yaml.MarkedYAMLError(
                problem="document too large after alias expansion", problem_mark=node.start_mark
            )
        if len(path) > MAX_DEPTH:
            raise yaml.MarkedYAMLError(problem="nesting too deep", problem_mark=node.start_mark)
        self.doc.values[path] = Position(node.start_mark.line, node.start_mark.column)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if node.tag not in self.loader.yaml_constructors:  # e.g. !!python/object/apply on a list
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"could not determine a constructor for the tag {_short_tag(node.tag)!r}",
                node.start_mark,
            )
        if id(node) in self.on_stack:
            raise yaml.MarkedYAMLError(problem="recursive alias", problem_mark=node.start_mark)
        self.on_stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            return dict(self._mapping_items(node, path))
        finally:
            self.on_stack.discard(id(node))

    def _mapping_items(self, node: yaml.Node, path: KeyPath) -> Iterator[tuple[str, Any]]:
        assert isinstance(node, yaml.MappingNode)
        explicit = self._explicit_key_ids(node)
        self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys, merged pairs first
        chosen: dict[str, tuple[yaml.Node, bool]] = {}
        for key_node, value_node in node.value:
            where = Position(key_node.start_mark.line, key_node.start_mark.column)
            key = self._key(key_node, path, where)
            if key is None:
                continue
            is_explicit = id(key_node) in explicit
            if is_explicit and chosen.get(key, (None, False))[1]:
                self.doc.problems.append((where, (*path, key), f"duplicate key {key!r}"))
                continue
            # A key written here overrides a merged one, as YAML merge keys intend.
            chosen.pop(key, None)
            chosen[key] = (value_node, is_explicit)
            self.doc.keys[(*path, key)] = where
        for key, (value_node, _) in chosen.items():
            yield key, self.convert(value_node, (*path, key))

    def _explicit_key_ids(self, node: yaml.MappingNode) -> set[int]:
        """Keys written in this mapping itself, not merged in; remembered because
        flatten_mapping rewrites the node in place and an alias may visit it again."""
        if id(node) not in self.explicit_keys:
            self.explicit_keys[id(node)] = {
                id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"
            }
        return self.explicit_keys[id(node)]

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        _check_bounds(node)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # PyYAML's scalar constructors trust the resolver's regexes; an explicit tag skips
            # them (`!!int fuzz`, `!!timestamp x`, `!!bool maybe`) and they fail with bare errors.
            # Neither the value nor the error (which quotes it) is shown: it may be a secret.
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read this value as {_short_tag(node.tag)} "
                f"({type(exc).__name__}; value not shown)",
                node.start_mark,
            ) from None

    def _key(self, key_node: yaml.Node, path: KeyPath, where: Position) -> str | None:
        key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
        if isinstance(key, str):
            return key
        shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
        self.doc.problems.append(
            (
                where,
                path,
                f"key {shown!r} is not a string (quote it: {str(shown)!r})"
                if isinstance(key_node, yaml.ScalarNode)
                else "a key must be a plain string",
            )
        )
        return None
