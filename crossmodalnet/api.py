"""The Python API: ``crossmodalnet.fit``, ``crossmodalnet.load`` and the :class:`Run` they return.

``fit`` composes the project's Hydra config (``configs/train.yaml``, exactly what ``crossmodalnet-train`` /
``python train.py`` compose) with your data and overrides and calls :func:`crossmodalnet.training.run.train`: there is
no second training path, and the run dir it writes is the one the command line writes.

    import crossmodalnet
    run = crossmodalnet.fit(adata, protein_key="protein_expression", time_key="day", max_epochs=50)
    pred = run.predict(query, time=3)          # AnnData: cells x proteins, the query's obs/obsm kept
    sal = run.saliency("CD38")                 # which genes drive CD38
    run = crossmodalnet.load("runs/my_run")    # any saved model: CrossmodalNet, MLP, or a baseline's .joblib
"""
from __future__ import annotations

import json
import logging
import time as _time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from crossmodalnet.errors import DataError

if TYPE_CHECKING:
    from anndata import AnnData

    from crossmodalnet.interpret.saliency import SaliencyResult

log = logging.getLogger("crossmodalnet")

# short names a user would type -> their place in the config
ALIASES = {
    "max_epochs": "trainer.max_epochs", "min_epochs": "trainer.min_epochs", "accelerator": "trainer.accelerator",
    "devices": "trainer.devices", "patience": "callbacks.early_stopping.patience",
    "holdout_time": "data.holdout_time", "time_order": "data.time_order", "time_categorical": "data.time_categorical",
    "batch_size": "data.batch_size", "split": "data.split", "plots": "plots",
}
# where a plain keyword is looked for, in order (first hit wins)
SEARCH = ("", "data", "model", "data.preprocess", "trainer", "data.source")

# in-memory data handed to fit(): the config names it by key (crossmodalnet.api.in_memory)
_MEMORY: dict[str, Any] = {}


def in_memory(key: str, **options: Any):
    """Data source of a run started from Python with an object: the canonical AnnData of that object."""
    from crossmodalnet.data.sources import canonical

    if key not in _MEMORY:
        raise DataError(f"the in-memory data of this config ({key}) is gone: it was passed to crossmodalnet.fit() in "
                        "another Python session; write it to an .h5ad/.h5mu and set data.source.path to re-run")
    return canonical(_MEMORY[key], where="the AnnData/MuData passed to fit()", **options)


def fit(
    data: Any,
    protein_key: str = "protein",
    time_key: str | None = "day",
    model: str = "crossmodalnet",
    output_dir: str | Path | None = None,
    *,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
    protein_names_key: str | None = None,
    protein_table: str | Path | None = None,
    rna_mod: str = "rna",
    protein_mod: str = "prot",
    rna_layer: str | None = None,
    counts_layer: str | None = "counts",
    **params: Any,
) -> "Run":
    """Train a model on paired RNA + protein data through the same ``train(cfg)`` as ``crossmodalnet-train``.

    Args:
        data: an AnnData (genes in X, proteins in ``obsm[protein_key]``), a MuData (``rna_mod`` + ``protein_mod``
            modalities; the time may be in ``mdata.obs``), a path to an .h5ad/.h5mu file, or a pair of paths
            ``(rna.h5ad, protein.h5ad)`` holding the same cells.
        protein_key: obsm key of the proteins (a DataFrame, or an array named by ``uns[protein_names_key]``).
        time_key: obs column with each cell's time point or condition; None for data without times.
        model: a model config name: crossmodalnet, mlp_mse, mlp_nlc, linear, ridge, svd_ridge, lightgbm, scipenn.
        output_dir: the run dir (default: ``logs/runs/<timestamp>`` in the working directory, where
            ``python train.py`` writes too); ``Run.run_dir`` is always absolute. The run's log goes to
            ``<run dir>/train.log``, as on the command line.
        experiment: an experiment config (``configs/experiment``), applied before everything else here.
        overrides: Hydra override strings, e.g. ``["data.preprocess.rna=log_normalize"]``.
        protein_names_key: uns key listing the protein names of an array in ``obsm[protein_key]``.
        protein_table: a CSV/TSV of cells x proteins keyed by barcode, instead of ``obsm[protein_key]``.
        rna_mod: MuData modality with the genes.
        protein_mod: MuData modality with the proteins.
        rna_layer: layer with the genes (None: X).
        counts_layer: layer with raw RNA counts, used by ``rna="log_normalize"``.
        **params: any config value by name: ``max_epochs=50``, ``latent_dim=256``, ``lr=1e-3``,
            ``rna="log_normalize"``, ``protein="clr"``, ``time_order=[...]``, ``time_categorical=True``,
            ``torch_threads=1``, ``seed=1``; dotted names as ``model__latent_dim``. ``verbose=True`` (not a
            config value) lets Lightning's and other libraries' messages through, as ``-v`` on the command line.

    Returns:
        The trained :class:`Run` (metrics, run dir, predict, saliency).
    """
    from omegaconf import OmegaConf, open_dict

    from crossmodalnet.training.run import train

    verbose = bool(params.pop("verbose", False))  # Lightning's and other libraries' messages too
    group_overrides = [f"model={model}", *([f"experiment={experiment}"] if experiment else []), "data=anndata"]
    cfg = _compose([*group_overrides, *overrides])
    run_dir = _run_dir(output_dir)
    _check_run_dir(run_dir, overwrite=bool(params.get("overwrite", False)))
    key = None
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.data.time_key = time_key
        source = cfg.data.source
        _drop_foreign_source_keys(source)
        source.protein_key = protein_key
        source.protein_names_key = protein_names_key
        source.protein_table = None if protein_table is None else str(protein_table)
        source.rna_mod, source.protein_mod = rna_mod, protein_mod
        source.rna_layer, source.counts_layer = rna_layer, counts_layer
        if isinstance(data, (str, Path)):
            source.path = str(Path(data).expanduser())
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, (str, Path)) for d in data):
            source.rna_path, source.protein_path = (str(Path(d).expanduser()) for d in data)
        else:
            key = f"fit-{uuid.uuid4().hex[:12]}"
            _MEMORY[key] = data
            options = {k: v for k, v in OmegaConf.to_container(source).items()
                       if k not in ("_target_", "path", "rna_path", "protein_path", "protein_layer")}
            cfg.data.source = OmegaConf.create({"_target_": "crossmodalnet.api.in_memory", "key": key, **options})
        for name, value in params.items():
            OmegaConf.update(cfg, _config_path(cfg, name), value, merge=False)
    from crossmodalnet.training.rundir import unlock_run_dir

    from crossmodalnet.utils.quiet import quiet_third_party

    handler = _train_log(run_dir)  # run_dir/train.log, as Hydra writes it for the command line
    try:
        with quiet_third_party(verbose):  # no Lightning chatter, as on the command line
            metrics = train(cfg)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        unlock_run_dir(run_dir)  # also after a failure: this process no longer trains in it
        if key is not None:
            _MEMORY.pop(key, None)
    from crossmodalnet.inference.load import load_trained

    trained = load_trained(run_dir)
    return Run(trained, run_dir=run_dir, metrics=metrics, config=cfg,
               data=data[0] if isinstance(data, (tuple, list)) else data,  # saliency: the RNA file of a pair
               data_options={"rna_mod": rna_mod, "protein_mod": protein_mod})


def load(path: str | Path) -> "Run":
    """Any model ``train()`` saved, ready to predict: a run dir, its ``model/`` folder, or a file of the run (its best
    checkpoint, the baseline's ``model.joblib``). The run's metrics and config come along."""
    from crossmodalnet.inference.load import load_trained, resolve_model_path

    folder = resolve_model_path(path)  # <run dir>/model
    run_dir = folder.parent
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    config = None
    if (run_dir / "config.yaml").is_file():
        from omegaconf import OmegaConf

        config = OmegaConf.load(run_dir / "config.yaml")
    data, options = _training_data(config)
    return Run(load_trained(folder), run_dir=run_dir, metrics=metrics, config=config, data=data,
               data_options=options)


class Run:
    """A trained model and its run: ``metrics`` (metrics.json), ``run_dir``, ``model``, ``config``.

    ``predict`` and ``saliency`` accept the same inputs as training (AnnData, MuData, .h5ad/.h5mu path).
    """

    def __init__(self, model: Any, run_dir: Path | None = None, metrics: dict | None = None, config: Any = None,
                 data: Any = None, data_options: dict | None = None) -> None:
        self.model = model
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.metrics = dict(metrics or {})
        self.config = config
        self._data = data
        self._data_options = dict(data_options or {})

    @property
    def protein_names(self) -> list[str]:
        """The proteins the model predicts, in output order."""
        return list(self.model.protein_names)

    @property
    def gene_names(self) -> list[str]:
        """The genes the model reads (a query's genes are matched to these by name)."""
        return list(self.model.gene_names)

    @property
    def learned_times(self) -> list:
        """The time points (or conditions) seen in training; empty for a model without time input."""
        return list(self.model.time_axis.labels) if getattr(self.model, "uses_time", True) else []

    def predict(self, query: Any, time: Any = None, time_key: str | None = None, *,
                protein_key: str | None = None, protein_names_key: str | None = None,
                protein_table: str | Path | None = None, rna_mod: str = "rna", protein_mod: str = "prot",
                add_to_input: bool = False, score: bool = True, **kwargs: Any) -> "AnnData":
        """Predicted proteins for the cells of ``query`` (AnnData, MuData or .h5ad/.h5mu path).

        Args:
            query: the cells; genes are matched to the model's by name.
            time: one time for every cell (an unseen time between numeric learned ones is interpolated;
                categorical conditions are never interpolated).
            time_key: obs column with each cell's time (default: the training column when present).
            protein_key: obsm key of measured proteins to score against (default: tried when present).
            protein_names_key: uns key of their names when they are an array.
            protein_table: CSV/TSV of measured proteins keyed by barcode.
            rna_mod: MuData modality with the genes.
            protein_mod: MuData modality with measured proteins.
            add_to_input: also put the predictions into ``query`` (``obsm["protein_predicted"]`` of an AnnData, or
                the ``prot_pred`` modality of a MuData), in place.
            score: score against measured proteins when the query has them.
            **kwargs: passed to :func:`crossmodalnet.inference.predict.predict` (``time_mode``, ``layer``, ``interval``, ...).

        Returns:
            Cells x proteins; the query's obs, obsm and uns kept; the training normalisation and, for a
                labelled query, the scores in ``uns["crossmodalnet"]`` (per protein in ``var``, per cell in ``obs``).
        """
        from crossmodalnet.data.query import read_query
        from crossmodalnet.inference.outputs import add_to_input as _add, predict_query

        q = read_query(query, protein_key=protein_key, protein_names_key=protein_names_key,
                       protein_table=protein_table, rna_mod=rna_mod, protein_mod=protein_mod,
                       backed=not add_to_input)
        try:
            pred, _ = predict_query(self.model, q, score_measured=score, time=time, time_key=time_key, **kwargs)
        finally:
            if isinstance(query, (str, Path)):
                q.close()
        if add_to_input:
            if isinstance(query, (str, Path)):
                raise DataError("add_to_input needs an in-memory AnnData/MuData, not a path")
            _add(query, pred)
        return pred

    def saliency(self, protein: str | Iterable[str] | None = None, data: Any = None,
                 **kwargs: Any) -> "SaliencyResult":
        """Saliency of the model's genes for ``protein`` (a name, a list, or None = all) over ``data``'s cells
        (default: the data the model was fitted on). Returns a
        :class:`~crossmodalnet.interpret.saliency.SaliencyResult` (``.top(protein)``, ``.ranking(protein)``).

        Args:
            protein: protein name(s); None for all.
            data: AnnData, MuData or .h5ad/.h5mu path (default: the data given to ``fit``).
            **kwargs: passed to :func:`crossmodalnet.interpret.saliency.saliency` (``time``, ``time_key``,
                ``max_cells``, ``method``, ...).
        """
        from crossmodalnet.data.query import read_query
        from crossmodalnet.interpret.saliency import saliency

        data = self._data if data is None else data
        if data is None:
            raise DataError("saliency needs cells: this run's training data cannot be read back (it was an "
                            "in-memory AnnData, or its file is gone); pass data=<AnnData, MuData or .h5ad/.h5mu "
                            "path>")
        q = read_query(data, rna_mod=kwargs.pop("rna_mod", self._data_options.get("rna_mod", "rna")),
                       protein_mod=self._data_options.get("protein_mod", "prot"), default_protein_keys=())
        try:
            return saliency(self.model, q.rna, protein, where=q.where, **kwargs)
        finally:
            if isinstance(data, (str, Path)):
                q.close()

    def __repr__(self) -> str:
        kind = type(getattr(self.model, "baseline", self.model)).__name__
        main = {k: round(v, 4) for k, v in self.metrics.items() if k in ("test/pearson_cell", "test/mse")}
        return (f"Run({kind}: {len(self.gene_names)} genes -> {len(self.protein_names)} proteins, "
                f"times {self.learned_times}, run_dir={str(self.run_dir)!r}, {main})")


# -- helpers -------------------------------------------------------------------------------------------------------
def _run_dir(output_dir: str | Path | None) -> Path:
    """The run dir, absolute: ``output_dir``, or ``logs/runs/<timestamp>`` under the working directory, the
    folder ``python train.py`` / ``crossmodalnet-train`` use (``_2``, ``_3``, ... when two start in one second)."""
    if output_dir is not None:
        return Path(output_dir).expanduser().resolve()
    base = Path.cwd() / "logs" / "runs" / _time.strftime("%Y-%m-%d_%H-%M-%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def _check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """fit's own words for the run-dir checks of train() (a finished run, a run in progress)."""
    from crossmodalnet.training.rundir import RunDirInUse, finished, lock_run_dir

    if finished(run_dir) and not overwrite:
        raise DataError(f"run dir {run_dir} already holds a finished run (metrics.json); choose a new dir "
                        "(fit(output_dir=...)), or pass fit(..., overwrite=True) to replace it")
    try:
        lock_run_dir(run_dir)
    except RunDirInUse as err:
        raise RunDirInUse(str(err).replace("(hydra.run.dir=... or paths.output_dir=...)",
                                           "(fit(output_dir=...))")) from None


def _train_log(run_dir: Path) -> logging.Handler:
    """A handler writing what the run logs to ``run_dir/train.log``, in the format of the command line's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    if logging.getLogger("crossmodalnet").getEffectiveLevel() > logging.INFO:
        logging.getLogger("crossmodalnet").setLevel(logging.INFO)  # the file gets the run's INFO lines
    return handler


def _training_data(config: Any) -> tuple[str | None, dict]:
    """The training data file of a saved run (``data.source.path`` or ``rna_path`` of its config.yaml) when it is
    still there, so ``load(run).saliency()`` defaults to the training cells as ``fit(...).saliency()`` does."""
    if config is None:
        return None, {}
    from omegaconf import OmegaConf

    try:
        source = OmegaConf.to_container(config.data.source, resolve=True)
    except Exception:  # an unresolvable or unusual config: no default data
        return None, {}
    options = {"rna_mod": source.get("rna_mod", "rna"), "protein_mod": source.get("protein_mod", "prot")}
    for key in ("path", "rna_path"):
        value = source.get(key)
        if value and Path(str(value)).expanduser().is_file():
            return str(Path(str(value)).expanduser()), options
    return None, options


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from crossmodalnet.utils.config_dir import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():  # e.g. a notebook that composed before: start clean
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    except Exception as err:  # hydra's errors for an unknown group option or override
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            raise DataError(f"config: {err}".replace("\n", " ")) from None
        raise


def _config_path(cfg, name: str) -> str:
    """Where a keyword of fit() lives in the config: an alias, ``a__b`` for ``a.b``, or the first of SEARCH
    that has the key; an unknown name is an error listing where it was looked for."""
    from omegaconf import OmegaConf

    if name in ALIASES:
        return ALIASES[name]
    if "__" in name:
        return name.replace("__", ".")
    for prefix in SEARCH:
        node = OmegaConf.select(cfg, prefix) if prefix else cfg
        if node is not None and OmegaConf.is_dict(node) and name in node:
            return f"{prefix}.{name}" if prefix else name
    raise DataError(f"fit(): unknown setting {name!r}; not a key of the top level, data, model, data.preprocess, "
                    f"trainer or data.source config (use group__key=value, e.g. callbacks__early_stopping__patience=5)")


def _drop_foreign_source_keys(source) -> None:
    """An experiment written for another data set (e.g. demo_fast's simulator sizes) may set data.source keys
    your data has no use for: they are dropped, with a note, instead of failing inside the loader."""
    import inspect

    from crossmodalnet.data.sources import from_anndata

    allowed = set(inspect.signature(from_anndata).parameters) | {"_target_"}
    foreign = [k for k in source if k not in allowed]
    for key in foreign:
        del source[key]
    if foreign:
        log.info("data.source settings of the experiment not used for your data: %s", ", ".join(foreign))
