"""The README's shell and Python snippets run as written (issue 21, item 9).

Every ```bash and ```python block of README.md is split into commands (one shell line, continuation lines joined;
a whole Python block) and each runs for real in a fresh process, in a scratch folder that holds what the snippets
name: a small simulated CITE-seq file under each file name the README uses (``new.h5ad``, ``data.h5ad``,
``my_cite.h5ad``, ``adata`` / ``query`` in Python), a trained run dir for ``RUN`` and ``logs/runs/<timestamp>``.
Only these stand-ins are substituted (``SUBSTITUTIONS``); nothing else in a snippet is changed, except that
``python train.py`` lines get ``torch_threads=1``, no progress bar and, where they name none, a run dir in the
scratch folder; the few full-length trainings get ``trainer.max_epochs=2`` (``SHORTENED``: the whole path runs,
only fewer epochs). A snippet that needs what a test cannot have (a download, a GPU, the shared real data where
absent, the test suite itself) is skipped with its reason (``SKIPS``); a README command that matches no rule and
fails, fails here.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared" / "data"
TIMEOUT = 900  # a hang guard only; no test asserts a wall-clock limit

# (pattern in the command, reason): the snippet is not run here
SKIPS: list[tuple[str, str]] = [
    (r"^make test", "runs the test suite (this file is part of it)"),
    (r"experiment=hspc", "needs the Kaggle HSPC download (docs/data.md)"),
    (r"trainer=ddp", "needs several GPUs"),
    (r"\[--", "a synopsis: [...] marks optional arguments, not a command"),
    (r"ray\.address=auto", "joins a running Ray cluster"),
]
# (pattern, reason): full-length trainings run with trainer.max_epochs=2 appended (the whole path, fewer epochs)
SHORTENED: list[tuple[str, str]] = [
    (r"^python train\.py(\s+experiment=synthetic_ood)?\s*$", "the default simulator trains up to 500 epochs"),
    (r"^python train\.py model\.latent_dim=256 trainer\.max_epochs=50", "50 epochs of the default data"),
    (r"^python train\.py data=anndata", "the default number of epochs"),
    (r"^python train\.py experiment=bmmc", "up to 500 epochs on BMMC"),
]
# the README's stand-ins for the user's files -> files the fixture writes (in the scratch folder, the cwd)
SUBSTITUTIONS = {
    r"\bRUN\b": "{run}",
    r"logs/runs/<timestamp>": "{run}",
}


@dataclass
class Snippet:
    lang: str
    line: int
    text: str

    @property
    def id(self) -> str:
        head = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return f"L{self.line}:{head[:60]}"


def readme_snippets(path: Path = README) -> list[Snippet]:
    """bash blocks -> one snippet per command (continuations joined, comment lines dropped); python -> whole block."""
    out: list[Snippet] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if not m or m.group(1) not in ("bash", "python"):
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if m.group(1) == "python":
            out.append(Snippet("python", start + 1, "\n".join(body)))
        else:
            command, first = "", None
            for n, raw in enumerate(body, start=start + 1):
                stripped = raw.strip()
                if not command and (not stripped or stripped.startswith("#")):
                    continue
                first = first or n
                joined = raw.rstrip()
                if joined.endswith("\\"):
                    command += joined[:-1] + " "
                    continue
                command += joined
                out.append(Snippet("bash", first, _strip_comment(command).strip()))
                command, first = "", None
        i += 1
    return out


def _strip_comment(line: str) -> str:
    """Drop a trailing `` # ...`` comment that is outside quotes."""
    cut = line.find(" #")
    while cut != -1:
        before = line[:cut]
        if before.count("'") % 2 == 0 and before.count('"') % 2 == 0:
            return before
        cut = line.find(" #", cut + 1)
    return line


def skip_reason(snippet: Snippet) -> str | None:
    for pattern, reason in SKIPS:
        if re.search(pattern, snippet.text):
            return reason
    if "trainer.accelerator=gpu" in snippet.text:
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU (none here)"
    if "experiment=bmmc" in snippet.text and not (SHARED / "bmmc_cite_starter").is_dir():
        return f"needs the shared BMMC files ({SHARED / 'bmmc_cite_starter'} is absent)"
    return None


SNIPPETS = readme_snippets()


def test_readme_has_snippets():
    """The parser finds the README's commands (a parser that finds nothing would make every test vacuous)."""
    bash = [s.text for s in SNIPPETS if s.lang == "bash"]
    assert any(t.startswith("python train.py experiment=demo_fast") for t in bash), bash
    assert any(t.startswith("crossmodalnet-predict") for t in bash), bash
    assert any(s.lang == "python" and "crossmodalnet.fit(" in s.text for s in SNIPPETS)


def test_comments_and_continuations_are_handled():
    assert _strip_comment("python train.py a=1   # a comment") == "python train.py a=1  "
    assert _strip_comment("python x.py 'b=[x # y]'") == "python x.py 'b=[x # y]'"


# -- the scratch folder ---------------------------------------------------------------------------------------------
PRELUDE = '''
import anndata as ad
adata = ad.read_h5ad("data.h5ad")
query = ad.read_h5ad("new.h5ad")
'''


def _write_inputs(folder: Path) -> None:
    """Small simulated CITE-seq files under the names the README uses (proteins renamed to marker names, so
    ``--protein CD38`` exists; obsm keys ``protein`` and ``protein_expression`` both present)."""
    from crossmodalnet.data.simulate import simulate_cite

    for name, seed in (("data.h5ad", 0), ("new.h5ad", 1), ("my_cite.h5ad", 2)):
        adata = simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=seed)
        proteins = adata.obsm["protein"]
        proteins.columns = ["CD38", "CD3", "CD4", "CD8a", "CD14", "CD19", "CD56", "CD16", "HLA-DR", "CD34",
                            "CD45RA", "CD11c"]
        adata.obsm["protein"] = proteins
        adata.obsm["protein_expression"] = proteins.copy()
        adata.obsm["protein_counts"].columns = proteins.columns
        adata.uns.pop("simulation", None)  # the ground truth names the old protein labels
        adata.write_h5ad(folder / name)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """cwd for the snippets: train.py and scripts/ linked in, input files, and one trained run dir (RUN)."""
    folder = tmp_path_factory.mktemp("readme")
    for name in ("train.py", "scripts", "notebooks", "configs", "Makefile", "pyproject.toml"):
        (folder / name).symlink_to(ROOT / name)
    _write_inputs(folder)
    run = folder / "trained_run"
    done = subprocess.run([sys.executable, "train.py", "data=anndata", "data.source.path=data.h5ad",
                           "data.time_key=day", "trainer.max_epochs=5", "torch_threads=1",
                           "callbacks.progress_bar=null", f"hydra.run.dir={run}"],
                          cwd=folder, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, run


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "WANDB_MODE": "offline",
            "PROJECT_ROOT": str(ROOT), "MPLBACKEND": "Agg"}


def _prepare(snippet: Snippet, run: Path, folder: Path) -> str:
    text = snippet.text
    for old, new in SUBSTITUTIONS.items():
        text = re.sub(old, new.format(run=run), text)
    if snippet.lang == "bash" and re.match(r"^python train\.py\b", text):
        if "hydra.run.dir=" not in text:
            text += f" hydra.run.dir={folder / 'runs' / f'L{snippet.line}'}"
        text += " torch_threads=1 callbacks.progress_bar=null"
        if any(re.search(p, snippet.text) for p, _ in SHORTENED):
            text += " trainer.max_epochs=2"
    if snippet.lang == "bash" and text.startswith("make "):
        text = text.replace("make ", "make -n ", 1)  # the target exists and says what it runs; it is not run
    return text


@pytest.mark.slow
@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_readme_snippet_runs(snippet: Snippet, workspace):
    reason = skip_reason(snippet)
    if reason:
        pytest.skip(reason)
    folder, run = workspace
    text = _prepare(snippet, run, folder)
    if snippet.lang == "python":
        cmd = [sys.executable, "-c", PRELUDE + f"ckpt = {str(run)!r}\n" + text]
    else:
        cmd = ["bash", "-c", text]
    done = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, (f"README line {snippet.line} failed:\n{text}\n--- stdout\n{done.stdout[-2000:]}"
                                  f"\n--- stderr\n{done.stderr[-4000:]}")
