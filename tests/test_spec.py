"""The dataset spec: its file form, its one-line errors, and the contracts derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from longseq.schemas.contracts import DEFAULT_SPEC, REQUEST_RECORD, contracts_of
from longseq.schemas.spec import DEFAULT_SPEC_FILE, MAX_TASKS, SPECS_DIR, SpecError, load_spec, spec_from_dict

ECOMMERCE = SPECS_DIR / "ecommerce.yaml"


def test_default_spec_is_the_original_contract() -> None:
    # the Douyin-shaped contract longseq began with: the request record's columns, in order
    assert DEFAULT_SPEC.tasks == ("finish", "skip", "like", "comment")
    assert REQUEST_RECORD.names == [
        "request_id", "user_id", "request_ts", "hist_item_id", "hist_author_id", "hist_event_ts", "hist_action",
        "tgt_item_id", "tgt_author_id", "tgt_finish", "tgt_skip", "tgt_like", "tgt_comment",
    ]
    assert not DEFAULT_SPEC.features


def test_round_trip_and_fingerprint(tmp_path: Path) -> None:
    for path in (DEFAULT_SPEC_FILE, ECOMMERCE):
        spec = load_spec(path)
        again = tmp_path / "again.yaml"
        again.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
        assert load_spec(again) == spec
        assert load_spec(again).fingerprint == spec.fingerprint
    assert load_spec(ECOMMERCE).fingerprint != DEFAULT_SPEC.fingerprint
    # a doc is not part of what a spec builds
    data = DEFAULT_SPEC.to_dict()
    data["inputs"]["play_ms"]["doc"] = "something else"
    assert spec_from_dict(data).fingerprint == DEFAULT_SPEC.fingerprint


def test_ecommerce_contracts() -> None:
    c = contracts_of(load_spec(ECOMMERCE))
    # the logs name two id columns their own way; everything after the read uses longseq's names
    assert c.spec.raw_names == {"item_id": "product_id", "author_id": "seller_id"}
    assert "item_id" in c.raw_log and "product_id" not in c.raw_log
    assert c.raw_log["category_id"].required and not c.raw_log["dwell_ms"].required
    assert "dwell_ratio" not in c.raw_log  # derived, not read
    assert [f.name for f in c.history_event] == [
        "item_id", "author_id", "event_ts", "action", "category", "price_bucket", "dwell_ratio"]
    assert [f.name for f in c.target] == ["item_id", "author_id", "category", "price_bucket", "click", "cart", "purchase"]
    assert str(c.request_record["hist_dwell_ratio"].dtype) == "list<float32>"
    assert str(c.request_record["tgt_category"].dtype) == "list<int64>"
    assert "hist_category" in c.user_state and "tgt_click" not in c.user_state
    assert c.quarantine.names[:-1] == c.raw_log.names
    assert c.history_event[3].doc == "bit flags: 1 click, 2 cart, 4 purchase"


def _base() -> dict:
    return load_spec(ECOMMERCE).to_dict()


@pytest.mark.parametrize("change, message", [
    (lambda d: d["features"]["category"].update(source="category"), "features.category.source: unknown column 'category'"),
    (lambda d: d["inputs"].update(click={"type": "int8"}), "inputs.click: 'click' is a duplicated name (also in tasks)"),
    (lambda d: d["features"]["category"].update(sides=[]), "features.category.sides: the feature is on neither history nor target"),
    (lambda d: d["features"]["category"].update(sides=["user"]), "features.category.sides: 'user' is not one of history, target"),
    (lambda d: d.update(tasks=[f"t{i}" for i in range(MAX_TASKS + 1)]), f"tasks: {MAX_TASKS + 1} tasks, but the action bits hold at most {MAX_TASKS}"),
    (lambda d: d.update(tasks=[]), "tasks: at least one binary label column is needed"),
    (lambda d: d["features"].update(leak={"kind": "numeric", "source": "purchase"}), "features.leak.source: 'purchase' is a label"),
    (lambda d: d["features"]["category"].update(kind="embedding"), "features.category.kind: 'embedding' is not one of categorical, numeric"),
    (lambda d: d["features"]["category"].update(source="dwell_ratio"), "features.category.source: a categorical feature needs an integer column"),
    (lambda d: d["features"]["price_bucket"].update(boundaries=[5, 1]), "features.price_bucket.boundaries: need a strictly increasing list"),
    (lambda d: d["inputs"]["dwell_ms"].update(type="decimal"), "inputs.dwell_ms.type: 'decimal' is not one of"),
    (lambda d: d["inputs"]["dwell_ms"].update(required="yes"), "inputs.dwell_ms.required: expected true or false"),
    (lambda d: d["derived"]["dwell_ratio"].update(ratio=["dwell_ms", "nope"]), "derived.dwell_ratio.ratio: unknown column 'nope'"),
    (lambda d: d["inputs"].update(user_id={"type": "int64"}), "inputs.user_id: 'user_id' is reserved"),
    # hist_len, tgt_count: columns of the compact layout
    (lambda d: d["features"].update(len={"kind": "numeric", "source": "dwell_ms"}), "features.len: 'len' is reserved"),
    (lambda d: d.update(tasks=["count"]), "tasks[0]: 'count' is reserved"),
    (lambda d: d.update(taks=["a"]), "unknown keys ['taks']"),
    (lambda d: d["features"]["category"].update(bucket=3), "features.category: unknown keys ['bucket']"),
    (lambda d: d.update(tasks=["click", "click"]), "tasks[0]: 'click' is a duplicated name"),
    (lambda d: d.update(tasks=["Click"]), "'Click' is not a column name"),
    (lambda d: d["derived"]["dwell_ratio"].update(ratio=["click", "image_ms"]), "derived.dwell_ratio.ratio: 'click' is a label"),
    (lambda d: d["features"]["category"].update(source="position"), "features.category.source: 'position' is an id or time column"),
    (lambda d: d["features"]["category"].update(boundaries=[1, 2]), "features.category.boundaries: does not apply to a categorical feature"),
    (lambda d: d["features"]["dwell_ratio"].update(mean=3), "features.dwell_ratio.mean: does not apply to a numeric feature with transform log"),
    (lambda d: d["features"]["price_bucket"].update(buckets=8), "features.price_bucket.buckets: does not apply to a numeric feature"),
    # columns renames any raw column (ids, times, labels, inputs), each to a name of its own in the logs
    (lambda d: d["columns"].update(dwell_ratio="dr"), "columns.dwell_ratio: 'dwell_ratio' is not a raw column of the "
                                                      "spec; those that can be renamed are event_id, request_id, user_id"),
    (lambda d: d["columns"].update(category="cat"), "purchase"),  # the list ends with the labels
    (lambda d: d["columns"].update(user_id="seller_id"), "columns.user_id: 'seller_id' is the logs' name of 'author_id' too"),
    (lambda d: d["columns"].update(click="isClick", cart="isClick"), "columns.cart: 'isClick' is the logs' name of 'click' too"),
    (lambda d: d["columns"].update(user_id="price_cents"), "columns.user_id: 'price_cents' is the logs' name of the raw "
                                                           "column 'price_cents' already (columns does not rename it)"),
    (lambda d: d["columns"].update(item_id="user_id"), "columns.item_id: 'user_id' is the logs' name of the raw column"),
    (lambda d: d["columns"].update(click="Cart"), "columns.click: 'Cart' and 'cart', the logs' name of 'cart', differ "
                                                  "only in case"),
    # a reserved name is said to be reserved, not duplicated
    (lambda d: d["columns"].update(click="ds"), "columns.click: 'ds' is reserved: it is the partition column"),
    (lambda d: d["columns"].update(user_id="user id"), "columns.user_id: 'user id' is not a column name"),
    (lambda d: d["columns"].update(click="1click"), "columns.click: '1click' is not a column name"),
])
def test_spec_errors_are_one_line_and_name_the_field(tmp_path: Path, change, message: str) -> None:
    data = _base()
    change(data)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert str(path) in str(e.value) and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_the_allowed_keys_of_a_feature_leave_out_the_name_its_key_gives(tmp_path: Path) -> None:
    data = _base()
    data["features"]["category"].update(bucket=3)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(SpecError) as e:
        load_spec(path)
    allowed = str(e.value).split("allowed: ", 1)[1].split(", ")
    assert "buckets" in allowed and "name" not in allowed, str(e.value)


def test_unreadable_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read dataset spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="cannot read dataset spec") as e:
        load_spec(bad)
    # where the error is, by the file's name (PyYAML says "<unicode string>" of text it was handed)
    assert f'in "{bad}", line 1' in str(e.value) and "<unicode string>" not in str(e.value)


def test_an_unreadable_recorded_spec_and_settings_file_name_the_file(tmp_path: Path) -> None:
    from longseq.dataset.spec_record import recorded_spec
    from longseq.dataset.storage import LocalStorage
    from longseq.schemas.settings_file import SettingsError, load_mapping

    (tmp_path / "spec.yaml").write_text("name: [unclosed")
    with pytest.raises(SpecError) as e:
        recorded_spec(LocalStorage(), str(tmp_path))
    assert f'in "{tmp_path / "spec.yaml"}"' in str(e.value) and "<unicode string>" not in str(e.value)
    with pytest.raises(SettingsError) as e:
        load_mapping(tmp_path / "spec.yaml", {"name"}, "Spark config")
    assert f'in "{tmp_path / "spec.yaml"}"' in str(e.value)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\ntasks: [a]\ninputs:\n  p: {type: int64}\n  p: {type: float32}\n")
    with pytest.raises(SpecError, match="'p' is a duplicated name"):
        load_spec(path)


def test_the_fingerprint_is_what_the_records_hold() -> None:
    base = _base()
    spec = spec_from_dict(base)
    # model-side settings, names and docs: the same records, another model
    other = _base()
    other["name"] = "shop"
    other["features"]["category"].update(buckets=64, doc="other words")
    other["features"]["price_bucket"].update(boundaries=[100, 200])
    changed = spec_from_dict(other)
    assert changed.fingerprint == spec.fingerprint and changed.model_fingerprint != spec.model_fingerprint
    # an implicit source is the explicit one
    implicit = _base()
    implicit["features"]["dwell_ratio"]["source"] = ""
    assert spec_from_dict(implicit) == spec
    # what reaches the records: tasks, inputs, sides
    for change in (lambda d: d["features"]["category"].update(sides=["target"]),
                   lambda d: d["inputs"]["dwell_ms"].update(type="int64"),
                   lambda d: d.update(tasks=["click", "cart"])):
        data = _base()
        change(data)
        assert spec_from_dict(data).fingerprint != spec.fingerprint


def test_reading_with_another_transform_of_the_same_records(tmp_path: Path) -> None:
    from longseq.dataset.spec_record import record_spec, spec_for
    from longseq.dataset.storage import LocalStorage

    storage, data = LocalStorage(), str(tmp_path)
    record_spec(storage, data, load_spec(ECOMMERCE))
    other = _base()
    other["features"]["category"].update(buckets=64)
    wanted = spec_from_dict(other)
    assert spec_for(storage, data, wanted) is wanted  # the same records, read with the model's transforms
    assert spec_for(storage, data) == load_spec(ECOMMERCE)
    with pytest.raises(SpecError, match="holds data of dataset spec 'ecommerce'"):
        spec_for(storage, data, DEFAULT_SPEC)
