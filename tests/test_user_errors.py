"""User mistakes end in one line naming the field and the fix, before any compute; never in a
traceback. Credentials in MLFLOW_TRACKING_URI never reach a file or the terminal."""
from __future__ import annotations

import json

import pytest
import yaml

from adaptinf.cli import build_parser
from adaptinf.cli import main as cli
from adaptinf.spec import SpecError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def demo(demo_quick, tmp_path):
    """The demo's LifelongRun (absolute paths) and one dataset, with `edit` to change the run."""
    run = yaml.safe_load((demo_quick / "lifelongrun.yaml").read_text())
    run["spec"]["model"]["base"] = str(demo_quick / "model")
    for task in run["spec"]["eval"]["suite"]:
        task["path"], task["imageRoot"] = str(demo_quick / task["path"]), str(demo_quick)

    def edit(change) -> list[str]:
        doc = json.loads(json.dumps(run))
        change(doc["spec"])
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(doc))
        return ["run-local", str(tmp_path / "run.yaml"), str(demo_quick / "datasets" / "00-basics.yaml"),
                "--workdir", str(tmp_path / "work"), "--no-mlflow", "--no-progress"]
    return edit, tmp_path


def refused(capsys, args: list[str]) -> str:
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ")
    return err


def test_unknown_strategy_on_the_command_line(demo, capsys):
    edit, tmp = demo
    err = refused(capsys, edit(lambda s: None) + ["--strategy", "randon"])
    assert "--strategy: unknown strategy 'randon'; known: adapt-inf" in err  # before: a pydantic traceback
    assert not (tmp / "work" / "demo").exists()


def test_model_path_typo_says_the_local_path_does_not_exist(demo, capsys):
    edit, tmp = demo
    err = refused(capsys, edit(lambda s: s["model"].update(base="./modle")))
    assert f"model.base: local path {tmp / 'modle'} does not exist" in err  # before: HFValidationError
    from adaptinf.model.loading import load_base
    with pytest.raises(SpecError, match="local path /no/such/model does not exist"):  # the stage path too
        load_base("/no/such/model", weights=False)


def test_bad_target_modules_regex_is_a_spec_error(demo, capsys):
    edit, _ = demo
    err = refused(capsys, edit(lambda s: s["model"].setdefault("lora", {}).update(targetModules="(q_proj")))
    assert "spec.model.lora.targetModules: Value error, not a valid regular expression" in err


def test_credentials_in_the_yaml_tracking_uri_are_refused(demo, capsys):
    # They would be copied into every step's inputs.json (and the CRD object): refused up front.
    edit, tmp = demo
    err = refused(capsys, edit(lambda s: s["mlflow"].update(trackingUri="http://alice:s3cret@mlflow:5000")))
    assert "credentials in trackingUri would be stored with the run" in err
    assert "s3cret" not in err
    assert not (tmp / "work" / "demo").exists()


def test_inputs_are_checked_before_any_compute(demo, capsys):
    """layers [999], a regex matching no module and a missing eval file: all named at once, and
    no stage has run (before: found inside extract, or only after extract and training)."""
    edit, tmp = demo

    def change(spec):
        spec.setdefault("extract", {})["layers"] = [999]
        spec["model"].setdefault("lora", {})["targetModules"] = r".*no_such_proj"
        spec["eval"]["suite"][1]["path"] = str(tmp / "eval" / "cuont.jsonl")

    err = refused(capsys, edit(change))
    assert "extract.layers: layer 999 out of range for a 6-layer model" in err
    assert "model.lora.targetModules: '.*no_such_proj' matches no module of the model" in err
    assert f"eval.suite[1].path (count): {tmp / 'eval' / 'cuont.jsonl'} does not exist" in err
    assert not (tmp / "work" / "demo" / "steps").exists()


def test_unsupported_image_text_family_is_named_before_any_compute(demo, capsys):
    """An image-text model of a family the encoder cannot place images for (before: an obscure
    crash inside extract's first batch)."""
    from transformers import PaliGemmaConfig
    edit, tmp = demo
    PaliGemmaConfig().save_pretrained(tmp / "paligemma")
    err = refused(capsys, edit(lambda s: s["model"].update(base=str(tmp / "paligemma"))))
    assert "model.base: model " in err and "image-text model type 'paligemma' is not supported" in err
    assert not (tmp / "work" / "demo" / "steps").exists()


def test_verbose_after_the_subcommand():
    assert build_parser().parse_args(["run-local", "x", "-v"]).verbose is True
    assert build_parser().parse_args(["-v", "run-local", "x"]).verbose is True
    assert build_parser().parse_args(["run-local", "x"]).verbose is False
    assert build_parser().parse_args(["stage", "train", "--step", "0", "-v"]).verbose is True


def test_tracking_credentials_are_redacted_everywhere(demo_quick, tmp_path, mlflow_server, monkeypatch, capsys):
    from adaptinf.tracking import redact_uri
    assert redact_uri("http://user:pw@host:5000/x") == "http://***@host:5000/x"
    assert redact_uri("failed to reach https://tok@h/api and http://h2/") == "failed to reach https://***@h/api and http://h2/"
    secret = "s3cr3t-pw"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.replace("http://", f"http://alice:{secret}@"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "conversations": [{"from": "human", "value": "q"}]}) + "\n")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
        "apiVersion": "adaptinf.dev/v1alpha1", "kind": "InstructionDataset", "metadata": {"name": "bad"},
        "spec": {"run": "demo", "source": str(bad)}}))
    run = yaml.safe_load((demo_quick / "lifelongrun.yaml").read_text())
    run["spec"]["model"]["base"] = str(demo_quick / "model")
    run["spec"]["mlflow"]["experiment"] = "redaction"
    run["spec"]["eval"]["suite"] = []
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    work = tmp_path / "work"
    assert cli(["run-local", str(tmp_path / "run.yaml"), str(tmp_path / "bad.yaml"), "--workdir", str(work),
                "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert secret not in out + err and "http://***@127.0.0.1" in out
    tracked = json.loads((work / "demo" / "mlflow.json").read_text())
    assert tracked["tracking_uri"].startswith("http://***@")  # before: the password, in the store
    assert not [p for p in work.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_stage_with_a_store_typo_does_not_create_it(tmp_path, caplog):
    typo = tmp_path / "typo"
    assert cli(["stage", "train", "--run", "r", "--step", "1", "--store", str(typo)]) == 2  # bad input
    assert not typo.exists()  # before: created, then "no inputs.json"
    assert f"store {typo} does not exist" in caplog.text


def test_stage_extract_checks_the_eval_files_first(demo_quick, tmp_path, caplog):
    """The operator's path: a missing eval file stops step 0's extract (exit 2, bad input) instead
    of surfacing in eval after extract and training."""
    run = yaml.safe_load((demo_quick / "lifelongrun.yaml").read_text())
    run["spec"]["model"]["base"] = str(demo_quick / "model")
    run["spec"]["eval"]["suite"] = [{"skill": "colour", "path": str(tmp_path / "colur.jsonl")}]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    args = ["stage", "extract", "--step", "0", "--no-progress", "--store", str(tmp_path / "store"),
            "-f", str(tmp_path / "run.yaml"), "-f", str(demo_quick / "datasets" / "00-basics.yaml")]
    assert cli(args) == 2
    assert f"eval.suite[0].path (colour): {tmp_path / 'colur.jsonl'} does not exist" in caplog.text
    assert not list((tmp_path / "store").rglob("*.json"))  # no snapshot of the bad spec either


def test_an_unreachable_tracking_server_is_one_line_before_any_compute(demo, port_finder, monkeypatch, capsys):
    """Before: a 100-line traceback at step 0 (after MLflow's retries) quoting the URI's password."""
    edit, tmp = demo
    args = [a for a in edit(lambda s: None) if a != "--no-mlflow"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cr3t-pw@127.0.0.1:{port_finder()}")
    err = refused(capsys, args)
    assert "MLflow tracking server http://***@127.0.0.1:" in err and "cannot be reached" in err
    assert "--no-mlflow" in err and "s3cr3t-pw" not in err
    assert not (tmp / "work" / "demo").exists()


def test_an_uncaught_error_prints_its_traceback_without_credentials(capsys):
    from adaptinf.cli import _redacted_traceback
    try:
        raise RuntimeError("API request to http://alice:s3cr3t-pw@mlflow:5000/api failed")
    except RuntimeError as err:
        _redacted_traceback(type(err), err, err.__traceback__)
    err_text = capsys.readouterr().err
    assert err_text.startswith("Traceback") and "http://***@mlflow:5000/api" in err_text
    assert "s3cr3t-pw" not in err_text
