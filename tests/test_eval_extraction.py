"""scripts/eval_extraction.py on a small LoCoMo-layout file it is given (rules only: fast)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import eval_extraction
import pytest

SAMPLE = {
    "sample_id": "conv-x",
    "conversation": {
        "speaker_a": "Maya",
        "speaker_b": "Leo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Maya", "dia_id": "D1:1", "text": "Hi Leo! I moved to Lisbon last week."},
            {"speaker": "Leo", "dia_id": "D1:2", "text": "Nice! I love hiking in the hills."},
            {"speaker": "Maya", "dia_id": "D1:3", "text": "My sister Lena plays the cello."},
        ],
        "session_2_date_time": "2:00 pm on 9 May, 2023",
        "session_2": [
            {"speaker": "Leo", "dia_id": "D2:1", "text": "I work at Tidepool Labs now."},
        ],
    },
    "observation": {
        "session_1_observation": {
            "Maya": [["Maya moved to Lisbon last week.", "D1:1"],
                     ["Maya's sister Lena plays the cello.", "D1:3"]],
            "Leo": [["Leo loves hiking in the hills.", "D1:2"]],
        },
        "session_2_observation": {"Leo": [["Leo works at Tidepool Labs.", ["D2:1"]]]},
    },
    "qa": [],
}  # fmt: skip


def test_sessions_gold_and_neighbours(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([SAMPLE]))
    sessions = eval_extraction.load_sessions(path, None)
    assert [s.key for s in sessions] == ["conv-x/session_1", "conv-x/session_2"]
    assert sessions[1].gold == [("Leo", "Leo works at Tidepool Labs.", ["D2:1"])]
    assert sessions[0].dia_ids == {1: "D1:1", 2: "D1:2", 3: "D1:3"}
    assert eval_extraction.near(["D1:2"], ["D1:3"], 1)
    assert not eval_extraction.near(["D1:1"], ["D1:3"], 1)
    assert not eval_extraction.near(["D2:3"], ["D1:3"], 1)
    assert eval_extraction.load_sessions(path, ["other"]) == []


@pytest.mark.real_model  # the benchmark matches memories to gold observations with MiniLM
def test_rules_report_recall_precision_and_the_subset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([SAMPLE]))
    out = tmp_path / "result.json"
    argv = ["eval_extraction.py", str(path), "--extractors", "rules", "--sessions", "1",
            "--json", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    eval_extraction.main()
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["sessions"] for r in rows] == ["all 2 of conv-x", "1: conv-x 1"]
    everything = rows[0]
    assert everything["gold"] == 4
    # The rules read "I moved to Lisbon", "I work at Tidepool Labs", "My sister Lena ...".
    assert 0 < everything["recall"] <= 1 and everything["memories"] > 0
    assert (
        everything["recall"] == pytest.approx(everything["recall_at"]["0.60"])
        and everything["hallucinated_after"] == 0
    )
    assert "| rules | all 2 of conv-x |" in printed and "matches at 0.6" in printed
