"""The manifest of a statistics folder (lape_eval.neurons.manifest) and when a folder writes it
(lape_eval.neurons.stats.StatisticsFolder): only together with its first statistics file."""

from __future__ import annotations

import json

import pytest
import torch

from lape_eval.arch import ACTIVATION_POINT
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.manifest import CollectionIdentity, read_manifest, write_manifest
from lape_eval.neurons.stats import LanguageStats, StatisticsFolder, load_statistics
from neuron_samples import synthetic_table, write_statistics

IDENTITY = CollectionIdentity("org/model", "main", "llama", 2, 96, ACTIVATION_POINT, "udhr", 64, 1, 500)
FIELDS = {"model": "org/model", "revision": "main", "model_type": "llama", "num_layers": 2, "width": 96,
          "activation_point": ACTIVATION_POINT, "corpus": "udhr", "seq_len": 64, "bos_token_id": 1, "max_tokens": 500,
          "residual_means": False}


def english(tokens: int = 10) -> LanguageStats:
    return LanguageStats("en", tokens, torch.zeros(2, 96, dtype=torch.int64), torch.zeros(2, 96, dtype=torch.float64))


class TestFormat:
    def test_written_json_holds_the_format_and_every_field(self, tmp_path):
        path = write_manifest(tmp_path / "stats", IDENTITY)
        assert path == tmp_path / "stats" / "manifest.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["format"] == "lape-eval/activation-statistics/v1"
        assert data["identity"] == FIELDS
        assert read_manifest(tmp_path / "stats") == IDENTITY

    def test_a_manifest_written_before_residual_means_existed_reads_as_without_them(self, tmp_path):
        older = {k: v for k, v in FIELDS.items() if k != "residual_means"}
        (tmp_path / "manifest.json").write_text(json.dumps({"format": "lape-eval/activation-statistics/v1",
                                                            "identity": older}), encoding="utf-8")
        assert read_manifest(tmp_path) == IDENTITY and IDENTITY.residual_means is False

    def test_a_folder_without_manifest_has_no_identity(self, tmp_path):
        assert read_manifest(tmp_path) is None
        assert read_manifest(tmp_path / "missing") is None

    @pytest.mark.parametrize("content, message", [
        ({"format": "something/else", "identity": FIELDS}, "not a lape-eval statistics manifest"),
        ([1, 2], "not a lape-eval statistics manifest"),
        ({"format": "lape-eval/activation-statistics/v1", "identity": {**FIELDS, "width": None} | {"extra": 1}},
         "incomplete or damaged"),
        ({"format": "lape-eval/activation-statistics/v1", "identity": {k: v for k, v in FIELDS.items() if k != "width"}},
         "incomplete or damaged"),
    ])
    def test_foreign_or_damaged_manifests_are_named(self, tmp_path, content, message):
        (tmp_path / "manifest.json").write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(LapeEvalError, match=message):
            read_manifest(tmp_path)

    def test_truncated_json_is_named(self, tmp_path):
        (tmp_path / "manifest.json").write_text('{"format": "lape-eval/activ', encoding="utf-8")
        with pytest.raises(LapeEvalError, match="not valid JSON"):
            read_manifest(tmp_path)


class TestFolderClaim:
    def test_claiming_writes_nothing_until_the_first_statistics_file(self, tmp_path):
        folder = StatisticsFolder(tmp_path / "stats")
        folder.claim(IDENTITY)
        assert not (tmp_path / "stats").exists()
        folder.save_language(english(), {})
        assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == ["en.safetensors", "manifest.json"]
        assert json.loads((tmp_path / "stats" / "manifest.json").read_text())["identity"] == FIELDS

    def test_a_checkpoint_is_a_first_file_too(self, tmp_path):
        folder = StatisticsFolder(tmp_path / "stats")
        folder.claim(IDENTITY)
        folder.save_partial("en", [torch.zeros(2, 96, dtype=torch.int64), torch.zeros(2, 96, dtype=torch.float64),
                                   torch.tensor([3])], sequences_done=4)
        assert read_manifest(tmp_path / "stats") == IDENTITY
        state, done = folder.load_partial("en")
        assert done == 4 and state[2].tolist() == [3]

    def test_a_manifest_without_statistics_is_taken_over(self, tmp_path):
        other = CollectionIdentity("org/other", None, "qwen2", 2, 64, ACTIVATION_POINT, "NO_SUCH_DIR (field text)",
                                   64, None, None)
        write_manifest(tmp_path, other)  # what a failed run of an older version left behind
        folder = StatisticsFolder(tmp_path)
        folder.claim(IDENTITY)
        assert read_manifest(tmp_path) == other  # still nothing written
        folder.save_language(english(), {})
        assert read_manifest(tmp_path) == IDENTITY

    def test_statistics_of_other_settings_are_refused(self, tmp_path):
        write_statistics(tmp_path, synthetic_table(["en"]))
        changed = CollectionIdentity("synthetic", None, "llama", 2, 96, ACTIVATION_POINT, "udhr", 128, None, None)
        with pytest.raises(LapeEvalError, match="holds statistics made with other settings.*seq_len: 64 there, 128 now"):
            StatisticsFolder(tmp_path).claim(changed)

    def test_same_settings_resume_without_rewriting_the_manifest(self, tmp_path):
        write_statistics(tmp_path, synthetic_table(["en"]))
        before = (tmp_path / "manifest.json").stat().st_ino  # an atomic rewrite would be a new file
        folder = StatisticsFolder(tmp_path)
        folder.claim(read_manifest(tmp_path))
        folder.save_language(english(), {})
        assert (tmp_path / "manifest.json").stat().st_ino == before

    def test_files_without_manifest_are_not_a_statistics_folder(self, tmp_path):
        (tmp_path / "weights.safetensors").write_bytes(b"x")
        with pytest.raises(LapeEvalError, match="holds .safetensors files but no manifest.json"):
            StatisticsFolder(tmp_path).check_usable()
        with pytest.raises(LapeEvalError, match="not a statistics folder"):
            load_statistics(tmp_path)
