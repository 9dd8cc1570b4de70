"""Every setting is declared once (bigpickle.config.SETTINGS): Settings is built from it, docs/settings.md is
rendered from it, and neither can drift from the other."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bigpickle.config import SETTINGS, Settings, settings_table

REPO = Path(__file__).resolve().parents[2]


def test_given_the_settings_table_then_docs_settings_md_is_what_it_renders() -> None:
    rendered = settings_table()

    written = (REPO / "docs" / "settings.md").read_text()

    assert written == rendered, "docs/settings.md is stale: run `make docs`"


def test_given_the_settings_table_then_it_names_each_settings_field_and_variable_once() -> None:
    fields = [s.field for s in SETTINGS]
    variables = [s.env for s in SETTINGS]

    assert sorted(fields) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len(set(variables)) == len(variables)


def test_given_blank_variables_then_each_setting_takes_its_default() -> None:
    blank = {s.env: " " for s in SETTINGS}

    settings = Settings.from_env(blank)

    assert settings == Settings.from_env({})
