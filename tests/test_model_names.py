"""One entry point names the registered models: trainer, monitor and service agree on it."""

from routeaq_assets.core.environment import model_name


def test_one_model_per_pollutant_under_the_prefix():
    assert model_name("no2") == "routeaq-no2"
    assert model_name("o3", "staging") == "staging-o3"
