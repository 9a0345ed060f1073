"""Great Expectations, run the way many small days want it: one ephemeral context per
engine and suite in a process, whose data source, assets, suites and validation
definitions every day reuses while its checks stay the same.

GX stores each object it is given, and an ephemeral context stores its whole config as
YAML on every change: a new context per day spent most of a small day's time there. A day
gives its frames as batch parameters (GX's whole-dataframe batches), its results are
rendered into its own Data Docs site (etl/gates/data_docs.py) and then dropped from the
store, so each day's docs hold that day's results only, as they did with a context a day.
"""

from __future__ import annotations

import functools
import os
from typing import Any


def _checks_key(checks: list[Any]) -> tuple:
    """What makes two lists of checks the same suite: names, expectation types, arguments."""
    return tuple((c.name, type(c.expectation).__name__, repr(sorted(c.expectation.configuration.kwargs.items())))
                 for c in checks)


class GxRunner:
    """One GX context for one engine ("spark" or "pandas") and suite ("requests" or "raw")."""

    def __init__(self, engine: str, suite: str) -> None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx, self.suite = gx, suite
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        add = self.ctx.data_sources.add_pandas if engine == "pandas" else self.ctx.data_sources.add_spark
        self.source = add(name="longseq")
        self._batches: dict[str, Any] = {}  # frame -> its batch definition
        self._definitions: dict[str, tuple[tuple, Any]] = {}  # frame -> (checks key, validation definition)

    def validate(self, frame_name: str, checks: list[Any], frame: Any) -> Any:
        """GX's ExpectationSuiteValidationResult of `checks` (each expectation's meta names its
        check) on `frame`, a Spark or pandas DataFrame."""
        definition = self._definition(frame_name, checks)
        # no checkpoint: it would have no actions to take; the result is stored all the same.
        # BASIC: the counts, observed values and up to 20 unexpected values (the Data Docs show
        # them); SUMMARY's counts per unexpected value cost a quarter of a small day's time
        return definition.run(batch_parameters={"dataframe": frame}, result_format="BASIC")

    def _definition(self, frame_name: str, checks: list[Any]) -> Any:
        gx, name, key = self._gx, f"{self.suite}_{frame_name}", _checks_key(checks)
        known = self._definitions.get(frame_name)
        if known and known[0] == key:
            return known[1]
        if known:  # other checks than the last day's (another bound, spec or layout)
            self.ctx.validation_definitions.delete(name)
            self.ctx.suites.delete(name)
        if frame_name not in self._batches:
            asset = self.source.add_dataframe_asset(name=name)
            self._batches[frame_name] = asset.add_batch_definition_whole_dataframe("all")
        # the suite whole, then stored: each expectation added to a stored suite is stored again
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name, expectations=[c.expectation for c in checks]))
        definition = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(data=self._batches[frame_name], suite=suite, name=name))
        self._definitions[frame_name] = (key, definition)
        return definition

    def write_docs(self, docs_dir: str) -> None:
        """Render the results validated since the last call, with the suites, into a Data
        Docs site at `docs_dir`; then drop those results."""
        from longseq.etl.gates import data_docs

        self.ctx.add_data_docs_site(site_name="longseq", site_config=data_docs.site_config(docs_dir))
        try:
            self.ctx.build_data_docs(site_names=["longseq"])
        finally:
            self.ctx.delete_data_docs_site("longseq")
            store = self.ctx.validation_results_store
            for result in store.list_keys():
                store.remove_key(result)


@functools.lru_cache(maxsize=None)
def gx_runner(engine: str, suite: str) -> GxRunner:
    """The process's runner for an engine and suite."""
    return GxRunner(engine, suite)
