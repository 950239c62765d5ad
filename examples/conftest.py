"""Markers for the example suite's test kinds."""


def pytest_configure(config):
    for name, text in [
        ("integration", "talks to a real service the test starts itself"),
        ("data_validation", "checks a data set's schema, ranges and drift"),
        ("model_performance", "checks a trained model's quality and latency"),
    ]:
        config.addinivalue_line("markers", f"{name}: {text}")
