"""The fallback experiment's questions: the 70 English Vicuna questions of Tang et al. (method spec §6.6).

The paper's fallback analysis asks the English file of Tang et al.'s multilingual Vicuna set
(repository ``RUCAIBox/Language-Specific-Neurons``, ``data/mvicuna/en.txt``: one question per line).
The file is not shipped with lape-eval; :func:`load_questions` reads it from a local copy, or
downloads it from its raw URL (pinned to the commit that added it) into lape-eval's cache once. The
reference reads it with ``[line.strip() for line in f if line.strip()]``; so does this loader, so
literal backslashes in the file (``\\"Up\\"``) reach the prompt as they reach the reference's.
``bundled`` asks lape-eval's own English forcing questions instead: not the paper's protocol, and
only when asked for.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lape_eval.errors import LapeEvalError
from lape_eval.files import atomic_path
from lape_eval.models import cache_root

VICUNA_COMMIT = "e465a4644c52674c97d81e4d12a1fd21e97faa7a"
VICUNA_URL = (f"https://raw.githubusercontent.com/RUCAIBox/Language-Specific-Neurons/{VICUNA_COMMIT}/"
              "data/mvicuna/en.txt")
VICUNA_QUESTIONS = 70  # lines of the file at that commit
DEFAULT_SOURCE = "vicuna"  # the raw URL above, through the cache
BUNDLED = "bundled"


@dataclass(frozen=True)
class Questions:
    questions: list[str]
    source: str  # the file, URL or "bundled" they came from
    sha256: str  # of the questions joined by newlines (the same for a local copy and a download)

    def describe(self) -> dict:
        return {"source": self.source, "count": len(self.questions), "sha256": self.sha256}


def parse_lines(text: str) -> list[str]:
    """The questions of the file's text, as the reference reads them: stripped, blank lines skipped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_questions(source: str | Path | None = None, *, timeout: float = 30.0) -> Questions:
    """The English questions from ``source``: ``"vicuna"`` (default; the cached download of
    :data:`VICUNA_URL`), a local file in the same shape, an ``http(s)://`` URL, or ``"bundled"``."""
    source = str(source or DEFAULT_SOURCE)
    if source == BUNDLED:
        return _bundled()
    if source == DEFAULT_SOURCE:
        text, where = _cached_download(VICUNA_URL, timeout), VICUNA_URL
    elif source.startswith(("http://", "https://")):
        text, where = _download(source, timeout), source
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise LapeEvalError(
                f"The questions file {source!r} does not exist. Give a local copy of data/mvicuna/en.txt of "
                f"RUCAIBox/Language-Specific-Neurons (one question per line; {VICUNA_URL}), 'vicuna' to "
                f"download it, or '{BUNDLED}' for lape-eval's English forcing questions (not the paper's protocol)."
            )
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as error:
            raise LapeEvalError(f"The questions file {source!r} is not UTF-8 text ({error.reason} at byte "
                                f"{error.start}); give the file with one question per line, UTF-8.") from None
    questions = parse_lines(text)
    if not questions:
        raise LapeEvalError(f"The questions file {where} holds no question (every line is blank); give "
                            "data/mvicuna/en.txt of RUCAIBox/Language-Specific-Neurons or a file like it.")
    return Questions(questions, where, _digest(questions))


def _digest(questions: list[str]) -> str:
    return hashlib.sha256("\n".join(questions).encode("utf-8")).hexdigest()


def _bundled() -> Questions:
    from lape_eval.evaluation.data import forcing_questions

    questions = [row["en"] for row in forcing_questions() if row.get("en")]
    return Questions(questions, BUNDLED, _digest(questions))


def _cached_download(url: str, timeout: float) -> str:
    cached = cache_root() / "mvicuna" / f"en-{VICUNA_COMMIT[:12]}.txt"
    if cached.is_file():
        return cached.read_text(encoding="utf-8")
    text = _download(url, timeout)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cached) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    return text


def _download(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (a URL the user chose)
            return response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "reason", None) or error
        raise LapeEvalError(
            f"Could not download the Vicuna questions from {url} ({reason}). Offline, give a local copy with "
            f"--questions PATH (the file data/mvicuna/en.txt of RUCAIBox/Language-Specific-Neurons, one question "
            f"per line), or --questions {BUNDLED} for lape-eval's ten English forcing questions (not the paper's "
            "protocol)."
        ) from None
