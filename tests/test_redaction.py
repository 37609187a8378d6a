"""redaction: which names are secret, and the copies of a jobs file a batch dir keeps."""

from __future__ import annotations

import string
import textwrap

import yaml
from hypothesis import given
from hypothesis import strategies as st

from safeagents_batch.jobs.secrets import REDACTED, is_secret_name, redact_env, redact_yaml_text


def test_secret_names_match_case_insensitively() -> None:
    assert is_secret_name("openai_api_key")
    assert is_secret_name("GITHUB_TOKEN")
    assert not is_secret_name("MODEL")
    assert is_secret_name("MODEL", ["*model*"])


def test_redact_env_hides_secret_looking_and_hidden_names() -> None:
    shown = redact_env({"MODEL": "gpt", "API_KEY": "sk-1"}, ["FROM_FILE"])
    assert shown == {"API_KEY": REDACTED, "FROM_FILE": REDACTED, "MODEL": "gpt"}


def test_yaml_text_keeps_layout_and_comments_and_hides_only_secret_values() -> None:
    text = textwrap.dedent("""\
        version: 1
        # the comment stays
        defaults:
          env:
            OPENAI_API_KEY: sk-live-1   # inline comment stays
            MODEL: gpt-4o
        jobs:
          - {name: a, env: {DB_PASSWORD: "p w", LEVEL: debug}}
          - name: b
            env:
              GH_TOKEN: |
                line one
                line two
              EMPTY_SECRET: ""
              AFTER: kept
    """)
    redacted = redact_yaml_text(text)
    assert redacted == text.replace("sk-live-1", f'"{REDACTED}"').replace(
        '"p w"', f'"{REDACTED}"'
    ).replace("|\n        line one\n        line two\n", f'"{REDACTED}"\n')
    assert "sk-live-1" not in redacted and "line one" not in redacted


def test_yaml_text_follows_anchors_aliases_and_merge_keys() -> None:
    text = textwrap.dedent("""\
        defaults:
          env: &base {API_KEY: &key sk-anchor, MODEL: m}
        jobs:
          - {name: a, env: {OTHER_KEY: *key}}
          - name: b
            env:
              <<: *base
              X: y
    """)
    redacted = redact_yaml_text(text)
    assert "sk-anchor" not in redacted
    data = yaml.safe_load(redacted)  # anchors survive: the copy is still valid YAML
    assert data["jobs"][0]["env"] == {"OTHER_KEY": REDACTED}
    assert data["jobs"][1]["env"] == {"API_KEY": REDACTED, "MODEL": "m", "X": "y"}


def test_yaml_text_uses_the_files_own_patterns_and_only_env_maps() -> None:
    text = "secret_patterns: ['*MODEL*']\njobs:\n  - name: MODEL\n    env: {MY_MODEL: m1, K: v}\n"
    assert redact_yaml_text(text, ["*MODEL*"]) == text.replace("m1", f'"{REDACTED}"')


env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,12}", fullmatch=True)
env_values = st.text(string.printable + "é€", min_size=1, max_size=30)


@given(
    st.dictionaries(env_names, env_values, min_size=1, max_size=6),
    st.sampled_from([None, True, False]),
)
def test_any_dumped_env_loads_back_with_exactly_the_secret_values_replaced(
    env: dict[str, str], flow: bool | None
) -> None:
    text = yaml.safe_dump(
        {"jobs": [{"name": "j", "env": env}]}, default_flow_style=flow, allow_unicode=True, width=40
    )
    loaded = yaml.safe_load(redact_yaml_text(text))
    assert loaded["jobs"][0]["env"] == {
        k: REDACTED if is_secret_name(k) else v for k, v in env.items()
    }
