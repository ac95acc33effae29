"""The suites the tests share, built once per session at small sizes (a few seconds in all)."""

import pytest

from vzero.suites import make_suite

CLEVR_SIZE = (160, 112)
CHART_SIZE = (240, 160)


@pytest.fixture(scope="session")
def clevr_qa():
    return make_suite("clevr-qa", 500, seed=0, size=CLEVR_SIZE)


@pytest.fixture(scope="session")
def clevr_diff():
    return make_suite("clevr-diff", 500, seed=0, size=CLEVR_SIZE)


@pytest.fixture(scope="session")
def chart_qa():
    return make_suite("chart-qa", 300, seed=0, size=CHART_SIZE)
