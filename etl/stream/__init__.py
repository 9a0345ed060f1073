"""The stream: raw files as they land -> the same request records within minutes.

`settings.py` holds the stream's settings (the build's config is derived from them);
`job.py` is the Spark job; `process.py` the per-user state function over `state.py`;
`sink.py` commits each micro-batch exactly once and closes days through the batch build;
`hours.py` closes, validates and publishes each hour.
"""
