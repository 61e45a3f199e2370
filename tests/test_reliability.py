"""Nothing silently wrong (issue 13), in-process cases: one test per numbered case.

Each test reproduces what the issue saw on a tiny model and asserts the clear refusal
(or the correct behaviour) that replaced it. The cases that need real processes (kill
-9, two processes on one folder) and real HTTP servers are in
``test_reliability_processes.py``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tests.conftest import HIDDEN, make_model, make_sae, make_tokenizer
from tests.methods_support import tiny_pairs, write_jsonl
from typer.testing import CliRunner

from yapo import DenseVector, SparseVector, YapoError
from yapo._finite import NonFiniteError
from yapo._io import atomic_dir, recover_leftovers, write_json
from yapo._paths import distinct_components, safe_component
from yapo.cli.main import app
from yapo.data.records import CulturalMCQ, PreferencePair
from yapo.errors import MismatchError
from yapo.evaluate.sweep import parse_multipliers
from yapo.gather import build_report, read_training_run
from yapo.methods import train
from yapo.methods.preference import TrainingDiverged
from yapo.methods.runs import Checkpoint, RunFolder
from yapo.sae import load_sae
from yapo.vectors import load_vector


class Killed(Exception):
    """Stands in for a process killed mid-run."""


def _train(out: Path | None, method: str = "bipo", **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"epochs": 2, "batch_size": 4, "warmup_steps": 1}
    settings.update(kwargs)
    return train(
        method,
        data=settings.pop("data", tiny_pairs(8)),
        model=settings.pop("model", make_model("llama")),
        tokenizer=make_tokenizer(),
        layer=1,
        out=out,
        progress=False,
        **settings,
    )


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- case 1
def test_1_a_diverging_run_writes_no_vector_and_names_no_bad_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="vector .*NaN or infinite at step 1") as info:
        _train(run, learning_rate=1e30, warmup_steps=0, checkpoint_every=1)
    assert "no checkpoint was written yet" in str(info.value)
    assert not (run / "vector").exists() and not (run / "checkpoints").exists()


def test_1_non_finite_vectors_refuse_to_be_made_saved_loaded_or_applied(tmp_path: Path) -> None:
    model = make_model("llama")
    for bad in (torch.full((HIDDEN,), float("nan")), torch.full((HIDDEN,), 1e30)):
        with pytest.raises(NonFiniteError, match="not finite"):
            DenseVector.create(bad, model, 1)
    good = DenseVector.create(torch.ones(HIDDEN), model, 1, method="bipo")
    folder = good.save(tmp_path / "vec")
    save_file({"vector": torch.full((HIDDEN,), 1e30)}, str(folder / "vector.safetensors"))
    with pytest.raises(NonFiniteError, match="norm overflows"):
        load_vector(folder)
    good.vector = torch.full((HIDDEN,), float("inf"))  # changed after creation
    with pytest.raises(NonFiniteError):
        good.save(tmp_path / "other")
    with pytest.raises(NonFiniteError), good.apply(model):
        pass
    assert not (tmp_path / "other").exists()


def test_1_non_finite_checkpoints_are_not_written_nor_the_last_good_one(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    vector = DenseVector.create(torch.ones(HIDDEN), make_model("llama"), 1)
    good = Checkpoint({"vector": torch.ones(HIDDEN)}, {"step": 1})
    run.save_checkpoint("step-0000001", good, vector)
    with pytest.raises(YapoError, match="refusing to write checkpoint"):
        run.save_checkpoint("step-0000002", Checkpoint({"vector": torch.full((3,), 1e30)}, {"step": 2}), vector)  # fmt: skip
    # one broken by hand (NaN written into it) is skipped when looking for the last good one
    broken = tmp_path / "run" / "checkpoints" / "step-0000003"
    broken.mkdir()
    save_file({"vector": torch.full((3,), float("nan"))}, str(broken / "trainer_state.safetensors"))
    write_json(broken / "trainer_state.json", {"step": 3})
    found = run.last_good_checkpoint(warn=False)
    assert found is not None and found[0].name == "step-0000001"


# ----------------------------------------------------------------------------- case 2
@pytest.mark.parametrize("setting", [{"beta": 1e30}, {"multiplier": 1e30}])
def test_2_an_infinite_gradient_norm_is_divergence_not_a_zero_step(
    tmp_path: Path, setting: dict[str, Any]
) -> None:
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="gradient norm became NaN or infinite"):
        _train(run, **setting)
    config = json.loads((run / "config.json").read_text())
    assert config.get("finished") is not True and not (run / "vector").exists()


# ----------------------------------------------------------------------------- case 4
def test_4_resume_refuses_other_data(tmp_path: Path) -> None:
    pairs = tiny_pairs(8)
    swapped = [PreferencePair(p.prompt, p.rejected, p.chosen, id=p.id) for p in pairs]

    def kill(record: dict[str, Any]) -> None:
        if record["step"] == 3:
            raise Killed

    with pytest.raises(Killed):
        _train(tmp_path / "run", data=pairs, callbacks=[kill])
    with pytest.raises(YapoError, match="training data is not the data this run started with"):
        _train(tmp_path / "run", data=swapped, resume=True)
    assert _train(tmp_path / "run", data=pairs, resume=True).steps == 4


# ----------------------------------------------------------------------------- case 5
def test_5_country_folders_are_sanitised_and_collisions_refused(tmp_path: Path) -> None:
    assert safe_component("..") == "unnamed" and safe_component(".") == "unnamed"
    assert safe_component("../../etc") == "etc" and safe_component("South Korea") == "South_Korea"
    assert distinct_components(["Spain", ".."], "country") == {"Spain": "Spain", "..": "unnamed"}
    with pytest.raises(YapoError, match="also the folder of"):
        distinct_components(["South Korea", "South/Korea"], "country")
    with pytest.raises(YapoError, match="yapo's own 'eval'"):
        distinct_components(["Eval"], "country", reserved=("eval",))

    from yapo.compare import CompareConfig, run_comparison

    def item(country: str, n: int) -> CulturalMCQ:
        return CulturalMCQ(
            id=f"q{n}-{country}",
            question_id=f"q{n}",
            language="en",
            country=country,
            localized="w5 w6",
            nonlocalized="w5",
            options=["w7", "w8"],
            answer=0,
            option_countries=[country, "Western"],
        )

    items = [item(c, n) for c in (".", "..") for n in range(2)]
    out = tmp_path / "a" / "out"
    with pytest.raises(YapoError, match="would be written to the folder"):
        run_comparison(items, out, CompareConfig(methods=("caa",)), log=lambda _: None)
    assert not (tmp_path / "a").exists()  # refused before anything was written


# ----------------------------------------------------------------------------- case 6
def test_6_any_run_artefact_means_a_run_and_bad_paths_fail_before_training(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "vector").mkdir(parents=True)
    (run / "vector" / "mine.txt").write_text("a user's file")
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 0.5}\n')
    with pytest.raises(YapoError, match="already holds a training run"):
        _train(run)
    with pytest.raises(YapoError, match="no config.json"):
        _train(run, resume=True)
    assert (run / "vector" / "mine.txt").read_text() == "a user's file"

    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (linked / "vector").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(YapoError, match="symbolic link"):
        _train(linked)
    assert not (linked / "metrics.jsonl").exists()  # refused before any training

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(YapoError, match="is a file, not a folder"):
        _train(a_file)
    with pytest.raises(YapoError, match="not a folder"), atomic_dir(a_file):
        pass


# ----------------------------------------------------------------------------- case 7
def test_7_a_sparse_vector_records_its_local_sae_as_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_sae().save(tmp_path / "work" / "sae")
    monkeypatch.chdir(tmp_path / "work")
    model = make_model("llama")
    sae = load_sae("sae")  # typed relative
    vector = SparseVector.create(torch.ones(sae.d_sae), model, 1, sae, method="yapo")
    vector.save(tmp_path / "vec")
    assert vector.meta.sae_reference == str((tmp_path / "work" / "sae").resolve())
    monkeypatch.chdir(tmp_path)  # another working directory
    again = load_vector(tmp_path / "vec")
    assert isinstance(again, SparseVector) and torch.equal(again.vector, vector.vector)


# ----------------------------------------------------------------------------- case 8
def test_8_atomic_writes_respect_the_umask(tmp_path: Path, umask_022: None) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "folder") as tmp:
        write_json(tmp / "b.json", {"y": 2})
    vector = DenseVector.create(torch.ones(HIDDEN), make_model("llama"), 1)
    vector.save(tmp_path / "vec")

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(tmp_path / "a.json") == 0o644
    assert mode(tmp_path / "folder") == 0o755 and mode(tmp_path / "folder" / "b.json") == 0o644
    assert mode(tmp_path / "vec") == 0o755
    assert {mode(p) for p in (tmp_path / "vec").iterdir()} == {0o644}
    os.umask(0o077)
    write_json(tmp_path / "private.json", {})
    assert mode(tmp_path / "private.json") == 0o600


# ---------------------------------------------------------------------------- case 10
def test_10_untrusted_configs_and_columns_give_clear_errors(tmp_path: Path) -> None:
    vector = DenseVector.create(torch.ones(HIDDEN), make_model("llama"), 1)
    folder = vector.save(tmp_path / "vec")
    config = json.loads((folder / "config.json").read_text())
    for field, value in (("layer", "../../x"), ("d_model", "32"), ("hyperparameters", [1])):
        write_json(folder / "config.json", {**config, field: value})
        with pytest.raises(YapoError, match=f"invalid vector config: '{field}'"):
            load_vector(folder)
    write_json(folder / "config.json", [1, 2])
    with pytest.raises(YapoError, match="must be a JSON object"):
        load_vector(folder)

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"question": "w5", "good": "w6", "bad": "w7"}) + "\n")
    result = _invoke(["data", "validate", str(data)])
    message = str(result.exception) + result.output
    assert "has no chosen column" in message and "--chosen-column" not in message
    assert "columns={'chosen'" in message


# ---------------------------------------------------------------------------- case 11
def test_11_sae_for_a_dense_method_is_refused(tmp_path: Path) -> None:
    for method in ("bipo", "caa"):
        with pytest.raises(YapoError, match="meaningless for"):
            _train(tmp_path / method, method=method, sae=make_sae())


def test_11_validate_fails_on_empty_and_unusable_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = write_jsonl(tmp_path / "blank.jsonl", [PreferencePair("w5", "", "")])
    for path in (empty, blank):
        result = _invoke(["data", "validate", str(path)])
        assert result.exit_code == 1, result.output
    good = write_jsonl(tmp_path / "good.jsonl", tiny_pairs(2))
    assert _invoke(["data", "validate", str(good)]).exit_code == 0


def test_11_sweep_multipliers_must_be_finite() -> None:
    for text in ("nan", "1e400", "-inf", "0,inf"):
        with pytest.raises(YapoError, match="not a finite number"):
            parse_multipliers(text)
    assert parse_multipliers("1,-1,0") == [-1.0, 0.0, 1.0]


def test_11_report_shows_an_unfinished_run_as_unfinished(tmp_path: Path) -> None:
    def kill(record: dict[str, Any]) -> None:
        if record["step"] == 2:
            raise Killed

    with pytest.raises(Killed):
        _train(tmp_path / "cut", callbacks=[kill])
    _train(tmp_path / "whole")
    assert read_training_run(tmp_path / "cut").finished is False
    assert read_training_run(tmp_path / "whole").finished is True
    text = build_report([tmp_path / "cut", tmp_path / "whole"], tmp_path / "report").read_text()
    assert "**Unfinished** (killed or still running): bipo (cut)" in text
    assert "whole" not in text.split("**Unfinished**")[1].splitlines()[0]


def test_11_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    whole = _train(tmp_path / "whole", epochs=3, checkpoint_every=1)

    def kill(record: dict[str, Any]) -> None:
        if record["step"] == 5:  # after its checkpoint step-0000005 was written
            raise Killed

    with pytest.raises(Killed):
        _train(tmp_path / "cut", epochs=3, checkpoint_every=1, callbacks=[kill])
    checkpoints = tmp_path / "cut" / "checkpoints"
    newest = sorted(checkpoints.iterdir())[-1]  # step-0000005 (epoch ones sort first)
    assert newest.name == "step-0000005"
    (newest / "trainer_state.safetensors").write_bytes(b"not safetensors")
    with caplog.at_level(logging.WARNING, logger="yapo.methods.runs"):
        resumed = _train(tmp_path / "cut", epochs=3, checkpoint_every=1, resume=True)
    assert "skipping checkpoint step-0000005" in caplog.text
    assert torch.equal(resumed.vector.vector, whole.vector.vector)  # from step 4, exactly


def test_11_leftovers_of_interrupted_saves_are_cleaned(tmp_path: Path) -> None:
    _train(tmp_path / "run")
    run = tmp_path / "run"
    (run / ".vector.k3j2.tmp").mkdir()
    (run / ".metrics.jsonl.x8.tmp").write_text("half")
    (run / ".loss.png.old").write_text("old")  # loss.png exists: the old copy goes
    os.replace(run / "vector", run / ".vector.old")  # killed between the two renames
    done = recover_leftovers(run)
    assert len(done) == 4 and (run / "vector" / "config.json").is_file()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".yapo.lock"]
    (run / "checkpoints" / ".epoch-0001.ab.tmp").mkdir()
    _train(run, resume=True)  # opening the run cleans its checkpoints folder too
    assert not (run / "checkpoints" / ".epoch-0001.ab.tmp").exists()


def test_11_the_fingerprint_tells_models_of_the_same_shape_apart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trained_on, other = make_model("llama", seed=0), make_model("llama", seed=1)
    vector = DenseVector.create(torch.ones(HIDDEN), trained_on, 1).save(tmp_path / "v")
    loaded = load_vector(vector)
    with loaded.apply(make_model("llama", seed=0)):  # the same weights: fine
        pass
    half = make_model("llama", seed=0).to(dtype=torch.bfloat16)  # type: ignore[call-arg]
    with loaded.apply(half):  # the same weights in another dtype: fine
        pass
    with pytest.raises(MismatchError, match="another model than this one"), loaded.apply(other):
        pass
    with load_vector(vector, strict_model=False).apply(other):  # a sibling, on request
        pass
    monkeypatch.setenv("YAPO_ALLOW_OTHER_MODEL", "1")
    with loaded.apply(other):
        pass


# ---------------------------------------------------------------------------- case 12
def test_12_to_pairs_says_the_western_option_is_the_answer_and_fails(tmp_path: Path) -> None:
    items = [
        CulturalMCQ(
            id=f"q{n}",
            question_id=f"q{n}",
            language="en",
            country="United States",
            localized=f"w5 w{6 + n}",
            nonlocalized=f"w{6 + n}",
            options=["w7", "w8"],
            answer=1,
            option_countries=["Spain", "Western"],  # the Western option is the answer
        )
        for n in range(3)
    ]
    data = tmp_path / "mcq.jsonl"
    data.write_text("".join(json.dumps(i.to_json()) + "\n" for i in items))
    out = tmp_path / "pairs.jsonl"
    result = _invoke(["data", "to-pairs", str(data), "--out", str(out)])
    assert result.exit_code != 0
    message = str(result.exception) + result.output
    assert "3 whose Western option is the correct answer" in message
    assert "no option marked Western" not in message
    assert not out.exists()
