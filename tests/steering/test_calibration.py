"""The calibration file: the selection rule by hand, the JSON round trip, clear errors for other files."""

from __future__ import annotations

import json
import re

import pytest

from lape_eval.errors import LapeEvalError
from lape_eval.resources import shipped_data_file
from lape_eval.steering.calibration import (
    Calibration, Setting, best_alpha, read_calibration, read_language_alphas, write_calibration,
)


def test_best_alpha_is_the_highest_rate_and_on_ties_the_smallest_alpha():
    assert best_alpha({"0.5": 20.0, "1": 60.0, "2": 60.0}) == 1.0
    assert best_alpha({"2": 0.0, "0.5": 0.0}) == 0.5
    assert best_alpha({"0.25": 10.0, "3": 90.0}) == 3.0


def _three_settings() -> Calibration:
    first, second, third = Setting("a"), Setting("b", positions="generated"), Setting("c", method="diffmean")
    result = Calibration([first, second, third], ["en"], ["de", "fr"], [1.0, 2.0], 4)
    result.rates = {
        first.key: {"de": {"1": 100.0, "2": 0.0}, "fr": {"1": 0.0, "2": 20.0}},  # (100 + 20) / 2 = 60
        second.key: {"de": {"1": 50.0, "2": 75.0}, "fr": {"1": 25.0, "2": 25.0}},  # (75 + 25) / 2 = 50
        third.key: {"de": {"1": 60.0, "2": 60.0}, "fr": {"1": 60.0, "2": 0.0}},  # 60: ties with the first
    }
    return result


def test_the_setting_with_the_best_mean_of_per_target_best_rates_wins():
    result = _three_settings()
    result.choose()
    assert result.chosen == Setting("a")  # a tie goes to the setting listed first
    assert result.language_alphas == {"de": 1.0, "fr": 2.0}
    assert result.to_json()["calibration_rate"] == 60.0


def test_written_calibrations_read_back_with_the_same_choice(tmp_path):
    result = _three_settings()
    result.choose()
    result.content_hash, result.model = "sha256:abc", "tiny"
    path = tmp_path / "calibration.json"
    write_calibration(path, result)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert list(written) == ["model", "language_alphas", "chosen", "content_hash", "calibration_rate", "sources",
                             "targets", "alphas_tried", "questions_per_source", "settings", "rates"]
    assert written["chosen"] == {"neuron_set": "a", "method": "add", "positions": "all"}
    assert [s["score"] for s in written["settings"]] == [60.0, 50.0, 60.0]
    read = read_calibration(path)
    assert read == result
    assert read.language_alphas == {"de": 1.0, "fr": 2.0} and read.calibration_rate == 60.0
    assert read.chosen.neuron_set == "a" and read.chosen.method == "add" and read.chosen.positions == "all"
    assert read.content_hash == "sha256:abc"
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_the_shipped_demo_calibration_reads():
    shipped = read_calibration(shipped_data_file("gemma-3-270m-demo-calibration.json"))
    raw = json.loads(shipped_data_file("gemma-3-270m-demo-calibration.json").read_text(encoding="utf-8"))
    assert shipped.language_alphas == raw["language_alphas"]
    assert shipped.chosen == Setting(**raw["chosen"])
    assert shipped.calibration_rate == raw["calibration_rate"] and shipped.content_hash == raw["content_hash"]
    assert shipped.to_json() == raw  # nothing of the file is lost


def test_a_minimal_calibration_needs_only_alphas_and_the_choice(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"language_alphas": {"de": 2.0},
                                "chosen": {"neuron_set": "s", "method": "add", "positions": "answer"}}))
    read = read_calibration(path)
    assert read.language_alphas == {"de": 2.0} and read.chosen == Setting("s", "add", "answer")
    assert read.calibration_rate is None and read.content_hash == ""


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ('{"language_alphas": {"de": 2', "not valid JSON"),
    ('{"de": 2.0}', "no 'language_alphas' object"),
    ("[1, 2]", "no 'language_alphas' object"),
    ('{"language_alphas": {"de": 2.0}}', "no 'chosen' setting"),
    ('{"language_alphas": {"de": "strong"}, "chosen": {"neuron_set": "s"}}', "language_alphas[de]"),
    ('{"language_alphas": {}, "chosen": {"neuron_set": "s"}, "settings": [{"neuron_set": "s"}]}', "no field 'method'"),
])
def test_other_files_are_refused_with_a_clear_message(tmp_path, content, message):
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LapeEvalError, match=re.escape(message)):
        read_calibration(path)


def test_language_alphas_files_are_a_calibration_or_a_plain_object(tmp_path):
    plain, calibration, other = tmp_path / "plain.json", tmp_path / "calibration.json", tmp_path / "list.json"
    plain.write_text(json.dumps({"de": 3}))
    calibration.write_text(json.dumps({"language_alphas": {"zh": 0.5}, "chosen": None}))
    other.write_text("[0.5]")
    assert read_language_alphas(plain) == {"de": 3}
    assert read_language_alphas(calibration) == {"zh": 0.5}
    with pytest.raises(LapeEvalError, match="JSON object"):
        read_language_alphas(other)
    with pytest.raises(LapeEvalError, match="does not exist"):
        read_language_alphas(tmp_path / "absent.json")
