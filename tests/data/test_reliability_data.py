"""Reliability, data files × commands: every fault of a QA, CoT, RLVR or results file is one clear line from every
command that reads it (ferbench check, data check, the scorer, inference, both training pre-flights), before any model
loads; what is accepted (a byte-order mark, blank JSON Lines, the training files' warnings) goes through.

Command lines run as subprocesses (what a user runs), so "no traceback" and the exit status are real. The docs'
"What happens when…" table (docs/reliability.md) names these tests, and the rows other test files hold.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import PY, REPO, dump, heavy_imports, listing, make_records, one_clear_line, run

KEY_FIELD = {"qa": "true_label", "results": "model_response", "cot": "response", "rlvr": "solution"}
N_RECORDS = 6


# Each fault: (d, records, kind) -> (path given to the command, fragment of the error line | None when accepted).
def f_not_found(d, recs, kind):
    return d / "absent.json", "not found"


def f_directory(d, recs, kind):
    (d / "adir.json").mkdir()
    return d / "adir.json", "is a directory"


def f_empty(d, recs, kind):
    (d / "f.json").write_bytes(b"")
    return d / "f.json", "is empty"


def f_not_utf8(d, recs, kind):
    (d / "f.json").write_bytes(json.dumps(recs).encode().replace(b"/faces/1.png", b"/faces/caf\xe9.png"))
    return d / "f.json", "not UTF-8 text"


def f_not_json(d, recs, kind):
    (d / "f.json").write_text("image_path,true_label\n/faces/0.png,happiness\n")
    return d / "f.json", "not valid JSON (line 1, column 1"


def f_json_object(d, recs, kind):
    (d / "f.json").write_text(json.dumps({"records": recs}, indent=1))
    return d / "f.json", "expected a JSON list of records (or JSON Lines), found a single JSON object"


def f_jsonl_broken_line(d, recs, kind):
    lines = [json.dumps(r) for r in recs]
    lines[2] = lines[2][:40]  # a line cut short
    (d / "f.jsonl").write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")  # a blank line 2 is allowed
    return d / "f.jsonl", "record 2: JSON Lines: line 4 is not valid JSON"


def f_missing_field(d, recs, kind):
    del recs[2][KEY_FIELD[kind]]
    return dump(d / "f.json", recs), f"record 2, field '{KEY_FIELD[kind]}': missing field"


def f_mistyped_field(d, recs, kind):
    recs[1][KEY_FIELD[kind]] = 7
    return dump(d / "f.json", recs), f"record 1, field '{KEY_FIELD[kind]}': expected str, found int"


def f_label_outside(d, recs, kind):
    recs[3] = make_records(kind, label_of=lambda i: "joy")[3]
    if kind in ("cot", "rlvr"):  # training files: a warning (the paper's reward scores such a record 0)
        return dump(d / "f.json", recs), None
    return dump(d / "f.json", recs), "record 3, field 'true_label': label 'joy' is not one of the candidates"


def f_duplicate(d, recs, kind):
    recs[4] = dict(recs[0])
    if kind in ("cot", "rlvr"):  # training files: identical records are a warning
        return dump(d / "f.json", recs), None
    return dump(d / "f.json", recs), "record 4, field 'image_path': duplicate image: also record 0"


def f_bom_array(d, recs, kind):
    return dump(d / "f.json", recs, bom=True), None


def f_bom_jsonl_blank_lines(d, recs, kind):
    path = dump(d / "f.jsonl", recs, jsonl=True, bom=True)
    path.write_text(path.read_text(encoding="utf-8-sig").replace("\n", "\n\n", 2), encoding="utf-8-sig")
    return path, None


FILE_FAULTS = [f_not_found, f_directory, f_empty, f_not_utf8, f_not_json, f_json_object, f_jsonl_broken_line,
               f_missing_field, f_mistyped_field, f_label_outside, f_duplicate, f_bom_array, f_bom_jsonl_blank_lines]


def _cli(name: str, path: Path, work: Path, model: Path, images: Path) -> list:
    out = work / "out"
    return {
        "ferbench check": [PY, "-m", "unifer", "ferbench", "check", path, "--no-progress"],
        "data check": [PY, "-m", "unifer", "data", "check", path, "--kind", "cot", "--no-progress"],
        "eval_unifer.py": [PY, REPO / "eval_rafdb/code/eval_unifer.py", "--results", path, "--output",
                           out / "metrics.json", "--no-figs", "--figs-dir", ""],
        # --max-new-tokens 0 is checked right after the input: an accepted input ends there, before the model loads
        "infer_unifer.py": [PY, REPO / "eval_rafdb/code/infer_unifer.py", "--model", model, "--input", path,
                            "--output", out / "results.json", "--image-root", images, "--max-new-tokens", "0"],
        "SFT pre-flight": [PY, "-m", "unifer", "train", "preflight", "--kind", "cot", "--model", model, "--data", path,
                           "--image_root", images],
        "GRPO pre-flight": [PY, "-m", "unifer", "train", "preflight", "--kind", "rlvr", "--model", model, "--data", path,
                            "--image_root", images],
    }[name]


CLI_KINDS = {"ferbench check": "qa", "data check": "cot", "eval_unifer.py": "results", "infer_unifer.py": "qa",
             "SFT pre-flight": "cot", "GRPO pre-flight": "rlvr"}


@pytest.mark.parametrize("cli", list(CLI_KINDS))
@pytest.mark.parametrize("fault", FILE_FAULTS, ids=[f.__name__[2:] for f in FILE_FAULTS])
def test_data_file_faults_across_every_command(fault, cli, tiny_model, image_root, tmp_path):
    kind = CLI_KINDS[cli]
    path, fragment = fault(tmp_path, make_records(kind), kind)
    before = listing(tmp_path)
    res = run(_cli(cli, path, tmp_path, tiny_model, image_root), PYTHONPROFILEIMPORTTIME=1)
    assert not heavy_imports(res), "nothing heavy loads to judge a data file"
    if fragment is not None:
        one_clear_line(res, str(path), fragment)
        assert listing(tmp_path) == before, "nothing is written, the input is untouched"
        return
    # accepted: BOM, blank lines, and the training files' warnings
    if cli == "infer_unifer.py":
        one_clear_line(res, "--max-new-tokens must be at least 1")
    else:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert "Traceback" not in res.stderr
    if cli in ("ferbench check", "data check"):
        assert "  OK" in res.stdout and f"{N_RECORDS} records" in res.stdout
        if fault in (f_label_outside, f_duplicate):
            assert "warnings: 1" in res.stdout
    elif cli == "eval_unifer.py":
        assert json.loads((tmp_path / "out" / "metrics.json").read_text())["counts"]["total"] == N_RECORDS
    elif cli.endswith("pre-flight"):
        assert f"pre-flight ok: {N_RECORDS} {kind} records, every image decodes" in res.stdout
