"""model.revision, model.tokenSecret and model.cacheDir: what the spec accepts, and that the
revision and the cache reach every from_pretrained of a hub base (as the stages load it)."""
from __future__ import annotations

import json

import pytest

from adaptinf.spec import SpecError, parse_resource


def run_with_model(**model) -> dict:
    return {"apiVersion": "adaptinf.dev/v1alpha1", "kind": "LifelongRun", "metadata": {"name": "r"},
            "spec": {"model": model, "trainBudget": 8, "storage": {"uri": "s3://b/r"}}}


def spec_error(obj: dict) -> str:
    with pytest.raises(SpecError) as err:
        parse_resource(obj)
    return str(err.value)


def test_a_hub_base_takes_a_revision_token_secret_and_cache() -> None:
    model = parse_resource(run_with_model(base="org/base", revision="0123abc", tokenSecret="hf-gated",
                                          cacheDir="/cache")).spec.model
    assert (model.revision, model.token_secret, model.cache_dir) == ("0123abc", "hf-gated", "/cache")


@pytest.mark.parametrize(("base", "shown"), [("./models/missing", "'./models/missing' is a local path"),
                                             ("/abs/models/tiny", "'/abs/models/tiny' is a local path"),
                                             ("s3://bucket/base", "'s3://bucket/base' is a local path or store URI")])
def test_a_revision_on_a_path_is_a_spec_error(base: str, shown: str) -> None:
    message = spec_error(run_with_model(base=base, revision="main"))
    assert "spec.model.revision: model.base " in message and shown.split(" is ")[0] in message
    assert "a revision pins a hub model only" in message


@pytest.mark.parametrize(("model", "field"), [({"base": "org/b", "revision": "has space"}, "spec.model.revision"),
                                              ({"base": "org/b", "tokenSecret": "Bad_Name"}, "spec.model.tokenSecret"),
                                              ({"base": "org/b", "cacheDir": ""}, "spec.model.cacheDir")])
def test_bad_hub_fields_name_the_field(model: dict, field: str) -> None:
    assert f"{field}:" in spec_error(run_with_model(**model))


def test_a_revision_on_a_local_folder_is_refused_before_the_run(tiny_model_dir, tmp_path) -> None:
    """`base: model` beside the YAML is a folder once resolved: preflight refuses its revision."""
    import yaml

    from adaptinf.runner.preflight import check_inputs
    from adaptinf.spec import load_resources
    (tmp_path / "model").symlink_to(tiny_model_dir)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_with_model(base="model", revision="main")))
    (run,) = load_resources(path)
    with pytest.raises(SpecError, match=r"model\.revision: model\.base .*/model is a local folder, not a hub id"):
        check_inputs(run, run.resolved_spec())


@pytest.fixture
def recorded(monkeypatch, tiny_model_dir):
    """Every from_pretrained of the transformers Auto classes records (name, kwargs) and loads the
    tiny local model instead: a hub id without the hub."""
    import transformers
    calls: list[tuple[str, str, dict]] = []
    for cls_name in ("AutoConfig", "AutoTokenizer", "AutoImageProcessor", "AutoModelForImageTextToText",
                     "AutoModelForCausalLM"):
        cls = getattr(transformers, cls_name)
        real = cls.from_pretrained

        def fake(name, *args, _real=real, _cls=cls_name, **kwargs):
            if str(name) != str(tiny_model_dir):   # not transformers' own nested loads of the stand-in
                calls.append((_cls, name, dict(kwargs)))
            kwargs.pop("revision", None), kwargs.pop("cache_dir", None)
            return _real(str(tiny_model_dir), *args, **kwargs)
        monkeypatch.setattr(cls, "from_pretrained", fake)
    return calls


def test_the_stage_passes_the_revision_and_cache_to_every_from_pretrained(recorded, tmp_path, monkeypatch) -> None:
    """A stage context sets the run's hub settings; loads of the base that do not carry the spec
    (the regimes, ingest: load_base(base_source(ctx))) get them too."""
    from adaptinf.model.checkpoints import base_source
    from adaptinf.model.hub import HUB
    from adaptinf.model.loading import load_base
    from adaptinf.store import LocalStore
    from stages.context import build_context
    monkeypatch.setattr(HUB, "revisions", {})
    monkeypatch.setattr(HUB, "cache_dir", None)   # restored after: configure_hub sets it
    run = run_with_model(base="org/base", revision="0123abc", cacheDir=str(tmp_path / "cache"))["spec"]
    ctx = build_context("r", 0, LocalStore(tmp_path / "store"), run_spec=run, dataset="d",
                        dataset_spec={"run": "r", "source": "/d.jsonl"})
    load_base(base_source(ctx), ctx.spec.model.dtype)
    assert {c for c, _, _ in recorded} == {"AutoConfig", "AutoTokenizer", "AutoImageProcessor",
                                           "AutoModelForImageTextToText"}   # the tiny model is LLaVA-style
    assert all(name == "org/base" and kw["revision"] == "0123abc" and kw["cache_dir"] == str(tmp_path / "cache" / "hub")
               for _, name, kw in recorded), recorded
    recorded.clear()
    load_base("org/other")   # another hub model (a proxy): the cache, not the base's revision
    assert recorded and all("revision" not in kw and "cache_dir" in kw for _, _, kw in recorded)


def test_the_adapter_records_its_base_and_revision(tmp_path) -> None:
    """peft loads the base at adapter_config.json's `revision`: the README's lines get the same weights."""
    from adaptinf.model.checkpoints import record_base
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/tmp/pod/base"}))
    record_base(tmp_path, "org/base", "0123abc")
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("org/base", "0123abc")


def test_no_hub_keywords_for_a_local_base(tiny_model_dir) -> None:
    from adaptinf.model.hub import hub_kwargs
    assert hub_kwargs(str(tiny_model_dir)) == {}
    with pytest.raises(SpecError, match="is a local path: a revision pins a hub id only"):
        hub_kwargs(str(tiny_model_dir), "main")


def test_an_hf_token_is_redacted_from_log_lines(monkeypatch) -> None:
    from adaptinf.tracking.mlflow_tracker import redact_uri
    monkeypatch.setenv("HF_TOKEN", "my-org-token-1234")
    line = "401 for https://huggingface.co/org/base: token my-org-token-1234, also hf_abcdefghijklmnopqrstuvwxyz"
    assert redact_uri(line) == "401 for https://huggingface.co/org/base: token ***, also hf_***"
