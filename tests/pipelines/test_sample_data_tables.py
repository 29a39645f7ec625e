"""Sample-data tables (pipelines/sample_data/tables/*.yaml): every name a table uses is defined elsewhere."""

from __future__ import annotations

import string

import pytest

from pipelines.sample_data import biomed, food
from pipelines.sample_data.common import POSITIONS, load_table


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def test_biomed_tables_refer_only_to_defined_names():
    assert set(biomed.MODALITY_REGIONS) == set(biomed._PALETTE)
    for regions in biomed.MODALITY_REGIONS.values():
        assert set(regions) <= set(biomed.REGION_FOV_MM) == set(biomed.REGION_KINDS)
    for kinds in biomed.REGION_KINDS.values():
        assert set(kinds) <= set(biomed.BIOMED_KINDS)
    for (lo, hi), densities in biomed.BIOMED_KINDS.values():
        assert 0 < lo < hi < 0.5 and set(densities) <= {"high", "low"}
    assert sum(biomed._FINDING_COUNT_P) == pytest.approx(1.0) and max(biomed._FINDING_COUNTS) <= len(POSITIONS)
    allowed = {"modality", "Modality", "region", "Region", "a_modality", "counted", "findings", "Findings", "sentences"}
    assert all(_fields(t) <= allowed for t in (*biomed._TEMPLATES, *biomed._NORMAL))
    assert all("counted" in _fields(t) for t in biomed._TEMPLATES)


def test_food_tables_refer_only_to_defined_names():
    for container, base, ingredients in food.DISHES.values():
        assert container in {"plate", "bowl"} and (base is None or len(base) == 3)
        assert set(ingredients) <= set(food.INGREDIENTS) and len(ingredients) >= 2
    for plural, shape, colors, radius in food.INGREDIENTS.values():
        assert plural and shape and set(colors) <= set(food.COLORS) and 0 < radius < 0.1
    rgbs = [*food.COLORS.values(), *food.CONTAINER_COLORS.values(), *food._TABLES]
    assert all(isinstance(c, tuple) and len(c) == 3 and all(0 <= v <= 255 for v in c) for c in rgbs)
    assert len(set(food.COLORS.values())) == len(food.COLORS)  # tests find pieces by exact colour
    allowed = {"dish", "Dish", "a_dish", "container", "cc", "items", "total", "k", "prep"}
    assert all(_fields(t) <= allowed and "total" in _fields(t) for t in food._TEMPLATES)


def test_load_table_names_a_missing_domain():
    with pytest.raises(FileNotFoundError):
        load_table("astronomy")
