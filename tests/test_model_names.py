"""One entry point names the registered models: trainer, monitor and service agree on it."""

from routeaq_assets.core.environment import model_name


def test_the_served_model_has_no_horizon_suffix_and_others_name_their_hours():
    assert model_name("no2") == "routeaq-no2"
    assert model_name("pm25", horizon=6) == "routeaq-pm25-6h"
    assert model_name("o3", "staging", 24) == "staging-o3-24h"
