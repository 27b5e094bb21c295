"""Issue 21: what a user meets in the first hour (range monitor, run-dir lock, atomic writes, quick argument checks,
scores on the training scale)."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp


# -- the training-range monitor ---------------------------------------------------------------------------------
def _monitor_inputs():
    lo = np.zeros(6, np.float32)
    hi = np.array([3, 3, 0, 3, 0, 3], np.float32)  # genes 2 and 4: never expressed in training
    x = np.zeros((5, 6), np.float32)
    x[0, 2] = 1.5   # a training-constant gene expressed here: not extrapolation by itself
    x[1, 4] = 2.0
    x[2, 1] = 2.0   # inside the range
    x[3, 0] = 40.0  # far outside gene 0's range
    return lo, hi, x


@pytest.mark.parametrize("sparse", [False, True])
def test_range_monitor_ignores_genes_without_training_variance(sparse):
    from crossmodalnet.inference.predict import RangeMonitor

    lo, hi, x = _monitor_inputs()
    mon = RangeMonitor(lo, hi, [f"G{i}" for i in range(6)])
    names = [f"c{i}" for i in range(5)]
    if sparse:
        assert mon.update_sparse(sp.csr_matrix(x), 0, names)
    else:
        mon.update(x, 0, names)
    assert mon.n_cells == 1 and mon.worst[1:] == ("c3", 0, 40.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon.report(5, "new.h5ad")
    assert len(caught) == 1
    line = str(caught[0].message)
    assert "\n" not in line and line.startswith("1 of 5 cells of new.h5ad hold gene values far outside")
    assert "2 genes constant in the training cells (e.g. 'G2', 'G4') take other values here and are not counted" in line


def test_range_monitor_constant_genes_alone_are_one_info_line(caplog):
    from crossmodalnet.inference.predict import RangeMonitor

    lo, hi, x = _monitor_inputs()
    x[3, 0] = 1.0
    mon = RangeMonitor(lo, hi, [f"G{i}" for i in range(6)])
    mon.update(x, 0, None)
    assert mon.n_cells == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all
        with caplog.at_level(logging.INFO, logger="crossmodalnet"):
            mon.report(5, "new.h5ad")
    assert [r.getMessage() for r in caplog.records] == [
        "gene values of new.h5ad: 2 genes constant in the training cells (e.g. 'G2', 'G4') take other values here "
        "and are not counted"]


# -- the run-dir lock ---------------------------------------------------------------------------------------------
def test_lock_is_reentrant_and_refuses_another_process(tmp_path):
    import subprocess
    import sys

    from crossmodalnet.training.rundir import LOCK_FILE, lock_run_dir, unlock_run_dir

    lock = lock_run_dir(tmp_path)
    assert lock_run_dir(tmp_path) == lock == tmp_path.resolve() / LOCK_FILE  # the same process: re-entrant
    code = f"from crossmodalnet.training.rundir import lock_run_dir; lock_run_dir({str(tmp_path)!r})"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode != 0
    assert f"run dir {tmp_path.resolve()} is in use by another run: pid {__import__('os').getpid()} on host" in other.stderr
    unlock_run_dir(tmp_path)
    assert not lock.exists()
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_stale_lock_is_reported_and_taken_over(tmp_path, caplog):
    import json
    import subprocess
    import sys

    from crossmodalnet.training.rundir import LOCK_FILE, lock_run_dir, unlock_run_dir

    code = (f"import os; from crossmodalnet.training.rundir import lock_run_dir; lock_run_dir({str(tmp_path)!r}); "
            "print(os.getpid(), flush=True); os._exit(0)")  # ends without releasing: the file stays
    dead = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == dead
    with caplog.at_level(logging.WARNING, logger="crossmodalnet"):
        lock_run_dir(tmp_path)
    assert any(f"taking over the lock of a run that ended without finishing (pid {dead} on host" in r.getMessage()
               for r in caplog.records)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == __import__("os").getpid()
    unlock_run_dir(tmp_path)


@pytest.mark.slow
def test_second_train_py_into_a_running_dir_refuses_and_the_first_finishes(tmp_path):
    """Two real `python train.py` processes into one run dir: the second refuses in one line naming the first
    (pid, host, start), before Hydra writes anything; the first finishes with its own files untouched."""
    import json
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO_ROOT

    run, go = tmp_path / "run", tmp_path / "go"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, str(REPO_ROOT / "train.py"), f"hydra.run.dir={run}", "callbacks.progress_bar=null",
            "experiment=demo_fast", "torch_threads=1", "+plots=false"]
    first = subprocess.Popen([*base, "trainer.max_epochs=3", "+callbacks.hold._target_=crossmodalnet.training.hooks.HoldAtEpoch",
                              "+callbacks.hold.epoch=1", f"+callbacks.hold.release_file={go}", "+callbacks.hold.timeout=600"],
                             cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (run / "csv").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the first run is training (held before epoch 1)
        assert first.poll() is None, first.communicate()[1][-3000:]
        hydra_before = (run / ".hydra" / "overrides.yaml").read_text()
        second = subprocess.run([*base, "trainer.max_epochs=1", "seed=7"], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert second.returncode == 2, second.stderr[-3000:]
        lines = [l for l in second.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: run dir {run.resolve()} is in use by another run: "
                                                       f"pid {first.pid} on host "), second.stderr
        assert "started 20" in lines[0] and "Traceback" not in second.stderr
        assert (run / ".hydra" / "overrides.yaml").read_text() == hydra_before  # nothing of the second run
    finally:
        go.touch()
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] >= 1 and not (run / "run.lock").exists()  # finished: the dir is free again
    assert "seed=7" not in (run / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_killed_run_leaves_a_stale_lock_that_resume_takes_over(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    base = [sys.executable, str(REPO_ROOT / "train.py"), f"hydra.run.dir={run}", "callbacks.progress_bar=null",
            "experiment=demo_fast", "torch_threads=1", "+plots=false", "trainer.max_epochs=3"]
    killed = subprocess.run([*base, "+callbacks.kill._target_=crossmodalnet.training.hooks.KillAfterEpoch",
                             "+callbacks.kill.epoch=0"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (run / "run.lock").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    resumed = subprocess.run([*base, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock of a run that ended without finishing (pid" in resumed.stdout + resumed.stderr
    assert (run / "metrics.json").is_file() and not (run / "run.lock").exists()


# -- crossmodalnet-saliency writes into <run dir>/saliency, as its --help says ------------------------------------
@pytest.mark.parametrize("given", ["RUN", "RUN/", "RUN/checkpoints/best-epoch=003.ckpt", "RUN/model",
                                   "RUN/model/weights.ckpt", "RUN/checkpoints/ridge.joblib"])
def test_saliency_default_output_dir_is_the_run_dirs(tmp_path, given):
    from crossmodalnet.cli.saliency import _default_dir

    run = tmp_path / "RUN"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model").mkdir()
    (run / "config.yaml").write_text("seed: 0\n")
    path = tmp_path / given
    if path.suffix:
        path.write_text("x")
    assert _default_dir(path) == run / "saliency"


# -- commands check their arguments before the heavy imports ------------------------------------------------------
HEAVY = ("torch", "lightning", "scanpy", "anndata", "pandas")


def _run_and_list_heavy(tmp_path, call: str):
    import subprocess
    import sys

    code = ("import sys\n"
            f"try:\n    rc = {call}\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print('RC', rc, sorted({{k.split('.')[0] for k in sys.modules}} & set({HEAVY!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    return done


@pytest.mark.parametrize("module,argv,message", [
    ("crossmodalnet.cli.predict", ["--checkpoint", "RUN", "--input", "missing.h5ad", "--output", "p.h5ad"],
     "error: input file not found: missing.h5ad"),
    ("crossmodalnet.cli.predict", ["--checkpoint", "missing_run", "--input", "in.h5ad", "--output", "p.h5ad"],
     "error: --checkpoint not found: missing_run"),
    ("crossmodalnet.cli.saliency", ["--checkpoint", "missing_run", "--input", "in.h5ad"],
     "error: --checkpoint not found: missing_run"),
])
def test_console_scripts_check_paths_before_heavy_imports(tmp_path, module, argv, message):
    (tmp_path / "in.h5ad").write_text("not read")
    (tmp_path / "RUN").mkdir()
    done = _run_and_list_heavy(tmp_path, f"__import__({module!r}, fromlist=['main']).main({argv!r})")
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout.strip() == "RC 2 []", done.stdout + done.stderr


@pytest.mark.parametrize("override,message", [
    ("data.source.path=missing.h5ad", "error: data.source.path: file not found: missing.h5ad"),
    ("ckpt_path=missing.ckpt", "error: ckpt_path: checkpoint not found: missing.ckpt"),
])
def test_train_checks_input_paths_before_heavy_imports_and_writes_nothing(tmp_path, override, message):
    argv = ["train.py", "data=anndata", override, f"hydra.run.dir={tmp_path / 'run'}"]
    done = _run_and_list_heavy(tmp_path, "(setattr(sys, 'argv', %r), __import__('crossmodalnet.cli.train', "
                                         "fromlist=['main']).main())" % (argv,))
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout.strip().endswith("RC 2 []"), done.stdout + done.stderr
    assert not (tmp_path / "run").exists()  # checked before Hydra writes .hydra/ or the lock


def test_verbose_flag_is_not_passed_to_hydra(tmp_path):
    argv = ["train.py", "-v", "data=anndata", "data.source.path=missing.h5ad", f"hydra.run.dir={tmp_path / 'r'}"]
    done = _run_and_list_heavy(tmp_path, "(setattr(sys, 'argv', %r), __import__('crossmodalnet.cli.train', "
                                         "fromlist=['main']).main())" % (argv,))
    assert "error: data.source.path: file not found" in done.stderr, done.stderr


def test_quiet_default_hides_third_party_chatter_and_verbose_shows_it():
    from crossmodalnet.utils.quiet import set_verbosity

    try:
        set_verbosity(False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("ignore", message="xx-none")  # keep the filters set_verbosity installed
            warnings.warn("Tensorflow not installed; ParametricUMAP will be unavailable", ImportWarning)
            warnings.warn("The number of training batches (4) is smaller than the logging interval "
                          "Trainer(log_every_n_steps=10).", UserWarning)
            warnings.warn("a warning a user must see", UserWarning)
        assert [str(w.message) for w in caught] == ["a warning a user must see"]
        assert warnings.formatwarning("two\n  lines", UserWarning, "/x/y.py", 3) == "warning: two lines\n"
        assert logging.getLogger("lightning.pytorch").level == logging.WARNING
        set_verbosity(True)
        assert logging.getLogger("lightning.pytorch").level == logging.INFO
        assert "y.py:3" in warnings.formatwarning("m", UserWarning, "/x/y.py", 3)
    finally:
        set_verbosity(False)


# -- atomic writes ----------------------------------------------------------------------------------------------------
def test_a_writer_that_fails_midway_leaves_the_previous_file_and_no_temp(tmp_path):
    from crossmodalnet.utils.atomic import WriteError, atomic_path, atomic_write

    target = tmp_path / "pred.h5ad"
    target.write_text("the earlier, complete file")

    def half_then_fail(handle):
        handle.write("half of it")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError) as caught:
        atomic_write(target, half_then_fail)
    assert str(caught.value) == f"could not write {target}: no space left on device"
    assert target.read_text() == "the earlier, complete file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.h5ad"]  # no .partial left
    with pytest.raises(KeyError):  # any other failure: re-raised as it is, temp removed all the same
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyError("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.h5ad"]


def test_h5py_style_error_text_gives_a_one_line_cause():
    from crossmodalnet.utils.atomic import describe

    err = OSError("Can't synchronously write data (file write failed: time = Mon\n, filename = 'x', errno = 28, "
                  "error message = 'No space left on device')")
    assert describe(err) == "no space left on device"
    assert describe(OSError("something\nelse")) == "something else"


def test_unwritable_folder_is_one_line(tmp_path):
    import os

    from crossmodalnet.utils.atomic import WriteError, atomic_text

    if os.geteuid() == 0:
        pytest.skip("root may write into a read-only folder: EACCES cannot be provoked this way")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(WriteError, match=r"could not write .*ro/x.json: permission denied$"):
            atomic_text(folder / "x.json", "{}")
    finally:
        folder.chmod(0o700)


def test_written_files_keep_the_usual_permissions(tmp_path):
    import os

    from crossmodalnet.utils.atomic import atomic_text

    path = atomic_text(tmp_path / "a.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.fixture
def full_filesystem(tmp_path):
    """A 64 KiB tmpfs (needs root and mount permission; skipped with the reason otherwise)."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'mount failed'})")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_predict_onto_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, full_filesystem):
    import os
    import subprocess
    import sys

    from conftest import run_train

    from crossmodalnet.data.simulate import simulate_cite

    run_train(tmp_path, "experiment=demo_fast", "model=ridge", "torch_threads=1", "+plots=false")
    query = tmp_path / "query.h5ad"
    simulate_cite(n_cells=2000, n_genes=200, n_proteins=12, seed=0).write_h5ad(query)
    out = full_filesystem / "pred.h5ad"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "crossmodalnet.cli.predict", "--checkpoint", str(tmp_path / "run"),
                           "--input", str(query), "--output", str(out), "--time", "3", "--plots-dir", "none"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: could not write {out}: no space left on device"], done.stderr
    assert "Traceback" not in done.stderr and "NumExpr" not in done.stderr
    assert list(full_filesystem.iterdir()) == []  # no half-written pred.h5ad, no temp file


# -- predictions are scored on the training scale -------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("protein", ["dsb_no_empty", "clr"])
def test_raw_adt_counts_of_a_query_are_scored_on_the_training_scale(tmp_path, protein):
    import anndata as ad

    from conftest import run_train

    from crossmodalnet.data.query import Query
    from crossmodalnet.data.simulate import simulate_cite
    from crossmodalnet.inference.load import load_model
    from crossmodalnet.inference.outputs import predict_query

    run_train(tmp_path, "experiment=demo_fast", "model=ridge", "torch_threads=1", "+plots=false",
              f"data.preprocess.protein={protein}")
    model = load_model(tmp_path / "run")
    sim = simulate_cite(n_cells=300, n_genes=200, n_proteins=12, seed=0)  # demo_fast's data: the test cells in it
    test_cells = ad.read_h5ad(tmp_path / "run" / "predictions.h5ad")
    query = sim[test_cells.obs_names].copy()
    counts = query.obsm["protein_counts"]
    query.obsm["protein"] = counts.copy()  # what a user has: the raw ADT counts as the measured proteins
    del query.obsm["protein_counts"]
    pred, scores = predict_query(model, Query(query, query.obsm["protein"], query, "query.h5ad",
                                              protein_source="obsm['protein']"), time=3)
    # the training pipeline's own normalised values of these cells (predictions.h5ad, layers['measured'])
    expected = test_cells.layers["measured"]
    np.testing.assert_allclose(pred.layers["measured"], expected, rtol=1e-4, atol=1e-4)
    assert ("fitted dsb" if protein != "clr" else "CLR-normalised per cell") in scores["note"]
    mse_right = float(((pred.X - expected) ** 2).mean())
    assert scores["mse"] == pytest.approx(mse_right, rel=1e-4)
    as_given = float(((pred.X - counts.to_numpy()) ** 2).mean())
    assert as_given > 10 * mse_right  # what it printed before: another scale altogether


# -- the Python API writes what the command line writes ------------------------------------------------------------
@pytest.mark.slow
def test_fit_writes_train_log_absolute_paths_and_names_its_own_options(tmp_path, monkeypatch):
    import crossmodalnet
    from crossmodalnet.data.simulate import simulate_cite
    from crossmodalnet.errors import DataError

    data = tmp_path / "cite.h5ad"
    simulate_cite(n_cells=240, n_genes=100, n_proteins=8, seed=3).write_h5ad(data)
    monkeypatch.chdir(tmp_path)
    tiny = dict(max_epochs=2, latent_dim=16, dis_hidden=8, torch_threads=1, plots=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = crossmodalnet.fit(str(data), **tiny)  # no output_dir: where python train.py writes, under the cwd
    assert not [w for w in caught if "LeafSpec" in str(w.message) or "log_every_n_steps" in str(w.message)]
    assert run.run_dir.is_absolute() and run.run_dir.parent == tmp_path / "logs" / "runs"
    log_text = (run.run_dir / "train.log").read_text()
    assert "[crossmodalnet" in log_text and "time:" in log_text  # the run's own INFO lines, as on the command line
    assert not (run.run_dir / "run.lock").exists()
    with pytest.raises(DataError, match=r"already holds a finished run \(metrics.json\); choose a new dir "
                                        r"\(fit\(output_dir=\.\.\.\)\), or pass fit\(\.\.\., overwrite=True\)"):
        crossmodalnet.fit(str(data), output_dir=run.run_dir, **tiny)
    loaded = crossmodalnet.load(run.run_dir)
    sal = loaded.saliency(loaded.protein_names[0])  # no data=: the training file named in config.yaml
    assert loaded.protein_names[0] in sal.proteins


# -- LightGBM: progress lines, early stopping per protein -------------------------------------------------------------
def test_lightgbm_reports_progress_and_stops_each_protein_on_the_validation_cells(caplog):
    from crossmodalnet.baselines.lightgbm import LightGBMBaseline

    rng = np.random.default_rng(0)
    x = rng.normal(size=(260, 20)).astype(np.float32)
    y = np.column_stack([x[:, 0] * 2 + rng.normal(scale=0.1, size=260),   # learnable: many rounds help
                         rng.normal(size=260),                             # noise: stops early
                         x[:, 1] - x[:, 2] + rng.normal(scale=0.1, size=260)])
    model = LightGBMBaseline(n_iter=2, cv=2, search_proteins=2, log_every=2, max_rounds=150,
                             early_stopping_rounds=5, search_space={"num_leaves": [4, 7]},
                             final_rounds="validation")
    with caplog.at_level(logging.INFO, logger="crossmodalnet.baselines.lightgbm"):
        model.fit(x[:200], y[:200], x[200:], y[200:])
    lines = [r.getMessage() for r in caplog.records]
    assert [l.split(":")[0] for l in lines if l.startswith("lightgbm search ")][:2] == ["lightgbm search 1/2",
                                                                                        "lightgbm search 2/2"]
    assert any(l.startswith("lightgbm: 2/3 proteins fitted") for l in lines)
    assert any(l.startswith("lightgbm: 3/3 proteins fitted") for l in lines)
    assert model.rounds_[1] < model.rounds_[0]  # the noise protein stopped sooner than the learnable one
    pred = model.predict(x[200:])
    assert np.corrcoef(pred[:, 0], y[200:, 0])[0, 1] > 0.9
    default = LightGBMBaseline(n_iter=2, cv=2, search_proteins=2, max_rounds=150, early_stopping_rounds=5,
                               search_space={"num_leaves": [4, 7]}).fit(x[:200], y[:200], x[200:], y[200:])
    assert default.rounds_ == [default.search_rounds_] * 3  # final_rounds=search: the CV's best number for all


def test_svd_auto_keeps_the_genes_for_lightgbm():
    from hydra import compose, initialize_config_dir

    from crossmodalnet.training.run import _preprocess_settings
    from crossmodalnet.utils.config_dir import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=lightgbm", "data=anndata"])
    assert cfg.data.preprocess.svd_components == "auto" and _preprocess_settings(cfg)["svd_components"] is None


# -- figures a biologist reads -------------------------------------------------------------------------------------
def test_grid_names_the_scale_draws_intervals_and_legends_use_human_names(tmp_path):
    import pandas as pd

    from crossmodalnet.reporting import figures as plots

    rng = np.random.default_rng(0)
    names = [f"CD{i}" for i in range(12)]
    measured = pd.DataFrame(rng.normal(size=(80, 12)) * np.arange(1, 13), columns=names)
    predicted = measured + rng.normal(size=measured.shape)
    path = plots.plot_measured_vs_predicted_grid(measured, predicted, tmp_path / "grid.png", scale="CLR",
                                                 lower=predicted - 2, upper=predicted + 2, level=0.9)
    from PIL import Image

    text = Image.open(path).info["Description"]
    assert "measured (CLR)" in text and "predicted (CLR)" in text
    assert "CD11: r = " in text and "90% interval covers" in text  # the most variable protein is drawn
    assert "CD0: r" not in text  # the least variable of 12 is not among the 9
    assert plots.value_scale({"protein": "dsb_no_empty"}).startswith("dsb")
    assert plots.curve_name("train/nlc").startswith("NLC") and plots.curve_name("train/w_recon") == "weight of reconstruction"
    assert plots.curve_name("val/some_metric") == "some metric (validation)"


def test_cell_type_legend_lists_largest_first_and_other_last(tmp_path):
    from PIL import Image

    from crossmodalnet.reporting import figures as plots

    rng = np.random.default_rng(1)
    groups = np.array(["T"] * 30 + ["B"] * 40 + [f"rare{i}" for i in range(25) for _ in range(2)])
    x = rng.normal(size=len(groups))
    path = plots.plot_measured_vs_predicted(x, x + 0.1, "CD3", tmp_path / "one.png", cell_type=groups, scale="dsb")
    text = Image.open(path).info["Description"]
    legend = text[text.index("cell type"):]
    assert legend.index("B (n=40)") < legend.index("T (n=30)") < legend.index("other (")
    assert "measured CD3 (dsb)" in text
