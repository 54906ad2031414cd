"""`corpus plan` refuses what cannot run and says what would fit: a window beyond the model's
positions is one `error:` line naming the limit; each suggested change, run through `corpus
plan` again, fits."""

from __future__ import annotations

import json
import shlex

from click.testing import CliRunner

from corpus.cli import cli
from tests.helpers import LLAMA_7B, MISTRAL, NO_CAP


def _plan(tmp_path, *args: str):
    return CliRunner().invoke(cli, ["--root", str(tmp_path / "lh"), "plan", *args], obj={})


def _folder(tmp_path, name: str, config: dict) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def test_a_seq_len_beyond_the_position_limit_exits_2_naming_it(tmp_path):
    mistral = _folder(tmp_path, "mistral", MISTRAL)
    for backbone, seq, limit in ((mistral, "65536", "32,768"),
                                 ("all-minilm-l6-v2", "32768", "512")):
        res = _plan(tmp_path, "--backbone", backbone, "--seq-len", seq)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), res.output
        assert f"position limit of {limit} tokens" in lines[0] and "Traceback" not in res.output
    # the old spelling refuses it too
    res = CliRunner().invoke(cli, ["--root", str(tmp_path / "lh"), "train", "--plan",
                                   "--backbone", mistral, "--seq-len", "65536"], obj={})
    assert res.exit_code == 2 and "32,768" in res.output
    # at the limit, and on a model whose config sets no cap, it plans
    assert _plan(tmp_path, "--backbone", mistral, "--seq-len", "32768", "--batch", "1",
                 "--format", "json").exit_code == 0
    free = _folder(tmp_path, "rotary", NO_CAP)
    res = _plan(tmp_path, "--backbone", free, "--seq-len", "65536", "--batch", "1",
                "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["position_limit"] is None


def test_suggestions_of_a_config_that_does_not_fit_fit_when_planned_again(tmp_path):
    llama = _folder(tmp_path, "llama", LLAMA_7B)
    cases = [
        [llama, "--seq-len", "2048", "--batch", "4", "--device-mem", "24", "--gpus", "2"],
        ["all-minilm-l6-v2", "--seq-len", "128", "--batch", "8", "--device", "cpu",
         "--device-mem", "0.15"],
    ]
    for backbone, *rest in cases:
        base = ["--backbone", backbone, *rest, "--lora-r", "8"]
        res = _plan(tmp_path, *base, "--format", "json")
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        assert report["fits"] is False and report["suggestions"], report
        for s in report["suggestions"]:
            # the suggestion's options added to the same command line (later ones win)
            again = _plan(tmp_path, *base, *shlex.split(s["options"]), "--format", "json")
            assert again.exit_code == 0, again.output
            replanned = json.loads(again.output)
            assert replanned["fits"] is True and replanned["suggestions"] == [], s
            assert replanned["memory_gib"]["peak"] == s["peak_gib"]
        # the table says the same in words
        text = _plan(tmp_path, *base).output
        assert "does NOT fit" in text and "it would fit with any of:" in text
        for s in report["suggestions"]:
            assert s["options"] in text
    # 7B on a 4 GiB device: nothing here fits, and the table says why
    res = _plan(tmp_path, "--backbone", llama, "--seq-len", "512", "--batch", "2",
                "--device-mem", "4")
    assert "nothing planned here makes it fit" in res.output
    assert "more GPUs do not lower the peak per device" in res.output
