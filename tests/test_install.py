"""A normal (non-editable) install can train: the wheel carries the configs, and the console script and
``crossmodalnet.fit`` work from a directory that has nothing to do with the repository."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the built wheel; third-party packages come from this interpreter's site-packages
    (added as a plain path, so the editable install's finder there is not activated)."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, cwd=root)
    wheel = next(dist.glob("crossmodalnet-*.whl"))
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-compile", "-q",
                    str(wheel)], check=True)
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["WANDB_MODE"] = "offline"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_wheel_trains_from_an_unrelated_directory(installed, tmp_path):
    python = installed / "bin" / "python"
    where = _run(installed, [str(python), "-c", "import crossmodalnet, sys; print(crossmodalnet.__file__)"], tmp_path)
    assert str(installed) in where.stdout, f"the wheel's package is not the one imported: {where.stdout}{where.stderr}"
    assert (Path(where.stdout.strip()).parent / "configs" / "train.yaml").is_file()

    cli = _run(installed, [str(installed / "bin" / "crossmodalnet-train"), "experiment=demo_fast", "torch_threads=1",
                           f"hydra.run.dir={tmp_path / 'cli_run'}"], tmp_path)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert (tmp_path / "cli_run" / "metrics.json").is_file()

    code = ("import crossmodalnet, anndata as ad\n"
            "from crossmodalnet.data.simulate import simulate_cite\n"
            "adata = simulate_cite(n_cells=300, n_genes=120, n_proteins=10, seed=0)\n"
            f"run = crossmodalnet.fit(adata, time_key='day', max_epochs=3, output_dir={str(tmp_path / 'api_run')!r})\n"
            "print('pearson', run.metrics['test/pearson_cell'])\n")
    api = _run(installed, [str(python), "-c", code], tmp_path)
    assert api.returncode == 0, api.stderr[-2000:]
    assert "pearson" in api.stdout and (tmp_path / "api_run" / "metrics.json").is_file()
