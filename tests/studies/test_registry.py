"""Study discovery through the normlight.studies entry-point group."""

import pytest

from normlight.errors import UnknownNameError
from normlight.plugins import singular
from normlight.studies import Study, get_study, list_studies


def test_unknown_study_is_one_clear_error_naming_the_known_ones():
    with pytest.raises(UnknownNameError) as err:
        get_study("no_such_study")
    msg = str(err.value)
    assert "unknown study 'no_such_study'" in msg and "known studies:" in msg and "\n" not in msg
    for name in list_studies():
        assert name in msg


def test_every_registered_study_loads_and_is_a_study():
    for name in list_studies():
        study = get_study(name)
        assert isinstance(study, Study) and study.name == name
        assert study.title and study.claim and study.paper and study.rule and study.key_metric


def test_singular_kind_names():
    assert [singular(k) for k in ("norms", "studies", "analyses", "depth_regularizers")] == [
        "norm",
        "study",
        "analyse",
        "depth_regularizer",
    ]
