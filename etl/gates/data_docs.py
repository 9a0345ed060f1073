"""The Data Docs site each validated day gets (DATA/validation/ds=D/docs), rendered with
GX's own renderers and page views, configured through GX's site config.

GX's page views build a new Jinja environment each, so every site build compiles GX's
templates again: about two thirds of a small day's docs time. The views here are GX's,
sharing one environment per view class in the process, so a run that validates many days
compiles them once. Rendering is unchanged: the same templates, filters and pages.
"""

from __future__ import annotations

from typing import Any

from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView


class _SharedEnvironment:
    """Mixin: the first instance's Jinja environment (its compiled templates) serves every
    later one. The environment's filters are bound to that first instance, which holds no
    state of its own but the custom directories, which a site gives all its views alike."""

    _shared: dict[type, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        key = (type(self), self.custom_styles_directory, self.custom_views_directory)
        self.env = _SharedEnvironment._shared.setdefault(key, self.env)


class SharedJinjaPageView(_SharedEnvironment, DefaultJinjaPageView):
    """GX's page view (suites, validation results), compiling its templates once a process."""


class SharedJinjaIndexPageView(_SharedEnvironment, DefaultJinjaIndexPageView):
    """GX's index page view, compiling its templates once a process."""


def _view(cls: type) -> dict[str, str]:
    return {"module_name": cls.__module__, "class_name": cls.__name__}


def site_config(docs_dir: str) -> dict:
    """A GX SiteBuilder config writing to `docs_dir`: GX's default sections and index, with
    the views above."""
    page = _view(SharedJinjaPageView)
    return {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "view": _view(SharedJinjaIndexPageView)},
        "site_section_builders": {section: {"view": page} for section in ("expectations", "validations", "profiling")},
    }
