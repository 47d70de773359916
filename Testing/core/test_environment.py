"""The versions a benchmark records, also when ReCoKD runs from a source tree."""

from importlib import metadata

import recokd
from recokd.evaluate import environment


def test_an_uninstalled_recokd_reports_its_source_version(monkeypatch):
    real_version = metadata.version

    def version(name):
        if name == "recokd":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(environment.metadata, "version", version)
    versions = environment.package_versions()
    assert versions["recokd"] == recokd.__version__
    assert versions["torch"] == real_version("torch")
