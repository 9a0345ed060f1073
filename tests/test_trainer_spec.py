"""The trainer follows the dataset spec (issue 18): the readers carry its feature columns,
the model embeds them (checked against a padded numpy reference), trains on them, and
refuses data of another spec; the default spec's model is the one from before specs."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from longseq.dataset.spec_record import record_spec, spec_summary
from longseq.dataset.storage import LocalStorage, file_url
from longseq.features.hashing import hash_ids
from longseq.schemas.contracts import DEFAULT_SPEC, contracts_of, day_start_ms
from longseq.schemas.forms import to_arrow
from longseq.schemas.spec import SPECS_DIR, SpecError, load_spec
from longseq.trainer import checkpoint
from longseq.reader.batch import RequestBatch
from longseq.reader.testing import pointwise, random_batch
from longseq.trainer.distributed import Context
from longseq.trainer.metrics import task_metrics
from longseq.trainer.model import feature_salt, Layout, loss_fn, make_model, RankingModel
from longseq.trainer.model_config import ARCHS, PRESETS
from longseq.reader.readers import ReaderConfig, data_spec, open_reader
from longseq.sources import SAMPLE_START
from longseq.trainer.evaluate import evaluate, score
from longseq.trainer.provenance import check_model_spec, OtherDataError
from longseq.trainer.train_config import TrainConfig
from longseq.trainer.run import open_run
from longseq.trainer.train import train

ECOMMERCE = load_spec(SPECS_DIR / "ecommerce.yaml")
ENGINES = ["arrow", "petastorm"]
DAY = SAMPLE_START


def tiny(arch: str = "stca", spec=ECOMMERCE, seed: int = 0) -> RankingModel:
    torch.manual_seed(seed)
    return make_model(dataclasses.replace(PRESETS["tiny"], arch=arch), spec).double()


# ---------------------------------------------------------------- the readers


def records_of(spec, n: int = 11, seed: int = 0, request_ts: int = 1_767_225_600_000) -> list[dict]:
    """Request records of a spec's contract as Python lists (the reference), each column
    drawn by its field: ids, times before the request, action bits, features, labels."""
    g = np.random.default_rng(seed)
    features = {f.name: f for f in spec.features}

    def values(field: str, count: int) -> list:
        if field in ("item_id", "author_id"):
            return g.integers(0, 2**40 if field == "item_id" else 99, count).tolist()
        if field == "event_ts":
            return (request_ts - 1 - g.integers(0, 10**6, count)).tolist()
        if field == "action":
            return g.integers(0, 1 << len(spec.tasks), count).tolist()
        if field in spec.tasks:
            return g.integers(0, 2, count).tolist()
        f = features[field]
        if f.kind == "categorical":
            return g.integers(0, 10**12, count).tolist()
        return (g.uniform(0, 60_000, count) if f.transform == "bucketize" else g.exponential(1.0, count)) \
            .astype(np.float32).tolist()

    contracts = contracts_of(spec)
    rows = []
    for r in range(n):
        h, t = int(g.integers(0, 9)), int(g.integers(1, 4))
        rows.append({"request_id": f"q{r}", "user_id": 100 + r, "request_ts": request_ts + r,
                     **{f"hist_{f.name}": values(f.name, h) for f in contracts.history_event},
                     **{f"tgt_{f.name}": values(f.name, t) for f in contracts.target}})
    return rows


@pytest.fixture(scope="module")
def records_file(tmp_path_factory) -> tuple[str, list[dict]]:
    rows = records_of(ECOMMERCE)
    schema = to_arrow(contracts_of(ECOMMERCE).request_record)
    path = tmp_path_factory.mktemp("ecommerce") / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=4)  # 3 row groups
    return file_url(str(path)), rows


def test_the_contract_has_the_feature_columns_the_reference_writes(records_file):
    _, rows = records_file
    assert list(rows[0]) == contracts_of(ECOMMERCE).request_record.names
    assert {"hist_category", "hist_price_bucket", "hist_dwell_ratio", "tgt_category", "tgt_price_bucket",
            "tgt_click", "tgt_cart", "tgt_purchase"} <= set(rows[0])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_readers_yield_each_feature_as_the_parquet_lists_hold_it(records_file, engine):
    url, rows = records_file
    reader = open_reader([url], ReaderConfig(batch_size=5, shuffle=False, workers=1), engine, ECOMMERCE)
    batches = list(reader.batches())
    assert [b.num_requests for b in batches] == [5, 5, 1]
    assert all(b.tasks == ECOMMERCE.tasks for b in batches)
    expected = {
        "history": ("hist_", [f.name for f in contracts_of(ECOMMERCE).history_event]),
        "targets": ("tgt_", [f.name for f in contracts_of(ECOMMERCE).target]),
    }
    for side, (prefix, names) in expected.items():
        assert all(list(getattr(b, side).values) == names for b in batches), "one tensor per field, in contract order"
        for name in names:
            got = torch.cat([getattr(b, side)[name] for b in batches])
            want = [v for row in rows for v in row[prefix + name]]
            dtype = contracts_of(ECOMMERCE).request_record[prefix + name].dtype.element.name
            assert str(got.dtype) == f"torch.{dtype}", name
            assert got.tolist() == pytest.approx(want) if dtype == "float32" else got.tolist() == want, name
    labels = torch.cat([b.labels() for b in batches])  # [T, 3]: the spec's tasks, in order
    assert labels.tolist() == [[row[f"tgt_{t}"][i] for t in ECOMMERCE.tasks] for row in rows
                               for i in range(len(row["tgt_item_id"]))]


def test_the_default_reader_refuses_records_without_the_default_columns(records_file):
    url, _ = records_file  # ecommerce records lack finish, skip, like, comment
    with pytest.raises(Exception, match="lack column"):
        list(open_reader([url], ReaderConfig(shuffle=False), "arrow").batches())


def test_the_data_spec_is_the_recorded_one_and_a_different_wanted_one_is_refused(tmp_path):
    data = str(tmp_path / "out")
    assert data_spec(data) == DEFAULT_SPEC  # nothing recorded: built before specs
    record_spec(LocalStorage(), data, ECOMMERCE)
    assert data_spec(data).fingerprint == ECOMMERCE.fingerprint
    assert data_spec(data, SPECS_DIR / "ecommerce.yaml").fingerprint == ECOMMERCE.fingerprint
    with pytest.raises(SpecError, match="holds data of dataset spec 'ecommerce'"):
        data_spec(data, DEFAULT_SPEC)


# ---------------------------------------------------------------- the model's feature embeddings


def padded_feature_reference(model: RankingModel, rows: list[dict], side: str) -> np.ndarray:
    """[B, L, D] of each request's feature vectors, padded, computed in numpy from the
    Parquet lists: the numpy hash, np.digitize, the transforms written out."""
    features, prefix = model.spec.features_on(side), "hist_" if side == "history" else "tgt_"
    lengths = [len(row[prefix + "item_id"]) for row in rows]
    B, L, D = len(rows), max(lengths), model.cfg.dim
    out = np.zeros((B, L, D))
    for b, row in enumerate(rows):
        n = lengths[b]
        numbers = []
        for f in features:
            x = np.asarray(row[prefix + f.name])
            if f.kind == "categorical":
                out[b, :n] += model.features.tables[f.name].weight.detach().numpy()[
                    hash_ids(x.astype(np.int64), f.buckets, salt=feature_salt(f.name))]
            elif f.transform == "bucketize":  # bucket i holds [boundaries[i-1], boundaries[i])
                out[b, :n] += model.features.tables[f.name].weight.detach().numpy()[np.digitize(x, f.boundaries)]
            else:  # in float32, as records store the number
                x = x.astype(np.float32)
                numbers.append(np.log1p(np.maximum(x, 0)) if f.transform == "log" else (x - f.mean) / f.std)
        if numbers:
            project = model.features.project[side]
            out[b, :n] += np.stack(numbers, -1) @ project.weight.detach().numpy().T + project.bias.detach().numpy()
    return out


@pytest.mark.parametrize("side", ["history", "target"])
def test_jagged_feature_embeddings_equal_a_padded_reference(records_file, side):
    url, rows = records_file
    batch = next(iter(open_reader([url], ReaderConfig(batch_size=11, shuffle=False, exact_batches=True),
                                  "arrow", ECOMMERCE).batches()))
    assert batch.num_requests == len(rows)
    model = tiny()
    layout = Layout.of(batch)
    if side == "history":
        jagged = model.history_tokens(batch, layout) - model.embed.history(batch, layout)  # [N, D]
        padded, mask = layout.pad_history(jagged), layout.hist_mask
    else:
        jagged = model.target_tokens(batch) - model.embed.target(batch)  # [T, D]
        padded = layout.pad_targets(jagged)
        mask = torch.arange(layout.M)[None, :] < batch.targets.lengths()[:, None]
    reference = padded_feature_reference(model, rows, side)
    assert mask.sum() > 0 and np.abs(reference[mask.numpy()]).min() > 0, "every real slot has a feature vector"
    np.testing.assert_allclose(padded.detach().numpy(), reference * mask.numpy()[..., None], rtol=1e-5, atol=1e-6)


def test_a_feature_table_is_shared_by_history_and_target_and_a_number_equal_to_a_boundary_goes_up():
    model = tiny()
    names = [n for n, _ in model.named_parameters() if n.startswith("features.")]
    assert names == ["features.tables.category.weight", "features.tables.price_bucket.weight",
                     "features.project.history.weight", "features.project.history.bias"]
    assert model.features.tables["category"].num_embeddings == 4096
    assert model.features.tables["price_bucket"].num_embeddings == 8
    price = ECOMMERCE.features[1]
    rows = model.features.rows(price, torch.tensor([0.0, 499.99, 500.0, 50_000.0, 1e9]))
    assert rows.tolist() == [0, 0, 1, 7, 7]
    assert "boundaries_price_bucket" not in model.state_dict(), "the spec holds the boundaries, not the weights"


# ---------------------------------------------------------------- every arch, training


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_runs_with_features_and_request_level_batching_stays_exact(arch):
    batch = random_batch([9, 0, 4, 17], [2, 3, 1, 2], seed=3, spec=ECOMMERCE)
    model = tiny(arch)
    logits = model(batch)
    assert logits.shape == (8, len(ECOMMERCE.tasks)) and torch.isfinite(logits).all()
    torch.testing.assert_close(model(pointwise(batch)), logits)
    loss_fn(logits, batch).backward()
    reached = {n for n, p in model.named_parameters() if n.startswith("features.") and p.grad is not None
               and p.grad.abs().sum() > 0}
    expected = {"features.tables.category.weight", "features.tables.price_bucket.weight"}
    if arch != "none":  # the baseline without history never sees the history-only number
        expected |= {"features.project.history.weight", "features.project.history.bias"}
    assert reached == expected


def labelled_batch(seed: int) -> RequestBatch:
    """Random ecommerce requests whose labels follow their features: click by the target's
    category, cart by its price bucket, purchase by the history's dwell ratios."""
    batch = random_batch([int(n) for n in np.random.default_rng(seed).integers(0, 30, 16)], [6] * 16, seed,
                         spec=ECOMMERCE)
    t, h = batch.targets, batch.history
    t["click"][:] = (t["category"] % 5 < 2).to(torch.int8)
    t["cart"][:] = (t["price_bucket"] >= 5_000).to(torch.int8)
    dwell = torch.zeros(batch.num_requests).index_add_(0, h.segment_ids(), h["dwell_ratio"])
    mean_dwell = dwell / batch.history.lengths().clamp_min(1)
    t["purchase"][:] = (mean_dwell > 1.0)[batch.targets.segment_ids()].to(torch.int8)
    return batch


def train_steps(model: RankingModel, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        batch = labelled_batch(step)
        loss = loss_fn(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_the_model_learns_from_the_features_and_not_without_them():
    held_out = labelled_batch(10**6)
    with_features = tiny().float()
    without = tiny().float()
    without.features = None  # the same model, blind to the features
    losses = train_steps(with_features, 40)
    train_steps(without, 40)
    with torch.no_grad():
        seen, blind = loss_fn(with_features(held_out), held_out).item(), loss_fn(without(held_out), held_out).item()
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 0.1, "the loss falls"
    assert seen < blind - 0.1, (seen, blind)


def test_a_training_step_with_features_never_waits_for_the_device(tmp_path):
    """On the meta device any read back to the host fails (see test_train)."""
    from longseq.trainer.run import train_step

    run = open_run(tmp_path, TrainConfig(preset="tiny"), Context(0, 1, torch.device("meta")), 10,
                    log=lambda m: None, spec=ECOMMERCE)
    assert run.model.features.tables["category"].weight.device.type == "meta"
    _, loss, _ = train_step(run, random_batch([5, 0, 12], [2, 3, 1], 0, spec=ECOMMERCE),
                            torch.autocast("cpu", enabled=False))
    assert loss.device.type == "meta"


# ---------------------------------------------------------------- metrics, checkpoints, refusals


def test_metrics_are_keyed_by_the_specs_tasks():
    g = np.random.default_rng(0)
    labels, logits, users = g.integers(0, 2, (200, 3)), g.normal(size=(200, 3)), g.integers(0, 9, 200)
    metrics = task_metrics(labels, logits, users, ECOMMERCE.tasks)
    assert list(metrics) == ["click", "cart", "purchase"]
    with pytest.raises(ValueError, match="one column per task"):
        task_metrics(labels, logits, users)  # the default spec's four tasks


def test_a_checkpoint_records_its_spec_and_a_resume_on_another_spec_is_refused(tmp_path):
    cpu = Context(0, 1, torch.device("cpu"))
    cfg = TrainConfig(preset="tiny", checkpoint_every=1)
    run = open_run(tmp_path, cfg, cpu, 10, log=lambda m: None, spec=ECOMMERCE)
    run.save()
    path, state = checkpoint.newest(tmp_path, print)
    assert checkpoint.spec_of(state, path).fingerprint == ECOMMERCE.fingerprint
    with pytest.raises(OtherDataError, match="holds a model of dataset spec 'ecommerce'.*data of spec 'default'"):
        open_run(tmp_path, cfg, cpu, 10, log=lambda m: None)  # the default spec's data
    resumed = open_run(tmp_path, cfg, cpu, 10, log=lambda m: None, spec=ECOMMERCE)
    for (name, a), (_, b) in zip(run.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    from longseq.trainer.evaluate import load_model

    model, _, _ = load_model(tmp_path, warn=print)
    assert model.spec.fingerprint == ECOMMERCE.fingerprint and model.heads.out_features == 3


def test_a_default_spec_checkpoint_records_none_and_reads_as_the_default(tmp_path):
    run = open_run(tmp_path, TrainConfig(preset="tiny"), Context(0, 1, torch.device("cpu")), 10, log=lambda m: None)
    run.save()
    path, state = checkpoint.newest(tmp_path, print)
    assert "spec" not in state and checkpoint.spec_of(state, path) == DEFAULT_SPEC
    assert '"spec"' not in TrainConfig().to_json(), "a default config saves as before the field"
    with pytest.raises(OtherDataError, match="model of dataset spec 'default'"):
        check_model_spec(DEFAULT_SPEC, ECOMMERCE, tmp_path, "DATA")


def published_day(out, spec, rows: list[dict]) -> str:
    """A built and published day of DATA=out holding `rows`, written by hand in the build's
    layout (dataset/layout.py), as tests/test_validate_publish_spec.py does."""
    from longseq.etl.gates.publish import publish
    from longseq.schemas.contracts import SUCCESS_MARKER

    day = f"ds={DAY}"
    record_spec(LocalStorage(), str(out), spec)
    (out / "reports" / day).mkdir(parents=True)
    (out / "reports" / day / "build.json").write_text(json.dumps({"max_len": 64, "run_id": "hand-made",
                                                                  "spec": spec_summary(spec)}))
    for kind in ("requests", "state"):
        (out / kind / day).mkdir(parents=True)
        (out / kind / day / SUCCESS_MARKER).touch()
    pq.write_table(pa.Table.from_pylist(rows, schema=to_arrow(contracts_of(spec).request_record)),
                   out / "requests" / day / "part-00000.parquet", row_group_size=16)
    publish(str(out), DAY, override_reason="hand-made test records", log=lambda m: None)
    return str(out)


def test_train_evaluate_and_score_follow_the_datas_spec_and_refuse_another(tmp_path):
    request_ts = day_start_ms(DAY) + 3_600_000
    ecommerce = published_day(tmp_path / "ecommerce", ECOMMERCE, records_of(ECOMMERCE, 48, 1, request_ts))
    default = published_day(tmp_path / "default", DEFAULT_SPEC, records_of(DEFAULT_SPEC, 48, 2, request_ts))
    run = tmp_path / "run"
    cfg = TrainConfig(preset="tiny", batch_size=8, max_steps=4, checkpoint_every=2, log_every=2, device="cpu",
                      length={"min_len": 1, "max_len": 8})
    quiet = lambda m: None  # noqa: E731
    assert train(ecommerce, DAY, DAY, run, cfg, log=quiet, stop_after=2)["steps"] == 2  # as if killed
    assert json.loads((run / "data.json").read_text())["spec"] == spec_summary(ECOMMERCE)
    result = evaluate(run, ecommerce, DAY, device="cpu", bootstrap=10, log=quiet)
    assert list(result["tasks"]) == list(result["auc_intervals"])[:3] == ["click", "cart", "purchase"]
    assert score(run, ecommerce, DAY, None, tmp_path / "scores.parquet", device="cpu") > 0
    names = pq.read_schema(tmp_path / "scores.parquet").names
    assert [n for n in names if n.startswith("score_")] == ["score_click", "score_cart", "score_purchase"]

    refused = f"holds a model of dataset spec 'ecommerce' \\({ECOMMERCE.fingerprint}\\), but {default} holds data " \
              f"of spec 'default'"
    with pytest.raises(OtherDataError, match=refused):
        evaluate(run, default, DAY, device="cpu", bootstrap=0, log=quiet)
    with pytest.raises(OtherDataError, match=refused):
        score(run, default, DAY, None, tmp_path / "other.parquet", device="cpu")
    with pytest.raises(OtherDataError, match=refused):  # a resume, even where other data is allowed
        train(default, DAY, DAY, run, cfg, log=quiet, allow_other_data=True)
    with pytest.raises(SpecError, match="holds data of dataset spec 'ecommerce'"):  # a --spec that is not the data's
        train(ecommerce, DAY, DAY, tmp_path / "new", dataclasses.replace(cfg, spec=str(SPECS_DIR / "default.yaml")),
              log=quiet)
    with pytest.raises(SpecError, match="holds data of dataset spec 'ecommerce'"):
        evaluate(run, ecommerce, DAY, device="cpu", bootstrap=0, log=quiet, spec=DEFAULT_SPEC)
    resumed = train(ecommerce, DAY, DAY, run, dataclasses.replace(cfg, spec=str(SPECS_DIR / "ecommerce.yaml")), log=quiet)
    assert resumed["steps"] == 4 and resumed["finished"]


# ---------------------------------------------------------------- the default spec changes nothing

# Computed with the code at commit 51563e7 (before the trainer knew specs): for each arch, the
# tiny preset built after torch.manual_seed(0), in float64: its state_dict's entry count, the
# sha256 of its names and values, and its logits on random_batch([7, 0, 3], [2, 1, 3], seed=5).
HEAD = {
    "stca": (39, "b45031c08b49cb56", [[0.083039, 0.037285, 0.089510, -0.078254], [0.083070, 0.037274, 0.089516, -0.078279], [0.083050, 0.037271, 0.089471, -0.078243], [0.083061, 0.037267, 0.089486, -0.078270], [0.083095, 0.037253, 0.089545, -0.078253], [0.083068, 0.037250, 0.089510, -0.078274]]),  # noqa: E501
    "din": (14, "85d280048492dd3a", [[-0.171009, -0.099756, -0.174118, 0.067371], [-0.170928, -0.099782, -0.174154, 0.067321], [-0.170948, -0.099765, -0.174106, 0.067325], [-0.170964, -0.099780, -0.174127, 0.067353], [-0.170993, -0.099804, -0.174103, 0.067340], [-0.170979, -0.099848, -0.174146, 0.067321]]),  # noqa: E501
    "transformer": (40, "13ed20a994902c5b", [[0.003206, 0.051387, 0.014062, -0.153717], [0.003195, 0.051435, 0.014146, -0.152882], [0.004180, 0.052261, 0.017423, -0.154405], [0.003992, 0.051652, 0.015908, -0.153479], [0.003855, 0.051875, 0.016072, -0.153071], [0.003758, 0.051350, 0.016372, -0.152479]]),  # noqa: E501
    "mean": (9, "0d085e3033e8045c", [[-0.158407, 0.011101, -0.139615, 0.019795], [-0.158367, 0.011136, -0.139674, 0.019773], [-0.158406, 0.011176, -0.139764, 0.019742], [-0.158483, 0.011079, -0.139639, 0.019807], [-0.158415, 0.011119, -0.139646, 0.019773], [-0.158472, 0.011061, -0.139659, 0.019814]]),  # noqa: E501
    "none": (9, "617711b98c92aa45", [[0.139136, 0.175063, -0.099096, 0.037561], [0.139034, 0.175202, -0.099199, 0.037514], [0.139160, 0.175237, -0.099131, 0.037454], [0.139155, 0.175104, -0.099136, 0.037515], [0.139119, 0.175064, -0.099141, 0.037518], [0.139108, 0.175136, -0.099145, 0.037430]]),  # noqa: E501
}


def state_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_default_specs_model_is_the_one_from_before_specs(arch):
    entries, digest, logits = HEAD[arch]
    model = tiny(arch, spec=DEFAULT_SPEC)
    assert model.features is None
    assert len(model.state_dict()) == entries
    assert state_digest(model) == digest, "the same parameter names, initial values and draw order"
    with torch.no_grad():
        out = model(random_batch([7, 0, 3], [2, 1, 3], seed=5))
    np.testing.assert_allclose(out.numpy(), logits, atol=2e-6)
    torch.manual_seed(0)
    implicit = make_model(dataclasses.replace(PRESETS["tiny"], arch=arch)).double()  # no spec given
    assert state_digest(implicit) == digest
