"""`unifer report`: the offline HTML report, checked in a real browser (Debian's chromium, driven by Playwright).

The page is opened from file:// as a user would; every request it makes is recorded and must be a file: URL.
The full-size checks build synthetic results for all 11,072 FERBench items (from ../shared/ferbench's QA files
where present, else from the registry at FERBench's published sizes) with responses of every shape the page
tells apart; the thumbnail check uses real face photos from the installed packages.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from unifer.bench.scoring import FERBENCH_SIZES
from unifer.data.sets import SETS
from unifer.report.build import write_report
from unifer.report.items import is_hedged
from unifer.scoring.aggregate import extract_label, load_results, score_set, score_total
from unifer.scoring.extract import ANSWER_PATTERN

SHARED_FERBENCH = Path(__file__).resolve().parents[2].parent / "shared" / "ferbench"
LOAD_LIMIT_S, FILTER_LIMIT_MS = 2.0, 200.0


MAX_MARGIN = 2.0  # the most the limits stretch: the page loads in under 4 s and filters in under 400 ms anywhere


def margin() -> float:
    """The issue's limits are for a machine with its cores free: 1.5× on a busy 2-core machine, up to
    MAX_MARGIN where the load average says the cores are oversubscribed (several test suites sharing two cores).
    UNIFER_REPORT_PERF_MARGIN sets it, within the same cap."""
    busy = os.getloadavg()[0] / (os.cpu_count() or 1)
    return min(MAX_MARGIN, float(os.environ.get("UNIFER_REPORT_PERF_MARGIN", max(1.5, 1.5 * busy))))


FLAGS = {"rafdb": "--rafdb", "ferplus": "--ferplus", "affectnet": "--affectnet", "sfew_2.0": "--sfew"}

SENTENCES = ("The brows are drawn together and lowered.", "The eyes are wide open, the whites showing above the iris.",
             "The mouth corners are pulled up into a smile.", "The lips are pressed tightly and the jaw is clenched.",
             "The nose is wrinkled and the upper lip raised.", "The face looks relaxed, with no marked muscle activity.",
             "One corner of the mouth is raised asymmetrically.", "The inner brows are raised, the lips turn down.",
             "Unicode and odd text: café, 表情, \u2028line separator, emoji 😀.", "The cheeks are raised, crinkling the eyes.")


# ------------------------------------------------------------------------------------------------ synthetic runs


def ferbench_qa() -> dict[str, list[dict]]:
    """The published QA records of the four sets, or registry-made ones of the same sizes where they are absent."""
    if SHARED_FERBENCH.is_dir():
        return {k: json.loads((SHARED_FERBENCH / s.qa_filename).read_text()) for k, s in SETS.items()}
    rng = random.Random(7)
    return {k: [{"image_path": f"/{s.name}/test/{i:05d}.jpg", "true_label": rng.choice(s.labels), "prompt": s.prompt,
                 "candidate_labels": list(s.labels)} for i in range(FERBENCH_SIZES[k])] for k, s in SETS.items()}


def response(rng: random.Random, key: str, truth: str) -> dict:
    """One response from a mix of shapes: clean, hedged (two labels, two tags), no tags, nothing recognisable,
    a synonym, an answer broken over lines, an error item."""
    labels = SETS[key].labels
    guess = truth if rng.random() < 0.6 else rng.choice(labels)
    think = "<think>" + " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(2, 18))) + "</think>\n"
    roll = rng.random()
    if roll < 0.66:
        return {"model_response": f"{think}<answer>{guess}</answer>"}
    if roll < 0.72:
        return {"model_response": f"{think}<answer>{guess} or {rng.choice(labels)}</answer>"}
    if roll < 0.76:
        return {"model_response": f"{think}<answer>{guess}</answer>\n<answer>{rng.choice(labels)}</answer>"}
    if roll < 0.83:
        return {"model_response": think.replace("<think>", "").replace("</think>", "") + f"It looks {guess}."}
    if roll < 0.88:
        return {"model_response": f"{think}I cannot tell."}
    if roll < 0.94:
        return {"model_response": f"{think}<answer>{rng.choice(SETS[key].synonym_map().get(guess, (guess,)))}</answer>"}
    if roll < 0.99:
        return {"model_response": f"{think}<answer>\n{guess}\n</answer>"}
    return {"model_response": "ERROR: cannot decode image", "error": True}


def write_run(folder: Path, qa: dict[str, list[dict]], seed: int, extra: dict | None = None) -> dict[str, Path]:
    """Four results files; ``extra`` maps (set, index) to a response forced on that item."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, records in qa.items():
        out = []
        for i, r in enumerate(records):
            forced = (extra or {}).get((key, i))
            out.append({**r, **({"model_response": forced} if forced else response(rng, key, r["true_label"]))})
        paths[key] = folder / f"{key}_results.json"
        paths[key].write_text(json.dumps(out), encoding="utf-8")  # ASCII escapes: a lone surrogate survives
    return paths


# ------------------------------------------------------------------------------------------------ the browser


def chromium_path() -> str | None:
    for candidate in (os.environ.get("UNIFER_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                                                 "(.ci/env/requirements-cpu.txt pins it)")
    exe = chromium_path()
    if exe is None:
        pytest.skip("no chromium found (.ci/run installs Debian's chromium with apt-get)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-background-networking"])
        yield b
        b.close()


@contextmanager
def opened(browser, folder: Path, csp_violations_expected: bool = False):
    """The report's page, opened from file://; on leaving, no page error, and every request was a file: URL."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    requests, errors, blocked = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    def route(r):
        if r.request.url.startswith("file:"):
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    page.route("**/*", route)
    t0 = time.perf_counter()
    page.goto((folder / "index.html").as_uri())
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    page.wall_load_s = time.perf_counter() - t0
    try:
        yield page
        if not csp_violations_expected:
            assert errors == []
        assert requests and all(u.startswith("file:") for u in requests), [u for u in requests if not u.startswith("file:")]
        assert blocked == []
    finally:
        page.close()


def count(page) -> int:
    return int(page.get_attribute("#count", "data-count"))


def timed(page, script: str) -> float:
    """Milliseconds from an input event to the rendered list, its layout included (measured inside the page)."""
    return page.evaluate("() => { const t = performance.now(); (() => { %s })(); "
                         "document.body.getBoundingClientRect(); return performance.now() - t; }" % script)


def set_select(page, sel: str, value) -> None:
    page.select_option(sel, str(value))


# ------------------------------------------------------------------------------------------------ full size


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    d = tmp_path_factory.mktemp("report_full")
    qa = ferbench_qa()
    a = write_run(d / "a", qa, seed=0)
    b = write_run(d / "b", qa, seed=1)
    t0 = time.perf_counter()
    summary = write_report(a, d / "report", image_root=d / "no-images", compare=b, names=("run A", "run B"))
    summary["build_s"] = time.perf_counter() - t0
    return {"dir": d, "a": a, "b": b, "summary": summary, "qa": qa}


def test_full_ferbench_loads_and_filters_within_the_limits(browser, full, capsys):
    s = full["summary"]
    assert s["items"] == 11072
    with opened(browser, s["out"]) as page:
        ready_s = page.evaluate("window.__report.readyMs") / 1000
        times = {
            "set": timed(page, "const e = document.getElementById('f-set'); e.value = '2'; e.dispatchEvent(new Event('change'));"),
            "hedged": timed(page, "const e = document.getElementById('f-hedged'); e.checked = true; e.dispatchEvent(new Event('change'));"),
            "wrong": timed(page, "const e = document.getElementById('f-correct'); e.value = 'wrong'; e.dispatchEvent(new Event('change'));"),
            "search": timed(page, "const e = document.getElementById('f-search'); e.value = 'CHEEKS'; e.dispatchEvent(new Event('input'));"),
            "reset": timed(page, "document.getElementById('f-reset').click();"),
            "cell": timed(page, "document.querySelector('#matrix button.cell').click();"),
            "runs": timed(page, "const e = document.getElementById('f-runs'); e.checked = true; e.dispatchEvent(new Event('change'));"),
        }
        size_mb, m = s["bytes"] / 1e6, margin()
        with capsys.disabled():  # the measured figures, on every run, even when pytest captures output
            print(f"\nfull FERBench report: {s['items']} items, build {s['build_s']:.1f} s, folder {size_mb:.1f} MB "
                  f"(with --compare); load {ready_s * 1000:.0f} ms in the page ({page.wall_load_s * 1000:.0f} ms "
                  "wall clock with Playwright); filters (ms): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
                  + f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, limits × {m:.1f}")
        assert ready_s < LOAD_LIMIT_S * m
        assert max(times.values()) < FILTER_LIMIT_MS * m
        assert size_mb < 30
        # The search matched case-insensitively, and the listed items really hold the text.
        page.click("#f-reset")
        page.fill("#f-search", "cheeks")
        n = count(page)
        ours, theirs = (json.loads(full[run]["affectnet"].read_text()) for run in ("a", "b"))
        expected = sum("cheeks" in a["model_response"].lower() or "cheeks" in b["model_response"].lower()
                       for a, b in zip(ours, theirs))  # the search reads both runs' responses
        assert n == expected > 0  # set AffectNet is still chosen: reset keeps the view
        assert all("cheeks" in t.lower() for t in page.locator("#list article.item").all_text_contents())


def test_the_table_is_eval_totals_table_cell_for_cell(browser, full, tmp_path):
    from unifer.scoring.cli import total_main

    argv = [a for key, path in full["a"].items() for a in (FLAGS[key], str(path))]
    assert total_main(argv + ["--output", str(tmp_path / "t_results.json"), "--no-figs"]) == 0
    md = (tmp_path / "t_table.md").read_text().splitlines()
    expected = [[c.strip() for c in line.strip("|").split("|")] for line in md if line.startswith("|")]
    expected = [expected[0]] + expected[2:]
    with opened(browser, full["summary"]["out"]) as page:
        shown = page.evaluate("() => [...document.querySelectorAll('#table tr')].map(tr => "
                              "[...tr.children].map(c => c.textContent))")
        assert shown == expected
        assert any("Total (pooled)" == row[0] for row in shown) and "Acc (strict)" in shown[0]


# ------------------------------------------------------------------------------------------------ small runs


PAYLOADS = [
    "<script>window.__pwned = 1; document.title = 'pwned'</script><answer>happiness</answer>",
    "<img src=x onerror=\"window.__pwned = 2; document.title = 'pwned'\"><answer>fear</answer>",
    "</script><script>window.__pwned = 3</script><!-- <answer>anger</answer>",
    "<svg onload=\"window.__pwned = 4\"></svg><iframe src=\"javascript:window.__pwned=5\"></iframe> sad face",
    "\u2028\u2029<b onmouseover=alert(1)>bold</b> <answer>surprise & <i>disgust</i></answer>",
    "a lone surrogate \ud800 and an astral 😀 <answer>neutral</answer>",
]


@pytest.fixture(scope="module")
def small(tmp_path_factory, photos):
    """A run of 21 items per set over real photos (one missing, one broken), with injection payloads."""
    d = tmp_path_factory.mktemp("report_small")
    root = d / "images"
    (root / "faces").mkdir(parents=True)
    qa = {}
    for k, (key, s) in enumerate(SETS.items()):
        records = []
        for i in range(21):
            photo = photos[(k * 21 + i) % len(photos)]
            name = f"faces/{key}_{i}{photo.path.suffix}"
            shutil.copyfile(photo.path, root / name)
            records.append({"image_path": "/" + name, "true_label": s.labels[i % len(s.labels)], "prompt": s.prompt,
                            "candidate_labels": list(s.labels)})
        qa[key] = records
    (root / "faces" / "rafdb_1.jpg").unlink()  # missing
    (root / "faces" / "rafdb_2.jpg").write_bytes(b"not an image")  # unreadable
    qa["rafdb"][3]["image_path"] = "/faces/\"><img src=x onerror=window.__pwned=6>.jpg"
    extra = {("rafdb", i): p for i, p in enumerate(PAYLOADS, start=4)}
    a = write_run(d / "a", qa, seed=3, extra=extra)
    b = write_run(d / "b", qa, seed=4)
    summary = write_report(a, d / "report", image_root=root, compare=b, names=("GRPO <b>x</b>", "SFT"),
                           title="<script>window.__pwned = 7</script> report")
    return {"dir": d, "a": a, "b": b, "summary": summary, "root": root}


def test_a_confusion_cell_lists_exactly_its_items(browser, small):
    records = load_results(small["a"]["ferplus"], SETS["ferplus"])
    report = score_set(records, SETS["ferplus"], "strict")
    with opened(browser, small["summary"]["out"]) as page:
        set_select(page, "#f-set", 1)  # FERPlus
        set_select(page, "#f-protocol", 1)  # strict
        cells = page.locator("#matrix button.cell")
        labels = report["labels"]
        for r, truth in enumerate(labels):
            for c, pred in enumerate(labels + ["unknown"]):
                want = report["confusion_matrix"][r][c] if c < len(labels) else report["unknown_per_class"][r]
                if want == 0 and (r + c) % 3:
                    continue  # every non-empty cell, and a third of the empty ones
                cells.nth(r * (len(labels) + 1) + c).click()
                assert count(page) == want, (truth, pred)
                for card in page.locator("#list article.item").all():
                    text = card.text_content()
                    assert f"true: {truth}" in text and f"strict: {pred}" in text
        # The pooled view: every cell of the pooled matrix equals score_total's (eval_total's numbers).
        total = score_total({k: load_results(p, SETS[k]) for k, p in small["a"].items()}, "strict")
        want = [n for r, row in enumerate(total["confusion_matrix"]) for n in [*row, total["unknown_per_class"][r]]]
        set_select(page, "#f-set", -1)
        cells = page.locator("#matrix button.cell")
        assert [int(t) for t in cells.all_inner_texts()] == want
        cells.first.click()
        assert count(page) == want[0]


def test_filters_and_search_select_what_they_say(browser, small):
    recs = json.loads(small["a"]["rafdb"].read_text())
    ok = [r for r in recs if not r.get("error")]
    with opened(browser, small["summary"]["out"]) as page:
        set_select(page, "#f-set", 0)  # RAF-DB
        assert count(page) == len(recs)
        page.check("#f-hedged")
        assert count(page) == sum(is_hedged(r["model_response"], "rafdb") for r in ok) > 0
        page.uncheck("#f-hedged")
        page.check("#f-noanswer")
        assert count(page) == sum(not ANSWER_PATTERN.search(r["model_response"]) for r in ok) > 0
        page.uncheck("#f-noanswer")
        page.check("#f-disagree")
        assert count(page) == sum(extract_label(r["model_response"], "rafdb", "paper") !=
                                  extract_label(r["model_response"], "rafdb", "strict") for r in ok)
        page.uncheck("#f-disagree")
        page.select_option("#f-correct", "right")
        right = sum(extract_label(r["model_response"], "rafdb") == r["true_label"] for r in ok)
        assert count(page) == right
        page.select_option("#f-truth", label="fear")
        assert count(page) == sum(extract_label(r["model_response"], "rafdb") == r["true_label"] == "fear" for r in ok)
        page.click("#f-reset")
        page.select_option("#f-errors", "only")
        assert count(page) == sum(bool(r.get("error")) for r in recs)
        page.click("#f-reset")
        page.fill("#f-search", "onerror=")
        assert count(page) == 1
        assert page.locator("#list mark").first.inner_text() == "onerror="
        # With --compare: the items on which the runs disagree, both responses side by side.
        page.fill("#f-search", "")
        page.click("#stat-runs button")  # the statistics' link: every disagreement, other filters cleared
        assert page.is_checked("#f-runs") and page.input_value("#f-search") == ""
        theirs = json.loads(small["b"]["rafdb"].read_text())
        differ = sum((None if a.get("error") else extract_label(a["model_response"], "rafdb")) !=
                     (None if b.get("error") else extract_label(b["model_response"], "rafdb"))
                     for a, b in zip(recs, theirs))
        assert count(page) == differ > 0
        first = page.locator("#list article.item").first
        assert first.locator(".runs.two .run").count() == 2
        assert first.locator(".run h3").all_text_contents() == ["GRPO <b>x</b>", "SFT"]


def test_model_text_is_shown_as_text_and_runs_nothing(browser, small):
    data = (small["summary"]["out"] / "data.js").read_text(encoding="utf-8")
    for raw in ("</script", "<!--", "<img", "\u2028", "\u2029"):
        assert raw not in data
    with opened(browser, small["summary"]["out"]) as page:
        set_select(page, "#f-set", 0)
        page.fill("#f-search", "window.__pwned")
        assert count(page) == 4  # the responses of payloads 1-4 (search reads responses, not paths)
        page.fill("#f-search", "")
        text = page.locator("#list").text_content()  # RAF-DB's 21 items fit on the first page
        for payload in PAYLOADS[:-1]:
            assert payload.split("<answer>")[0].strip() in text
        assert "a lone surrogate \ud800 and an astral 😀" in text  # kept exactly, the lone half too
        assert "\"><img src=x onerror=window.__pwned=6>.jpg" in text
        assert page.evaluate("window.__pwned") is None
        assert page.title() == "<script>window.__pwned = 7</script> report"
        assert page.locator("img[src='x'], #list script, #list iframe, #list svg, #list b").count() == 0
        assert page.locator(".run h3").first.inner_text() == "GRPO <b>x</b>"

    # And the Content-Security-Policy would stop injected script even if the page had a bug that let markup in.
    with opened(browser, small["summary"]["out"], csp_violations_expected=True) as page:
        violations = page.evaluate("""() => new Promise(done => {
            const seen = [];
            document.addEventListener('securitypolicyviolation', e => seen.push(e.violatedDirective));
            const box = document.getElementById('list');
            box.insertAdjacentHTML('beforeend', '<img src=x onerror="window.__pwned = 8">');
            const s = document.createElement('script'); s.textContent = 'window.__pwned = 9'; box.appendChild(s);
            setTimeout(() => done(seen), 300);
        })""")
        assert page.evaluate("window.__pwned") is None
        assert any(v.startswith("script-src") for v in violations), violations


def test_thumbnails_of_real_photos_and_placeholders(browser, small):
    from PIL import Image

    out = small["summary"]["out"]
    thumbs = sorted((out / "thumbs").glob("*.jpg"))
    assert small["summary"]["thumbnails"] == len(thumbs) == 4 * 21 - 3  # missing, unreadable, odd path
    for t in thumbs:
        with Image.open(t) as im:
            assert im.format == "JPEG" and max(im.size) <= 96
    print(f"\nthumbnails: {len(thumbs)}, mean {sum(t.stat().st_size for t in thumbs) / len(thumbs):.0f} bytes")
    with opened(browser, out) as page:
        set_select(page, "#f-set", 0)
        cards = page.locator("#list article.item")
        assert cards.nth(0).locator("img.face").evaluate("i => i.complete && i.naturalWidth > 0")
        for missing in (1, 2, 3):
            assert cards.nth(missing).locator(".face.placeholder").text_content() == "no image"
            assert cards.nth(missing).locator("img").count() == 0


# ------------------------------------------------------------------------------------------------ command line


def test_unifer_report_by_run_name_and_its_errors(tmp_path):
    home = tmp_path / "home"
    qa = {k: [{"image_path": f"/{k}/{i}.jpg", "true_label": s.labels[i % len(s.labels)], "prompt": s.prompt,
               "candidate_labels": list(s.labels)} for i in range(9)] for k, s in SETS.items()}
    for run, seed in (("mine", 0), ("theirs", 1)):
        paths = write_run(home / "tmp", qa, seed)
        for key, p in paths.items():
            dest = home / f"eval_{key}" / "results" / f"{key}_{run}_results.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            p.rename(dest)
    env = dict(os.environ, UNIFER_HOME=str(home))

    def unifer(*args):
        return subprocess.run([sys.executable, "-m", "unifer", "report", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    res = unifer("--run", "mine", "--compare", "theirs")
    assert res.returncode == 0, res.stderr
    index = home / "eval_total" / "results" / "report_mine" / "index.html"
    assert index.is_file() and index.as_uri() in res.stdout
    data = (index.parent / "data.js").read_text()
    assert '"runs":["mine","theirs"]' in data and (index.parent / "report.js").is_file()
    res = unifer("--run", "mine")  # a second build replaces the first
    assert res.returncode == 0 and '"compare":null' in (index.parent / "data.js").read_text()

    for args, message in [
        (("--run", "nobody"), "results file"),
        (("--run", "mine", "--compare", "a", "b"), "--compare takes a run name or 4 results files"),
        (("--run", "mine", "--out", str(home / "eval_rafdb")), "exists and is not a report folder"),
        (("--run", "mine", "--thumb-size", "-1"), "--thumb-size"),
    ]:
        res = unifer(*args)
        assert res.returncode == 2 and res.stderr.startswith("error: ") and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert (home / "eval_rafdb" / "results").is_dir()  # the refused --out was left alone


def test_hedged_means_two_answer_tags_or_two_labels_in_the_answer():
    assert is_hedged("<answer>happy or surprise</answer>", "ferplus")
    assert is_hedged("<answer>sad, maybe ANGRY</answer>", "ferplus")
    assert is_hedged("<answer>happy</answer> then <answer>sad</answer>", "ferplus")
    assert not is_hedged("<answer>happiness / joy</answer>", "rafdb")  # a synonym counts as its label
    assert not is_hedged("<answer>unhappy</answer>", "ferplus")  # whole words: "unhappy" is sad, not happy
    assert not is_hedged("<think>happy or sad?</think><answer>sad</answer>", "ferplus")
    assert not is_hedged("no answer tag: happy or sad", "ferplus")


def test_the_page_files_are_package_data():
    from fnmatch import fnmatch

    import tomllib

    from unifer.report.build import ASSETS, asset_files

    globs = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["unifer.report"]
    shipped = [f.name for f in asset_files().iterdir()]
    assert set(ASSETS) <= set(shipped)
    assert all(any(fnmatch(f"assets/{name}", g) for g in globs) for name in shipped)


def test_the_page_never_parses_data_as_markup():
    """A guard beside the browser tests: no HTML-parsing sink in the script, no inline script or style in the page."""
    import re

    from unifer.report.build import asset_files

    code = asset_files().joinpath("report.js").read_text()
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"on", "setTimeout(\"", "createContextualFragment"):
        assert sink not in code, sink
    page = asset_files().joinpath("index.html").read_text()
    assert "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:" in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page) and "http://" not in page and "https://" not in page
